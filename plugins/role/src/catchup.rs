//! Catch-up before promotion. The target is what the peer acknowledged, whenever the
//! peer can say so: its own `gtid_binlog_pos` (without this node's domain), read once
//! it is read-only, so nothing it acknowledged is left behind. When the peer does not
//! answer on any address, the target is what this node received (`Gtid_IO_Pos`), and
//! the log says the peer's final position was unknown. Waits use `MASTER_GTID_WAIT`,
//! in slices between which the VIP is checked, all bounded by `catchup_timeout`.

use std::time::Duration;

use mmvip_sdk::peer::PeerStatus;
use mmvip_sdk::sql::{Error as SqlError, IoState, ReplicaStatus, SqlState};

use crate::gtid::{self, Gtid};
use crate::node::Node;

/// Longest single `MASTER_GTID_WAIT`: the VIP is checked between slices.
const SLICE: Duration = Duration::from_secs(1);
/// How often the peer is asked again while it is still writable.
const PEER_POLL: Duration = Duration::from_millis(100);

/// Why the node is not known to be caught up.
#[derive(Debug)]
pub struct Failure {
    pub why: String,
    /// The wait ran out of time (rather than finding something wrong).
    pub timed_out: bool,
}

fn fail(why: impl Into<String>) -> Failure {
    Failure {
        why: why.into(),
        timed_out: false,
    }
}

/// How long to wait for what.
pub struct Bounds {
    /// The whole catch-up.
    pub limit: Duration,
    /// Waiting for the peer to become read-only.
    pub peer_read_only: Duration,
}

/// Waits until this node has applied what the peer acknowledged (or, the peer being
/// silent, what it received). Between waits it checks that `vip` is still here: if
/// it went away, the promotion is off. `guarded`: a guard runs on this node, and
/// resumes replication that this promotion pauses. `gated`: see
/// [`peer_final_position`].
pub fn wait(
    node: &mut impl Node,
    bounds: &Bounds,
    vip: &str,
    guarded: bool,
    gated: bool,
) -> Result<String, Failure> {
    let started = node.now();
    let own_domain: u32 = node
        .global_variable("gtid_domain_id")
        .map_err(|e| fail(format!("cannot read gtid_domain_id: {e}")))?
        .unwrap_or_default()
        .parse()
        .map_err(|_| fail("gtid_domain_id is not a number"))?;
    let replicas = node
        .replicas()
        .map_err(|e| fail(format!("cannot read replication status: {e}")))?;
    if replicas.is_empty() {
        return Err(fail(
            "this node does not replicate from anyone (SHOW ALL SLAVES STATUS is empty), so the peer's writes cannot be here",
        ));
    }
    check_not_broken(&replicas, &[])?;
    let peer_limit = bounds.peer_read_only.min(bounds.limit);
    let peer = peer_final_position(node, peer_limit, guarded, gated)?;
    start_stopped_io_threads(node, &replicas)?;
    let mut summary = String::new();
    match &peer {
        PeerFinal::Known(peer) => {
            let ours = own_binlog_state(node)?;
            let peer_pos = gtid::parse(&peer.gtid_binlog_pos)
                .map_err(|e| fail(format!("the peer's gtid_binlog_pos: {e}")))?;
            let own_tail = own_tail_lost(&ours, &peer_pos, own_domain);
            if let Some(tail) = own_tail {
                node.warn(&format!(
                    "this node's binlog ends before {tail}, which the peer at {} has from it: crash recovery dropped what the peer had received; waiting to get it back from the peer",
                    peer.address
                ));
            }
            let target: Vec<Gtid> = peer_pos
                .into_iter()
                .filter(|g| g.domain != own_domain || own_tail == Some(*g))
                .collect();
            let target = gtid::render(&target);
            wait_for(node, &target, started, bounds.limit, vip)?;
            check_errant(node, &ours, peer)?;
            summary.push_str(&format!(
                "caught up with the peer at {} ({}, binlog at {})",
                peer.address,
                if peer.read_only {
                    "read-only"
                } else {
                    "writable for another instance, its gate for this one closed"
                },
                if target.is_empty() {
                    "nothing of its domains"
                } else {
                    &target
                }
            ));
        }
        PeerFinal::Silent | PeerFinal::NotAsked => {
            stop_waiting_for_a_gone_peer(node);
            // Only a silent peer's connection may still deliver a commit its guard
            // rolls back; without [peer] the peer is alive as far as anyone knows.
            let paused = if guarded && matches!(peer, PeerFinal::Silent) {
                pause_replication_from_a_silent_peer(node)?
            } else {
                Vec::new()
            };
            let target = drain_received(node, own_domain, started, bounds.limit, vip, &paused)?;
            summary.push_str(&format!(
                "peer's final position unknown; applied what was received ({})",
                if target.is_empty() {
                    "nothing"
                } else {
                    &target
                }
            ));
        }
    }
    let took = node.now().duration_since(started);
    Ok(format!("{summary} in {} ms", took.as_millis()))
}

