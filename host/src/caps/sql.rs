//! What the three SQL grants share: one connection to the local MariaDB serves
//! `sql-read`, `sql-admin` and `sql-raw`, so a back-end implements all three.

pub use crate::bindings::sql_types::{
    ClientConnection, EventInfo, EventStatus, IoState, ReplicaStatus, ServerError, SqlError,
    SqlState,
};

use super::sql_admin::SqlAdmin;
use super::sql_raw::SqlRaw;
use super::sql_read::SqlRead;

/// A back-end for every SQL grant.
pub trait SqlBackend: SqlRead + SqlAdmin + SqlRaw {}

impl<T: SqlRead + SqlAdmin + SqlRaw> SqlBackend for T {}

/// An operation mmvip refuses before sending anything.
pub fn refused(why: impl Into<String>) -> SqlError {
    SqlError::Refused(why.into())
}

/// One line for an SQL error, as the SDK words it.
pub fn describe(error: &SqlError) -> String {
    match error {
        SqlError::Unreachable(why) => format!("mariadb unreachable: {why}"),
        SqlError::Timeout(why) => format!("mariadb timed out: {why}"),
        SqlError::Server(e) => format!("mariadb error {}: {}", e.code, e.message),
        SqlError::Refused(why) => format!("refused by mmvip: {why}"),
    }
}
