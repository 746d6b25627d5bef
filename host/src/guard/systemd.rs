//! systemd's service notifications: `READY=1` once the guard answers, and the
//! watchdog's `WATCHDOG=1` while its rule loop turns.
//!
//! Why a watchdog: a guard that is stopped (SIGSTOP, a debugger) or stuck is alive to
//! keepalived's `track_process`, yet it fences nothing; meanwhile its lease runs out
//! and the peer takes it. With `WatchdogSec` below `lease_ms + margin_ms` and
//! `WatchdogSignal=SIGKILL` (dist/mmvip-guard.service), systemd kills such a guard
//! first, keepalived sees it gone, and the `fault` hook demotes the node before the
//! peer can hold the lease.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where and how often to notify; nothing when not run by systemd with
/// `Type=notify`.
pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
}

enum Target {
    Path(std::path::PathBuf),
    /// `@name`: Linux's abstract namespace.
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (systemd sets them).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").map(|socket| {
            let bytes = socket.as_encoded_bytes();
            match bytes.strip_prefix(b"@") {
                Some(name) => Target::Abstract(name.to_vec()),
                None => Target::Path(socket.into()),
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us)
            .map(Duration::from_micros);
        Notifier {
            socket: target.and_then(|target| Some((UnixDatagram::unbound().ok()?, target))),
            watchdog,
        }
    }

    /// How often the watchdog wants to hear from the guard: a quarter of its
    /// timeout, so that a late turn or two is not a kill.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|timeout| timeout / 4)
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }

    /// Best effort: systemd gone or the socket full changes nothing the guard does.
    fn send(&self, message: &str) {
        let Some((socket, target)) = &self.socket else {
            return;
        };
        let _ = match target {
            Target::Path(path) => socket.send_to(message.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|address| socket.send_to_addr(message.as_bytes(), &address))
            }
        };
    }
}
