//! The MariaDB back-end: one connection over the unix socket, opened ahead or on first use,
//! with connect/read/write timeouts that never outlast the hook's deadline. Every
//! statement a plugin causes is logged before it is sent.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Row, Value};
use mysql_common::proto::codec::error::PacketCodecError;

use crate::caps::sql::{
    ClientConnection, EventInfo, EventStatus, IoState, ReplicaStatus, ServerError, SqlError,
    SqlState, refused,
};
use crate::caps::sql_admin::SqlAdmin;
use crate::caps::sql_raw::{Rows, SqlRaw};
use crate::caps::sql_read::SqlRead;
use crate::config::{MariaDbConfig, PeerConfig};
use crate::log::{Level, Log};

/// Left between an SQL timeout and the hook deadline, so the plugin still gets to
/// report the timeout itself.
const DEADLINE_MARGIN: Duration = Duration::from_millis(30);
const MAX_PACKET: usize = 16 << 20;
const ER_NO_SUCH_THREAD: u16 = 1094;
/// MariaDB's own limit on identifier length, and on an event comment.
const MAX_IDENTIFIER_CHARS: usize = 64;
const MAX_EVENT_COMMENT_CHARS: usize = 64;
/// A GTID position lists one GTID per domain; no real one comes near this.
const MAX_GTID_POSITION_BYTES: usize = 8 << 10;
/// Longest `sql-raw` statement accepted.
const MAX_RAW_STATEMENT_BYTES: usize = 64 << 10;
/// Rows of one `sql-raw` result; its size is bounded by the plugin's memory (below).
const MAX_RAW_ROWS: usize = 100_000;
/// Host bytes charged per row and per cell beside the text itself.
const ROW_OVERHEAD: usize = 24;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Socket(PathBuf),
    Tcp { host: String, port: u16 },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Socket(path) => write!(f, "{}", path.display()),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub target: Target,
    pub user: String,
    pub password: Option<String>,
}

impl Endpoint {
    /// The local MariaDB as `[mariadb]` names it.
    pub fn local(config: &MariaDbConfig, password: Option<String>) -> Endpoint {
        Endpoint {
            target: Target::Socket(config.socket.clone()),
            user: config.user.clone(),
            password,
        }
    }

    /// The peer's MariaDB on each address of `[peer]`, in order.
    pub fn peers(config: &PeerConfig, password: Option<String>) -> Vec<Endpoint> {
        config
            .addresses
            .iter()
            .map(|(host, port)| Endpoint {
                target: Target::Tcp {
                    host: host.clone(),
                    port: *port,
                },
                user: config.user.clone(),
                password: password.clone(),
            })
            .collect()
    }

    fn open(&self, timeout: Duration) -> Result<Conn, SqlError> {
        let opts = OptsBuilder::new()
            .user(Some(self.user.as_str()))
            .pass(self.password.as_deref())
            // Known values spare the driver its set-up queries.
            .max_allowed_packet(Some(MAX_PACKET))
            .stmt_cache_size(0)
            .read_timeout(Some(timeout))
            .write_timeout(Some(timeout));
        let opts = match &self.target {
            Target::Socket(path) => opts
                .socket(Some(path.to_string_lossy()))
                .prefer_socket(false),
            Target::Tcp { host, port } => opts
                .ip_or_hostname(Some(host.as_str()))
                .tcp_port(*port)
                .prefer_socket(false)
                .tcp_connect_timeout(Some(timeout)),
        };
        Conn::new(opts).map_err(|e| self.error(e, timeout))
    }

    fn error(&self, error: mysql::Error, timeout: Duration) -> SqlError {
        let target = &self.target;
        let transport = |kind: ErrorKind, why: &dyn std::fmt::Display| {
            if is_timeout(kind) {
                SqlError::Timeout(format!(
                    "no answer on {target} within {} ms",
                    timeout.as_millis()
                ))
            } else {
                SqlError::Unreachable(format!("{target}: {why}"))
            }
        };
        match error {
            mysql::Error::MySqlError(e) => SqlError::Server(ServerError {
                code: e.code,
                message: e.message,
            }),
            mysql::Error::IoError(e) | mysql::Error::CodecError(PacketCodecError::Io(e)) => {
                transport(e.kind(), &e)
            }
            mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(Some((
                _,
                why,
                kind,
            )))) => transport(kind, &why),
            other => SqlError::Unreachable(format!("{target}: {other}")),
        }
    }
}

