//! MariaDB node management: my.cnf rendering, data directories, starting and stopping
//! `mariadbd` inside a node namespace, the GTID replication ring, and the queries the
//! lab needs. The lab always talks to a node over its unix socket from the root
//! namespace; only the client writer uses TCP, from inside the client namespace.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Row};

use crate::cleanup::{Registry, set_mode};
use crate::netns;
use crate::paths::NodePaths;
use crate::topology::NodeId;

pub const MARIADBD: &str = "/usr/sbin/mariadbd";
pub const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
pub const PORT: u16 = 3306;
pub const REPL_USER: &str = "repl";
pub const REPL_PASSWORD: &str = "repl-lab-secret";
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-lab-secret";
/// The account mmvip's `peer` capability asks the other node with. It needs no
/// privileges: it only reads global variables.
pub const PEER_USER: &str = "mmvip_peer";
pub const PEER_PASSWORD: &str = "peer-lab-secret";
/// Both lab networks (private 10.77.0.0/24, public 10.77.1.0/24): `master` asks the
/// peer over the heartbeat network first, then the public one.
const PEER_HOSTS: &str = "10.77.%";
pub const DATABASE: &str = "lab";
pub const TABLE: &str = "lab.writes";
/// The non-commutative workload: each write takes the next number of its stream.
pub const SEQUENCE_TABLE: &str = "lab.sequence";

/// Settings shared by the template install and every node; small InnoDB files keep
/// install, copy and start fast on the 2-core machine.
const ENGINE_SETTINGS: &str = "\
innodb_buffer_pool_size  = 64M
innodb_log_file_size     = 16M
performance_schema       = OFF
";

/// The seed's my.cnf for one node, plus the lab's paths and addresses.
pub fn render_my_cnf(node: NodeId, paths: &NodePaths, vips: &[Ipv4Addr]) -> String {
    let mut bind = vec![node.private_ip().to_string(), node.public_ip().to_string()];
    bind.extend(vips.iter().map(ToString::to_string));
    let n = node.number();
    let mut text = String::new();
    let _ = write!(
        text,
        "\
# {name} of the mmvip failover lab: the seed's my.cnf with per-node lab paths.
[mariadbd]
# The lab runs as root; mariadbd refuses that unless told so.
user                     = root
datadir                  = {datadir}
socket                   = {socket}
pid-file                 = {pid}
log-error                = {log}
# A private tmpdir: nothing outside the lab can touch the server's temporary files.
tmpdir                   = {tmp}
port                     = {PORT}
# mariadbd binds with IP_FREEBIND, so it can listen on VIPs it does not hold yet.
bind-address             = {bind}
# No DNS: the lab namespaces have no resolver and clients are matched by address.
skip-name-resolve

# From the seed
server_id                = {n}
log_bin                  = mariadb-bin
log_slave_updates        = ON
gtid_domain_id           = {n}
gtid_strict_mode         = ON
auto_increment_increment = 2
auto_increment_offset    = {n}
read_only                = ON

# Production durability: a commit acknowledged to a client is on disk, binlog
# included, so a crash (scenario 5) cannot take back an acknowledged write.
sync_binlog                    = 1
innodb_flush_log_at_trx_commit = 1

# A COMMIT killed in flight must not survive on this node alone (pitfall 10): the
# writer waits, after the binlog fsync and before the engine commit (AFTER_SYNC), for
# the peer to have the transaction in its relay log, so an acknowledged write is on
# both nodes. After a crash, a server started as a replica (init_rpl_role = SLAVE:
# every node starts read-only and is promoted only by its master hook) rolls back the
# prepared transactions its peer never confirmed and truncates them from its binlog,
# and accepts them back from the peer if the peer had them after all. No peer
# connected: no wait; a peer that stops answering costs one commit the timeout, then
# commits go on without it until it catches up.
rpl_semi_sync_master_enabled       = ON
rpl_semi_sync_slave_enabled        = ON
rpl_semi_sync_master_wait_point    = AFTER_SYNC
rpl_semi_sync_master_wait_no_slave = OFF
rpl_semi_sync_master_timeout       = 1000
init_rpl_role                      = SLAVE

# Lab: notice a dead replication link within seconds rather than a minute.
slave_net_timeout        = 4
# Both lab nodes share one hostname: name the relay log rather than derive it.
relay_log                = relay-bin
{ENGINE_SETTINGS}",
        name = node.name(),
        datadir = paths.datadir().display(),
        socket = paths.socket().display(),
        pid = paths.pid_file().display(),
        log = paths.mariadb_log().display(),
        tmp = paths.tmp_dir().display(),
        bind = bind.join(","),
    );
    text
}

