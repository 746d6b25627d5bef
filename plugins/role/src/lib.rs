//! Role changes of a MariaDB master/master node: promotion (`master`) and demotion
//! (`backup`, `fault`, `stop`). Each plugin crate is one call into this library.
//!
//! The rule: a node is writable exactly while it holds the VIP of at least one `rw`
//! instance. Promotion waits for the relay log to be applied first (judged by GTIDs)
//! and re-checks VIP ownership, so a late, stale `master` run never makes a demoted
//! node writable. Demotion makes the node read-only before anything else.

mod catchup;
mod events;
mod options;

use mmvip_sdk::{
    Call, HookError, Outcome, Transition, describe, failed, sql_admin, sql_read, state, usage, vip,
};

pub use options::{CatchupPolicy, Instance, Options, Role};

/// The value that makes `read_only` (or the configured variable) take effect.
const ON: &str = "ON";
const OFF: &str = "OFF";

/// `notify_master`: catch up, then make the node writable.
pub fn promote(event: Option<&Transition>, call: &Call) -> Outcome {
    let (options, problems) = Options::parse(call);
    if !problems.is_empty() {
        // Promotion is the risky direction: any doubt means no change.
        return Err(usage(format!("not promoting: {}", problems.join("; "))));
    }
    let Some(target) = options.target(event)? else {
        return Err(usage(
            "not promoting: no instance named (pass --instance=NAME or use keepalived's `notify`) and several are configured",
        ));
    };
    record(&target.name, "MASTER");
    if target.role == Role::ReadOnly {
        return Ok(format!(
            "{} is an ro instance: read_only unchanged",
            target.name
        ));
    }
    require_vip(target)?;
    let caught_up = if options.wait {
        match catchup::wait(&options) {
            Ok(summary) => summary,
            Err(catchup::Failure { why }) => match options.on_catchup_timeout {
                CatchupPolicy::StayReadOnly => {
                    mmvip_sdk::error(&format!(
                        "catch-up failed: {why}; staying read-only (on_catchup_timeout = stay-read-only)"
                    ));
                    return Err(failed(format!("catch-up failed: {why}; staying read-only")));
                }
                CatchupPolicy::GoWritable => {
                    mmvip_sdk::error(&format!(
                        "catch-up failed: {why}; GOING WRITABLE ANYWAY (on_catchup_timeout = go-writable): unapplied transactions may conflict"
                    ));
                    format!("catch-up failed ({why}), writable by policy")
                }
            },
        }
    } else {
        "catch-up skipped (wait = no)".to_string()
    };
    // The wait may have been long: the VIP must still be here.
    require_vip(target)?;
    set_and_verify(&options.variable, OFF)?;
    let mut summary = format!("writable for {}; {caught_up}", target.name);
    if options.handle_events {
        summary.push_str(&format!("; {}", events::enable_disabled_by_mmvip()?));
    }
    record("writable", "yes");
    Ok(summary)
}

/// `notify_backup`, `notify_fault`, `notify_stop`: read-only first, then kill clients.
pub fn demote(event: Option<&Transition>, call: &Call, state_word: &str) -> Outcome {
    let (options, problems) = Options::parse(call);
    // Demotion is the safe direction: bad arguments are reported after it is done.
    let target = match options.target(event) {
        Ok(target) => target,
        Err(HookError::Usage(why) | HookError::Failed(why)) => {
            mmvip_sdk::warn(&format!("{why}; demoting anyway"));
            None
        }
    };
    if let Some(target) = target
        && target.role == Role::ReadOnly
    {
        record(&target.name, state_word);
        return finish(
            format!("{} is an ro instance: read_only unchanged", target.name),
            &problems,
        );
    }
    let leaving = target.map(|t| t.name.as_str());
    if let Some(kept) = still_held_rw(&options, leaving) {
        if let Some(target) = target {
            record(&target.name, state_word);
        }
        return finish(
            format!("still holds the rw VIP of {kept}: staying writable"),
            &problems,
        );
    }
    set_and_verify(&options.variable, ON)?;
    // Memory comes after the change: a state that refuses an update must not stand
    // between the node and read-only.
    if let Some(target) = target {
        record(&target.name, state_word);
    }
    record("writable", "no");
    // The hook-run log line carries this summary; keepalived's `notify_*` lines pass
    // no instance or state of their own, so the summary names them.
    let mut summary = match target {
        Some(target) => format!("{} {state_word}: read-only", target.name),
        None => "read-only".to_string(),
    };
    if options.kill {
        summary.push_str(&format!("; {}", kill_clients(&options)?));
    }
    if options.handle_events {
        summary.push_str(&format!("; {}", events::disable_enabled()?));
    }
    finish(summary, &problems)
}