/// Statements to one server on one connection (opened ahead or on first use), each
/// bounded by the statement timeout and the hook's deadline, each logged first.
pub struct Session {
    endpoint: Endpoint,
    /// The connect/read/write timeout of a statement.
    timeout: Duration,
    deadline: Instant,
    log: Log,
    conn: Option<Conn>,
    /// A connection being opened ahead of the plugin's first statement.
    opening: Option<JoinHandle<Result<Conn, SqlError>>>,
}

impl Session {
    pub fn new(endpoint: Endpoint, timeout: Duration, deadline: Instant, log: Log) -> Session {
        Session {
            endpoint,
            timeout,
            deadline,
            log,
            conn: None,
            opening: None,
        }
    }

    pub fn target(&self) -> &Target {
        &self.endpoint.target
    }

    /// Starts connecting on a second thread, so the handshake overlaps loading the
    /// plugin; the first statement waits for it. Failures surface at that statement,
    /// exactly as with a connection opened on first use.
    pub fn connect_ahead(&mut self) {
        if self.conn.is_some() || self.opening.is_some() {
            return;
        }
        let Ok(timeout) = self.io_budget(self.timeout) else {
            return;
        };
        let endpoint = self.endpoint.clone();
        self.opening = Some(std::thread::spawn(move || endpoint.open(timeout)));
    }

    /// The time one server round trip may take: `wanted`, cut short by the hook's
    /// deadline.
    fn io_budget(&self, wanted: Duration) -> Result<Duration, SqlError> {
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(DEADLINE_MARGIN);
        let budget = wanted.min(left);
        if budget < Duration::from_millis(1) {
            return Err(SqlError::Timeout(
                "hook deadline reached before the statement".into(),
            ));
        }
        Ok(budget)
    }

    /// A connection of its own whose read timeout is `wanted` (cut by the deadline):
    /// for statements that wait server-side longer than a statement may, or less.
    fn open_own(&self, wanted: Duration) -> Result<(Conn, Duration), SqlError> {
        let budget = self.io_budget(wanted)?;
        Ok((self.endpoint.open(budget)?, budget))
    }

    fn conn(&mut self) -> Result<&mut Conn, SqlError> {
        if self.conn.is_none() {
            let opened = match self.opening.take() {
                Some(opening) => opening.join().unwrap_or_else(|_| {
                    Err(SqlError::Unreachable("connecting thread panicked".into()))
                }),
                None => self.endpoint.open(self.io_budget(self.timeout)?),
            };
            self.conn = Some(opened?);
        }
        Ok(self.conn.as_mut().expect("connection opened above"))
    }

    fn log_statement(&self, level: Level, statement: &str) {
        match &self.endpoint.target {
            Target::Socket(_) => self.log.write_for_plugin(level, &[("sql", statement)]),
            Target::Tcp { host, port } => self.log.write_for_plugin(
                level,
                &[("server", &format!("{host}:{port}")), ("sql", statement)],
            ),
        }
    }

    /// Runs one statement, logging it first (`debug` for reads, `info` for what
    /// changes the node). A connection that failed at the transport level is
    /// dropped, since its state is unknown.
    pub fn run<T>(
        &mut self,
        level: Level,
        statement: &str,
        action: impl FnOnce(&mut Conn, &str) -> mysql::Result<T>,
    ) -> Result<T, SqlError> {
        self.log_statement(level, statement);
        // The connection's socket timeouts were fixed when it opened; a statement
        // started with too little time left could only be cut off mid-way.
        self.io_budget(self.timeout)?;
        let result = action(self.conn()?, statement);
        result.map_err(|error| {
            if !matches!(error, mysql::Error::MySqlError(_)) {
                self.conn = None;
            }
            self.endpoint.error(error, self.timeout)
        })
    }

    pub fn rows(&mut self, level: Level, statement: &str) -> Result<Rows, SqlError> {
        self.run(level, statement, |conn, sql| conn.query::<Row, _>(sql))
            .map(|rows| rows.into_iter().map(row_text).collect())
    }

