//! A network namespace for one test: mmvip runs inside it, and the test moves "VIPs"
//! in and out by adding addresses to its loopback interface, as keepalived adds them to its
//! interface. The
//! namespace is deleted when the handle drops.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (apt-get install iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Netns {
    pub fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests create network namespaces: run them as root"
        );
        let name = format!(
            "mmvt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let netns = Netns { name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    pub fn hold(&self, address: &str) {
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{address}/32"),
            "dev",
            "lo",
        ]);
    }

    pub fn release(&self, address: &str) {
        ip(&[
            "-n",
            &self.name,
            "addr",
            "del",
            &format!("{address}/32"),
            "dev",
            "lo",
        ]);
    }

    /// Runs `mmvip --config CONFIG ARGS` inside the namespace.
    pub fn mmvip(&self, config: &Path, args: &[&str]) -> Output {
        self.command(config, args)
            .output()
            .expect("run mmvip in the namespace")
    }

    pub fn command(&self, config: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(super::mmvip_binary())
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("MMVIP_CONFIG")
            .stdout(std::process::Stdio::null());
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
