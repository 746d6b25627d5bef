//! How the hooks talk to the guard of their node: a unix socket in the state
//! directory (root-only, as the directory), one request line and one answer line.
//!
//! ```text
//! ACQUIRE <instance> <timeout_ms>  →  HELD <left_ms>  |  REFUSED <why>
//! RELEASE <instance>               →  RELEASED
//! SERVE <instance>                 →  SERVING <what>  |  REFUSED <why>
//! STATUS                           →  STATUS <instance>=held:<ms>,vote:<holder>:<ms>,gate:<open|closed> ... armed=<ms|off> healthy=<bool>
//! ```

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Guard;
use crate::error::{Error, Result};

pub const SOCKET: &str = "guard.sock";
/// Longest wait a hook may ask for.
const MAX_ACQUIRE: Duration = Duration::from_secs(60);

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Listens on the state directory's socket (replacing one a dead guard left).
pub fn listen(state_dir: &Path) -> Result<UnixListener> {
    let dir = crate::trust::open_dir(state_dir, "state_dir", true)?;
    let path = socket_path(dir.path());
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| Error::failed(format!("cannot listen on {}: {e}", path.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
    Ok(listener)
}

/// Answers the hooks, each on a thread of its own (an acquisition may wait).
pub fn serve(listener: UnixListener, guard: &std::sync::Arc<Guard>) {
    for stream in listener.incoming().flatten() {
        let guard = std::sync::Arc::clone(guard);
        std::thread::spawn(move || answer(&stream, &guard));
    }
}

fn answer(stream: &UnixStream, guard: &Guard) {
    {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut line = String::new();
        if BufReader::new(stream).take_line(&mut line).is_err() {
            return;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["ACQUIRE", instance, timeout_ms] => {
                let timeout = timeout_ms
                    .parse()
                    .map(Duration::from_millis)
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_ACQUIRE);
                match guard.acquire(instance, timeout) {
                    Ok(left) => format!("HELD {}", left.as_millis()),
                    Err(why) => format!("REFUSED {why}"),
                }
            }
            ["RELEASE", instance] => {
                guard.release(instance);
                "RELEASED".to_string()
            }
            ["SERVE", instance] => match guard.serve(instance) {
                Ok(what) => format!("SERVING {what}"),
                Err(why) => format!("REFUSED {why}"),
            },
            ["STATUS"] => format!("STATUS {}", guard.status()),
            ["PEER"] => if guard.peer_answers() {
                "ANSWERS"
            } else {
                "SILENT"
            }
            .to_string(),
            ["SWITCHOVER"] => match guard.switchover_command() {
                Ok(report) => format!("DONE {report}"),
                Err(why) => format!("REFUSED {why}"),
            },
            _ => "REFUSED unknown request".to_string(),
        };
        guard.watched.nudge();
        let mut stream = stream;
        let _ = stream.write_all(format!("{reply}\n").as_bytes());
    }
}

/// The pid of the process listening on the state directory's socket (from the
/// socket's peer credentials): this config's running guard, for `mmvip doctor`.
pub fn serving_pid(state_dir: &Path) -> std::result::Result<i32, String> {
    let path = socket_path(state_dir);
    let stream = UnixStream::connect(&path)
        .map_err(|e| format!("the guard is not running ({}: {e})", path.display()))?;
    let credentials = rustix::net::sockopt::socket_peercred(&stream).map_err(|e| e.to_string())?;
    Ok(credentials.pid.as_raw_pid())
}

/// Asks the guard of this node; `None` when no guard listens.
pub fn ask(
    state_dir: &Path,
    request: &str,
    timeout: Duration,
) -> std::result::Result<String, String> {
    let path = socket_path(state_dir);
    let stream = UnixStream::connect(&path)
        .map_err(|e| format!("the guard is not running ({}: {e})", path.display()))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| format!("the guard did not take the request: {e}"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .take_line(&mut line)
        .map_err(|e| format!("no answer from the guard: {e}"))?;
    Ok(line.trim_end().to_string())
}

trait TakeLine {
    fn take_line(self, line: &mut String) -> std::io::Result<()>;
}

impl<R: std::io::Read> TakeLine for BufReader<R> {
    /// One line of at most 512 bytes.
    fn take_line(self, line: &mut String) -> std::io::Result<()> {
        use std::io::Read as _;
        let mut limited = BufReader::new(self.take(512));
        limited.read_line(line)?;
        Ok(())
    }
}
