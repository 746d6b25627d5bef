//! A small network for the guard tests: two node namespaces and a switch namespace
//! with one bridge, each node on it through a veth pair; the switch holds a probe
//! address (the "gateway"). Everything lives in namespaces the test creates, and is
//! deleted when the handle drops.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::netns::Netns;

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub struct Topology {
    pub switch: Netns,
    pub nodes: [Netns; 2],
    /// `10.98.<n>.0/24`: nodes .1 and .2, the probe .254.
    pub subnet: u32,
}

impl Topology {
    pub fn new() -> Topology {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let subnet = (std::process::id() % 100) * 2 + NEXT.fetch_add(1, Ordering::Relaxed) % 2 + 1;
        let switch = Netns::new();
        let nodes = [Netns::new(), Netns::new()];
        ip(&["-n", &switch.name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch.name, "link", "set", "br0", "up"]);
        ip(&[
            "-n",
            &switch.name,
            "addr",
            "add",
            &format!("10.98.{subnet}.254/24"),
            "dev",
            "br0",
        ]);
        for (index, node) in nodes.iter().enumerate() {
            let port = format!("p{index}");
            ip(&[
                "-n",
                &node.name,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &switch.name,
            ]);
            ip(&["-n", &switch.name, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &switch.name, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                &node.name,
                "addr",
                "add",
                &format!("10.98.{subnet}.{}/24", index + 1),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &node.name, "link", "set", "eth0", "up"]);
        }
        Topology {
            switch,
            nodes,
            subnet,
        }
    }

    pub fn address(&self, node: usize) -> String {
        format!("10.98.{}.{}", self.subnet, node + 1)
    }

    pub fn probe(&self) -> String {
        format!("10.98.{}.254", self.subnet)
    }

    /// Routes `vip` from the switch (where test clients connect from) through `node`.
    pub fn route_through(&self, vip: &str, node: usize) {
        ip(&[
            "-n",
            &self.switch.name,
            "route",
            "add",
            vip,
            "via",
            &self.address(node),
        ]);
    }

    /// Cuts `node` off from everything (its switch port down), or back.
    pub fn cut(&self, node: usize, cut: bool) {
        ip(&[
            "-n",
            &self.switch.name,
            "link",
            "set",
            &format!("p{node}"),
            if cut { "down" } else { "up" },
        ]);
    }
}
