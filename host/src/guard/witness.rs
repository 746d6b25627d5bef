//! The witness: any third MariaDB (or MySQL) server both nodes reach, used as a
//! compare-and-set on its own clock. One row per instance in `<database>.mmvip_lease`:
//! a vote goes to whoever holds the row, or to anyone once the row's `expires` (on the
//! witness's clock) has passed.

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

use super::config::Witness;
use super::lease::{Answer, Refusal};

pub struct WitnessClient {
    config: Witness,
    password: Option<String>,
    timeout: Duration,
    conn: Option<Conn>,
}

impl WitnessClient {
    pub fn new(config: Witness, password: Option<String>, timeout: Duration) -> WitnessClient {
        WitnessClient {
            config,
            password,
            timeout,
            conn: None,
        }
    }

    fn table(&self) -> String {
        format!("`{}`.`mmvip_lease`", self.config.database)
    }

    fn conn(&mut self) -> Result<&mut Conn, String> {
        if self.conn.is_none() {
            let (host, port) = &self.config.address;
            let opts = OptsBuilder::new()
                .ip_or_hostname(Some(host.as_str()))
                .tcp_port(*port)
                .user(Some(self.config.user.as_str()))
                .pass(self.password.as_deref())
                .prefer_socket(false)
                .tcp_connect_timeout(Some(self.timeout))
                .read_timeout(Some(self.timeout))
                .write_timeout(Some(self.timeout))
                .stmt_cache_size(0);
            let mut conn = Conn::new(opts).map_err(|e| e.to_string())?;
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {} (instance VARCHAR(64) PRIMARY KEY, holder VARCHAR(64) NOT NULL, expires DATETIME(6) NOT NULL)",
                self.table()
            ))
            .map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    /// Asks for `candidate`'s vote on `instance`, standing for `hold` on the witness's
    /// clock.
    pub fn vote(&mut self, instance: &str, candidate: &str, hold: Duration) -> Answer {
        let table = self.table();
        let micros = hold.as_micros() as u64;
        let result = self.conn().and_then(|conn| {
            conn.exec_drop(
                format!("INSERT IGNORE INTO {table} VALUES (?, '', '1970-01-01 00:00:01')"),
                (instance,),
            )
            .and_then(|()| {
                conn.exec_drop(
                    format!(
                        "UPDATE {table} SET holder = ?, expires = NOW(6) + INTERVAL ? MICROSECOND WHERE instance = ? AND (holder = ? OR holder = '' OR expires < NOW(6))"
                    ),
                    (candidate, micros, instance, candidate),
                )
            })
            .map_err(|e| e.to_string())?;
            if conn.affected_rows() == 1 {
                return Ok(Answer::Granted);
            }
            let row: Option<(String, i64)> = conn
                .exec_first(
                    format!(
                        "SELECT holder, TIMESTAMPDIFF(MICROSECOND, NOW(6), expires) FROM {table} WHERE instance = ?"
                    ),
                    (instance,),
                )
                .map_err(|e| e.to_string())?;
            let (holder, left) = row.ok_or("the lease row vanished")?;
            Ok(Answer::Refused(Refusal {
                holder,
                left: Duration::from_micros(left.max(0) as u64),
            }))
        });
        result.unwrap_or_else(|why| {
            self.conn = None;
            let (host, port) = &self.config.address;
            Answer::Silent(format!("witness {host}:{port}: {why}"))
        })
    }

    /// Gives `holder`'s vote back (after a demotion).
    pub fn release(&mut self, instance: &str, holder: &str) -> Result<(), String> {
        let table = self.table();
        let result = self.conn().and_then(|conn| {
            conn.exec_drop(
                format!(
                    "UPDATE {table} SET holder = '', expires = '1970-01-01 00:00:01' WHERE instance = ? AND holder = ?"
                ),
                (instance, holder),
            )
            .map_err(|e| e.to_string())
        });
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}
