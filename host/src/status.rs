//! `mmvip status`: this node's view on one screen (or as JSON): the VIPs it holds,
//! its MariaDB (read_only, positions, replication), the peer's, the guard's lease,
//! the role hooks' last decisions and the last hook runs.

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::caps::sql::{IoState, SqlState};
use crate::config::{Config, Role};
use crate::log::{Level, Log};
use crate::mariadb::{Endpoint, Session};

/// How long each server may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How many of the last hook runs are shown.
const RECENT_RUNS: usize = 10;
/// How much of the end of the log is read for them.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

/// Gathers the node's status; what cannot be read says why in its place.
pub fn gather(config: &Config, log: &Log) -> Value {
    let mut vip = crate::caps::vip::backend();
    let instances: Vec<Value> = config
        .instances
        .iter()
        .map(|(name, instance)| {
            json!({
                "name": name,
                "vip": instance.vip.to_string(),
                "role": if instance.role == Role::ReadWrite { "rw" } else { "ro" },
                "held_here": vip.holds(&instance.vip.to_string()).ok(),
            })
        })
        .collect();
    let local = match password(
        config.mariadb.password_file.as_deref(),
        "[mariadb] password_file",
    ) {
        Ok(password) => server(Endpoint::local(&config.mariadb, password), true, log),
        Err(why) => json!({ "error": why }),
    };
    let peer = config.peer.as_ref().map(|peer| {
        match password(peer.password_file.as_deref(), "[peer] password_file") {
            Ok(password) => {
                let mut failures = Vec::new();
                for endpoint in Endpoint::peers(peer, password) {
                    let address = endpoint.target.to_string();
                    let answer = server(endpoint, false, log);
                    match answer.get("error") {
                        Some(why) => failures.push(format!("{address}: {}", why_text(why))),
                        None => return json!({ "address": address, "server": answer }),
                    }
                }
                json!({ "error": failures.join("; ") })
            }
            Err(why) => json!({ "error": why }),
        }
    });
    let guard = config.guard.as_ref().map(|_| {
        match crate::guard::control::ask(&config.state_dir, "STATUS", ASK_TIMEOUT) {
            Ok(line) => guard_status(&line),
            Err(why) => json!({ "error": why }),
        }
    });
    json!({
        "instances": instances,
        "mariadb": local,
        "peer": peer,
        "guard": guard,
        "decisions": decisions(config, log),
        "recent_runs": recent_runs(config),
    })
}

fn why_text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

fn password(path: Option<&std::path::Path>, what: &str) -> Result<Option<String>, String> {
    path.map(|path| crate::trust::read_secret(path, what))
        .transpose()
        .map_err(|e| e.to_string())
}

/// What a server says of itself; with `replication`, its replicas too (the local
/// account can read them; the peer's account has no privileges).
fn server(endpoint: Endpoint, replication: bool, log: &Log) -> Value {
    let mut session = Session::new(
        endpoint,
        ASK_TIMEOUT,
        Instant::now() + ASK_TIMEOUT * 3,
        log.clone(),
    );
    let row = match session.rows(
        Level::Debug,
        "SELECT @@GLOBAL.read_only, VERSION(), @@GLOBAL.server_id, @@GLOBAL.gtid_domain_id, @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_slave_pos",
    ) {
        Ok(rows) => rows.into_iter().next().unwrap_or_default(),
        Err(e) => return json!({ "error": crate::caps::sql::describe(&e) }),
    };
    let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let mut answer = json!({
        "read_only": cell(0) != "0",
        "version": cell(1),
        "server_id": cell(2),
        "gtid_domain_id": cell(3),
        "gtid_binlog_pos": cell(4),
        "gtid_slave_pos": cell(5),
    });
    if replication {
        answer["replication"] = match session.replicas() {
            Ok(replicas) => replicas
                .into_iter()
                .map(|r| {
                    json!({
                        "connection": r.connection_name,
                        "io": io_text(r.io_state),
                        "sql": sql_text(r.sql_state),
                        "seconds_behind": r.seconds_behind_master,
                        "gtid_io_pos": r.gtid_io_pos,
                        "last_io_error": r.last_io_error,
                        "last_sql_error": r.last_sql_error,
                    })
                })
                .collect(),
            Err(e) => json!({ "error": crate::caps::sql::describe(&e) }),
        };
    }
    answer
}

fn io_text(state: IoState) -> &'static str {
    match state {
        IoState::Running => "running",
        IoState::Connecting => "connecting",
        IoState::Preparing => "preparing",
        IoState::Stopped => "stopped",
    }
}

fn sql_text(state: SqlState) -> &'static str {
    match state {
        SqlState::Running => "running",
        SqlState::Stopped => "stopped",
    }
}