/// Runs `mariadb-install-db` once into `root/template`; nodes get copies of it.
pub fn make_template(root: &Path) -> Result<PathBuf> {
    let dir = root.join("template");
    let datadir = dir.join("data");
    let tmpdir = dir.join("tmp");
    fs::create_dir_all(&tmpdir)?;
    let cnf = dir.join("my.cnf");
    fs::write(
        &cnf,
        format!(
            "[mariadbd]\nuser = root\ndatadir = {}\ntmpdir = {}\nskip-networking\n{ENGINE_SETTINGS}",
            datadir.display(),
            tmpdir.display()
        ),
    )?;
    let output = Command::new(INSTALL_DB)
        .arg(format!("--defaults-file={}", cnf.display()))
        .args([
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .output()
        .with_context(|| format!("run {INSTALL_DB}"))?;
    if !output.status.success() {
        bail!(
            "mariadb-install-db failed: {}",
            last_lines(&String::from_utf8_lossy(&output.stderr), 3)
        );
    }
    Ok(datadir)
}

/// Copies a directory tree (a fresh data directory: plain files and directories).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Writes the node's my.cnf and a fresh data directory.
pub fn prepare(node: NodeId, paths: &NodePaths, template: &Path, vips: &[Ipv4Addr]) -> Result<()> {
    for dir in [paths.dir.clone(), paths.run_dir(), paths.tmp_dir()] {
        fs::create_dir_all(&dir)?;
        set_mode(&dir, 0o755)?;
    }
    copy_tree(template, &paths.datadir())?;
    fs::write(paths.my_cnf(), render_my_cnf(node, paths, vips))?;
    Ok(())
}

/// Starts `mariadbd` in the node's namespace and waits until it answers.
pub fn start(registry: &Registry, node: NodeId, paths: &NodePaths) -> Result<u32> {
    start_in(registry, &node.namespace(), &node.name(), paths)
}

/// Starts `mariadbd` with `paths`' my.cnf in namespace `ns` and waits until it answers.
fn start_in(registry: &Registry, ns: &str, name: &str, paths: &NodePaths) -> Result<u32> {
    let mut command = netns::command_in(ns, MARIADBD);
    command.arg(format!("--defaults-file={}", paths.my_cnf().display()));
    let pid = registry.spawn(
        &format!("mariadbd {name}"),
        &mut command,
        &paths.mariadb_console(),
    )?;
    crate::wait::until(
        Duration::from_secs(30),
        Duration::from_millis(25),
        &format!("mariadbd on {name} to answer"),
        || {
            if !registry.is_running(pid) {
                bail!(
                    "mariadbd on {name} exited at start: {}",
                    last_lines(
                        &fs::read_to_string(paths.mariadb_log()).unwrap_or_default(),
                        3
                    )
                );
            }
            Ok(connect(&paths.socket()).ok().map(drop))
        },
    )?;
    Ok(pid)
}

/// The guard's witness account on the witness server.
pub const WITNESS_USER: &str = "mmvip_witness";
pub const WITNESS_PASSWORD: &str = "witness-lab-secret";

/// The witness: a third, plain MariaDB (no binlog, no replication) that both nodes'
/// guards reach on the public network, as an application host's server would be.
/// Its datadir comes from the template; the README's witness account is created.
pub fn start_witness(registry: &Registry, paths: &NodePaths, template: &Path) -> Result<u32> {
    for dir in [paths.dir.clone(), paths.run_dir(), paths.tmp_dir()] {
        fs::create_dir_all(&dir)?;
        set_mode(&dir, 0o755)?;
    }
    copy_tree(template, &paths.datadir())?;
    fs::write(
        paths.my_cnf(),
        format!(
            "# The guard's witness of the mmvip failover lab.
[mariadbd]
user          = root
datadir       = {datadir}
socket        = {socket}
pid-file      = {pid}
log-error     = {log}
tmpdir        = {tmp}
port          = {PORT}
bind-address  = {bind}
skip-name-resolve
{ENGINE_SETTINGS}",
            datadir = paths.datadir().display(),
            socket = paths.socket().display(),
            pid = paths.pid_file().display(),
            log = paths.mariadb_log().display(),
            tmp = paths.tmp_dir().display(),
            bind = crate::topology::WITNESS_IP,
        ),
    )?;
    let pid = start_in(registry, crate::topology::WITNESS_NS, "witness", paths)?;
    let mut conn = connect(&paths.socket())?;
    conn.query_drop("CREATE DATABASE mmvip")?;
    conn.query_drop(format!(
        "CREATE USER '{WITNESS_USER}'@'10.77.1.%' IDENTIFIED BY '{WITNESS_PASSWORD}'"
    ))?;
    conn.query_drop(format!(
        "GRANT SELECT, INSERT, UPDATE, CREATE ON mmvip.* TO '{WITNESS_USER}'@'10.77.1.%'"
    ))?;
    Ok(pid)
}

/// A root session over the node's unix socket, with timeouts so a hung server
/// cannot stall the lab.
pub fn connect(socket: &Path) -> Result<Conn> {
    let opts = OptsBuilder::new()
        .socket(Some(socket.to_string_lossy()))
        .user(Some("root"))
        .read_timeout(Some(Duration::from_secs(2)))
        .write_timeout(Some(Duration::from_secs(2)))
        .prefer_socket(true)
        .stmt_cache_size(0);
    Ok(Conn::new(opts)?)
}

/// Creates the node's own accounts without binary logging: the replication user and
/// the account the peer's `master` hook asks this node with. Each node needs its own,
/// and a replicated CREATE USER would collide with the peer's.
pub fn create_node_users(conn: &mut Conn) -> Result<()> {
    conn.query_drop("SET SESSION sql_log_bin = 0")?;
    conn.query_drop(format!(
        "CREATE USER '{REPL_USER}'@'10.77.0.%' IDENTIFIED BY '{REPL_PASSWORD}'"
    ))?;
    conn.query_drop(format!(
        "GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'10.77.0.%'"
    ))?;
    // No GRANT: reading @@GLOBAL variables needs no privilege.
    conn.query_drop(format!(
        "CREATE USER '{PEER_USER}'@'{PEER_HOSTS}' IDENTIFIED BY '{PEER_PASSWORD}'"
    ))?;
    conn.query_drop("SET SESSION sql_log_bin = 1")?;
    Ok(())
}

/// Points the node at its peer over the private network with GTIDs; quick retries and
/// heartbeats make recovery after a fault take seconds.
///
/// `slave_pos`, not `current_pos`: a master killed right after binlogging a write its
/// peer had not fetched restarts with that GTID in its own binlog; `current_pos` then
/// asks the peer to start after a GTID the peer does not have, and the IO thread stops
/// for good (error 1236). The lab reproduced that in the kill -9 scenarios.
pub fn start_replication(conn: &mut Conn, node: NodeId) -> Result<()> {
    let peer = node.peer().private_ip();
    conn.query_drop(format!(
        "CHANGE MASTER TO master_host = '{peer}', master_port = {PORT}, \
         master_user = '{REPL_USER}', master_password = '{REPL_PASSWORD}', \
         master_use_gtid = slave_pos, master_connect_retry = 1, \
         master_heartbeat_period = 1"
    ))?;
    conn.query_drop("START SLAVE")?;
    Ok(())
}

/// The writers' schema and application user, created once on node 1 and replicated.
///
/// `uid` is the writer's own id for a write (never retried, so never sent twice) and
/// UNIQUE: a transaction applied twice breaks replication loudly rather than hiding
/// as a second row (gtid_strict_mode refuses that already).
///
/// `sequence` is the non-commutative workload: each write reads the highest `n` of its
/// stream and inserts `n + 1` in one transaction. Two writers, or a promotion before
/// the peer's last writes were applied, take the same number twice: the primary key
/// then stops replication with a duplicate-key error on whichever node applies the
/// second one.
pub fn create_schema(conn: &mut Conn) -> Result<()> {
    conn.query_drop(format!("CREATE DATABASE {DATABASE}"))?;
    conn.query_drop(format!(
        "CREATE TABLE {TABLE} (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            uid BIGINT UNSIGNED NOT NULL,
            writer VARCHAR(16) NOT NULL,
            created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            UNIQUE KEY (uid)
        ) ENGINE = InnoDB"
    ))?;
    conn.query_drop(format!(
        "CREATE TABLE {SEQUENCE_TABLE} (
            stream TINYINT UNSIGNED NOT NULL,
            n BIGINT UNSIGNED NOT NULL,
            uid BIGINT UNSIGNED NOT NULL,
            server_id INT UNSIGNED NOT NULL,
            PRIMARY KEY (stream, n),
            UNIQUE KEY (uid)
        ) ENGINE = InnoDB"
    ))?;
    conn.query_drop(format!(
        "CREATE USER '{APP_USER}'@'10.77.1.%' IDENTIFIED BY '{APP_PASSWORD}'"
    ))?;
    // An ordinary application user: no SUPER, no READ ONLY ADMIN, so read_only binds it.
    conn.query_drop(format!(
        "GRANT SELECT, INSERT ON {DATABASE}.* TO '{APP_USER}'@'10.77.1.%'"
    ))?;
    Ok(())
}

