//! The MariaDB back-end: one connection over the unix socket, opened ahead or on first use,
//! with connect/read/write timeouts that never outlast the hook's deadline. Every
//! statement a plugin causes is logged before it is sent.

use std::io::ErrorKind;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Row, Value};
use mysql_common::proto::codec::error::PacketCodecError;

use super::{ClientConnection, EventInfo, ReplicaStatus, Sql, SqlError};
use crate::config::MariaDbConfig;
use crate::log::Log;

/// Left between an SQL timeout and the hook deadline, so the plugin still gets to
/// report the timeout itself.
const DEADLINE_MARGIN: Duration = Duration::from_millis(30);
const MAX_PACKET: usize = 16 << 20;
const ER_NO_SUCH_THREAD: u16 = 1094;

/// Where and as whom to connect.
#[derive(Clone)]
struct Endpoint {
    config: MariaDbConfig,
    password: Option<String>,
}

impl Endpoint {
    fn open(&self, timeout: Duration) -> Result<Conn, SqlError> {
        let opts = OptsBuilder::new()
            .socket(Some(self.config.socket.to_string_lossy()))
            .user(Some(self.config.user.as_str()))
            .pass(self.password.as_deref())
            .prefer_socket(false)
            // Known values spare the driver its set-up queries.
            .max_allowed_packet(Some(MAX_PACKET))
            .stmt_cache_size(0)
            .read_timeout(Some(timeout))
            .write_timeout(Some(timeout));
        Conn::new(opts).map_err(|e| self.error(e, timeout))
    }

    fn error(&self, error: mysql::Error, timeout: Duration) -> SqlError {
        let socket = self.config.socket.display();
        let transport = |kind: ErrorKind, why: &dyn std::fmt::Display| {
            if is_timeout(kind) {
                SqlError::Timeout(format!(
                    "no answer on {socket} within {} ms",
                    timeout.as_millis()
                ))
            } else {
                SqlError::Unreachable(format!("{socket}: {why}"))
            }
        };
        match error {
            mysql::Error::MySqlError(e) => SqlError::Server((e.code, e.message)),
            mysql::Error::IoError(e) | mysql::Error::CodecError(PacketCodecError::Io(e)) => {
                transport(e.kind(), &e)
            }
            mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(Some((
                _,
                why,
                kind,
            )))) => transport(kind, &why),
            other => SqlError::Unreachable(format!("{socket}: {other}")),
        }
    }
}

pub struct MariaDb {
    endpoint: Endpoint,
    deadline: Instant,
    log: Log,
    conn: Option<Conn>,
    /// A connection being opened ahead of the plugin's first statement.
    opening: Option<JoinHandle<Result<Conn, SqlError>>>,
}

impl MariaDb {
    pub fn new(
        config: MariaDbConfig,
        password: Option<String>,
        deadline: Instant,
        log: Log,
    ) -> Self {
        MariaDb {
            endpoint: Endpoint { config, password },
            deadline,
            log,
            conn: None,
            opening: None,
        }
    }

    /// Starts connecting on a second thread, so the handshake overlaps loading the
    /// plugin; the first statement waits for it. Failures surface at that statement,
    /// exactly as with a connection opened on first use.
    pub fn connect_ahead(&mut self) {
        if self.conn.is_some() || self.opening.is_some() {
            return;
        }
        let Ok(timeout) = self.io_budget(self.endpoint.config.timeout) else {
            return;
        };
        let endpoint = self.endpoint.clone();
        self.opening = Some(std::thread::spawn(move || endpoint.open(timeout)));
    }

    /// Drops a connection opened ahead: a hook that waited for the node lock may have
    /// had it killed by the demotion that held the lock.
    pub fn forget_connection(&mut self) {
        self.opening = None;
        self.conn = None;
    }

    /// Tags later statement lines with what became known after start-up.
    pub fn set_log(&mut self, log: Log) {
        self.log = log;
    }

    /// The time one server round trip may take: the configured timeout, cut short by
    /// the hook's deadline.
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

    fn conn(&mut self) -> Result<&mut Conn, SqlError> {
        if self.conn.is_none() {
            let opened = match self.opening.take() {
                Some(opening) => opening.join().unwrap_or_else(|_| {
                    Err(SqlError::Unreachable("connecting thread panicked".into()))
                }),
                None => self
                    .endpoint
                    .open(self.io_budget(self.endpoint.config.timeout)?),
            };
            self.conn = Some(opened?);
        }
        Ok(self.conn.as_mut().expect("connection opened above"))
    }

    fn error(&self, error: mysql::Error, timeout: Duration) -> SqlError {
        self.endpoint.error(error, timeout)
    }

    /// Runs one statement, logging it first (`debug` for reads, `info` for what
    /// changes the node). A connection that failed at the transport level is
    /// dropped, since its state is unknown.
    fn run<T>(
        &mut self,
        level: &str,
        statement: &str,
        action: impl FnOnce(&mut Conn, &str) -> mysql::Result<T>,
    ) -> Result<T, SqlError> {
        self.log.write(level, &[("sql", statement)]);
        let timeout = self.endpoint.config.timeout;
        // The connection's socket timeouts were fixed when it opened; a statement
        // started with too little time left could only be cut off mid-way.
        self.io_budget(timeout)?;
        let result = action(self.conn()?, statement);
        result.map_err(|error| {
            if !matches!(error, mysql::Error::MySqlError(_)) {
                self.conn = None;
            }
            self.error(error, timeout)
        })
    }