/// A stopped SQL thread, or an IO thread stopped on an error (e.g. 1236, the peer
/// lacks a GTID asked for), will not recover by itself: the ring is broken. Except
/// the IO threads this promotion `paused`: stopping one keeps the error it had
/// while reconnecting to the silent peer.
fn check_not_broken(replicas: &[ReplicaStatus], paused: &[String]) -> Result<(), Failure> {
    for replica in replicas {
        let name = connection_name(replica);
        if replica.sql_state != SqlState::Running {
            let error = if replica.last_sql_error.is_empty() {
                "stopped".to_string()
            } else {
                replica.last_sql_error.clone()
            };
            return Err(fail(format!(
                "replication `{name}` is broken: SQL thread {} ({error})",
                replica.sql_state
            )));
        }
        if replica.io_state == IoState::Stopped
            && !replica.last_io_error.is_empty()
            && !paused.contains(&replica.connection_name)
        {
            return Err(fail(format!(
                "replication `{name}` is broken: IO thread stopped ({})",
                replica.last_io_error
            )));
        }
    }
    Ok(())
}

fn connection_name(replica: &ReplicaStatus) -> &str {
    if replica.connection_name.is_empty() {
        "default"
    } else {
        &replica.connection_name
    }
}

/// What became of asking the peer for its final position.
enum PeerFinal {
    /// At this position, final: read-only, or writable for another instance only
    /// (`gated`).
    Known(PeerStatus),
    /// Unreachable, or not answering (its guard silent too, where there is one).
    Silent,
    /// No `[peer]`: the site chose to promote on what was received.
    NotAsked,
}