    /// The first column of the first row.
    pub fn value(&mut self, level: Level, statement: &str) -> Result<Option<String>, SqlError> {
        Ok(self
            .rows(level, statement)?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten()))
    }

    /// Rows with their column names: for `SHOW` statements, whose columns differ
    /// between versions.
    pub fn records(&mut self, level: Level, statement: &str) -> Result<Vec<Record>, SqlError> {
        let rows = self.run(level, statement, |conn, sql| conn.query::<Row, _>(sql))?;
        Ok(rows.into_iter().map(Record::from).collect())
    }

    /// `SHOW ALL SLAVES STATUS`, one entry per replication connection.
    pub fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        Ok(self
            .records(Level::Debug, "SHOW ALL SLAVES STATUS")?
            .iter()
            .map(replica_status)
            .collect())
    }
}

/// One row of a `SHOW` statement, by column name.
pub struct Record(Vec<(String, Option<String>)>);

impl From<Row> for Record {
    fn from(row: Row) -> Record {
        let names: Vec<String> = row
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
        Record(names.into_iter().zip(row_text(row)).collect())
    }
}

impl Record {
    /// The column's text; `None` for NULL or a column this server does not have.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == column)
            .and_then(|(_, value)| value.as_deref())
    }
}

/// A row of `SHOW ALL SLAVES STATUS` as plugins see it.
pub fn replica_status(record: &Record) -> ReplicaStatus {
    let text = |column: &str| record.get(column).unwrap_or_default().to_string();
    ReplicaStatus {
        connection_name: text("Connection_name"),
        master_user: text("Master_User"),
        io_state: io_state(&text("Slave_IO_Running")),
        sql_state: sql_state(&text("Slave_SQL_Running")),
        gtid_io_pos: text("Gtid_IO_Pos"),
        last_io_error: text("Last_IO_Error"),
        last_sql_error: text("Last_SQL_Error"),
        seconds_behind_master: record
            .get("Seconds_Behind_Master")
            .and_then(|s| s.parse().ok()),
    }
}

/// `VERSION()` (`10.11.19-MariaDB-0+deb12u1`) as `(major, minor, patch)`.
pub fn parse_version(text: &str) -> (u32, u32, u32) {
    let mut numbers = text
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0),
    )
}

/// The privileges that let an account write while `read_only` is ON (and set it) on a
/// server of `version`, as `information_schema.USER_PRIVILEGES` names them. READ ONLY
/// ADMIN exists from 10.5.2 (10.11 lists it as READ_ONLY ADMIN); before 10.11
/// (MDEV-29596) SUPER implies it. Seen on 10.11.19: a SUPER-only account gets error
/// 1290 writing to a read-only server.
pub fn read_only_bypass_privileges(version: (u32, u32, u32)) -> &'static [&'static str] {
    if version < (10, 11, 0) {
        &["READ ONLY ADMIN", "READ_ONLY ADMIN", "SUPER"]
    } else {
        &["READ ONLY ADMIN", "READ_ONLY ADMIN"]
    }
}

/// The local MariaDB, over its unix socket: the back-end of the `sql-*` grants.
pub struct MariaDb {
    session: Session,
    /// Variables `set-global-variable` may change (`[mariadb] settable_variables`).
    settable: Vec<String>,
    /// Host memory one `sql-raw` result may take before it is refused.
    result_limit: usize,
    /// The connection `MASTER_GTID_WAIT` blocks on, kept for the next wait: its read
    /// timeout covers the rest of the hook.
    waiter: Option<Conn>,
}

impl MariaDb {
    /// `memory_bytes` is the plugin's memory limit: a raw result may take a quarter
    /// of it in the host (and must then still fit in the plugin).
    pub fn new(
        config: MariaDbConfig,
        password: Option<String>,
        deadline: Instant,
        log: Log,
        memory_bytes: usize,
    ) -> Self {
        MariaDb {
            session: Session::new(
                Endpoint::local(&config, password),
                config.timeout,
                deadline,
                log,
            ),
            settable: config.settable_variables,
            result_limit: memory_bytes / 4,
            waiter: None,
        }
    }

    /// See [`Session::connect_ahead`].
    pub fn connect_ahead(&mut self) {
        self.session.connect_ahead();
    }

    fn run<T>(
        &mut self,
        level: Level,
        statement: &str,
        action: impl FnOnce(&mut Conn, &str) -> mysql::Result<T>,
    ) -> Result<T, SqlError> {
        self.session.run(level, statement, action)
    }

