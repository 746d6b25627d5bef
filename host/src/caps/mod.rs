//! Capability back-ends. Each granted WIT interface is served by one of these; a
//! back-end performs operations and never decides policy (that is the plugin's job).
//! Tests substitute their own implementations of the traits.

pub mod failover_flag;
pub mod mariadb;
pub mod state;
pub mod vip;

pub use state::StateStore;

pub use crate::bindings::sql_types::{ClientConnection, EventInfo, ReplicaStatus, SqlError};

/// Grant `failover-flag`.
pub trait FailoverFlag: Send {
    fn is_raised(&mut self) -> Result<bool, String>;
}

/// Grants `sql-read`, `sql-admin` and `sql-raw`: typed operations on the local MariaDB.
pub trait Sql: Send {
    fn ping(&mut self) -> Result<(), SqlError>;
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError>;
    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError>;
    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError>;
    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError>;
    fn set_global_variable(&mut self, name: &str, value: &str) -> Result<(), SqlError>;
    fn wait_for_gtid(&mut self, position: &str, timeout_ms: u32) -> Result<bool, SqlError>;
    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError>;
    fn set_event_enabled(
        &mut self,
        schema: &str,
        name: &str,
        enabled: bool,
        comment: &str,
    ) -> Result<(), SqlError>;
    fn query(&mut self, statement: &str) -> Result<Vec<Vec<Option<String>>>, SqlError>;
}

/// Grant `vip`.
pub trait Vip: Send {
    fn holds(&mut self, address: &str) -> Result<bool, String>;
}
