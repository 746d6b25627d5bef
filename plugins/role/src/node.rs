//! What the role logic asks of the node it runs on. In a plugin that is the host's
//! capabilities ([`Capabilities`]); in the unit tests, a scripted node.

use std::time::Duration;

use mmvip_sdk::sql::{ClientConnection, Error as SqlError, EventInfo, ReplicaStatus};
use mmvip_sdk::{log, sql, state, vip};

pub trait Node {
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError>;
    fn set_global_variable(&mut self, name: &str, value: &str) -> Result<(), SqlError>;
    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError>;
    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError>;
    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError>;
    /// `MASTER_GTID_WAIT`: true when `position` was applied within `timeout`.
    fn wait_for_gtid(&mut self, position: &str, timeout: Duration) -> Result<bool, SqlError>;
    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError>;
    fn set_event_enabled(
        &mut self,
        schema: &str,
        name: &str,
        enabled: bool,
        comment: &str,
    ) -> Result<(), SqlError>;
    fn holds_vip(&mut self, address: &str) -> Result<bool, String>;
    /// Keeps a fact in the node's state; a refusal is logged, never fatal.
    fn remember(&mut self, key: &str, value: &str);
    fn warn(&mut self, message: &str);
    fn error(&mut self, message: &str);
}

/// The node as the host's capabilities show it.
pub struct Capabilities;

impl Node for Capabilities {
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError> {
        sql::read::global_variable(name)
    }

    fn set_global_variable(&mut self, name: &str, value: &str) -> Result<(), SqlError> {
        sql::admin::set_global_variable(name, value)
    }

    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        sql::read::replicas()
    }

    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError> {
        sql::read::connections()
    }

    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError> {
        sql::admin::kill_connection(id)
    }

    fn wait_for_gtid(&mut self, position: &str, timeout: Duration) -> Result<bool, SqlError> {
        let ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        sql::admin::wait_for_gtid(position, ms)
    }

    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError> {
        sql::read::events()
    }

    fn set_event_enabled(
        &mut self,
        schema: &str,
        name: &str,
        enabled: bool,
        comment: &str,
    ) -> Result<(), SqlError> {
        sql::admin::set_event_enabled(schema, name, enabled, comment)
    }

    fn holds_vip(&mut self, address: &str) -> Result<bool, String> {
        vip::holds(address)
    }

    fn remember(&mut self, key: &str, value: &str) {
        if let Err(why) = state::set(key, Some(value)) {
            log::warn(&format!("state not kept ({key} = {value}): {why}"));
        }
    }

    fn warn(&mut self, message: &str) {
        log::warn(message);
    }

    fn error(&mut self, message: &str) {
        log::error(message);
    }
}