    fn rows(&mut self, level: Level, statement: &str) -> Result<Rows, SqlError> {
        self.session.rows(level, statement)
    }

    /// The server's version, as `(major, minor, patch)`.
    fn version(&mut self) -> Result<(u32, u32, u32), SqlError> {
        let text = self
            .session
            .value(Level::Debug, "SELECT VERSION()")?
            .unwrap_or_default();
        Ok(parse_version(&text))
    }
}

impl SqlRead for MariaDb {
    fn ping(&mut self) -> Result<(), SqlError> {
        self.run(Level::Debug, "SELECT 1", |conn, sql| conn.query_drop(sql))
    }

    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError> {
        check_identifier(name)?;
        self.session
            .value(Level::Debug, &format!("SELECT @@GLOBAL.{name}"))
    }

    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        self.session.replicas()
    }

    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError> {
        let rows = self.rows(
            Level::Debug,
            "SELECT p.ID, p.USER, p.HOST, p.COMMAND, p.ID = CONNECTION_ID(), t.trx_id IS NOT NULL FROM information_schema.PROCESSLIST p LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID",
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let mut cells = row.into_iter().map(Option::unwrap_or_default);
                let id = cells.next()?.parse().ok()?;
                Some(ClientConnection {
                    id,
                    user: cells.next()?,
                    host: cells.next()?,
                    command: cells.next()?,
                    is_self: cells.next()? == "1",
                    in_transaction: cells.next()? == "1",
                })
            })
            .collect())
    }

    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError> {
        let rows = self.rows(
            Level::Debug,
            "SELECT EVENT_SCHEMA, EVENT_NAME, STATUS, EVENT_COMMENT FROM information_schema.EVENTS",
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let mut cells = row.into_iter().map(Option::unwrap_or_default);
                Some(EventInfo {
                    schema: cells.next()?,
                    name: cells.next()?,
                    status: event_status(&cells.next()?)?,
                    comment: cells.next()?,
                })
            })
            .collect())
    }

    fn privileged_users(&mut self) -> Result<Vec<String>, SqlError> {
        let privileges = read_only_bypass_privileges(self.version()?)
            .iter()
            .map(|p| quote_string(p))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = self.rows(
            Level::Debug,
            &format!(
                "SELECT DISTINCT GRANTEE FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE IN ({privileges})"
            ),
        )?;
        let mut users: Vec<String> = rows
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .filter_map(|grantee| account_user(&grantee))
            .collect();
        users.sort();
        users.dedup();
        Ok(users)
    }
}

impl SqlAdmin for MariaDb {
    fn set_global_variable(
        &mut self,
        name: &str,
        value: &str,
        within_ms: u32,
    ) -> Result<bool, SqlError> {
        check_identifier(name)?;
        if !crate::config::may_set(&self.settable, name) {
            return Err(refused(format!(
                "`{name}` is not in [mariadb] settable_variables ({})",
                self.settable.join(", ")
            )));
        }
        check_plain_value(value)?;
        let statement = format!("SET GLOBAL {name} = {value}");
        let within = Duration::from_millis(within_ms.into());
        if within >= self.session.timeout {
            return self
                .run(Level::Info, &statement, |conn, sql| conn.query_drop(sql))
                .map(|()| true);
        }
        // A bound shorter than a statement's: the SET runs on a connection of its own
        // whose read timeout is that bound, and is cancelled if it is still waiting
        // (behind a lock) then.
        self.session.log_statement(Level::Info, &statement);
        let (mut conn, budget) = self.session.open_own(within)?;
        let id = conn.connection_id();
        match conn.query_drop(&statement) {
            Ok(()) => Ok(true),
            Err(error) => match self.session.endpoint.error(error, budget) {
                SqlError::Timeout(_) => {
                    drop(conn);
                    let cancel = format!("KILL QUERY {id}");
                    self.run(Level::Info, &cancel, |conn, sql| conn.query_drop(sql))
                        .or_else(|e| match e {
                            SqlError::Server(ServerError {
                                code: ER_NO_SUCH_THREAD,
                                ..
                            }) => Ok(()),
                            e => Err(e),
                        })?;
                    Ok(false)
                }
                other => Err(other),
            },
        }
    }

