//! The lab's network: a switch namespace with a private (heartbeat and replication)
//! bridge and a public (VIP) bridge, two node namespaces and a client namespace.
//! Every address lives inside these namespaces; the root namespace gets nothing.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use crate::cleanup::Registry;
use crate::netns::ip;

pub const SWITCH_NS: &str = "mmvl-switch";
pub const CLIENT_NS: &str = "mmvl-client";
pub const PRIVATE_BRIDGE: &str = "br-private";
pub const PUBLIC_BRIDGE: &str = "br-public";
/// Interface names inside a node namespace.
pub const PRIVATE_IF: &str = "private";
pub const PUBLIC_IF: &str = "public";
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 100);
/// The guard's witness (hook set `guard-witness`): its own host on the public network.
pub const WITNESS_NS: &str = "mmvl-witness";
pub const WITNESS_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 50);
pub const PREFIX_LEN: u8 = 24;

/// One of the two database nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    One,
    Two,
}

impl NodeId {
    pub const BOTH: [NodeId; 2] = [NodeId::One, NodeId::Two];

    pub fn number(self) -> u8 {
        match self {
            NodeId::One => 1,
            NodeId::Two => 2,
        }
    }

    pub fn index(self) -> usize {
        usize::from(self.number() - 1)
    }

    pub fn peer(self) -> NodeId {
        match self {
            NodeId::One => NodeId::Two,
            NodeId::Two => NodeId::One,
        }
    }

    pub fn name(self) -> String {
        format!("node{}", self.number())
    }

    pub fn namespace(self) -> String {
        format!("mmvl-node{}", self.number())
    }

    pub fn private_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, self.number())
    }

    pub fn public_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 1, self.number())
    }

    /// The switch-side end of this node's private cable: detaching it from the bridge
    /// cuts the heartbeat while both ends keep carrier (a real split brain).
    pub fn private_port(self) -> String {
        format!("n{}-private", self.number())
    }

    fn public_port(self) -> String {
        format!("n{}-public", self.number())
    }
}

/// Creates namespaces, bridges and cables, and addresses every interface.
pub fn build(registry: &Registry) -> Result<()> {
    for ns in [SWITCH_NS, CLIENT_NS, WITNESS_NS] {
        registry.add_namespace(ns)?;
    }
    for node in NodeId::BOTH {
        registry.add_namespace(&node.namespace())?;
    }
    for bridge in [PRIVATE_BRIDGE, PUBLIC_BRIDGE] {
        // A fresh Linux bridge has STP off, so ports forward as soon as they are up.
        ip(&["-n", SWITCH_NS, "link", "add", bridge, "type", "bridge"])?;
        ip(&["-n", SWITCH_NS, "link", "set", bridge, "up"])?;
    }
    for node in NodeId::BOTH {
        let ns = node.namespace();
        cable(&ns, PRIVATE_IF, &node.private_port(), PRIVATE_BRIDGE)?;
        cable(&ns, PUBLIC_IF, &node.public_port(), PUBLIC_BRIDGE)?;
        address(&ns, PRIVATE_IF, node.private_ip())?;
        address(&ns, PUBLIC_IF, node.public_ip())?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    cable(CLIENT_NS, PUBLIC_IF, "client-public", PUBLIC_BRIDGE)?;
    address(CLIENT_NS, PUBLIC_IF, CLIENT_IP)?;
    ip(&["-n", CLIENT_NS, "link", "set", "lo", "up"])?;
    cable(WITNESS_NS, PUBLIC_IF, "witness-public", PUBLIC_BRIDGE)?;
    address(WITNESS_NS, PUBLIC_IF, WITNESS_IP)?;
    ip(&["-n", WITNESS_NS, "link", "set", "lo", "up"])?;
    Ok(())
}

/// The witness host's link up or down (down: the witness is gone for both nodes).
pub fn set_witness_link(up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    ip(&["-n", WITNESS_NS, "link", "set", PUBLIC_IF, state]).map(drop)
}

/// A veth pair from `ns`'s `inside` interface to `port` on `bridge` in the switch.
fn cable(ns: &str, inside: &str, port: &str, bridge: &str) -> Result<()> {
    ip(&[
        "-n", ns, "link", "add", inside, "type", "veth", "peer", "name", port, "netns", SWITCH_NS,
    ])?;
    ip(&["-n", SWITCH_NS, "link", "set", port, "master", bridge])?;
    ip(&["-n", SWITCH_NS, "link", "set", port, "up"])?;
    ip(&["-n", ns, "link", "set", inside, "up"])?;
    Ok(())
}

fn address(ns: &str, interface: &str, addr: Ipv4Addr) -> Result<()> {
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/{PREFIX_LEN}"),
        "dev",
        interface,
    ])
    .map(drop)
}

/// Cuts `node`'s heartbeat link at the switch while its interface stays up.
pub fn detach_private(node: NodeId) -> Result<()> {
    ip(&[
        "-n",
        SWITCH_NS,
        "link",
        "set",
        &node.private_port(),
        "nomaster",
    ])
    .map(drop)
}

pub fn attach_private(node: NodeId) -> Result<()> {
    ip(&[
        "-n",
        SWITCH_NS,
        "link",
        "set",
        &node.private_port(),
        "master",
        PRIVATE_BRIDGE,
    ])
    .map(drop)
}

