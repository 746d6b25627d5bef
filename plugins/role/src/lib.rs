//! Role changes of a MariaDB master/master node: promotion (`master`) and demotion
//! (`backup`, `fault`, `stop`). Each plugin crate is one call into this library.
//!
//! The rule: a node is writable exactly while it holds the VIP of at least one `rw`
//! instance. Promotion waits for the relay log to be applied first (judged by GTIDs)
//! and re-checks VIP ownership, so a late, stale `master` run never makes a demoted
//! node writable. Demotion makes the node read-only before anything else.
//!
//! The decisions are written against [`Node`], so they are unit-tested natively
//! against a scripted node; the plugins run them on the host's capabilities.

mod catchup;
mod events;
mod node;
mod options;

use std::time::Duration;

use mmvip_sdk::{Call, HookError, Outcome, VrrpInstance, VrrpState, failed, usage};

pub use node::{Capabilities, Node};
pub use options::{CatchupPolicy, Options, Settings, parse_duration};

use options::is_read_write;

/// The value that makes `read_only` (or the configured variable) take effect.
const ON: &str = "ON";
const OFF: &str = "OFF";
/// Kept from the hook's budget for what follows the catch-up wait.
const AFTER_CATCHUP: Duration = Duration::from_secs(1);

/// `notify_master`: catch up, then make the node writable.
pub fn promote(call: &Call) -> Outcome {
    promote_on(&mut Capabilities, call)
}

/// `notify_backup`, `notify_fault`, `notify_stop`: read-only first, then kill clients.
pub fn demote(call: &Call, state: VrrpState) -> Outcome {
    demote_on(&mut Capabilities, call, state)
}

pub fn promote_on(node: &mut impl Node, call: &Call) -> Outcome {
    let (options, problems) = Options::parse(call);
    if !problems.is_empty() {
        // Promotion is the risky direction: any doubt means no change.
        return Err(usage(format!("not promoting: {}", problems.join("; "))));
    }
    if let Some(event) = call.event()
        && event.state != VrrpState::Master
    {
        return Err(usage(format!(
            "not promoting: keepalived reported {event}, not MASTER"
        )));
    }
    let Some(target) = options.target(call)? else {
        return Err(usage(
            "not promoting: no instance named (pass --instance=NAME or use keepalived's `notify`) and several are configured",
        ));
    };
    if !call.exclusive() {
        return Err(failed(
            "not promoting: the node lock could not be taken (see the log); staying read-only",
        ));
    }
    node.remember(&target.name, "MASTER");
    if !is_read_write(target) {
        return Ok(format!(
            "{} is an ro instance: read_only unchanged",
            target.name
        ));
    }
    let settings = &options.settings;
    require_vip(node, target)?;
    let caught_up = if settings.wait {
        let budget = call.time_left().saturating_sub(AFTER_CATCHUP);
        let limit = settings.catchup_timeout.min(budget);
        let cut = if limit < settings.catchup_timeout {
            format!(
                " (catchup_timeout {} s cut to {} s by the hook's timeout_ms)",
                settings.catchup_timeout.as_secs_f32(),
                limit.as_secs_f32()
            )
        } else {
            String::new()
        };
        match catchup::wait(node, limit) {
            Ok(summary) => summary,
            Err(catchup::Failure { why, timed_out }) => {
                let cut = if timed_out { cut.as_str() } else { "" };
                match settings.on_catchup_timeout {
                    CatchupPolicy::StayReadOnly => {
                        node.error(&format!(
                        "catch-up failed: {why}{cut}; staying read-only (on_catchup_timeout = stay-read-only)"
                    ));
                        return Err(failed(format!(
                            "catch-up failed: {why}{cut}; staying read-only"
                        )));
                    }
                    CatchupPolicy::GoWritable => {
                        node.error(&format!(
                        "catch-up failed: {why}{cut}; GOING WRITABLE ANYWAY (on_catchup_timeout = go-writable): unapplied transactions may conflict"
                    ));
                        format!("catch-up failed ({why}{cut}), writable by policy")
                    }
                }
            }
        }
    } else {
        "catch-up skipped (wait = no)".to_string()
    };
    // The wait may have been long: the VIP must still be here.
    require_vip(node, target)?;
    set_and_verify(node, &settings.variable, OFF)?;
    let mut summary = format!("writable for {}; {caught_up}", target.name);
    if settings.handle_events {
        summary.push_str(&format!("; {}", events::enable_disabled_by_mmvip(node)?));
    }
    node.remember("writable", "yes");
    Ok(summary)
}

