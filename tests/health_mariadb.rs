//! `mmvip health` against a real, throwaway `mariadbd`.

mod common;

use std::time::{Duration, Instant};

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