    fn wait_for_gtid(&mut self, position: &str, timeout_ms: u32) -> Result<bool, SqlError> {
        check_gtid_position(position)?;
        // The wait blocks server-side, so it runs on a connection of its own whose
        // read timeout covers the rest of the hook; it is kept for the next wait.
        let wait = Duration::from_millis(timeout_ms.into());
        let left = self.session.io_budget(wait + self.session.timeout)?;
        let wait = wait.min(left.saturating_sub(Duration::from_millis(50)));
        let statement = format!(
            "SELECT MASTER_GTID_WAIT('{position}', {:.3})",
            wait.as_secs_f64()
        );
        self.session.log_statement(Level::Debug, &statement);
        let mut conn = match self.waiter.take() {
            Some(conn) => conn,
            None => {
                let rest = self
                    .session
                    .deadline
                    .saturating_duration_since(Instant::now());
                self.session.open_own(rest)?.0
            }
        };
        let result: Option<Option<i64>> = conn
            .query_first(&statement)
            .map_err(|e| self.session.endpoint.error(e, left))?;
        self.waiter = Some(conn);
        match result.flatten() {
            Some(0) => Ok(true),
            Some(_) => Ok(false),
            None => Err(refused(
                "MASTER_GTID_WAIT returned NULL (position not understood by the server)",
            )),
        }
    }

    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError> {
        let statement = format!("KILL CONNECTION {id}");
        match self.run(Level::Info, &statement, |conn, sql| conn.query_drop(sql)) {
            Ok(()) => Ok(true),
            Err(SqlError::Server(ServerError {
                code: ER_NO_SUCH_THREAD,
                ..
            })) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set_event_enabled(
        &mut self,
        schema: &str,
        name: &str,
        enabled: bool,
        comment: &str,
    ) -> Result<(), SqlError> {
        check_length("event schema", schema, MAX_IDENTIFIER_CHARS)?;
        check_length("event name", name, MAX_IDENTIFIER_CHARS)?;
        check_length("event comment", comment, MAX_EVENT_COMMENT_CHARS)?;
        // ALTER EVENT makes whoever runs it the definer unless told otherwise: the
        // event keeps the definer it had.
        let definer = self
            .session
            .value(
                Level::Debug,
                &format!(
                    "SELECT DEFINER FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {} AND EVENT_NAME = {}",
                    quote_string(schema),
                    quote_string(name)
                ),
            )?
            .ok_or_else(|| refused(format!("no event {schema}.{name}")))?;
        let statement = format!(
            "ALTER DEFINER = {} EVENT {}.{} {} COMMENT {}",
            quote_account(&definer),
            quote_identifier(schema),
            quote_identifier(name),
            if enabled { "ENABLE" } else { "DISABLE" },
            quote_string(comment)
        );
        // The change is this node's role, not data: keep it out of the binlog so it
        // never replicates to the peer.
        self.run(Level::Info, "SET SESSION sql_log_bin = 0", |conn, sql| {
            conn.query_drop(sql)
        })?;
        let result = self.run(Level::Info, &statement, |conn, sql| conn.query_drop(sql));
        let restored = self.run(Level::Info, "SET SESSION sql_log_bin = 1", |conn, sql| {
            conn.query_drop(sql)
        });
        match (result, restored) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(error), Ok(())) => Err(error),
            // This connection must not go on with binary logging off.
            (result, Err(restoring)) => {
                self.session.conn = None;
                Err(match result {
                    Ok(()) => restoring,
                    Err(error) => refused(format!(
                        "{}; and then restoring sql_log_bin failed ({}), so the connection was dropped",
                        crate::caps::sql::describe(&error),
                        crate::caps::sql::describe(&restoring)
                    )),
                })
            }
        }
    }

    fn start_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        let statement = replica_io_statement("START", connection_name)?;
        self.run(Level::Info, &statement, |conn, sql| conn.query_drop(sql))
    }

    fn stop_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        let statement = replica_io_statement("STOP", connection_name)?;
        self.run(Level::Info, &statement, |conn, sql| conn.query_drop(sql))
    }
}

/// `START|STOP SLAVE [connection] IO_THREAD`.
pub fn replica_io_statement(verb: &str, connection_name: &str) -> Result<String, SqlError> {
    replica_statement(verb, connection_name, " IO_THREAD")
}