/// What `SHOW SLAVE STATUS` says about one node's replication from its peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub io_running: String,
    pub sql_running: String,
    pub last_io_error: String,
    pub last_io_errno: u32,
    pub last_sql_error: String,
    /// What the SQL thread is doing (e.g. waiting for a row lock).
    pub sql_state: String,
    pub seconds_behind: Option<u64>,
}

impl ReplicaStatus {
    pub fn running(&self) -> bool {
        self.io_running == "Yes" && self.sql_running == "Yes"
    }
}

pub fn replica_status(conn: &mut Conn) -> Result<Option<ReplicaStatus>> {
    let row: Option<Row> = conn.query_first("SHOW SLAVE STATUS")?;
    let Some(row) = row else { return Ok(None) };
    let text = |name: &str| -> String {
        row.get_opt::<Option<String>, _>(name)
            .and_then(|value| value.ok())
            .flatten()
            .unwrap_or_default()
    };
    Ok(Some(ReplicaStatus {
        io_running: text("Slave_IO_Running"),
        sql_running: text("Slave_SQL_Running"),
        last_io_error: text("Last_IO_Error"),
        last_io_errno: text("Last_IO_Errno").parse().unwrap_or(0),
        last_sql_error: text("Last_SQL_Error"),
        sql_state: text("Slave_SQL_Running_State"),
        seconds_behind: text("Seconds_Behind_Master").parse().ok(),
    }))
}

