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
mod damping;
mod events;
mod gtid;
mod node;
mod options;

use std::time::Duration;

use mmvip_sdk::lease::Answer as LeaseAnswer;
use mmvip_sdk::sql::ClientConnection;
use mmvip_sdk::{Call, HookError, Outcome, VrrpInstance, VrrpState, failed, usage};

pub use damping::{CHANGES_KEY, DAMPED_KEY};
pub use node::{Capabilities, Node};
pub use options::{CatchupPolicy, Options, Settings, parse_duration};

use options::is_read_write;

/// The value that makes `read_only` (or the configured variable) take effect.
const ON: &str = "ON";
const OFF: &str = "OFF";
/// Kept from the hook's budget for what follows the catch-up wait.
const AFTER_CATCHUP: Duration = Duration::from_secs(1);
/// `read_only=ON` waits behind uncommitted writes and LOCK TABLES. It gets
/// [`FIRST_TRY`]; then the sessions evidently holding it up (an open transaction, a
/// running statement) are killed and it gets [`SECOND_TRY`]; then every client
/// session that could hold a table lock (an idle LOCK TABLES shows nothing else) is
/// killed and it gets [`LAST_TRY`]. Demotion ends within about a second.
const FIRST_TRY: Duration = Duration::from_millis(300);
const SECOND_TRY: Duration = Duration::from_millis(300);
const LAST_TRY: Duration = Duration::from_millis(400);
/// How long a demotion waits for its own instance's VIP to go, before taking the
/// notification for a stale one.
const VIP_GONE_WAIT: Duration = Duration::from_millis(300);
const VIP_POLL: Duration = Duration::from_millis(20);
/// How long a demotion that keeps another rw VIP waits for that instance's lease.
const KEPT_LEASE_WAIT: Duration = Duration::from_secs(1);
/// `read_only=OFF` waits for nothing; this only bounds a server that does not answer.
const SET_OFF_WITHIN: Duration = Duration::from_secs(1);

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
    // Only a change of role counts: a second rw instance on a writer changes none.
    let changes_role = !is_writable(node, &settings.variable);
    if changes_role && let Err(why) = damping::allows_promotion(node, settings) {
        node.error(&why);
        return Err(failed(format!("{why}; staying read-only")));
    }
    // The lease first, then the catch-up: once this node holds it the peer cannot
    // write, so what the catch-up reads of the peer is final. Caught up first and
    // leased after, a node that waited seconds for the lease (its own isolation just
    // healing) went writable on a catch-up from before the peer's last writes.
    let answer = node.acquire_lease(&target.name, settings.lease_timeout);
    let guarded = matches!(answer, LeaseAnswer::Held(_));
    let lease = match answer {
        LeaseAnswer::Held(left) => {
            format!("; write lease held ({left} ms left, renewed by the guard)")
        }
        LeaseAnswer::NotUsed => String::new(),
        LeaseAnswer::Refused(why) => {
            return Err(failed(format!(
                "no write lease for {}: {why}; staying read-only",
                target.name
            )));
        }
    };
    let caught_up = if settings.wait {
        let budget = call.time_left().saturating_sub(AFTER_CATCHUP);
        let limit = settings.catchup_timeout.min(budget);
        let bounds = catchup::Bounds {
            limit,
            peer_read_only: settings.peer_read_only_timeout,
        };
        let cut = if limit < settings.catchup_timeout {
            format!(
                " (catchup_timeout {} s cut to {} s by the hook's timeout_ms)",
                settings.catchup_timeout.as_secs_f32(),
                limit.as_secs_f32()
            )
        } else {
            String::new()
        };
        // Several rw instances under a guard: each VIP has a gate (host/src/guard).
        let gated = guarded && call.instances().iter().filter(|i| is_read_write(i)).count() > 1;
        match catchup::wait(node, &bounds, &target.vip, guarded, gated) {
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
    set_and_verify(node, &settings.variable, OFF, SET_OFF_WITHIN)?;
    let mut summary = format!("writable for {}; {caught_up}{lease}", target.name);
    if settings.handle_events {
        summary.push_str(&format!("; {}", events::enable_disabled_by_mmvip(node)?));
    }
    node.remember("writable", "yes");
    if changes_role {
        damping::record_change(node);
    }
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
    if options.fence {
        return fence(node, &options, &problems);
    }
    // Demotion is the safe direction: bad arguments are reported after it is done.
    let target = match options.target(call) {
        Ok(target) => target,
        Err(why) => {
            node.warn(&format!("{why}; demoting anyway"));
            None
        }
    };
    if let Some(target) = target {
        node.remember(&target.name, &state.to_string());
        if !is_read_write(target) {
            return finish(
                format!("{} is an ro instance: read_only unchanged", target.name),
                &problems,
            );
        }
        // keepalived removes an instance's VIP before it runs the demotion hooks: a
        // VIP that stays is one keepalived took back since (the notification is
        // stale), and its holder must stay writable.
        if still_held_after(node, &target.vip, VIP_GONE_WAIT) && keeps_lease(node, &target.name) {
            return finish(
                format!(
                    "{} {state}: VIP {} is still on this node (a stale notification: keepalived took it back); staying writable",
                    target.name, target.vip
                ),
                &problems,
            );
        }
    }
    let leaving = target.map(|t| t.name.as_str());
    if let Some(kept) = still_held_rw(node, call.instances(), leaving)
        && keeps_lease(node, kept)
    {
        let mut summary = format!("still holds the rw VIP of {kept}: staying writable");
        if let Some(target) = target {
            // Sessions that came in through the departing VIP belong to clients now
            // sent to the peer; left open (a transaction holding row locks) they
            // would stall replication of the peer's writes. Killed before the lease
            // goes, so that none of them commits here once the peer may write.
            let spared = Spared::learn(node, &options.settings);
            let killed = kill_through_vip(node, &options.settings, &spared, &target.vip);
            release_lease(node, &target.name);
            summary.push_str(&format!("; {}", killed?));
        }
        return finish(summary, &problems);
    }
    let settings = &options.settings;
    let spared = Spared::learn(node, settings);
    let blockers = make_read_only(node, &settings.variable, &spared)?;
    note_read_only(node);
    // Read-only now: the peer may take the lease at once instead of waiting it out.
    if let Some(target) = target {
        release_lease(node, &target.name);
    }
    // The hook-run log line carries this summary; keepalived's `notify_*` lines pass
    // no instance or state of their own, so the summary names them.
    let mut summary = match target {
        Some(target) => format!("{} {state}: read-only", target.name),
        None => "read-only".to_string(),
    };
    if !blockers.is_empty() {
        summary.push_str(&format!(
            " (blocked for {} ms: killed {} sessions holding it up: {})",
            FIRST_TRY.as_millis(),
            blockers.len(),
            blockers.join(", ")
        ));
    }
    summary.push_str(&format!("; {}", kill_clients(node, settings, &spared)?));
    if settings.handle_events {
        summary.push_str(&format!("; {}", events::disable_enabled(node)?));
    }
    finish(summary, &problems)
}

/// The guard's unconditional demotion: it lost the write lease, or keepalived died
/// with the VIP on the node. VIPs and instances do not matter here.
fn fence(node: &mut impl Node, options: &Options, problems: &[String]) -> Outcome {
    let settings = &options.settings;
    let spared = Spared::learn(node, settings);
    let blockers = make_read_only(node, &settings.variable, &spared)?;
    note_read_only(node);
    let mut summary = "fenced: read-only".to_string();
    if !blockers.is_empty() {
        summary.push_str(&format!(" (killed {})", blockers.join(", ")));
    }
    summary.push_str(&format!("; {}", kill_clients(node, settings, &spared)?));
    finish(summary, problems)
}

/// Keeps that the node is read-only now; leaving writable is a role change.
fn note_read_only(node: &mut impl Node) {
    if node.recall("writable").as_deref() == Some("yes") {
        damping::record_change(node);
    }
    node.remember("writable", "no");
}

/// Whether the server is writable now; an unreadable answer counts as not.
fn is_writable(node: &mut impl Node, variable: &str) -> bool {
    matches!(node.global_variable(variable), Ok(Some(v)) if v == "0" || v.eq_ignore_ascii_case(OFF))
}

fn release_lease(node: &mut impl Node, instance: &str) {
    if let LeaseAnswer::Refused(why) = node.release_lease(instance) {
        node.warn(&format!(
            "could not give back the write lease of {instance} ({why}); the peer waits for it to expire"
        ));
    }
}

/// Whether `vip` is still here after waiting up to `wait` for it to go.
fn still_held_after(node: &mut impl Node, vip: &str, wait: Duration) -> bool {
    let started = node.now();
    loop {
        if node.holds_vip(vip) != Ok(true) {
            return false;
        }
        if node.now().duration_since(started) >= wait {
            return true;
        }
        node.pause(VIP_POLL);
    }
}

/// Who is never killed: replication (this node's own replication accounts, the
/// configured ones, threads and binlog dumps), the event scheduler, mmvip itself and
/// `spare_users`; and who can write despite read_only.
struct Spared {
    users: Vec<String>,
    privileged: Vec<String>,
}

impl Spared {
    fn learn(node: &mut impl Node, settings: &Settings) -> Spared {
        let mut users = settings.spare_users.clone();
        users.extend(settings.replication_users.iter().cloned());
        match node.replicas() {
            // In a ring the peer replicates as the account this node replicates as.
            Ok(replicas) => users.extend(
                replicas
                    .into_iter()
                    .map(|r| r.master_user)
                    .filter(|u| !u.is_empty()),
            ),
            Err(e) => node.warn(&format!(
                "cannot read this node's replication accounts ({e}); sparing only replication threads, binlog dumps and replication_users"
            )),
        }
        let privileged = node.privileged_users().unwrap_or_else(|e| {
            node.warn(&format!(
                "cannot list accounts that write through read_only ({e})"
            ));
            Vec::new()
        });
        Spared { users, privileged }
    }

    fn spares(&self, connection: &ClientConnection) -> bool {
        connection.is_self
            || connection.user == "system user"
            || connection.user == "event_scheduler"
            || connection.command.starts_with("Binlog Dump")
            || self.users.contains(&connection.user)
    }

    fn is_privileged(&self, connection: &ClientConnection) -> bool {
        self.privileged.contains(&connection.user)
    }
}

/// Sets the variable ON within about a second whatever holds it up (see
/// [`FIRST_TRY`]). Returns the sessions killed to get through.
fn make_read_only(
    node: &mut impl Node,
    variable: &str,
    spared: &Spared,
) -> Result<Vec<String>, HookError> {
    let set = |node: &mut _, within| {
        Node::set_global_variable(node, variable, ON, within)
            .map_err(|e| failed(format!("SET GLOBAL {variable} = ON failed: {e}")))
    };
    let mut killed = Vec::new();
    let evident = |c: &ClientConnection| c.in_transaction || c.command != "Sleep";
    let mut took = set(node, FIRST_TRY)?;
    for (tries, within, blocking) in [
        (
            1,
            SECOND_TRY,
            &evident as &dyn Fn(&ClientConnection) -> bool,
        ),
        (2, LAST_TRY, &|_: &ClientConnection| true),
    ] {
        if took {
            break;
        }
        let connections = node
            .connections()
            .map_err(|e| failed(format!("cannot list connections: {e}")))?;
        for connection in connections
            .iter()
            .filter(|c| !spared.spares(c) && blocking(c))
        {
            if let Ok(true) = node.kill_connection(connection.id) {
                killed.push(format!("{} ({})", connection.id, connection.user));
            }
        }
        took = set(node, within)?;
        if !took && tries == 2 {
            return Err(failed(format!(
                "{variable} could not be set ON within {} ms, even after killing {} client sessions",
                (FIRST_TRY + SECOND_TRY + LAST_TRY).as_millis(),
                killed.len()
            )));
        }
    }
    verify(node, variable, ON)?;
    Ok(killed)
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

/// Whether this node holds (or, with a guard, can renew) the write lease of `kept`:
/// its VIP alone does not make the node a writer (its promotion may have been
/// refused the lease or not have run yet, or the guard lost the lease since).
fn keeps_lease(node: &mut impl Node, kept: &str) -> bool {
    match node.acquire_lease(kept, KEPT_LEASE_WAIT) {
        LeaseAnswer::Held(_) | LeaseAnswer::NotUsed => true,
        LeaseAnswer::Refused(why) => {
            node.warn(&format!(
                "still holds the rw VIP of {kept} but not its write lease ({why}): going read-only"
            ));
            false
        }
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

/// Sets a global boolean variable (within `within`) and reads it back.
fn set_and_verify(
    node: &mut impl Node,
    variable: &str,
    value: &str,
    within: Duration,
) -> Result<(), HookError> {
    let took = node
        .set_global_variable(variable, value, within)
        .map_err(|e| failed(format!("SET GLOBAL {variable} = {value} failed: {e}")))?;
    if !took {
        return Err(failed(format!(
            "SET GLOBAL {variable} = {value} did not take effect within {} ms",
            within.as_millis()
        )));
    }
    verify(node, variable, value)
}

fn verify(node: &mut impl Node, variable: &str, value: &str) -> Result<(), HookError> {
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

/// Kills the (unspared) sessions of clients connected through `vip`.
fn kill_through_vip(
    node: &mut impl Node,
    settings: &Settings,
    spared: &Spared,
    vip: &str,
) -> Result<String, HookError> {
    if !settings.kill {
        return Ok("kill = false: sessions through its VIP left open".into());
    }
    let clients = node
        .vip_clients(vip)
        .map_err(|why| failed(format!("cannot list the clients of VIP {vip}: {why}")))?;
    let connections = node
        .connections()
        .map_err(|e| failed(format!("cannot list connections: {e}")))?;
    let mut killed = Vec::new();
    for connection in connections
        .iter()
        .filter(|c| !spared.spares(c) && clients.contains(&c.host))
    {
        match node.kill_connection(connection.id) {
            Ok(true) => killed.push(connection.id.to_string()),
            Ok(false) => {}
            Err(e) => return Err(failed(format!("killing session {}: {e}", connection.id))),
        }
    }
    Ok(format!(
        "killed {} sessions that came in through VIP {vip}{}",
        killed.len(),
        if killed.is_empty() {
            String::new()
        } else {
            format!(" ({})", killed.join(", "))
        }
    ))
}

/// Kills client connections once the node is read-only: every one not spared with
/// `kill` on, else only those of accounts that can write through read_only.
fn kill_clients(
    node: &mut impl Node,
    settings: &Settings,
    spared: &Spared,
) -> Result<String, HookError> {
    let connections = node
        .connections()
        .map_err(|e| failed(format!("cannot list connections: {e}")))?;
    let (mut killed, mut privileged, mut gone, mut errors) = (0, Vec::new(), 0, Vec::new());
    for connection in connections.iter().filter(|c| !spared.spares(c)) {
        let writes_anyway = spared.is_privileged(connection);
        if !settings.kill && !writes_anyway {
            continue;
        }
        match node.kill_connection(connection.id) {
            Ok(true) => {
                killed += 1;
                if writes_anyway {
                    privileged.push(format!("{} ({})", connection.id, connection.user));
                }
            }
            Ok(false) => gone += 1,
            Err(e) => errors.push(format!("{}: {e}", connection.id)),
        }
    }
    if !errors.is_empty() {
        return Err(failed(format!(
            "read-only, but killing clients failed for {}",
            errors.join(", ")
        )));
    }
    let mut summary = format!("killed {killed} client connections ({gone} already gone)");
    if !privileged.is_empty() {
        summary.push_str(&format!(
            "; {} of them could write through read_only: {}",
            privileged.len(),
            privileged.join(", ")
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests;