/// The peer's status once it is read-only, or whether it was silent or not asked.
/// A peer that answers but stays writable is a live writer: promoting would make two,
/// except where it is `gated` (below).
/// A peer whose MariaDB accepts the connection but does not answer in time, while
/// its guard answers (`guarded`), is alive and slow, not gone: asked again until
/// `limit`. Taken for gone, its last transactions were left behind and their
/// sequence numbers written again here (a lab chaos run: the peer's server had just
/// restarted, and answered after the 500 ms `[peer]` timeout).
/// `gated`: this node holds the lease, and the site has several `rw` instances, so
/// each VIP has a gate (the guard's). The peer closed its gate for this instance
/// before its lease ended: a peer still writable for its own instance has written
/// its last through this one, and its position read now covers it.
fn peer_final_position(
    node: &mut impl Node,
    limit: Duration,
    guarded: bool,
    gated: bool,
) -> Result<PeerFinal, Failure> {
    let started = node.now();
    let mut peer_alive = None;
    loop {
        match node.peer_status() {
            Ok(status) if status.read_only || gated => return Ok(PeerFinal::Known(status)),
            Ok(status) => {
                if node.now().duration_since(started) >= limit {
                    return Err(Failure {
                        why: format!(
                            "the peer at {} is still writable after {} s: promoting now would make two writers",
                            status.address,
                            limit.as_secs_f32()
                        ),
                        timed_out: true,
                    });
                }
                node.pause(PEER_POLL);
            }
            Err(SqlError::Timeout(why))
                if guarded && *peer_alive.get_or_insert_with(|| node.peer_guard_answers()) =>
            {
                if node.now().duration_since(started) >= limit {
                    return Err(Failure {
                        why: format!(
                            "the peer's MariaDB did not answer within {} s ({why}) while its guard does: its final position is unknown while it is alive",
                            limit.as_secs_f32()
                        ),
                        timed_out: true,
                    });
                }
                node.pause(PEER_POLL);
            }
            Err(SqlError::Unreachable(why) | SqlError::Timeout(why)) => {
                node.warn(&format!(
                    "the peer's final position is unknown ({why}); applying what this node received"
                ));
                return Ok(PeerFinal::Silent);
            }
            // A peer that answers with an error is alive, and may have acknowledged
            // writes this node never received: not knowing them is not "gone".
            Err(error @ SqlError::Server { .. }) => {
                return Err(Failure {
                    why: format!(
                        "the peer answered with an error ({error}): its final position is unknown while it is alive"
                    ),
                    timed_out: false,
                });
            }
            // No [peer] in the config: the site chose to promote on what was received.
            Err(error) => {
                node.warn(&format!(
                    "cannot ask the peer ({error}); its final position is unknown, applying what this node received"
                ));
                return Ok(PeerFinal::NotAsked);
            }
        }
    }
}

const SEMI_SYNC_MASTER: &str = "rpl_semi_sync_master_enabled";
const SEMI_SYNC_SET_WITHIN: Duration = Duration::from_millis(500);

/// With the peer silent, a commit on this node (the applier's, finishing the
/// catch-up; the clients' after it) waits for the peer's semi-sync acknowledgement
/// until `rpl_semi_sync_master_timeout` gives up: a whole second of a kill -9
/// failover in the lab. Switching semi-sync off and on again ends that wait at once
/// and costs no guarantee: a silent peer acknowledges nothing either way, and semi-sync
/// stays enabled, acknowledging again as soon as the peer is back. Only where the
/// site lets the plugin set the variable (`settable_variables`).
fn stop_waiting_for_a_gone_peer(node: &mut impl Node) {
    let enabled = node
        .global_variable(SEMI_SYNC_MASTER)
        .ok()
        .flatten()
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"));
    if !enabled
        || !matches!(
            node.set_global_variable(SEMI_SYNC_MASTER, "OFF", SEMI_SYNC_SET_WITHIN),
            Ok(true)
        )
    {
        return;
    }
    match node.set_global_variable(SEMI_SYNC_MASTER, "ON", SEMI_SYNC_SET_WITHIN) {
        Ok(true) => node.warn(
            "semi-sync restarted: the silent peer cannot acknowledge, so no commit here waits for it; it acknowledges again once back",
        ),
        Ok(false) => node.error("semi-sync was switched off and did not come back on in time: writes are asynchronous until it is switched on"),
        Err(error) => node.error(&format!(
            "semi-sync was switched off and could not be switched on again ({error}): writes are asynchronous until it is"
        )),
    }
}

/// The state key naming the replication connections `master` paused, one per line
/// (the default connection is the empty name); the guard resumes them.
pub const PAUSED_KEY: &str = "replication-paused";

