//! Where log entries go besides `log_file`: systemd's journal (its native protocol,
//! structured fields) and syslog. Read back from sockets the test listens on where
//! journald and syslog would: the same datagrams they would receive.

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{Site, exit_code, stderr};

/// Listening sockets standing in for journald and syslog.
struct Listeners {
    journal: UnixDatagram,
    syslog: UnixDatagram,
}

fn site_logging_everywhere() -> (Site, Listeners) {
    let site = Site::new();
    let journal = UnixDatagram::bind(site.path("journal.sock")).unwrap();
    let syslog = UnixDatagram::bind(site.path("syslog.sock")).unwrap();
    for socket in [&journal, &syslog] {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }
    let (journal_path, syslog_path) = (site.path("journal.sock"), site.path("syslog.sock"));
    let site = site
        .with_top("log = [\"file\", \"journal\", \"syslog\"]")
        .with_top(&format!("journal_socket = \"{}\"", journal_path.display()))
        .with_top(&format!("syslog_socket = \"{}\"", syslog_path.display()))
        .with_config("\n[instances.VI_1]\nvip = \"10.200.0.1\"\n");
    site.install_builtins();
    (site, Listeners { journal, syslog })
}

/// Parses one datagram of the journal's native protocol, both field forms.
fn journal_fields(datagram: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let end = rest.iter().position(|b| *b == b'\n').expect("a field ends");
        let head = &rest[..end];
        if let Some(eq) = head.iter().position(|b| *b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&head[..eq]).into_owned(),
                String::from_utf8_lossy(&head[eq + 1..]).into_owned(),
            );
            rest = &rest[end + 1..];
        } else {
            let length = u64::from_le_bytes(rest[end + 1..end + 9].try_into().unwrap()) as usize;
            let value = &rest[end + 9..end + 9 + length];
            fields.insert(
                String::from_utf8_lossy(head).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            );
            assert_eq!(rest[end + 9 + length], b'\n');
            rest = &rest[end + 10 + length..];
        }
    }
    fields
}

fn receive_all(socket: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let mut buffer = vec![0u8; 65536];
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while let Ok(length) = socket.recv(&mut buffer) {
        datagrams.push(buffer[..length].to_vec());
    }
    datagrams
}

#[test]
fn a_hook_run_reaches_the_journal_with_its_fields_and_syslog_and_the_file() {
    let (site, listeners) = site_logging_everywhere();
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));

    let entries: Vec<_> = receive_all(&listeners.journal)
        .iter()
        .map(|d| journal_fields(d))
        .collect();
    let verdict = entries
        .iter()
        .find(|e| e.contains_key("MMVIP_VERDICT"))
        .unwrap_or_else(|| panic!("no verdict entry: {entries:?}"));
    assert_eq!(verdict["MMVIP_PLUGIN"], "failover");
    assert_eq!(verdict["MMVIP_VERDICT"], "pass");
    assert_eq!(verdict["PRIORITY"], "6");
    assert_eq!(verdict["SYSLOG_IDENTIFIER"], "mmvip");
    assert!(!verdict["MESSAGE"].is_empty());
    assert!(
        verdict["MMVIP_DURATION_MS"].parse::<f64>().unwrap() > 0.0,
        "{verdict:?}"
    );

    let syslog: Vec<String> = receive_all(&listeners.syslog)
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    let line = syslog
        .iter()
        .find(|line| line.contains("verdict=pass"))
        .unwrap_or_else(|| panic!("{syslog:?}"));
    // Facility daemon (3), severity info (6); syslog adds the time.
    assert!(line.starts_with("<30>mmvip["), "{line}");
    assert!(line.contains("]: plugin=failover level=info"), "{line}");

    assert!(site.log_text().contains("plugin=failover"));
}

#[test]
fn notify_entries_carry_instance_and_state_and_multi_line_messages_survive() {
    let (site, listeners) = site_logging_everywhere();
    // The notify plugin logs what keepalived passed; a state word with a newline
    // in it is refused, and the refusal (holding it) must still be one entry.
    let output = site.mmvip(&["notify", "INSTANCE", "VI_1", "MASTER", "100"]);
    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let entries: Vec<_> = receive_all(&listeners.journal)
        .iter()
        .map(|d| journal_fields(d))
        .collect();
    let verdict = entries
        .iter()
        .find(|e| e.contains_key("MMVIP_VERDICT"))
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(verdict["MMVIP_INSTANCE"], "VI_1");
    assert_eq!(verdict["MMVIP_STATE"], "MASTER");

    let output = site.mmvip(&["notify", "INSTANCE", "VI_1", "MAS\nTER", "100"]);
    assert_ne!(exit_code(&output), 0);
    let entries: Vec<_> = receive_all(&listeners.journal)
        .iter()
        .map(|d| journal_fields(d))
        .collect();
    assert!(
        entries
            .iter()
            .any(|e| e.values().any(|value| value.contains("MAS\nTER"))),
        "{entries:?}"
    );
}

#[test]
fn a_journal_that_is_not_there_sends_entries_to_the_other_targets() {
    let site = Site::new().with_top("log = [\"journal\"]").with_path(
        "journal_socket",
        std::path::Path::new("/nonexistent/journal.sock"),
    );
    site.install_builtins();
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 0);
    // No target took the entry: it went to stderr rather than nowhere.
    assert!(
        stderr(&output).contains("verdict=pass"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unknown_log_target_is_a_config_error() {
    let site = Site::new().with_top("log = [\"file\", \"kafka\"]");
    let output = site.mmvip(&["failover"]);
    assert_eq!(exit_code(&output), 2);
    assert!(
        stderr(&output).contains("`kafka` is not a log target"),
        "{}",
        stderr(&output)
    );
}
