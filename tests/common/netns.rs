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

    /// Adds an interface called `name` (one end of a veth pair; the other stays
    /// inside too), for configs that name interfaces, such as keepalived's.
    pub fn add_interface(&self, name: &str) {
        let peer = format!("{name}-peer");
        ip(&[
            "-n", &self.name, "link", "add", name, "type", "veth", "peer", "name", &peer,
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

/// A TCP forwarder from an address inside a test namespace to one outside it, so
/// that mmvip inside the namespace reaches a server of the test (the peer) over real
/// TCP. Dropping it closes the listener and every connection it carries, as a peer
/// that became unreachable.
pub struct Forward {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    streams: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    listener: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    /// Forwards `127.0.0.1:PORT` inside the namespace (a free port, returned) to
    /// `target` outside it.
    pub fn forward(&self, target: std::net::SocketAddr) -> Forward {
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsRawFd;
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex, mpsc};

        let netns = std::fs::File::open(format!("/var/run/netns/{}", self.name)).expect("netns");
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        // Outbound connections are made by a thread that stays in this namespace:
        // a socket belongs to the namespace it was created in.
        let (dial, dialed) = mpsc::channel::<mpsc::Sender<std::io::Result<TcpStream>>>();
        std::thread::spawn(move || {
            for reply in dialed {
                let _ = reply.send(TcpStream::connect(target));
            }
        });
        let (port_tx, port_rx) = mpsc::channel();
        let listener = {
            let (stop, streams) = (Arc::clone(&stop), Arc::clone(&streams));
            std::thread::spawn(move || {
                // SAFETY: setns on this thread only, with a namespace fd we opened.
                let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind in the namespace");
                listener.set_nonblocking(true).unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((inside, _)) = listener.accept() else {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    };
                    inside.set_nonblocking(false).unwrap();
                    let (reply, answer) = mpsc::channel();
                    dial.send(reply).unwrap();
                    let Ok(Ok(outside)) = answer.recv() else {
                        continue;
                    };
                    let mut kept = streams.lock().unwrap();
                    kept.push(inside.try_clone().unwrap());
                    kept.push(outside.try_clone().unwrap());
                    drop(kept);
                    for (mut from, mut to) in [
                        (inside.try_clone().unwrap(), outside.try_clone().unwrap()),
                        (outside, inside),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            })
        };
        Forward {
            port: port_rx.recv().expect("forwarder listening"),
            stop,
            streams,
            listener: Some(listener),
        }
    }
}

/// Runs `work` on a thread inside namespace `name` (sockets it makes stay in it).
fn inside<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let netns = std::fs::File::open(format!("/var/run/netns/{name}")).expect("netns");
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace fd we opened.
        let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        work()
    })
    .join()
    .expect("thread in the namespace")
}

/// Connects from inside namespace `name`: `Ok` once the handshake completes.
pub fn connect_from(
    name: &str,
    to: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> std::io::Result<()> {
    inside(name, move || {
        std::net::TcpStream::connect_timeout(&to, timeout).map(drop)
    })
}

impl Netns {
    /// A TCP listener on every address of the namespace: connections complete their
    /// handshake in its backlog, never accepted.
    pub fn listen(&self, port: u16) -> std::net::TcpListener {
        inside(&self.name, move || {
            std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind")
        })
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}
