//! Everything the lab starts is tracked here: namespaces by name, processes by PID
//! (with their start time, so a recycled PID is never killed). The record is mirrored
//! to a state file in the lab root, which lets `mmvip-lab down` clean up after a
//! crashed or killed run. Nothing is ever killed by process name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize};

use crate::netns;

/// Every namespace the lab creates starts with this, so leftovers are recognisable.
pub const NS_PREFIX: &str = "mmvl-";
/// Marks a directory as a lab root, so teardown never deletes anything else.
const MARKER: &str = ".mmvip-lab";
const STATE_FILE: &str = "lab-state.json";

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct StateFile {
    namespaces: Vec<String>,
    processes: Vec<TrackedProcess>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrackedProcess {
    pid: u32,
    /// Field 22 of /proc/PID/stat: tells this process from a later one with its PID.
    start_ticks: u64,
    label: String,
}

struct Inner {
    state: StateFile,
    children: BTreeMap<u32, Child>,
}

/// The live record of one lab instance.
pub struct Registry {
    root: PathBuf,
    inner: Mutex<Inner>,
}

impl Registry {
    /// Creates the lab root (root-owned, 0755, as keepalived's script security wants)
    /// and an empty record.
    pub fn create(root: &Path) -> Result<Arc<Registry>> {
        fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
        set_mode(root, 0o755)?;
        fs::write(
            root.join(MARKER),
            b"mmvip failover lab root; `mmvip-lab down` removes it\n",
        )?;
        let registry = Arc::new(Registry {
            root: root.to_path_buf(),
            inner: Mutex::new(Inner {
                state: StateFile::default(),
                children: BTreeMap::new(),
            }),
        });
        registry.persist(&registry.lock())?;
        Ok(registry)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking thread cannot leave the record half-written: recover it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn persist(&self, inner: &Inner) -> Result<()> {
        let path = self.root.join(STATE_FILE);
        let temp = self.root.join(format!("{STATE_FILE}.tmp"));
        fs::write(&temp, serde_json::to_vec_pretty(&inner.state)?)?;
        fs::rename(&temp, &path)?;
        Ok(())
    }

    /// Creates namespace `name` and records it before anything is put inside.
    pub fn add_namespace(&self, name: &str) -> Result<()> {
        assert!(
            name.starts_with(NS_PREFIX),
            "lab namespaces use {NS_PREFIX}"
        );
        let mut inner = self.lock();
        inner.state.namespaces.push(name.to_string());
        self.persist(&inner)?;
        drop(inner);
        netns::add(name)
    }

    /// Spawns a long-running process in its own process group (so a terminal Ctrl-C
    /// reaches only the lab, which then stops everything in order) and records it.
    pub fn spawn(&self, label: &str, command: &mut Command, log: &Path) -> Result<u32> {
        use std::os::unix::process::CommandExt;
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        // The lab blocks SIGINT/SIGTERM/SIGHUP in every thread (they are taken by one
        // thread with sigwait) and a child inherits that mask: without this, a child
        // that does not reset it (strace) would never see the SIGTERM that stops it.
        // SAFETY: between fork and exec only async-signal-safe calls are made
        // (sigemptyset, sigprocmask) on a local, initialised sigset_t.
        unsafe {
            command.pre_exec(|| {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {label}"))?;
        let pid = child.id();
        let start_ticks = start_ticks(pid).unwrap_or(0);
        let mut inner = self.lock();
        inner.state.processes.push(TrackedProcess {
            pid,
            start_ticks,
            label: label.to_string(),
        });
        inner.children.insert(pid, child);
        self.persist(&inner)?;
        Ok(pid)
    }

    /// Whether tracked process `pid` is still running (reaping it if it exited).
    pub fn is_running(&self, pid: u32) -> bool {
        let mut inner = self.lock();
        let exited = match inner.children.get_mut(&pid) {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => return false,
        };
        if exited {
            inner.children.remove(&pid);
            inner.state.processes.retain(|p| p.pid != pid);
            let _ = self.persist(&inner);
        }
        !exited
    }

    pub fn signal(&self, pid: u32, signal: Signal) -> Result<()> {
        if self.is_running(pid) {
            send(pid, signal).with_context(|| format!("signal {pid}"))?;
        }
        Ok(())
    }

    /// Waits (bounded) for tracked process `pid` to exit; true when it did.
    pub fn wait_exit(&self, pid: u32, timeout: Duration) -> Result<bool> {
        let gone = crate::wait::until_or_timeout(timeout, Duration::from_millis(10), || {
            Ok((!self.is_running(pid)).then_some(()))
        })?;
        Ok(gone.is_some())
    }

    /// Kills every process inside namespace `name` (tracked or not, such as hook
    /// scripts keepalived started) as a power loss would: all are frozen with SIGSTOP
    /// first, so none can react to another's death (keepalived's VRRP child would
    /// otherwise see its parent die and leave gracefully, announcing priority 0).
    /// `isolate` runs once, after the first freeze and before any kill: a process
    /// forked just before the freeze escapes it, and whatever it does when its parent
    /// dies must not reach the network.
    pub fn kill_namespace(&self, name: &str, isolate: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut isolate = Some(isolate);
        // A process forked between listing and freezing escapes one round, not three.
        for _ in 0..3 {
            let victims = netns::pids(name)?;
            for pid in &victims {
                let _ = send(*pid, Signal::STOP);
            }
            if let Some(isolate) = isolate.take() {
                isolate()?;
            }
            if victims.is_empty() {
                break;
            }
            for pid in &victims {
                let _ = send(*pid, Signal::KILL);
            }
            self.wait_gone(&victims, Duration::from_secs(5));
        }
        Ok(())
    }

    /// Freezes tracked process `pid` and SIGKILLs its children, leaving the parent
    /// frozen for the caller to kill: a daemon whose children would otherwise see
    /// the parent die and shut down gracefully (keepalived's VRRP child does).
    pub fn kill_children(&self, pid: u32) -> Result<()> {
        if !self.is_running(pid) {
            return Ok(());
        }
        send(pid, Signal::STOP).with_context(|| format!("freeze {pid}"))?;
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .with_context(|| format!("list the children of {pid}"))?;
        let children: Vec<u32> = children
            .split_whitespace()
            .filter_map(|word| word.parse().ok())
            .collect();
        for child in &children {
            let _ = send(*child, Signal::STOP);
        }
        for child in &children {
            let _ = send(*child, Signal::KILL);
        }
        self.wait_gone(&children, Duration::from_secs(5));
        Ok(())
    }

    /// Sends `signal` to every process inside namespace `name`, tracked or not.
    pub fn signal_namespace(&self, name: &str, signal: Signal) -> Result<()> {
        // A process forked while the list was taken escapes one round, not two.
        for _ in 0..2 {
            for pid in netns::pids(name)? {
                let _ = send(pid, signal);
            }
        }
        Ok(())
    }

    fn wait_gone(&self, pids: &[u32], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let alive = pids
                .iter()
                .filter(|pid| {
                    let ours = self.lock().children.contains_key(pid);
                    if ours {
                        self.is_running(**pid)
                    } else {
                        is_alive(**pid)
                    }
                })
                .count();
            if alive == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every recorded process (and anything else inside a recorded namespace)
    /// and deletes the namespaces; the lab root stays. Returns what could not be
    /// cleaned, as messages; runs to the end regardless.
    pub fn stop_all(&self) -> Vec<String> {
        let state = self.lock().state.clone();
        let mut problems = Vec::new();
        let mut victims = Vec::new();
        for name in &state.namespaces {
            if !netns::handle_path(name).exists() {
                continue;
            }
            match netns::pids(name) {
                Ok(pids) => victims.extend(pids),
                Err(error) => problems.push(error.to_string()),
            }
        }
        for process in &state.processes {
            if start_ticks(process.pid) == Some(process.start_ticks) {
                victims.push(process.pid);
            }
        }
        victims.sort_unstable();
        victims.dedup();
        for pid in &victims {
            let _ = send(*pid, Signal::KILL);
        }
        self.wait_gone(&victims, Duration::from_secs(5));
        let children: Vec<u32> = self.lock().children.keys().copied().collect();
        for pid in children {
            if self.is_running(pid) {
                problems.push(format!("process {pid} did not exit"));
            }
        }
        for name in &state.namespaces {
            if netns::handle_path(name).exists()
                && let Err(error) = netns::delete(name)
            {
                problems.push(error.to_string());
            }
        }
        let mut inner = self.lock();
        inner
            .state
            .namespaces
            .retain(|name| netns::handle_path(name).exists());
        inner.state.processes.clear();
        let _ = self.persist(&inner);
        problems
    }

    /// [`Registry::stop_all`], then removes the lab root.
    pub fn teardown(&self) -> Vec<String> {
        let mut problems = self.stop_all();
        if let Err(error) = remove_root(&self.root) {
            problems.push(error.to_string());
        }
        problems
    }
}

/// Cleans up after a lab this process did not start: whatever the state file in `root`
/// recorded, plus any namespace with the lab prefix. Safe to run when nothing is left.
pub fn down(root: &Path) -> Result<Vec<String>> {
    let mut state = fs::read(root.join(STATE_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<StateFile>(&bytes).ok())
        .unwrap_or_default();
    for name in netns::list().unwrap_or_default() {
        if name.starts_with(NS_PREFIX) && !state.namespaces.contains(&name) {
            state.namespaces.push(name);
        }
    }
    let registry = Registry {
        root: root.to_path_buf(),
        inner: Mutex::new(Inner {
            state,
            children: BTreeMap::new(),
        }),
    };
    Ok(registry.teardown())
}

/// Names of lab namespaces that exist now: leftovers when no lab should be running.
pub fn leftovers() -> Result<Vec<String>> {
    Ok(netns::list()?
        .into_iter()
        .filter(|name| name.starts_with(NS_PREFIX))
        .collect())
}

fn remove_root(root: &Path) -> Result<()> {
    if !root.exists() {
        return Ok(());
    }
    if !root.join(MARKER).exists() {
        bail!(
            "not removing {}: it has no {MARKER} marker, so it is not a lab root",
            root.display()
        );
    }
    fs::remove_dir_all(root).with_context(|| format!("remove {}", root.display()))
}

fn send(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = Pid::from_raw(pid as i32).ok_or(std::io::ErrorKind::InvalidInput)?;
    kill_process(pid, signal).map_err(Into::into)
}

/// Alive and not a zombie.
pub(crate) fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).and_then(|f| f.first().copied()) != Some("Z"),
        Err(_) => false,
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after `comm` start at field 3 (state); start time is field 22.
    stat_fields(&stat)?.get(22 - 3)?.parse().ok()
}

/// The fields after `(comm)`, which may itself contain spaces or parentheses.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_skip_a_comm_with_spaces() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 9876 0";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[22 - 3], "9876");
    }

    #[test]
    fn own_start_ticks_are_readable() {
        assert!(start_ticks(std::process::id()).is_some());
        assert!(is_alive(std::process::id()));
    }
}
