//! The peer over `[peer]` (an account with no privileges: only `@@GLOBAL` reads), and
//! what the two nodes must have in common or must not share.

use super::{Check, Facts, session};
use crate::caps::sql::{SqlError, describe};
use crate::config::{Config, Role};
use crate::gtid;
use crate::log::{Level, Log};
use crate::mariadb::{Endpoint, Session};

/// The peer's server, where it answered.
pub(super) struct Peer {
    pub address: String,
    pub session: Session,
    pub facts: Facts,
}

const UNREACHABLE_FIX: &str = "check [peer] addresses, the account (CREATE USER 'mmvip_peer'@'<this node>' with no privileges, made with sql_log_bin = 0 on both nodes), its password_file and the network — when master cannot ask the peer it promotes on what this node received, which may lack what the peer acknowledged, and doctor cannot compare the nodes";

/// The peer's server on the first address of `[peer]` that answers, and the check
/// that says so.
pub(super) fn reach(config: &Config, log: &Log) -> (Option<Peer>, Check) {
    let Some(peer) = &config.peer else {
        return (
            None,
            Check::fail(
                "peer",
                "no [peer] in the config",
                "add [peer] with the other node's addresses and an account with no privileges (README: Promotion) — without it master cannot learn what the peer acknowledged before going writable, and doctor cannot compare the two nodes",
            ),
        );
    };
    let password = match peer
        .password_file
        .as_deref()
        .map(|path| crate::trust::read_secret(path, "[peer] password_file"))
        .transpose()
    {
        Ok(password) => password,
        Err(error) => return (None, Check::fail("peer", error.message(), UNREACHABLE_FIX)),
    };
    let mut failures = Vec::new();
    for endpoint in Endpoint::peers(peer, password) {
        let address = endpoint.target.to_string();
        let mut session = session(endpoint, log);
        match Facts::read(&mut session) {
            Ok(facts) => {
                let check = Check::pass(
                    "peer",
                    format!(
                        "the peer answers at {address} as {} (MariaDB {})",
                        peer.user, facts.version_text
                    ),
                );
                let peer = Peer {
                    address,
                    session,
                    facts,
                };
                return (Some(peer), check);
            }
            // An answer with an error is an answer: the account or server is wrong.
            Err(error @ SqlError::Server(_)) => {
                failures.push(format!("{address}: {}", describe(&error)));
                break;
            }
            Err(error) => failures.push(format!("{address}: {}", describe(&error))),
        }
    }
    let check = Check::fail(
        "peer",
        format!("the peer does not answer ({})", failures.join("; ")),
        UNREACHABLE_FIX,
    );
    (None, check)
}

/// The checks between this node and the peer.
pub(super) fn compare(
    config: &Config,
    session: &mut Session,
    local: &Facts,
    peer: &mut Peer,
    checks: &mut Vec<Check>,
) {
    let remote = &peer.facts;
    checks.push(writers(config, local, remote, &peer.address));
    checks.push(distinct(
        local,
        remote,
        "server_id",
        "give each node its own server_id under [mariadbd] (and SET GLOBAL server_id) — a replica ignores events carrying its own server_id, so each node silently drops the other's writes",
    ));
    checks.push(distinct(
        local,
        remote,
        "gtid_domain_id",
        "give each node its own gtid_domain_id under [mariadbd] (and SET GLOBAL gtid_domain_id) — with one domain, writes on both nodes around a failover interleave in one sequence, gtid_strict_mode stops replication, and errant transactions cannot be told from lag",
    ));
    checks.push(auto_increment(local, remote));
    checks.push(errant(session, local, remote));
}

/// Two writable nodes are two writers, unless the site runs one `rw` VIP on each.
fn writers(config: &Config, local: &Facts, remote: &Facts, address: &str) -> Check {
    const NAME: &str = "writers";
    let rw_instances = config
        .instances
        .values()
        .filter(|i| i.role == Role::ReadWrite)
        .count();
    match (local.on("read_only"), remote.on("read_only")) {
        (false, false) if rw_instances < 2 => Check::fail(
            NAME,
            format!("both nodes are writable (read_only is OFF here and on the peer at {address})"),
            "make the node that does not hold the VIP read-only (SET GLOBAL read_only = ON there, or let its backup hook run) — two writers take conflicting writes that break replication or silently diverge",
        ),
        (false, false) => Check::pass(
            NAME,
            format!("both nodes are writable ({rw_instances} rw instances, one VIP each)"),
        ),
        (false, true) => Check::pass(NAME, "this node is the writer; the peer is read-only"),
        (true, false) => Check::pass(NAME, "the peer is the writer; this node is read-only"),
        (true, true) => Check::pass(NAME, "both nodes are read-only (no writer now)"),
    }
}

