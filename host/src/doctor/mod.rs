//! `mmvip doctor`: checks on one node everything a failover depends on (this mmvip,
//! the local MariaDB, replication both ways, the peer, the accounts, keepalived's
//! config) and says for each what is wrong and what to change. It only reads: nothing
//! is compiled into the cache, created or changed.

mod accounts;
mod keepalived;
mod options;
mod own;
mod peer;
mod replication;
mod server;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::caps::sql::{SqlError, describe};
use crate::config::Config;
use crate::log::{Level, Log};
use crate::mariadb::{Endpoint, Session};

pub use crate::args::DEFAULT_KEEPALIVED_CONF;
/// How long one statement may take: doctor reports what it finds, so it waits longer
/// than a hook would.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of all statements to one server.
const SESSION_BOUND: Duration = Duration::from_secs(60);
/// The longest a replica may take to notice a dead or restarted master, or to retry
/// connecting to it: the failover timers (VRRP and the guard) act within seconds.
const DETECTION_LIMIT_S: u64 = 10;

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// A stable name, for tools (`sync_binlog`, `keepalived.VI_1.vip`).
    pub check: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to change and why it matters, when not ok.
    pub fix: Option<String>,
}

impl Check {
    fn pass(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// One line for a person: `✓ log_bin is ON`, `✗ sync_binlog is 0: set …`.
    pub fn line(&self) -> String {
        match &self.fix {
            None => format!("✓ {}", self.detail),
            Some(fix) => format!("✗ {}: {fix}", self.detail),
        }
    }
}

/// Runs every check; with `check_peer`, the peer's server settings too.
pub fn run(
    config: &Config,
    config_path: &Path,
    keepalived_conf: &Path,
    check_peer: bool,
    log: &Log,
) -> Vec<Check> {
    let mut checks = vec![Check::pass(
        "config",
        format!("config {} loads", config_path.display()),
    )];
    let plugins = own::check(config, log, &mut checks);
    let mut local = local_server(config, log, &mut checks);
    // The peer is asked after this node: the cross-node checks rely on that order.
    let (mut peer, reached) = peer::reach(config, log);
    if let Some((session, facts)) = local.as_mut() {
        server::check(facts, server::Side::Local, &mut checks);
        checks.push(options::read_only_at_start(facts));
        checks.push(semi_sync_settable(config, facts));
        if let Some(guard) = &config.guard {
            checks.push(guard_semi_sync(guard, facts));
        }
        replication::check(session, facts, peer.as_mut(), &mut checks);
        checks.push(reached);
        if let Some(peer) = peer.as_mut() {
            if check_peer {
                server::check(&peer.facts, server::Side::Peer, &mut checks);
            }
            peer::compare(config, session, facts, peer, &mut checks);
        }
        accounts::check(session, facts, &mut checks);
    } else {
        checks.push(reached);
        if check_peer && let Some(peer) = peer.as_ref() {
            server::check(&peer.facts, server::Side::Peer, &mut checks);
        }
    }
    keepalived::check(config, keepalived_conf, &plugins, &mut checks);
    if config.guard.is_some() {
        let rw_instances = config
            .instances
            .values()
            .filter(|i| i.role == crate::config::Role::ReadWrite)
            .count();
        checks.push(guard_nft(rw_instances > 1));
    }
    checks
}

/// The guard's nftables table (README, "Switch-over") needs `nft`; with several `rw`
/// instances (`gated`) the VIP gates are in it, and the guard does not start without.
fn guard_nft(gated: bool) -> Check {
    const NAME: &str = "guard.nft";
    match program(&["nft"]) {
        Some(nft) => Check::pass(NAME, format!("{} for the guard's table", nft.display())),
        None if gated => Check::fail(
            NAME,
            "no nft: with several rw instances the guard keeps a gate per VIP in nftables, and refuses to start without it",
            "apt-get install nftables (dnf install nftables)",
        ),
        None => Check::fail(
            NAME,
            "no nft: the guard cannot reset packets for a VIP held elsewhere nor refuse connections during a switch-over, and clients wait out timeouts",
            "apt-get install nftables (dnf install nftables)",
        ),
    }
}

/// The checks as one line each.
pub fn render(checks: &[Check]) -> String {
    checks.iter().map(|c| c.line() + "\n").collect()
}

/// The local MariaDB over `[mariadb]`, and what it says of itself.
fn local_server(config: &Config, log: &Log, checks: &mut Vec<Check>) -> Option<(Session, Facts)> {
    let password = match config
        .mariadb
        .password_file
        .as_deref()
        .map(|path| crate::trust::read_secret(path, "[mariadb] password_file"))
        .transpose()
    {
        Ok(password) => password,
        Err(error) => {
            checks.push(Check::fail(
                "mariadb",
                format!("cannot connect to the local MariaDB: {}", error.message()),
                "fix [mariadb] password_file (see its trust check) — every hook connects with it",
            ));
            return None;
        }
    };
    let endpoint = Endpoint::local(&config.mariadb, password);
    let mut session = session(endpoint, log);
    match Facts::read(&mut session) {
        Ok(facts) => {
            checks.push(Check::pass(
                "mariadb",
                format!(
                    "MariaDB {} answers on {} as {}",
                    facts.version_text,
                    config.mariadb.socket.display(),
                    config.mariadb.user
                ),
            ));
            Some((session, facts))
        }
        Err(error) => {
            checks.push(Check::fail(
                "mariadb",
                format!("the local MariaDB does not answer ({})", describe(&error)),
                format!(
                    "start it, or fix [mariadb] socket ({}), user and password_file — every hook needs it, and the server, replication and account checks cannot run",
                    config.mariadb.socket.display()
                ),
            ));
            None
        }
    }
}

fn session(endpoint: Endpoint, log: &Log) -> Session {
    Session::new(
        endpoint,
        ASK_TIMEOUT,
        Instant::now() + SESSION_BOUND,
        log.clone(),
    )
}

/// The global variables doctor reads, from either server (the peer's account has no
/// privileges, which is enough for `@@GLOBAL` reads).
const VARIABLES: &[&str] = &[
    "log_bin",
    "log_slave_updates",
    "gtid_strict_mode",
    "server_id",
    "gtid_domain_id",
    "auto_increment_increment",
    "auto_increment_offset",
    "read_only",
    "sync_binlog",
    "innodb_flush_log_at_trx_commit",
    "slave_net_timeout",
    "pid_file",
    "datadir",
    "gtid_binlog_state",
    "gtid_binlog_pos",
    "rpl_semi_sync_master_enabled",
    "rpl_semi_sync_master_timeout",
    "rpl_semi_sync_master_wait_point",
];

/// What a server says of itself, read in one statement.
struct Facts {
    version_text: String,
    version: (u32, u32, u32),
    values: BTreeMap<&'static str, String>,
}

impl Facts {
    fn read(session: &mut Session) -> Result<Facts, SqlError> {
        let columns: Vec<String> = VARIABLES.iter().map(|v| format!("@@GLOBAL.{v}")).collect();
        let statement = format!("SELECT VERSION(), {}", columns.join(", "));
        let row = session
            .rows(Level::Debug, &statement)?
            .into_iter()
            .next()
            .unwrap_or_default();
        let mut cells = row.into_iter().map(Option::unwrap_or_default);
        let version_text = cells.next().unwrap_or_default();
        Ok(Facts {
            version: crate::mariadb::parse_version(&version_text),
            version_text,
            values: VARIABLES.iter().copied().zip(cells).collect(),
        })
    }