    fn rows(&mut self, level: &str, statement: &str) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        self.run(level, statement, |conn, sql| conn.query::<Row, _>(sql))
            .map(|rows| rows.into_iter().map(row_text).collect())
    }
}

impl Sql for MariaDb {
    fn ping(&mut self) -> Result<(), SqlError> {
        self.run("debug", "SELECT 1", |conn, sql| conn.query_drop(sql))
    }

    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError> {
        check_identifier(name)?;
        let rows = self.rows("debug", &format!("SELECT @@GLOBAL.{name}"))?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten()))
    }

    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        let rows = self.run("debug", "SHOW ALL SLAVES STATUS", |conn, sql| {
            conn.query::<Row, _>(sql)
        })?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let text = |column: &str| column_text(&row, column).unwrap_or_default();
                ReplicaStatus {
                    connection_name: text("Connection_name"),
                    io_running: text("Slave_IO_Running"),
                    sql_running: text("Slave_SQL_Running"),
                    gtid_io_pos: text("Gtid_IO_Pos"),
                    last_io_error: text("Last_IO_Error"),
                    last_sql_error: text("Last_SQL_Error"),
                    seconds_behind_master: column_text(&row, "Seconds_Behind_Master")
                        .and_then(|s| s.parse().ok()),
                }
            })
            .collect())
    }

    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError> {
        let rows = self.rows(
            "debug",
            "SELECT ID, USER, HOST, COMMAND, ID = CONNECTION_ID() FROM information_schema.PROCESSLIST",
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
                })
            })
            .collect())
    }

    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError> {
        let rows = self.rows(
            "debug",
            "SELECT EVENT_SCHEMA, EVENT_NAME, STATUS, EVENT_COMMENT FROM information_schema.EVENTS",
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let mut cells = row.into_iter().map(Option::unwrap_or_default);
                Some(EventInfo {
                    schema: cells.next()?,
                    name: cells.next()?,
                    status: cells.next()?,
                    comment: cells.next()?,
                })
            })
            .collect())
    }

    fn set_global_variable(&mut self, name: &str, value: &str) -> Result<(), SqlError> {
        check_identifier(name)?;
        if value.is_empty()
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(refused(format!(
                "value `{value}` is not an identifier or number"
            )));
        }
        let statement = format!("SET GLOBAL {name} = {value}");
        self.run("info", &statement, |conn, sql| conn.query_drop(sql))
    }

    fn wait_for_gtid(&mut self, position: &str, timeout_ms: u32) -> Result<bool, SqlError> {
        if !position
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
        {
            return Err(refused(format!("`{position}` is not a GTID position")));
        }
        // The wait blocks server-side, so it runs on its own connection whose read
        // timeout covers the wait, both capped by the hook deadline.
        let wait = Duration::from_millis(timeout_ms.into());
        let budget = self.io_budget(wait + self.endpoint.config.timeout)?;
        let wait = wait.min(budget.saturating_sub(Duration::from_millis(50)));
        let statement = format!(
            "SELECT MASTER_GTID_WAIT('{position}', {:.3})",
            wait.as_secs_f64()
        );
        self.log.write("debug", &[("sql", &statement)]);
        let mut conn = self.endpoint.open(budget)?;
        let result: Option<Option<i64>> = conn
            .query_first(&statement)
            .map_err(|e| self.error(e, budget))?;
        match result.flatten() {
            Some(0) => Ok(true),
            Some(_) => Ok(false),
            None => Err(SqlError::Server((
                0,
                "MASTER_GTID_WAIT returned NULL".into(),
            ))),
        }
    }

    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError> {
        let statement = format!("KILL CONNECTION {id}");
        match self.run("info", &statement, |conn, sql| conn.query_drop(sql)) {
            Ok(()) => Ok(true),
            Err(SqlError::Server((ER_NO_SUCH_THREAD, _))) => Ok(false),
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
        let statement = format!(
            "ALTER EVENT {}.{} {} COMMENT {}",
            quote_identifier(schema),
            quote_identifier(name),
            if enabled { "ENABLE" } else { "DISABLE" },
            quote_string(comment)
        );
        // The change is this node's role, not data: keep it out of the binlog so it
        // never replicates to the peer.
        self.run("info", "SET SESSION sql_log_bin = 0", |conn, sql| {
            conn.query_drop(sql)
        })?;
        let result = self.run("info", &statement, |conn, sql| conn.query_drop(sql));
        self.run("info", "SET SESSION sql_log_bin = 1", |conn, sql| {
            conn.query_drop(sql)
        })?;
        result
    }

    fn query(&mut self, statement: &str) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        self.rows("info", statement)
    }
}

/// A socket read/write timeout shows up as `WouldBlock` (EAGAIN) on Linux.
fn is_timeout(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn refused(why: String) -> SqlError {
    SqlError::Server((0, format!("refused by mmvip: {why}")))
}

fn check_identifier(name: &str) -> Result<(), SqlError> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(())
    } else {
        Err(refused(format!("`{name}` is not a variable name")))
    }
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

fn column_text(row: &Row, column: &str) -> Option<String> {
    let index = row
        .columns_ref()
        .iter()
        .position(|c| c.name_str() == column)?;
    row.as_ref(index).cloned().and_then(value_text)
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
    }
}