/// `@@gtid_binlog_pos` as a sorted list, so two nodes' positions compare as sets.
pub fn gtid_binlog_pos(conn: &mut Conn) -> Result<String> {
    let pos: Option<String> = conn.query_first("SELECT @@global.gtid_binlog_pos")?;
    Ok(normalize_gtid_list(&pos.unwrap_or_default()))
}

pub fn normalize_gtid_list(list: &str) -> String {
    let mut parts: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    parts.sort_unstable();
    parts.join(",")
}

pub fn read_only(conn: &mut Conn) -> Result<bool> {
    let value: Option<u8> = conn.query_first("SELECT @@global.read_only")?;
    Ok(value == Some(1))
}

/// Every write uid this node stores, of both workloads (uids are distinct across
/// writers and workloads).
pub fn stored_uids(conn: &mut Conn) -> Result<HashSet<u64>> {
    let mut uids: HashSet<u64> = conn
        .query::<u64, _>(format!("SELECT uid FROM {TABLE}"))?
        .into_iter()
        .collect();
    uids.extend(conn.query::<u64, _>(format!("SELECT uid FROM {SEQUENCE_TABLE}"))?);
    Ok(uids)
}

/// The highest sequence number of each stream on this node.
pub fn sequence_heads(conn: &mut Conn) -> Result<Vec<(u8, u64, u64)>> {
    Ok(conn.query(format!(
        "SELECT stream, MAX(n), COUNT(*) FROM {SEQUENCE_TABLE} GROUP BY stream ORDER BY stream"
    ))?)
}