/// With the peer silent, stops fetching from it before applying what was received.
/// A commit in flight on the old writer when it went silent may already sit in the
/// kernel's buffers of its replication connection: the old writer, killed by its
/// guard, rolls that commit back at its restart, but the kernel still delivers the
/// buffered event when a cut heals, and applied after this node's own writes it
/// conflicts with them (the lab's long chaos run: the same sequence number twice,
/// replication stopped). Closing the connection now refuses that late delivery. The
/// guard starts the IO thread again once the peer's MariaDB answers: a fresh
/// connection fetches from what this node received, out of the peer's binlog as its
/// recovery left it. Not pausing is the old behaviour, so a failure to pause is a
/// warning, not a reason to stay read-only.
fn pause_replication_from_a_silent_peer(node: &mut impl Node) -> Result<Vec<String>, Failure> {
    let replicas = node
        .replicas()
        .map_err(|e| fail(format!("cannot read replication status: {e}")))?;
    let fetching: Vec<&ReplicaStatus> = replicas
        .iter()
        .filter(|replica| replica.io_state != IoState::Stopped)
        .collect();
    if fetching.is_empty() {
        return Ok(Vec::new());
    }
    // Kept before stopping: a `STOP` that times out (its IO thread stuck in a connect
    // to the silent peer; 1 s and more in the lab) still takes effect later, and only
    // the guard starts it again. Starting one that never stopped changes nothing.
    let names: Vec<String> = fetching
        .iter()
        .map(|replica| replica.connection_name.clone())
        .collect();
    let shown: Vec<&str> = fetching
        .iter()
        .map(|replica| connection_name(replica))
        .collect();
    node.remember(PAUSED_KEY, &names.join("\n"));
    for replica in &fetching {
        let name = connection_name(replica);
        match node.stop_replica_io(&replica.connection_name) {
            Ok(()) => {}
            Err(error @ (SqlError::Timeout(_) | SqlError::Unreachable(_))) => node.warn(&format!(
                "replication `{name}`: no answer to pausing fetching from the silent peer ({error}); it may still stop, and the guard starts it again either way; until it stops, what its old connection still delivers is applied"
            )),
            Err(error) => node.warn(&format!(
                "replication `{name}`: cannot pause fetching from the silent peer ({error}); what its old connection still delivers will be applied"
            )),
        }
    }
    node.warn(&format!(
        "paused replication from the silent peer ({}): nothing its old connection still delivers is applied after this node's writes; the guard resumes it once the peer's MariaDB answers",
        shown.join(", ")
    ));
    Ok(names)
}

/// An IO thread stopped without an error was stopped on purpose (by an operator):
/// it must fetch again for the peer's transactions to arrive.
fn start_stopped_io_threads(
    node: &mut impl Node,
    replicas: &[ReplicaStatus],
) -> Result<(), Failure> {
    for replica in replicas {
        if replica.io_state == IoState::Stopped && replica.last_io_error.is_empty() {
            let name = connection_name(replica);
            node.start_replica_io(&replica.connection_name)
                .map_err(|e| fail(format!("cannot start the IO thread of `{name}`: {e}")))?;
            node.warn(&format!(
                "replication `{name}`: the IO thread was stopped without an error (by an operator?); started it to fetch the peer's transactions"
            ));
        }
    }
    Ok(())
}

/// Waits in slices until `target` is applied, checking the VIP between slices.
fn wait_for(
    node: &mut impl Node,
    target: &str,
    started: std::time::Instant,
    limit: Duration,
    vip: &str,
) -> Result<(), Failure> {
    if target.is_empty() {
        return Ok(());
    }
    loop {
        let left = limit.saturating_sub(node.now().duration_since(started));
        if left.is_zero() {
            return Err(Failure {
                why: format!(
                    "not applied up to {target} within {} s",
                    limit.as_secs_f32()
                ),
                timed_out: true,
            });
        }
        match node.wait_for_gtid(target, left.min(SLICE)) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(fail(format!("MASTER_GTID_WAIT failed: {e}"))),
        }
        match node.holds_vip(vip) {
            Ok(true) => {}
            Ok(false) => return Err(fail(format!("VIP {vip} went away during the catch-up"))),
            Err(why) => {
                return Err(fail(format!(
                    "cannot tell whether VIP {vip} is held: {why}"
                )));
            }
        }
    }
}

