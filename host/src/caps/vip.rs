//! Grant `vip`: is an address configured on an interface of this node's network
//! namespace right now? Read from the kernel's own tables in /proc.

use std::net::IpAddr;

use wasmtime::component::{HasData, Linker};

use super::Capability;
use crate::bindings::vip as wit;
use crate::runtime::HookState;

pub const CAPABILITY: Capability = Capability { grant: "vip", link };

/// The back-end: whether this node holds an address.
pub trait Vip: Send {
    fn holds(&mut self, address: &str) -> Result<bool, String>;
}

/// This node's own addresses.
pub fn backend() -> Box<dyn Vip> {
    Box::new(LocalAddresses)
}

fn link(linker: &mut Linker<HookState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HookState, Linked>(linker, |state| Cap(&mut *state.caps.vip))
}

struct Linked;

impl HasData for Linked {
    type Data<'a> = Cap<'a>;
}

struct Cap<'a>(&'a mut dyn Vip);

impl wit::Host for Cap<'_> {
    fn holds(&mut self, address: String) -> wasmtime::Result<Result<bool, String>> {
        Ok(self.0.holds(&address))
    }
}

struct LocalAddresses;

impl Vip for LocalAddresses {
    fn holds(&mut self, address: &str) -> Result<bool, String> {
        let wanted: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("`{address}` is not an IP address"))?;
        match wanted {
            IpAddr::V4(_) => {
                let trie = std::fs::read_to_string("/proc/net/fib_trie")
                    .map_err(|e| format!("cannot read /proc/net/fib_trie: {e}"))?;
                Ok(local_ipv4(&trie).any(|local| local == wanted))
            }
            IpAddr::V6(_) => {
                let table = std::fs::read_to_string("/proc/net/if_inet6")
                    .map_err(|e| format!("cannot read /proc/net/if_inet6: {e}"))?;
                Ok(local_ipv6(&table).any(|local| local == wanted))
            }
        }
    }
}

/// Addresses the kernel routes as `host LOCAL`: those configured on an interface.
fn local_ipv4(trie: &str) -> impl Iterator<Item = IpAddr> + '_ {
    let mut last_leaf: Option<IpAddr> = None;
    trie.lines().filter_map(move |line| {
        let line = line.trim();
        if let Some(leaf) = line.strip_prefix("|-- ") {
            last_leaf = leaf.parse().ok();
            None
        } else if line.starts_with("/32 host LOCAL") {
            last_leaf
        } else {
            None
        }
    })
}

fn local_ipv6(table: &str) -> impl Iterator<Item = IpAddr> + '_ {
    table.lines().filter_map(|line| {
        let hex = line.split_whitespace().next()?;
        let value = u128::from_str_radix(hex, 16).ok()?;
        Some(IpAddr::V6(value.into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIE: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.77.1.0\n        /24 link UNICAST\n     |-- 10.77.1.99\n        /32 host LOCAL\nLocal:\n     |-- 10.77.1.1\n        /32 host LOCAL\n     |-- 10.77.1.255\n        /32 link BROADCAST\n";

    #[test]
    fn only_host_local_entries_count() {
        let found: Vec<_> = local_ipv4(TRIE).collect();
        assert_eq!(
            found,
            vec![
                "10.77.1.99".parse::<IpAddr>().unwrap(),
                "10.77.1.1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn ipv6_table_is_parsed() {
        let table = "00000000000000000000000000000001 01 80 10 80       lo\n";
        let found: Vec<_> = local_ipv6(table).collect();
        assert_eq!(found, vec!["::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn loopback_is_held_and_garbage_is_an_error() {
        assert_eq!(LocalAddresses.holds("127.0.0.1"), Ok(true));
        assert_eq!(LocalAddresses.holds("192.0.2.77"), Ok(false));
        assert!(LocalAddresses.holds("not-an-ip").is_err());
    }
}