fn finish(summary: String, problems: &[String]) -> Outcome {
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(usage(format!("{summary}, but: {}", problems.join("; "))))
    }
}

fn record(key: &str, value: &str) {
    state::set(key, Some(value));
}

fn require_vip(target: &Instance) -> Result<(), HookError> {
    match vip::holds(&target.vip) {
        Ok(true) => Ok(()),
        Ok(false) => Err(failed(format!(
            "VIP {} of {} is not on this node (stale MASTER notification?): staying read-only",
            target.vip, target.name
        ))),
        Err(why) => Err(failed(format!(
            "cannot tell whether VIP {} is held: {why}; staying read-only",
            target.vip
        ))),
    }
}

/// Another `rw` instance whose VIP this node still holds, if any.
fn still_held_rw<'a>(options: &'a Options, leaving: Option<&str>) -> Option<&'a str> {
    options
        .instances
        .iter()
        .filter(|i| i.role == Role::ReadWrite && Some(i.name.as_str()) != leaving)
        .find(|i| vip::holds(&i.vip) == Ok(true))
        .map(|i| i.name.as_str())
}

/// Sets a global boolean variable and reads it back.
fn set_and_verify(variable: &str, value: &str) -> Result<(), HookError> {
    sql_admin::set_global_variable(variable, value).map_err(|e| {
        failed(format!(
            "SET GLOBAL {variable} = {value} failed: {}",
            describe(&e)
        ))
    })?;
    let now = sql_read::global_variable(variable)
        .map_err(|e| failed(format!("cannot read back {variable}: {}", describe(&e))))?;
    let wanted = if value == ON {
        ["1", "ON"]
    } else {
        ["0", "OFF"]
    };
    match now.as_deref() {
        Some(v) if wanted.iter().any(|w| v.eq_ignore_ascii_case(w)) => Ok(()),
        other => Err(failed(format!(
            "{variable} reads {} after SET {value}",
            other.unwrap_or("NULL")
        ))),
    }
}

/// Kills client connections, sparing replication, the event scheduler, the peer's
/// binlog dump, mmvip's own connection and the configured users.
fn kill_clients(options: &Options) -> Result<String, HookError> {
    let connections = sql_read::connections()
        .map_err(|e| failed(format!("cannot list connections: {}", describe(&e))))?;
    let (mut killed, mut gone, mut errors) = (0, 0, Vec::new());
    for connection in connections {
        let spared = connection.is_self
            || connection.user == "system user"
            || connection.user == "event_scheduler"
            || connection.command.starts_with("Binlog Dump")
            || options.spare_users.contains(&connection.user);
        if spared {
            continue;
        }
        match sql_admin::kill_connection(connection.id) {
            Ok(true) => killed += 1,
            Ok(false) => gone += 1,
            Err(e) => errors.push(format!("{}: {}", connection.id, describe(&e))),
        }
    }
    if errors.is_empty() {
        Ok(format!(
            "killed {killed} client connections ({gone} already gone)"
        ))
    } else {
        Err(failed(format!(
            "read-only, but killing clients failed for {}",
            errors.join(", ")
        )))
    }
}