/// `START|STOP SLAVE [connection]` followed by `threads` (empty for both).
pub fn replica_statement(
    verb: &str,
    connection_name: &str,
    threads: &str,
) -> Result<String, SqlError> {
    check_length("connection name", connection_name, MAX_IDENTIFIER_CHARS)?;
    Ok(if connection_name.is_empty() {
        format!("{verb} SLAVE{threads}")
    } else {
        format!("{verb} SLAVE {}{threads}", quote_string(connection_name))
    })
}

impl SqlRaw for MariaDb {
    fn query(&mut self, statement: &str) -> Result<Rows, SqlError> {
        if statement.len() > MAX_RAW_STATEMENT_BYTES {
            return Err(refused(format!(
                "statement of {} bytes is longer than {MAX_RAW_STATEMENT_BYTES}",
                statement.len()
            )));
        }
        let limit = self.result_limit;
        let mut too_large = false;
        let result = self.session.run(Level::Info, statement, |conn, sql| {
            let mut result = conn.query_iter(sql)?;
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            if let Some(set) = result.iter() {
                for row in set {
                    let row = row_text(row?);
                    bytes += ROW_OVERHEAD
                        + row
                            .iter()
                            .map(|cell| ROW_OVERHEAD + cell.as_ref().map_or(0, String::len))
                            .sum::<usize>();
                    rows.push(row);
                    if rows.len() > MAX_RAW_ROWS || bytes > limit {
                        too_large = true;
                        break;
                    }
                }
            }
            if too_large {
                // Dropping the result would read the rest of it from the server; the
                // connection is closed instead (below).
                std::mem::forget(result);
                return Ok(Vec::new());
            }
            Ok(rows)
        });
        if too_large {
            self.session.conn = None;
            return Err(refused(format!(
                "result larger than {MAX_RAW_ROWS} rows or {} KiB (a quarter of the plugin's memory_mib)",
                limit >> 10
            )));
        }
        result
    }
}

/// A socket read/write timeout shows up as `WouldBlock` (EAGAIN) on Linux.
fn is_timeout(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn io_state(text: &str) -> IoState {
    match text {
        "Yes" => IoState::Running,
        "Connecting" => IoState::Connecting,
        "Preparing" => IoState::Preparing,
        _ => IoState::Stopped,
    }
}

fn sql_state(text: &str) -> SqlState {
    match text {
        "Yes" => SqlState::Running,
        _ => SqlState::Stopped,
    }
}

fn event_status(text: &str) -> Option<EventStatus> {
    match text {
        "ENABLED" => Some(EventStatus::Enabled),
        "DISABLED" => Some(EventStatus::Disabled),
        "SLAVESIDE_DISABLED" => Some(EventStatus::ReplicaSideDisabled),
        _ => None,
    }
}

fn check_identifier(name: &str) -> Result<(), SqlError> {
    if !name.is_empty()
        && name.len() <= MAX_IDENTIFIER_CHARS
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(())
    } else {
        Err(refused(format!(
            "`{}` is not a variable name",
            crate::log::cut(name, MAX_IDENTIFIER_CHARS)
        )))
    }
}

/// A value `SET GLOBAL` takes as is: a plain decimal number, or a keyword such as
/// ON, OFF or a storage engine's name. MariaDB reads `0x41`, `0b1`, `x'41'` and `b'1'`
/// as strings, which would let a plugin set any text, so they are refused.
fn check_plain_value(value: &str) -> Result<(), SqlError> {
    let decimal = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let keyword = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && value.len() <= MAX_IDENTIFIER_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if decimal || keyword {
        Ok(())
    } else {
        Err(refused(format!(
            "value `{}` is not a plain decimal number or keyword",
            crate::log::cut(value, MAX_IDENTIFIER_CHARS)
        )))
    }
}

fn check_length(what: &str, text: &str, limit: usize) -> Result<(), SqlError> {
    if text.chars().count() <= limit {
        Ok(())
    } else {
        Err(refused(format!("{what} is longer than {limit} characters")))
    }
}

/// `'user'@'host'` (as GRANTEE and DEFINER are written, quoted or not) → `user`.
fn account_user(account: &str) -> Option<String> {
    let user = account.rsplit_once('@').map_or(account, |(user, _)| user);
    let user = user.trim_matches(|c| c == '\'' || c == '`');
    (!user.is_empty()).then(|| user.replace("''", "'"))
}