/// The peer silent, this node applies what it received; the peer may still be
/// sending, so the received position is read again until it stands still.
fn drain_received(
    node: &mut impl Node,
    own_domain: u32,
    started: std::time::Instant,
    limit: Duration,
    vip: &str,
    paused: &[String],
) -> Result<String, Failure> {
    let mut applied = String::new();
    loop {
        let replicas = node
            .replicas()
            .map_err(|e| fail(format!("cannot read replication status: {e}")))?;
        check_not_broken(&replicas, paused)?;
        let mut received = Vec::new();
        for replica in &replicas {
            // A paused one was said so once, when it was paused.
            if replica.io_state != IoState::Running && !paused.contains(&replica.connection_name) {
                node.warn(&format!(
                    "replication `{}`: IO thread {} ({}); applying what was received",
                    connection_name(replica),
                    replica.io_state,
                    if replica.last_io_error.is_empty() {
                        "no error"
                    } else {
                        &replica.last_io_error
                    }
                ));
            }
            let gtids =
                gtid::parse(&replica.gtid_io_pos).map_err(|e| fail(format!("Gtid_IO_Pos: {e}")))?;
            received.extend(gtids.into_iter().filter(|g| g.domain != own_domain));
        }
        received.sort();
        received.dedup();
        let target = gtid::render(&received);
        if target == applied {
            return Ok(target);
        }
        wait_for(node, &target, started, limit, vip)?;
        applied = target;
    }
}

fn own_binlog_state(node: &mut impl Node) -> Result<Vec<Gtid>, Failure> {
    let state = node
        .global_variable("gtid_binlog_state")
        .map_err(|e| fail(format!("cannot read gtid_binlog_state: {e}")))?
        .unwrap_or_default();
    gtid::parse(&state).map_err(|e| fail(format!("gtid_binlog_state: {e}")))
}

/// The peer's last GTID in this node's own domain, when this node's binlog ends
/// before it. Only one thing makes a node lack its own domain's transactions: its
/// crash recovery (semi-sync slave recovery truncates what the engine had not
/// committed) dropped a tail the peer had already received. Replication from the
/// peer brings the tail back; writing first would reuse those sequence numbers for
/// other transactions, and the two nodes would diverge without an error.
fn own_tail_lost(ours: &[Gtid], peer_pos: &[Gtid], own_domain: u32) -> Option<Gtid> {
    let ours_last = ours
        .iter()
        .filter(|g| g.domain == own_domain)
        .map(|g| g.seq)
        .max()
        .unwrap_or(0);
    peer_pos
        .iter()
        .copied()
        .find(|g| g.domain == own_domain && g.seq > ours_last)
}

/// Transactions in this node's binlog, in the peer's domain, that the peer does not
/// have. Written here under the peer's domain, they would collide with the peer's
/// history: errant, no promotion. The peer's own transactions past its binlog's end
/// are the opposite case: its crash recovery dropped a tail this node had received.
/// Promoting this node keeps them, and the peer gets them back from here.
fn check_errant(node: &mut impl Node, ours: &[Gtid], peer: &PeerStatus) -> Result<(), Failure> {
    let theirs = gtid::parse(&peer.gtid_binlog_state)
        .map_err(|e| fail(format!("the peer's gtid_binlog_state: {e}")))?;
    let (lost_by_peer, errant): (Vec<_>, Vec<_>) =
        gtid::missing(ours, &theirs, peer.gtid_domain_id)
            .into_iter()
            .partition(|missing| missing.server == peer.server_id);
    if !lost_by_peer.is_empty() {
        node.warn(&format!(
            "the peer at {} lacks {} of its own, which this node has: its crash recovery dropped them; it gets them back by replicating from here",
            peer.address,
            render_missing(&lost_by_peer)
        ));
    }
    if errant.is_empty() {
        Ok(())
    } else {
        Err(fail(format!(
            "errant transactions: this node's binlog has {} in the peer's domain {}, which the peer at {} does not",
            render_missing(&errant),
            peer.gtid_domain_id,
            peer.address
        )))
    }
}

fn render_missing(missing: &[gtid::Missing]) -> String {
    missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