    fn text(&self, name: &str) -> &str {
        self.values.get(name).map_or("", String::as_str)
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.text(name).parse().ok()
    }

    /// A boolean variable (MariaDB answers 1 or 0).
    fn on(&self, name: &str) -> bool {
        self.text(name) == "1"
    }

    fn gtids(&self, name: &str) -> Vec<crate::gtid::Gtid> {
        crate::gtid::parse(self.text(name)).unwrap_or_default()
    }
}

/// With semi-sync on, `master` (a silent peer) and the guard (a stuck dump thread)
/// restart it; only where the site lets mmvip set the variable.
fn semi_sync_settable(config: &Config, facts: &Facts) -> Check {
    const NAME: &str = "settable_variables.semi_sync";
    const VARIABLE: &str = crate::guard::dump_threads::SEMI_SYNC_MASTER;
    if !facts.on(VARIABLE) {
        return Check::pass(
            NAME,
            "semi-sync master is off: mmvip has nothing to restart",
        );
    }
    if config.mariadb.may_set(VARIABLE) {
        Check::pass(
            NAME,
            format!("semi-sync master is on and [mariadb] settable_variables lists {VARIABLE}"),
        )
    } else {
        Check::fail(
            NAME,
            format!(
                "semi-sync master is on, but [mariadb] settable_variables does not list {VARIABLE}: a promotion after the peer died waits out rpl_semi_sync_master_timeout for its acknowledgement, and the guard cannot free a binlog dump thread semi-sync left stuck"
            ),
            format!(
                "add \"{VARIABLE}\" to [mariadb] settable_variables (README, \"MariaDB settings\")"
            ),
        )
    }
}

/// With the guard: a writer cut off with a commit in flight must be killed before
/// semi-sync gives up on the peer and commits it alone (README, "What happens when",
/// writer cut off), and its restart must roll the commit back.
fn guard_semi_sync(guard: &crate::guard::config::GuardConfig, facts: &Facts) -> Check {
    const NAME: &str = "guard.semi_sync";
    if !facts.on(crate::guard::dump_threads::SEMI_SYNC_MASTER) {
        return Check::pass(
            NAME,
            "semi-sync master is off: no commit waits for the peer, so there is none for the guard to stop (nor is an acknowledged write sure to be on the peer: README, \"MariaDB settings\")",
        );
    }
    let needed = crate::guard::semi_sync_timeout_needed(guard.ping_interval).as_millis();
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    let timeout = facts.number("rpl_semi_sync_master_timeout").unwrap_or(0);
    if u128::from(timeout) < needed {
        problems.push(format!(
            "rpl_semi_sync_master_timeout is {timeout} ms: a commit in flight on a writer cut off completes alone before the guard can kill it (it needs {needed} ms with ping_interval_ms {})",
            guard.ping_interval.as_millis()
        ));
        fixes.push(format!("rpl_semi_sync_master_timeout = {needed}"));
    }
    let wait_point = facts.text("rpl_semi_sync_master_wait_point");
    if !wait_point.eq_ignore_ascii_case("AFTER_SYNC") {
        problems.push(format!(
            "rpl_semi_sync_master_wait_point is {wait_point}: a waiting commit is already committed here, and killing the server cannot take it back"
        ));
        fixes.push("rpl_semi_sync_master_wait_point = AFTER_SYNC".into());
    }
    if problems.is_empty() {
        Check::pass(
            NAME,
            format!(
                "semi-sync waits {timeout} ms (at least {needed}) after the binlog sync: the guard can kill a writer cut off before a commit completes alone"
            ),
        )
    } else {
        Check::fail(NAME, problems.join("; "), fixes.join(", "))
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "ON" } else { "OFF" }
}

/// A program by name: on PATH, else where Debian installs it (keepalived is in
/// /usr/sbin, which a user's PATH may lack).
fn program(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(Into::into),
        )
        .collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}