pub fn demote_on(node: &mut impl Node, call: &Call, state: VrrpState) -> Outcome {
    let (options, problems) = Options::parse(call);
    if let Some(event) = call.event()
        && event.state == VrrpState::Master
    {
        // A demotion line that keepalived ran for a MASTER transition is a
        // misconfigured `notify`: acting on it would demote the VIP holder.
        return Err(usage(format!(
            "not demoting: keepalived reported {event} to a {state} hook; use `mmvip master` for MASTER"
        )));
    }
    // Demotion is the safe direction: bad arguments are reported after it is done.
    let target = match options.target(call) {
        Ok(target) => target,
        Err(why) => {
            node.warn(&format!("{why}; demoting anyway"));
            None
        }
    };
    if let Some(target) = target
        && !is_read_write(target)
    {
        node.remember(&target.name, &state.to_string());
        return finish(
            format!("{} is an ro instance: read_only unchanged", target.name),
            &problems,
        );
    }
    let leaving = target.map(|t| t.name.as_str());
    if let Some(kept) = still_held_rw(node, call.instances(), leaving) {
        if let Some(target) = target {
            node.remember(&target.name, &state.to_string());
        }
        return finish(
            format!("still holds the rw VIP of {kept}: staying writable"),
            &problems,
        );
    }
    let settings = &options.settings;
    set_and_verify(node, &settings.variable, ON)?;
    // Memory comes after the change: a state that refuses an update must not stand
    // between the node and read-only.
    if let Some(target) = target {
        node.remember(&target.name, &state.to_string());
    }
    node.remember("writable", "no");
    // The hook-run log line carries this summary; keepalived's `notify_*` lines pass
    // no instance or state of their own, so the summary names them.
    let mut summary = match target {
        Some(target) => format!("{} {state}: read-only", target.name),
        None => "read-only".to_string(),
    };
    if settings.kill {
        summary.push_str(&format!("; {}", kill_clients(node, settings)?));
    }
    if settings.handle_events {
        summary.push_str(&format!("; {}", events::disable_enabled(node)?));
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

fn require_vip(node: &mut impl Node, target: &VrrpInstance) -> Result<(), HookError> {
    match node.holds_vip(&target.vip) {
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
fn still_held_rw<'a>(
    node: &mut impl Node,
    instances: &'a [VrrpInstance],
    leaving: Option<&str>,
) -> Option<&'a str> {
    instances
        .iter()
        .filter(|i| is_read_write(i) && Some(i.name.as_str()) != leaving)
        .find(|i| node.holds_vip(&i.vip) == Ok(true))
        .map(|i| i.name.as_str())
}

/// Sets a global boolean variable and reads it back.
fn set_and_verify(node: &mut impl Node, variable: &str, value: &str) -> Result<(), HookError> {
    node.set_global_variable(variable, value)
        .map_err(|e| failed(format!("SET GLOBAL {variable} = {value} failed: {e}")))?;
    let now = node
        .global_variable(variable)
        .map_err(|e| failed(format!("cannot read back {variable}: {e}")))?;
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
fn kill_clients(node: &mut impl Node, settings: &Settings) -> Result<String, HookError> {
    let connections = node
        .connections()
        .map_err(|e| failed(format!("cannot list connections: {e}")))?;
    let (mut killed, mut gone, mut errors) = (0, 0, Vec::new());
    for connection in connections {
        let spared = connection.is_self
            || connection.user == "system user"
            || connection.user == "event_scheduler"
            || connection.command.starts_with("Binlog Dump")
            || settings.spare_users.contains(&connection.user);
        if spared {
            continue;
        }
        match node.kill_connection(connection.id) {
            Ok(true) => killed += 1,
            Ok(false) => gone += 1,
            Err(e) => errors.push(format!("{}: {e}", connection.id)),
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

#[cfg(test)]
mod tests;
