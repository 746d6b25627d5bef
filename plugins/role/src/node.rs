//! What the role logic asks of the node it runs on. In a plugin that is the host's
//! capabilities ([`Capabilities`]); in the unit tests, a scripted node.

use std::time::{Duration, Instant};

use mmvip_sdk::lease::Answer as LeaseAnswer;
use mmvip_sdk::peer::PeerStatus;
use mmvip_sdk::sql::{ClientConnection, Error as SqlError, EventInfo, ReplicaStatus};
use mmvip_sdk::{lease, log, peer, sql, state, vip};

pub trait Node {
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError>;
    /// False when it had not taken effect within `within` (it is then cancelled).
    fn set_global_variable(
        &mut self,
        name: &str,
        value: &str,
        within: Duration,
    ) -> Result<bool, SqlError>;
    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError>;
    fn start_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError>;
    fn stop_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError>;
    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError>;
    fn privileged_users(&mut self) -> Result<Vec<String>, SqlError>;
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
    fn peer_status(&mut self) -> Result<PeerStatus, SqlError>;
    /// The write lease of `instance`, from this node's guard.
    fn acquire_lease(&mut self, instance: &str, timeout: Duration) -> LeaseAnswer;
    fn release_lease(&mut self, instance: &str) -> LeaseAnswer;
    /// Whether the peer's guard answered this node's guard's last lease round.
    fn peer_guard_answers(&mut self) -> bool;
    fn holds_vip(&mut self, address: &str) -> Result<bool, String>;
    /// The remote `host:port` of clients still connected through `address`.
    fn vip_clients(&mut self, address: &str) -> Result<Vec<String>, String>;
    /// Keeps a fact in the node's state; a refusal is logged, never fatal.
    fn remember(&mut self, key: &str, value: &str);
    fn recall(&mut self, key: &str) -> Option<String>;
    fn forget(&mut self, key: &str);
    fn warn(&mut self, message: &str);
    fn error(&mut self, message: &str);
    /// The node's clock, and a pause on it (the tests' node keeps its own time).
    fn now(&self) -> Instant;
    fn pause(&mut self, duration: Duration);
    /// Wall-clock seconds since the Unix epoch: for what must outlive the process.
    fn unix_time(&self) -> u64;
}

/// The node as the host's capabilities show it.
pub struct Capabilities;

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

impl Node for Capabilities {
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError> {
        sql::read::global_variable(name)
    }

    fn set_global_variable(
        &mut self,
        name: &str,
        value: &str,
        within: Duration,
    ) -> Result<bool, SqlError> {
        sql::admin::set_global_variable(name, value, millis(within))
    }

    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        sql::read::replicas()
    }

    fn start_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        sql::admin::start_replica_io(connection_name)
    }

    fn stop_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        sql::admin::stop_replica_io(connection_name)
    }

    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError> {
        sql::read::connections()
    }

    fn privileged_users(&mut self) -> Result<Vec<String>, SqlError> {
        sql::read::privileged_users()
    }

    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError> {
        sql::admin::kill_connection(id)
    }

    fn wait_for_gtid(&mut self, position: &str, timeout: Duration) -> Result<bool, SqlError> {
        sql::admin::wait_for_gtid(position, millis(timeout))
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

    fn peer_status(&mut self) -> Result<PeerStatus, SqlError> {
        peer::status()
    }

    fn acquire_lease(&mut self, instance: &str, timeout: Duration) -> LeaseAnswer {
        lease::acquire(instance, millis(timeout))
    }

    fn release_lease(&mut self, instance: &str) -> LeaseAnswer {
        lease::release(instance)
    }

    fn peer_guard_answers(&mut self) -> bool {
        lease::peer_answers()
    }

    fn holds_vip(&mut self, address: &str) -> Result<bool, String> {
        vip::holds(address)
    }

    fn vip_clients(&mut self, address: &str) -> Result<Vec<String>, String> {
        vip::clients(address)
    }

    fn remember(&mut self, key: &str, value: &str) {
        if let Err(why) = state::set(key, Some(value)) {
            log::warn(&format!("state not kept ({key} = {value}): {why}"));
        }
    }

    fn recall(&mut self, key: &str) -> Option<String> {
        state::get(key)
    }

    fn forget(&mut self, key: &str) {
        if let Err(why) = state::set(key, None) {
            log::warn(&format!("state not kept ({key} removed): {why}"));
        }
    }

    fn warn(&mut self, message: &str) {
        log::warn(message);
    }

    fn error(&mut self, message: &str) {
        log::error(message);
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn pause(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn unix_time(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    }
}