/// The guard's `STATUS` line: `VI_1=held:1450,vote:db1:2400,gate:open armed=1320
/// healthy=true` (a gate only with several `rw` instances; `armed=off` when no fence
/// waits in mariadbd).
fn guard_status(line: &str) -> Value {
    let mut instances = serde_json::Map::new();
    let mut healthy = None;
    let mut armed = Value::Null;
    for word in line.split_whitespace().skip(1) {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        if key == "healthy" {
            healthy = Some(value == "true");
            continue;
        }
        if key == "armed" {
            armed = json!(value.parse::<u64>().ok());
            continue;
        }
        let mut entry = json!({ "held_ms": null, "vote": null, "gate": null });
        for part in value.split(',').filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split(':').collect();
            match fields.as_slice() {
                ["held", ms] => entry["held_ms"] = json!(ms.parse::<u64>().ok()),
                ["vote", holder, ms] => {
                    entry["vote"] = json!({ "holder": holder, "left_ms": ms.parse::<u64>().ok() })
                }
                ["gate", state @ ("open" | "closed")] => entry["gate"] = json!(state),
                _ => {}
            }
        }
        instances.insert(key.to_string(), entry);
    }
    json!({ "leases": instances, "armed_fence_ms": armed, "healthy": healthy })
}

/// The role hooks' last decisions, from the state file.
fn decisions(config: &Config, log: &Log) -> Value {
    crate::caps::state::StateStore::read(&config.state_dir, log)
        .entries()
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The last hook runs: the log's verdict lines.
fn recent_runs(config: &Config) -> Value {
    let Some(Ok(mut file)) = config.log.file.as_ref().map(std::fs::File::open) else {
        return json!([]);
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let runs: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(" verdict="))
        .collect();
    json!(runs[runs.len().saturating_sub(RECENT_RUNS)..])
}

/// The status for a person.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    for instance in status["instances"].as_array().into_iter().flatten() {
        line(format!(
            "instance {} ({}): VIP {} {}",
            instance["name"].as_str().unwrap_or_default(),
            instance["role"].as_str().unwrap_or_default(),
            instance["vip"].as_str().unwrap_or_default(),
            match instance["held_here"].as_bool() {
                Some(true) => "held here",
                Some(false) => "not here",
                None => "(cannot tell)",
            }
        ));
    }
    line(format!("mariadb: {}", server_line(&status["mariadb"])));
    for replica in status["mariadb"]["replication"]
        .as_array()
        .into_iter()
        .flatten()
    {
        line(format!(
            "  replicating '{}': IO {}, SQL {}, {} s behind, received {}{}",
            replica["connection"].as_str().unwrap_or_default(),
            replica["io"].as_str().unwrap_or_default(),
            replica["sql"].as_str().unwrap_or_default(),
            replica["seconds_behind"]
                .as_u64()
                .map_or("?".to_string(), |s| s.to_string()),
            replica["gtid_io_pos"].as_str().unwrap_or_default(),
            [&replica["last_io_error"], &replica["last_sql_error"]]
                .iter()
                .filter_map(|e| e.as_str().filter(|e| !e.is_empty()))
                .map(|e| format!("; error: {e}"))
                .collect::<String>()
        ));
    }
    if status["mariadb"]["replication"]
        .as_array()
        .is_some_and(Vec::is_empty)
    {
        line("  replicating from nobody".into());
    }
    match &status["peer"] {
        Value::Null => line("peer: no [peer] configured".into()),
        peer if peer.get("error").is_some() => line(format!(
            "peer: does not answer ({})",
            why_text(&peer["error"])
        )),
        peer => line(format!(
            "peer {}: {}",
            peer["address"].as_str().unwrap_or_default(),
            server_line(&peer["server"])
        )),
    }
    match &status["guard"] {
        Value::Null => line("guard: not configured (no [guard])".into()),
        guard if guard.get("error").is_some() => {
            line(format!("guard: {}", why_text(&guard["error"])))
        }
        guard => {
            for (name, lease) in guard["leases"].as_object().into_iter().flatten() {
                let held = lease["held_ms"]
                    .as_u64()
                    .map_or("lease not held here".to_string(), |ms| {
                        format!("lease held here ({ms} ms left)")
                    });
                let vote = match lease["vote"]["holder"].as_str() {
                    Some(holder) => format!(
                        "this node's vote with {holder} ({} ms)",
                        lease["vote"]["left_ms"].as_u64().unwrap_or(0)
                    ),
                    None => "this node's vote free".to_string(),
                };
                let gate = match lease["gate"].as_str() {
                    Some("open") => "; gate open: its VIP reaches MariaDB here",
                    Some(_) => "; gate closed: its VIP reaches nothing here",
                    None => "",
                };
                line(format!("guard {name}: {held}; {vote}{gate}"));
            }
            let holds_a_lease = guard["leases"]
                .as_object()
                .into_iter()
                .flatten()
                .any(|(_, lease)| lease["held_ms"].is_u64());
            match (guard["armed_fence_ms"].as_u64(), holds_a_lease) {
                (Some(ms), _) => line(format!(
                    "guard: fence armed in mariadbd (read_only = ON in {ms} ms unless renewed)"
                )),
                (None, true) => line(
                    "guard: NO fence armed in mariadbd although a lease is held (see the guard's log)"
                        .into(),
                ),
                (None, false) => {}
            }
            line(format!(
                "guard: local MariaDB {}",
                if guard["healthy"].as_bool() == Some(true) {
                    "healthy"
                } else {
                    "unhealthy"
                }
            ));
        }
    }
    if let Some(why) = status["decisions"][crate::cli::DAMPED_KEY].as_str() {
        line(format!(
            "PROMOTION HELD BACK ({why}); `mmvip ack` allows it again"
        ));
    }
    if let Some(decisions) = status["decisions"].as_object().filter(|d| !d.is_empty()) {
        line("last decisions:".into());
        for (key, value) in decisions {
            line(format!("  {key}: {}", value.as_str().unwrap_or_default()));
        }
    }
    line("last hook runs:".into());
    for run in status["recent_runs"].as_array().into_iter().flatten() {
        line(format!("  {}", run.as_str().unwrap_or_default()));
    }
    out
}