/// Cuts (or restores) both of `node`'s cables at the switch: the node is alone,
/// unreachable by its peer and the clients, yet its interfaces keep carrier, so
/// nothing on it notices except by silence.
pub fn set_isolated(node: NodeId, isolated: bool) -> Result<()> {
    for (port, bridge) in [
        (node.private_port(), PRIVATE_BRIDGE),
        (node.public_port(), PUBLIC_BRIDGE),
    ] {
        if isolated {
            ip(&["-n", SWITCH_NS, "link", "set", &port, "nomaster"])?;
        } else {
            ip(&["-n", SWITCH_NS, "link", "set", &port, "master", bridge])?;
        }
    }
    Ok(())
}

/// The nftables table that drops packets on a node's heartbeat link.
const LOSS_TABLE: &str = "mmvip_lab_loss";

/// Drops `percent` of the packets in both directions on `node`'s heartbeat link
/// (nftables, random per packet); 0 removes the rule. A lossy link, not a cut: VRRP
/// adverts, lease messages and replication each lose some and get some through.
/// This kernel has no sch_netem, so delay is not offered.
pub fn set_heartbeat_loss(node: NodeId, percent: u8) -> Result<()> {
    let ns = node.namespace();
    // Deleting a missing table fails; that is the healed state already.
    let _ = nft(&ns, &format!("delete table inet {LOSS_TABLE}"));
    if percent == 0 {
        return Ok(());
    }
    let rules = format!(
        "table inet {LOSS_TABLE} {{\n\
         chain input {{ type filter hook input priority 0; iifname \"{PRIVATE_IF}\" numgen random mod 100 < {percent} drop; }}\n\
         chain output {{ type filter hook output priority 0; oifname \"{PRIVATE_IF}\" numgen random mod 100 < {percent} drop; }}\n\
         }}\n"
    );
    nft(&ns, &rules)
}

/// Runs `nft -f -` with `script` inside namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run nft (apt-get install nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        anyhow::bail!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The IPv4 addresses on `node`'s public interface.
pub fn public_addresses(node: NodeId) -> Result<Vec<Ipv4Addr>> {
    let text = ip(&[
        "-n",
        &node.namespace(),
        "-o",
        "-4",
        "addr",
        "show",
        "dev",
        PUBLIC_IF,
    ])?;
    Ok(parse_addresses(&text))
}

/// Removes `addr` from `node`'s public interface if present: a reboot forgets VIPs.
pub fn forget_address(node: NodeId, addr: Ipv4Addr) -> Result<()> {
    if public_addresses(node)?.contains(&addr) {
        ip(&[
            "-n",
            &node.namespace(),
            "addr",
            "del",
            &format!("{addr}/{PREFIX_LEN}"),
            "dev",
            PUBLIC_IF,
        ])?;
    }
    Ok(())
}

/// Sets both of `node`'s interfaces up or down (a powered-off host has no carrier).
pub fn set_node_links(node: NodeId, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    for interface in [PRIVATE_IF, PUBLIC_IF] {
        ip(&["-n", &node.namespace(), "link", "set", interface, state])?;
    }
    Ok(())
}

/// Parses `ip -o -4 addr show` lines: `2: public    inet 10.77.1.1/24 brd ...`.
pub fn parse_addresses(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_addr_output() {
        let text = "3: public    inet 10.77.1.1/24 scope global public\\       valid_lft forever preferred_lft forever\n3: public    inet 10.77.1.99/24 scope global secondary public\\       valid_lft forever\n";
        assert_eq!(
            parse_addresses(text),
            vec![Ipv4Addr::new(10, 77, 1, 1), Ipv4Addr::new(10, 77, 1, 99)]
        );
    }

    #[test]
    fn names_fit_linux_interface_limit() {
        for node in NodeId::BOTH {
            assert!(node.private_port().len() <= 15);
            assert!(node.public_port().len() <= 15);
        }
    }
}

pub const VIP1: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 99);
pub const VIP2: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 98);

/// Base priorities: the preferred node is one above its peer. chk_mysql's +2 and
/// chk_failover's -4 then decide, as in the seed.
const PREFERRED_PRIORITY: u8 = 101;
const OTHER_PRIORITY: u8 = 100;

/// The single-VIP setup or the two-VIP setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layout {
    Single,
    Dual,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Single => "single",
            Layout::Dual => "dual",
        }
    }

    /// VI_1 (VIP1) prefers node 1; in the dual layout VI_2 (VIP2) prefers node 2.
    /// Both VIPs are read/write: each carries half of the load.
    pub fn instances(self) -> Vec<Instance> {
        let mut instances = vec![Instance {
            name: "VI_1".into(),
            vrid: 51,
            vip: VIP1,
            preferred: NodeId::One,
        }];
        if self == Layout::Dual {
            instances.push(Instance {
                name: "VI_2".into(),
                vrid: 52,
                vip: VIP2,
                preferred: NodeId::Two,
            });
        }
        instances
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub vrid: u8,
    pub vip: Ipv4Addr,
    pub preferred: NodeId,
}

impl Instance {
    pub fn priority(&self, node: NodeId) -> u8 {
        if node == self.preferred {
            PREFERRED_PRIORITY
        } else {
            OTHER_PRIORITY
        }
    }
}
