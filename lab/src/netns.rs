//! Network namespace primitives on top of iproute2's `ip`: create, delete, list,
//! find the processes inside one, and move a thread or a child process into one.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Where `ip netns add` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";

/// Runs `ip ARGS...` and returns its stdout; a failure carries `ip`'s own message.
pub fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| "cannot run `ip`: apt-get install iproute2".to_string())?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn handle_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

pub fn add(name: &str) -> Result<()> {
    ip(&["netns", "add", name]).map(drop)
}

pub fn delete(name: &str) -> Result<()> {
    ip(&["netns", "delete", name]).map(drop)
}

/// Names of all namespaces `ip netns` knows.
pub fn list() -> Result<Vec<String>> {
    let text = ip(&["netns", "list"])?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// PIDs of every process whose network namespace is `name`.
pub fn pids(name: &str) -> Result<Vec<u32>> {
    let text = ip(&["netns", "pids", name])?;
    Ok(text
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect())
}

/// A command that runs `program` inside namespace `name`. `ip netns exec` execs the
/// program in place, so the child's PID is the program's PID.
pub fn command_in(name: &str, program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", name, program]);
    command
}

/// Moves the calling thread into namespace `name`, then proves it got there: a thread
/// that silently stayed in the root namespace must never send lab traffic.
pub fn enter(name: &str) -> Result<()> {
    let path = handle_path(name);
    let handle = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    move_into_link_name_space(handle.as_fd(), Some(LinkNameSpaceType::Network))
        .with_context(|| format!("setns into {name}"))?;
    let target = handle.metadata()?;
    let current = std::fs::metadata("/proc/thread-self/ns/net")?;
    if (current.dev(), current.ino()) != (target.dev(), target.ino()) {
        bail!("thread is not in namespace {name} after setns");
    }
    Ok(())
}