fn server_line(server: &Value) -> String {
    if let Some(why) = server.get("error") {
        return format!("does not answer ({})", why_text(why));
    }
    format!(
        "{}, server_id {}, domain {}, binlog at {}, applied {} (MariaDB {})",
        if server["read_only"].as_bool() == Some(false) {
            "WRITABLE"
        } else {
            "read-only"
        },
        server["server_id"].as_str().unwrap_or_default(),
        server["gtid_domain_id"].as_str().unwrap_or_default(),
        or_nothing(server["gtid_binlog_pos"].as_str()),
        or_nothing(server["gtid_slave_pos"].as_str()),
        server["version"].as_str().unwrap_or_default(),
    )
}

fn or_nothing(position: Option<&str>) -> &str {
    position.filter(|p| !p.is_empty()).unwrap_or("nothing")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_guards_status_line_reads_into_leases_and_health() {
        let status = guard_status(
            "STATUS VI_1=held:1450,vote:db1:2400,gate:open VI_2=gate:closed healthy=true",
        );
        assert_eq!(status["leases"]["VI_1"]["held_ms"], 1450);
        assert_eq!(status["leases"]["VI_1"]["vote"]["holder"], "db1");
        assert_eq!(status["leases"]["VI_1"]["gate"], "open");
        assert_eq!(status["leases"]["VI_2"]["held_ms"], Value::Null);
        assert_eq!(status["leases"]["VI_2"]["gate"], "closed");
        let single = guard_status("STATUS VI_1=held:1450 armed=1320 healthy=true");
        assert_eq!(single["leases"]["VI_1"]["gate"], Value::Null);
        assert_eq!(single["armed_fence_ms"], 1320);
        assert_eq!(status["armed_fence_ms"], Value::Null);
        let shown = render(&json!({ "guard": single }));
        assert!(
            shown.contains("fence armed in mariadbd (read_only = ON in 1320 ms"),
            "{shown}"
        );
        let unarmed = render(
            &json!({ "guard": guard_status("STATUS VI_1=held:1450 armed=off healthy=true") }),
        );
        assert!(unarmed.contains("NO fence armed"), "{unarmed}");
        assert_eq!(status["healthy"], true);
    }

    proptest! {
        #![proptest_config(crate::proptest_config(2000))]

        /// Whatever the socket answers, `status` shows it without a panic, and a
        /// number it cannot read is shown as unknown rather than as 0.
        #[test]
        fn any_guard_status_line_is_shown(
            words in prop::collection::vec(prop_oneof![
                "[A-Z_0-9]{1,5}=((held|vote):[a-z0-9:]{0,12},?){0,3}",
                Just("healthy=true".to_string()),
                any::<String>(),
            ], 0..6),
        ) {
            let line = format!("STATUS {}", words.join(" "));
            let status = guard_status(&line);
            let leases = status["leases"].as_object().unwrap();
            for (name, entry) in leases {
                let Some(held) = entry["held_ms"].as_u64() else {
                    prop_assert!(entry["held_ms"].is_null());
                    continue;
                };
                // The instance's last word says so in a part it can read.
                let word = line
                    .split_whitespace()
                    .rev()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .unwrap();
                let said = word.split(',').filter_map(|part| part.strip_prefix("held:"));
                prop_assert!(said.filter_map(|ms| ms.parse::<u64>().ok()).any(|ms| ms == held), "{}", line);
            }
        }
    }
}