/// A DEFINER as `information_schema` shows it (`user@host`), quoted for SQL.
fn quote_account(account: &str) -> String {
    match account.rsplit_once('@') {
        Some((user, host)) => format!("{}@{}", quote_string(user), quote_string(host)),
        None => quote_string(account),
    }
}

fn check_gtid_position(position: &str) -> Result<(), SqlError> {
    if position.len() > MAX_GTID_POSITION_BYTES
        || !position
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
    {
        return Err(refused(format!(
            "`{}` is not a GTID position",
            crate::log::cut(position, 100)
        )));
    }
    Ok(())
}

fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn quote_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

fn value_text(value: Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::Int(n) => Some(n.to_string()),
        Value::UInt(n) => Some(n.to_string()),
        Value::Float(n) => Some(n.to_string()),
        Value::Double(n) => Some(n.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

fn row_text(row: Row) -> Vec<Option<String>> {
    row.unwrap().into_iter().map(value_text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_neutralises_injection() {
        assert_eq!(quote_identifier("a`b"), "`a``b`");
        assert_eq!(quote_string("it's \\"), "'it''s \\\\'");
        assert!(check_identifier("read_only").is_ok());
        assert!(check_identifier("read_only; DROP").is_err());
        assert!(check_identifier(&"a".repeat(65)).is_err());
    }

    #[test]
    fn only_plain_values_can_be_set() {
        for good in ["ON", "OFF", "1", "0", "InnoDB", "_x"] {
            assert!(check_plain_value(good).is_ok(), "{good}");
        }
        for bad in [
            "0x41", "0b1", "x'41'", "b'01'", "X'41'", "1.5", "-1", "", "'a'", "1e3",
        ] {
            assert!(check_plain_value(bad).is_err(), "{bad}");
        }
    }

    mod properties {
        use std::sync::Arc;

        use mysql_common::constants::ColumnType;
        use mysql_common::packets::Column;
        use proptest::prelude::*;

        use super::*;

        const COLUMNS: [&str; 9] = [
            "Connection_name",
            "Master_User",
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Gtid_IO_Pos",
            "Last_IO_Error",
            "Last_SQL_Error",
            "Seconds_Behind_Master",
            "Unknown_Column",
        ];

        /// A cell as the server (or something posing as it) may send it.
        fn cell() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::NULL),
                Just(Value::Bytes(b"Yes".to_vec())),
                Just(Value::Bytes(b"Connecting".to_vec())),
                prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
                any::<String>().prop_map(|s| Value::Bytes(s.into_bytes())),
                any::<i64>().prop_map(Value::Int),
                any::<u64>().prop_map(Value::UInt),
                any::<f64>().prop_map(Value::Double),
                (
                    any::<u16>(),
                    any::<u8>(),
                    any::<u8>(),
                    any::<u8>(),
                    any::<u8>(),
                    any::<u8>(),
                    any::<u32>()
                )
                    .prop_map(|(y, mo, d, h, mi, s, us)| Value::Date(y, mo, d, h, mi, s, us)),
                (
                    any::<bool>(),
                    any::<u32>(),
                    any::<u8>(),
                    any::<u8>(),
                    any::<u8>(),
                    any::<u32>()
                )
                    .prop_map(|(n, d, h, m, s, us)| Value::Time(n, d, h, m, s, us)),
            ]
        }

        fn row() -> impl Strategy<Value = Row> {
            prop::collection::vec((prop::sample::select(&COLUMNS[..]), cell()), 0..12).prop_map(
                |cells| {
                    let columns: Arc<[Column]> = cells
                        .iter()
                        .map(|(name, _)| {
                            Column::new(ColumnType::MYSQL_TYPE_VAR_STRING)
                                .with_name(name.as_bytes())
                        })
                        .collect();
                    mysql_common::row::new_row(cells.into_iter().map(|(_, v)| v).collect(), columns)
                },
            )
        }

        proptest! {
            #![proptest_config(crate::proptest_config(2000))]

            #[test]
            fn any_replica_status_row_reads_without_a_panic(row in row()) {
                let record = Record::from(row);
                let status = replica_status(&record);
                let io = record.get("Slave_IO_Running");
                prop_assert_eq!(status.io_state == IoState::Running, io == Some("Yes"));
                let sql = record.get("Slave_SQL_Running");
                prop_assert_eq!(status.sql_state == SqlState::Running, sql == Some("Yes"));
            }
        }
    }
}