/// A client transaction that has been open a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTransaction {
    pub session: u64,
    pub user: String,
    pub host: String,
    pub seconds: u64,
    pub rows_locked: u64,
}

/// Client transactions open for longer than `seconds`. One left open holds its
/// locks until it ends, and the replication SQL thread waits behind them.
pub fn old_transactions(conn: &mut Conn, seconds: u32) -> Result<Vec<OpenTransaction>> {
    let rows: Vec<(u64, String, String, u64, u64)> = conn.query(format!(
        "SELECT p.ID, p.USER, p.HOST, TIMESTAMPDIFF(SECOND, t.trx_started, NOW()), t.trx_rows_locked \
         FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p \
         ON p.ID = t.trx_mysql_thread_id \
         WHERE p.USER <> 'system user' AND t.trx_started < NOW() - INTERVAL {seconds} SECOND"
    ))?;
    Ok(rows
        .into_iter()
        .map(
            |(session, user, host, seconds, rows_locked)| OpenTransaction {
                session,
                user,
                host,
                seconds,
                rows_locked,
            },
        )
        .collect())
}

/// Server ids per GTID domain in `@@gtid_binlog_state` (`domain-server-seq,...`).
pub fn binlog_state(conn: &mut Conn) -> Result<String> {
    let state: Option<String> = conn.query_first("SELECT @@global.gtid_binlog_state")?;
    Ok(normalize_gtid_list(&state.unwrap_or_default()))
}

/// `[ERROR]` lines a node logged, minus the expected noise of a peer being down.
pub fn notable_errors(log: &Path) -> Vec<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|line| line.contains("[ERROR]"))
        .filter(|line| {
            // Reconnect attempts while the peer is down or unreachable are the expected
            // consequence of the faults the lab injects.
            !(line.contains("error reconnecting to master")
                || line.contains("error connecting to master")
                || line.contains("Error reading packet from server")
                || line.contains("Can't connect to server")
                || line.contains("Lost connection to server")
                || line.contains("Failed to open log")
                || line.contains("Slave I/O thread exiting")
                || line.contains("net_read_timeout")
                || line.contains("networking error"))
        })
        .map(|line| {
            line.split_once("[ERROR]")
                .map_or(line, |(_, rest)| rest)
                .trim()
                .to_string()
        })
        .collect()
}

pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn my_cnf_carries_the_seed_settings() {
        let paths = NodePaths::new(Path::new("/tmp/lab"), NodeId::Two);
        let text = render_my_cnf(NodeId::Two, &paths, &[Ipv4Addr::new(10, 77, 1, 99)]);
        for line in [
            "server_id                = 2",
            "gtid_domain_id           = 2",
            "gtid_strict_mode         = ON",
            "log_slave_updates        = ON",
            "auto_increment_increment = 2",
            "auto_increment_offset    = 2",
            "read_only                = ON",
            "sync_binlog                    = 1",
            "innodb_flush_log_at_trx_commit = 1",
            "rpl_semi_sync_master_wait_point    = AFTER_SYNC",
            "init_rpl_role                      = SLAVE",
            "user                     = root",
            "bind-address             = 10.77.0.2,10.77.1.2,10.77.1.99",
            "socket                   = /tmp/lab/node2/run/mysqld.sock",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }

    #[test]
    fn gtid_lists_compare_regardless_of_order() {
        assert_eq!(
            normalize_gtid_list("2-2-5, 1-1-9"),
            normalize_gtid_list("1-1-9,2-2-5")
        );
        assert_eq!(normalize_gtid_list(""), "");
    }
}
