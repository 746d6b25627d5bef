//! The node-wide hook lock: keepalived starts notify scripts concurrently and out of
//! order, so each role-changing hook holds an exclusive `flock` while it runs.
//!
//! The lock is taken on the state directory itself: there is no lock file to create
//! (a full disk cannot stop it) and nothing at its path can be a FIFO.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, Mode, OFlags, flock};

use crate::error::{Error, Result};
use crate::trust::TrustedDir;

/// Held until dropped (closing the descriptor releases the lock).
pub struct HookLock {
    _fd: OwnedFd,
}

/// Waits for the lock on `dir` until `deadline`.
pub fn acquire(dir: &TrustedDir, deadline: Instant) -> Result<HookLock> {
    // A descriptor of its own: the lock belongs to this open, not to `dir`'s.
    let fd = rustix::fs::openat(
        dir.fd(),
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::failed(format!("lock {}: {e}", dir.path().display())))?;
    loop {
        match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(HookLock { _fd: fd }),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::failed(format!(
                    "another hook held the lock on {} until this hook's deadline",
                    dir.path().display()
                )));
            }
            Err(e) => {
                return Err(Error::failed(format!("lock {}: {e}", dir.path().display())));
            }
        }
    }
}
