//! The node-wide hook lock: keepalived starts notify scripts concurrently and out of
//! order, so each role-changing hook holds an exclusive `flock` while it runs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, Result};

/// Held until dropped (closing the file releases the lock).
pub struct HookLock {
    _file: File,
}

/// Waits for the lock until `deadline`.
pub fn acquire(state_dir: &Path, deadline: Instant) -> Result<HookLock> {
    let path = crate::caps::state::prepare_state_dir(state_dir)?.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::failed(format!("lock {}: {e}", path.display())))?;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(HookLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::failed(format!(
                    "another hook held {} until this hook's deadline",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::failed(format!("lock {}: {e}", path.display()))),
        }
    }
}
