//! Grant `vip`: is an address configured on an interface of this node's network
//! namespace right now? Read from the kernel's own tables in /proc.

use std::net::IpAddr;

use wasmtime::component::{HasData, Linker};

use super::Capability;
use crate::bindings::vip as wit;
use crate::runtime::HookState;

pub const CAPABILITY: Capability = Capability { grant: "vip", link };

/// The back-end: whether this node holds an address, and who is connected to it.
pub trait Vip: Send {
    fn holds(&mut self, address: &str) -> Result<bool, String>;
    fn clients(&mut self, address: &str) -> Result<Vec<String>, String>;
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

    fn clients(&mut self, address: String) -> wasmtime::Result<Result<Vec<String>, String>> {
        Ok(self.0.clients(&address))
    }
}

struct LocalAddresses;

impl Vip for LocalAddresses {
    fn clients(&mut self, address: &str) -> Result<Vec<String>, String> {
        let wanted: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("`{address}` is not an IP address"))?;
        let table = match wanted {
            IpAddr::V4(_) => "/proc/net/tcp",
            IpAddr::V6(_) => "/proc/net/tcp6",
        };
        let text =
            std::fs::read_to_string(table).map_err(|e| format!("cannot read {table}: {e}"))?;
        Ok(tcp_clients(&text, wanted))
    }

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

/// `/proc/net/tcp{,6}` states of a connection a client may still use: established,
/// or closed by the client while the server side (a session) is still open.
const OPEN_STATES: [&str; 2] = ["01", "08"];

/// The remote ends of open connections whose local address is `local`.
fn tcp_clients(table: &str, local: IpAddr) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (ours, theirs, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            if !OPEN_STATES.contains(state) || parse_endpoint(ours)?.0 != local {
                return None;
            }
            let (ip, port) = parse_endpoint(theirs)?;
            Some(format!("{ip}:{port}"))
        })
        .collect()
}

/// `0100007F:0CEA` (the address as the kernel's native-endian words, the port in
/// big-endian hex) as 127.0.0.1 and 3306.
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in address.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            // MariaDB shows an IPv4 client of a dual-stack socket as plain IPv4.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some((ip, port))
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

    #[test]
    fn clients_are_the_open_connections_accepted_on_the_address() {
        // 10.77.1.99:3306 ← 10.77.1.100:51234 established, ← .100:51236 closed by
        // the client; a connection to 10.77.1.1:3306 and the listener are not.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 00000000:0CEA 00000000:0000 0A 00000000:00000000\n\
   1: 63014D0A:0CEA 64014D0A:C822 01 00000000:00000000\n\
   2: 63014D0A:0CEA 64014D0A:C824 08 00000000:00000000\n\
   3: 63014D0A:0CEA 64014D0A:C826 06 00000000:00000000\n\
   4: 01014D0A:0CEA 64014D0A:C828 01 00000000:00000000\n";
        assert_eq!(
            tcp_clients(table, "10.77.1.99".parse().unwrap()),
            ["10.77.1.100:51234", "10.77.1.100:51236"]
        );
    }

    #[test]
    fn ipv6_endpoints_and_mapped_ipv4_clients() {
        // [::1]:3306 ← [::ffff:10.77.1.100]:51234 (kernel words, native endian).
        let table = "header\n   0: 00000000000000000000000001000000:0CEA 0000000000000000FFFF000064014D0A:C822 01 x\n";
        assert_eq!(
            tcp_clients(table, "::1".parse().unwrap()),
            ["10.77.1.100:51234"]
        );
    }

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

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// An endpoint as the kernel writes it in `/proc/net/tcp{,6}`.
        fn kernel_endpoint(ip: IpAddr, port: u16) -> String {
            let octets = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            let words: String = octets
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap())))
                .collect();
            format!("{words}:{port:04X}")
        }

        fn ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<std::net::Ipv4Addr>().prop_map(IpAddr::V4),
                any::<std::net::Ipv6Addr>().prop_map(IpAddr::V6),
            ]
        }

        fn table_line() -> impl Strategy<Value = String> {
            prop_oneof![
                (
                    ip(),
                    any::<u16>(),
                    ip(),
                    any::<u16>(),
                    prop_oneof![
                        Just("01".to_string()),
                        Just("08".to_string()),
                        "[0-9A-F]{2}"
                    ]
                )
                    .prop_map(|(a, ap, b, bp, st)| format!(
                        "   0: {} {} {st} 00000000:00000000",
                        kernel_endpoint(a, ap),
                        kernel_endpoint(b, bp)
                    )),
                "[ 0-9A-Fa-f:x+-]{0,80}",
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(crate::proptest_config(2000))]

            #[test]
            fn endpoints_round_trip(ip in ip(), port in any::<u16>()) {
                let expected = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                prop_assert_eq!(parse_endpoint(&kernel_endpoint(ip, port)), Some((expected, port)));
            }

            #[test]
            fn any_table_gives_the_open_clients_of_the_address(
                lines in prop::collection::vec(table_line(), 0..8),
                local in ip(),
            ) {
                let table = format!("  sl  local_address rem_address   st\n{}", lines.join("\n"));
                for client in tcp_clients(&table, local) {
                    let (ip, port) = client.rsplit_once(':').unwrap();
                    prop_assert!(ip.parse::<IpAddr>().is_ok() && port.parse::<u16>().is_ok(), "{}", client);
                }
                let _ = local_ipv4(&table).count();
                let _ = local_ipv6(&table).count();
            }
        }
    }
}
