//! The MariaDB driver's text parsing through `shims/regex`, the workspace's ASCII-only
//! stand-in for the `regex` crate: server versions, TIME values and PEM keys parse as
//! before, and no pattern in `mysql_common` goes unreviewed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mysql_common::Value;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::crypto::der::{PubKeyFileType, pem_to_der};
use mysql_common::packets::HandshakePacket;
use mysql_common::value::convert::from_value_opt;

type Version = Option<(u16, u16, u16)>;

/// What the driver makes of a server's version string: (server, MariaDB) versions.
fn parsed_versions(server_version: &str) -> (Version, Version) {
    let handshake = HandshakePacket::new(
        10,
        server_version.as_bytes(),
        1,
        [0; 8],
        None::<&[u8]>,
        CapabilityFlags::empty(),
        0,
        StatusFlags::empty(),
        None::<&[u8]>,
    );
    (
        handshake.server_version_parsed(),
        handshake.maria_db_server_version_parsed(),
    )
}

#[test]
fn server_versions_parse_as_the_driver_expects() {
    let cases = [
        // MariaDB before 11 prefixes the MySQL 5.5.5 it claims to be compatible with.
        (
            "5.5.5-10.11.19-MariaDB-0+deb12u1",
            Some((5, 5, 5)),
            Some((10, 11, 19)),
        ),
        ("11.4.2-MariaDB-log", Some((11, 4, 2)), Some((11, 4, 2))),
        ("8.0.36-0ubuntu0.22.04.1", Some((8, 0, 36)), None),
        ("8.4.0", Some((8, 4, 0)), None),
        ("not a version", None, None),
        // Arabic-Indic digits: the Unicode regex accepted these and the driver's
        // integer parser then panicked mid-handshake.
        ("١٠.١١.١٩-MariaDB", None, None),
    ];
    for (text, server, mariadb) in cases {
        assert_eq!(parsed_versions(text), (server, mariadb), "{text}");
    }
}

#[test]
fn time_values_parse_as_the_driver_expects() {
    let parsed = |text: &str| from_value_opt::<Duration>(Value::Bytes(text.into())).ok();
    assert_eq!(parsed("12:34:56"), Some(Duration::from_secs(45_296)));
    assert_eq!(parsed("838:59:59"), Some(Duration::from_secs(3_020_399)));
    assert_eq!(
        parsed("00:00:01.250000"),
        Some(Duration::from_millis(1_250))
    );
    assert_eq!(
        parsed("12:34:56.5"),
        Some(Duration::new(45_296, 500_000_000))
    );
    for refused in ["12:60:00", "ab:cd:ef", "12-34-56", "-01:00:00", "١٢:٣٤:٥٦"] {
        assert_eq!(parsed(refused), None, "{refused}");
    }
}

#[test]
fn pem_keys_are_found_by_their_armour() {
    let pkcs8 = "-----BEGIN PUBLIC KEY-----\nAAEC\nAwQF\n-----END PUBLIC KEY-----\n";
    assert_eq!(
        pem_to_der(pkcs8),
        (vec![0, 1, 2, 3, 4, 5], PubKeyFileType::Pkcs8)
    );
    let pkcs1 = "-----BEGIN RSA PUBLIC KEY-----\r\nBgcI\r\n-----END RSA PUBLIC KEY-----";
    assert_eq!(pem_to_der(pkcs1), (vec![6, 7, 8], PubKeyFileType::Pkcs1));
}

/// Every pattern `mysql_common` compiles, as written in its source (whitespace
/// collapsed), each checked to mean the same with ASCII classes as with Unicode ones
/// for the text it parses.
const REVIEWED_PATTERNS: &[&str] = &[
    r#"r"^(?:5.5.5-)?(\d{1,2})\.(\d{1,2})\.(\d{1,3})-MariaDB""#,
    r#"r"^(\d{1,2})\.(\d{1,2})\.(\d{1,3})(.*)""#,
    r#"r"^\d{4}-\d{2}-\d{2}$""#,
    r#"r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$""#,
    r#"r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{1,6}$""#,
    r#"r"^\d{2}:[0-5]\d:[0-5]\d$""#,
    r#"r"^\d{2}:[0-5]\d:[0-5]\d\.\d{1,6}$""#,
    r#"r"^[0-8]\d\d:[0-5]\d:[0-5]\d$""#,
    r#"r"^[0-8]\d\d:[0-5]\d:[0-5]\d\.\d{1,6}$""#,
    r#""-----BEGIN RSA PUBLIC KEY-----\ ([^-]*)\ -----END RSA PUBLIC KEY-----","#,
    r#""-----BEGIN PUBLIC KEY-----\ ([^-]*)\ -----END PUBLIC KEY-----","#,
];

#[test]
fn every_driver_pattern_is_reviewed() {
    let source = mysql_common_source();
    let mut found = Vec::new();
    collect_patterns(&source, &mut found);
    assert!(
        !found.is_empty(),
        "no Regex::new in {}: did mysql_common stop using regex? then drop shims/regex",
        source.display()
    );
    for pattern in &found {
        assert!(
            REVIEWED_PATTERNS.contains(&pattern.as_str()),
            "mysql_common compiles a pattern shims/regex was not checked against: {pattern}\n\
             check that ASCII classes suit it, then add it to REVIEWED_PATTERNS"
        );
    }
}

/// The `src` directory of the `mysql_common` this workspace builds, from Cargo itself.
fn mysql_common_source() -> PathBuf {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let manifest = metadata["packages"]
        .as_array()
        .expect("a package list")
        .iter()
        .find(|package| package["name"] == "mysql_common")
        .and_then(|package| package["manifest_path"].as_str())
        .expect("mysql_common is a dependency");
    Path::new(manifest).with_file_name("src")
}

/// Appends the argument of each `Regex::new(...).unwrap()` under `dir`.
fn collect_patterns(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("readable source") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            collect_patterns(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable source file");
            for call in text.split("Regex::new(").skip(1) {
                let (argument, _) = call
                    .split_once(".unwrap()")
                    .unwrap_or_else(|| panic!("unexpected Regex::new form in {path:?}"));
                let argument = argument.trim_end().trim_end_matches(')');
                found.push(argument.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
}