fn distinct(local: &Facts, remote: &Facts, name: &str, fix: &str) -> Check {
    let (ours, theirs) = (local.text(name), remote.text(name));
    if ours == theirs {
        Check::fail(name, format!("both nodes have {name} {ours}"), fix)
    } else {
        Check::pass(name, format!("{name} is {ours} here, {theirs} on the peer"))
    }
}

/// The same increment (at least 2) on both, offsets distinct modulo it: keys made on
/// either node never collide.
fn auto_increment(local: &Facts, remote: &Facts) -> Check {
    const NAME: &str = "auto_increment";
    let read = |facts: &Facts| {
        (
            facts.number("auto_increment_increment").unwrap_or(1),
            facts.number("auto_increment_offset").unwrap_or(1),
        )
    };
    let ((increment, offset), (peer_increment, peer_offset)) = (read(local), read(remote));
    let detail = format!(
        "auto_increment_increment/offset are {increment}/{offset} here, {peer_increment}/{peer_offset} on the peer"
    );
    // MariaDB ignores an offset above the increment.
    let consistent = increment == peer_increment
        && increment >= 2
        && offset <= increment
        && peer_offset <= increment
        && offset % increment != peer_offset % increment;
    if consistent {
        Check::pass(NAME, detail)
    } else {
        Check::fail(
            NAME,
            detail,
            "set auto_increment_increment = 2 on both nodes and auto_increment_offset = 1 on one, 2 on the other, under [mariadbd] (and SET GLOBAL) — otherwise rows inserted on both nodes around a failover (or with an rw VIP on each) get the same keys, and replication stops on a duplicate key",
        )
    }
}

/// Transactions in one node's binary log state, in the other node's domain, that the
/// other does not have: written where they should not have been.
fn errant(session: &mut Session, local: &Facts, remote: &Facts) -> Check {
    const NAME: &str = "errant_gtids";
    let (domain, peer_domain) = (
        local.number("gtid_domain_id").unwrap_or(0) as u32,
        remote.number("gtid_domain_id").unwrap_or(0) as u32,
    );
    if domain == peer_domain {
        return Check::fail(
            NAME,
            format!("errant GTIDs cannot be told from lag while both nodes use domain {domain}"),
            "give each node its own gtid_domain_id (see gtid_domain_id)",
        );
    }
    let theirs = remote.gtids("gtid_binlog_state");
    // This node's state was read before the peer's, so what the peer has of this node's
    // domain beyond it could be new writes: read it again for that direction.
    let ours_now = match session.value(Level::Debug, "SELECT @@GLOBAL.gtid_binlog_state") {
        Ok(state) => gtid::parse(&state.unwrap_or_default()).unwrap_or_default(),
        Err(error) => {
            return Check::fail(
                NAME,
                format!("cannot read gtid_binlog_state ({})", describe(&error)),
                "see the mariadb check",
            );
        }
    };
    let here = gtid::missing_from(&local.gtids("gtid_binlog_state"), &theirs, peer_domain);
    let there = gtid::missing_from(&theirs, &ours_now, domain);
    if here.is_empty() && there.is_empty() {
        return Check::pass(
            NAME,
            "no errant GTIDs: neither node has transactions in the other's domain that the other lacks",
        );
    }
    let mut found = Vec::new();
    if !here.is_empty() {
        found.push(format!(
            "this node has {} in the peer's domain {peer_domain}, which the peer lacks",
            here.join(",")
        ));
    }
    if !there.is_empty() {
        found.push(format!(
            "the peer has {} in this node's domain {domain}, which this node lacks",
            there.join(",")
        ));
    }
    Check::fail(
        NAME,
        format!("errant GTIDs: {}", found.join("; ")),
        "a node lacking its own server's transactions lost them in crash recovery and gets them back by replicating from the other (check that it does); anything else: find them in the binary log (SHOW BINLOG EVENTS, mariadb-binlog) and apply them on the other node or discard them deliberately — the nodes have diverged, and master refuses to promote a node that has some (or follows on_catchup_timeout)",
    )
}
