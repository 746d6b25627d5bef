//! `mmvip health` against a real, throwaway `mariadbd`.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use mmvip::runtime::OVERRUN_GRACE;

use common::mariadb::Server;
use common::{Site, exit_code, stderr, stdout};

/// The check's own bound, from the site config below.
const HEALTH_TIMEOUT_MS: u64 = 600;

fn site_for(server: &Server) -> Site {
    let site = Site::new()
        .with_socket(&server.socket)
        .with_config(&format!(
            "[plugins.health]\ntimeout_ms = {HEALTH_TIMEOUT_MS}\n"
        ));
    site.install_builtins();
    assert_eq!(exit_code(&site.mmvip(&["compile"])), 0);
    site
}

#[test]
fn health_passes_against_a_live_server() {
    let server = Server::start();
    let site = site_for(&server);
    let output = site.mmvip(&["health"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "health: mariadb answered");
    let log = site.log_text();
    assert!(
        log.contains("sql=\"SELECT 1\""),
        "statement not logged: {log}"
    );
    assert!(
        log.contains("plugin=health level=info verdict=pass"),
        "{log}"
    );
}

#[test]
fn health_fails_quickly_when_the_server_is_stopped() {
    let mut server = Server::start();
    let site = site_for(&server);
    server.stop();
    let started = Instant::now();
    let output = site.mmvip(&["health"]);
    assert_eq!(exit_code(&output), 1);
    assert!(started.elapsed() < Duration::from_millis(HEALTH_TIMEOUT_MS));
    assert!(
        stderr(&output).contains("mariadb unreachable"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn health_fails_within_its_timeout_when_the_server_is_frozen() {
    let server = Server::start();
    let site = site_for(&server);
    server.freeze();
    let started = Instant::now();
    let output = site.mmvip(&["health"]);
    let elapsed = started.elapsed();
    server.thaw();
    assert_eq!(exit_code(&output), 1, "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("timed out") || message.contains("deadline"),
        "{message}"
    );
    // The deadline holds: the check returns within its own bound plus process start.
    assert!(
        elapsed < Duration::from_millis(HEALTH_TIMEOUT_MS + 300),
        "took {elapsed:?}"
    );
    // And the server is fine again afterwards.
    assert_eq!(exit_code(&site.mmvip(&["health"])), 0);
}

/// Opens connections without blocking until the server's accept queue is full (it
/// must be frozen); returns them, holding the queue full until dropped.
fn fill_accept_queue(socket: &Path) -> Vec<OwnedFd> {
    // SAFETY: plain socket calls on a zeroed sockaddr_un whose path fits (asserted).
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_bytes();
    assert!(path.len() < address.sun_path.len(), "socket path too long");
    for (slot, byte) in address.sun_path.iter_mut().zip(path) {
        *slot = *byte as libc::c_char;
    }
    let mut held = Vec::new();
    loop {
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let connected = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw const address).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if connected == 0 {
            held.push(fd);
            assert!(held.len() < 10_000, "the accept queue never filled");
            continue;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(error.raw_os_error(), Some(libc::EAGAIN), "connect: {error}");
        return held;
    }
}

/// Runs `mmvip` and kills it (by PID) if it outlives `limit`, so a hang fails the
/// test instead of stalling the suite.
fn mmvip_within(site: &Site, args: &[&str], limit: Duration) -> Output {
    let mut child = site
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mmvip");
    let started = Instant::now();
    while child.try_wait().expect("poll mmvip").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mmvip {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("mmvip output")
}

#[test]
fn health_ends_at_its_deadline_when_a_frozen_server_stops_taking_connections() {
    let server = Server::start();
    let site = site_for(&server);
    server.freeze();
    // Once the accept queue is full, connecting itself blocks: no socket timeout
    // covers that, so only the host's overrun stop can keep the deadline.
    let queue = fill_accept_queue(&server.socket);
    let started = Instant::now();
    let output = mmvip_within(&site, &["health"], Duration::from_secs(10));
    let elapsed = started.elapsed();
    server.thaw();
    drop(queue);
    assert_eq!(exit_code(&output), 1, "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("still running 100 ms after its"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        elapsed
            < Duration::from_millis(HEALTH_TIMEOUT_MS) + OVERRUN_GRACE + Duration::from_millis(300),
        "took {elapsed:?}"
    );
    assert!(
        site.log_text().contains("verdict=timeout"),
        "{}",
        site.log_text()
    );
    assert_eq!(exit_code(&site.mmvip(&["health"])), 0);
}

#[test]
fn health_uses_a_password_file_when_configured() {
    let server = Server::start();
    server.exec("CREATE USER 'monitor'@'localhost' IDENTIFIED BY 's3cret'");
    let site = Site::new().with_socket(&server.socket);
    site.install_builtins();
    let password = site.path("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let site = site.with_config("");
    // Rewrite [mariadb] with the user and password file.
    let text = std::fs::read_to_string(site.config_path())
        .unwrap()
        .replace(
            "timeout_ms = 500\n",
            &format!(
                "timeout_ms = 500\nuser = \"monitor\"\npassword_file = \"{}\"\n",
                password.display()
            ),
        );
    std::fs::write(site.config_path(), text).unwrap();
    let output = site.mmvip(&["health"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));

    std::fs::write(&password, "wrong\n").unwrap();
    let output = site.mmvip(&["health"]);
    assert_eq!(exit_code(&output), 1);
    assert!(
        stderr(&output).contains("mariadb error 1045"),
        "{}",
        stderr(&output)
    );
}
