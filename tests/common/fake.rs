//! The one scripted back-end of the component tests: a MariaDB whose answers a test
//! sets, every change recorded, plus scripted VIP ownership and failover flag.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mmvip::caps::failover_flag::FailoverFlag;
use mmvip::caps::sql::{
    ClientConnection, EventInfo, EventStatus, IoState, ReplicaStatus, SqlError, SqlState,
};
use mmvip::caps::sql_admin::SqlAdmin;
use mmvip::caps::sql_raw::{Rows, SqlRaw};
use mmvip::caps::sql_read::SqlRead;
use mmvip::caps::vip::Vip;

/// A scripted MariaDB.
#[derive(Clone)]
pub struct FakeDb {
    pub variables: BTreeMap<String, String>,
    pub replicas: Vec<ReplicaStatus>,
    pub wait_reaches: bool,
    pub connections: Vec<ClientConnection>,
    pub already_gone: BTreeSet<u64>,
    pub events: Vec<EventInfo>,
    /// Accounts that write through read_only.
    pub privileged: Vec<String>,
    /// Every call fails as if the server were down.
    pub unreachable: Option<SqlError>,
    /// `SET GLOBAL` is accepted but does not take (as under a proxy or a bug).
    pub set_ignored: bool,
    /// How long each call takes.
    pub delay: Duration,
    pub calls: Vec<String>,
}

impl FakeDb {
    /// A replicating node of domain 2, read-only, that received 1-1-10 and 2-2-7.
    pub fn new() -> FakeDb {
        FakeDb {
            variables: [("read_only", "1"), ("gtid_domain_id", "2")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            replicas: vec![replica(IoState::Running, SqlState::Running, "1-1-10,2-2-7")],
            wait_reaches: true,
            connections: Vec::new(),
            already_gone: BTreeSet::new(),
            events: Vec::new(),
            privileged: Vec::new(),
            unreachable: None,
            set_ignored: false,
            delay: Duration::ZERO,
            calls: Vec::new(),
        }
    }

    /// Shared with the test, which reads it after the run.
    pub fn shared(self) -> Arc<Mutex<FakeDb>> {
        Arc::new(Mutex::new(self))
    }
}

impl Default for FakeDb {
    fn default() -> FakeDb {
        FakeDb::new()
    }
}

pub fn replica(io: IoState, sql: SqlState, io_pos: &str) -> ReplicaStatus {
    ReplicaStatus {
        connection_name: String::new(),
        master_user: "repl".into(),
        io_state: io,
        sql_state: sql,
        gtid_io_pos: io_pos.into(),
        last_io_error: String::new(),
        last_sql_error: String::new(),
        seconds_behind_master: Some(0),
    }
}

pub fn connection(id: u64, user: &str, command: &str) -> ClientConnection {
    ClientConnection {
        id,
        user: user.into(),
        host: "localhost".into(),
        command: command.into(),
        is_self: false,
        in_transaction: false,
    }
}

/// The fake as a back-end: behind a lock the test keeps a handle to.
pub struct Shared(pub Arc<Mutex<FakeDb>>);

impl Shared {
    fn db(&self) -> Result<std::sync::MutexGuard<'_, FakeDb>, SqlError> {
        let db = self.0.lock().unwrap();
        std::thread::sleep(db.delay);
        match &db.unreachable {
            Some(error) => Err(error.clone()),
            None => Ok(db),
        }
    }
}

impl SqlRead for Shared {
    fn ping(&mut self) -> Result<(), SqlError> {
        self.db().map(|_| ())
    }

    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError> {
        Ok(self.db()?.variables.get(name).cloned())
    }

    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        Ok(self.db()?.replicas.clone())
    }

    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError> {
        Ok(self.db()?.connections.clone())
    }

    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError> {
        Ok(self.db()?.events.clone())
    }

    fn privileged_users(&mut self) -> Result<Vec<String>, SqlError> {
        Ok(self.db()?.privileged.clone())
    }
}

impl SqlAdmin for Shared {
    fn set_global_variable(
        &mut self,
        name: &str,
        value: &str,
        _within_ms: u32,
    ) -> Result<bool, SqlError> {
        let mut db = self.db()?;
        db.calls.push(format!("SET {name}={value}"));
        if !db.set_ignored {
            let stored = if value == "ON" { "1" } else { "0" };
            db.variables.insert(name.into(), stored.into());
        }
        Ok(true)
    }

    fn start_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        let mut db = self.db()?;
        db.calls.push(format!("START IO {connection_name}"));
        Ok(())
    }

    fn stop_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        let mut db = self.db()?;
        db.calls.push(format!("STOP IO {connection_name}"));
        Ok(())
    }

    fn wait_for_gtid(&mut self, position: &str, timeout_ms: u32) -> Result<bool, SqlError> {
        let mut db = self.db()?;
        db.calls.push(format!("WAIT {position}"));
        if !db.wait_reaches {
            // As the server would: the wait takes its whole timeout.
            std::thread::sleep(Duration::from_millis(timeout_ms.into()));
        }
        Ok(db.wait_reaches)
    }

    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError> {
        let mut db = self.db()?;
        db.calls.push(format!("KILL {id}"));
        Ok(!db.already_gone.contains(&id))
    }

    fn set_event_enabled(
        &mut self,
        schema: &str,
        name: &str,
        enabled: bool,
        comment: &str,
    ) -> Result<(), SqlError> {
        let mut db = self.db()?;
        db.calls.push(format!(
            "EVENT {schema}.{name} {} {comment}",
            if enabled { "ENABLE" } else { "DISABLE" }
        ));
        if let Some(event) = db
            .events
            .iter_mut()
            .find(|e| e.schema == schema && e.name == name)
        {
            event.status = if enabled {
                EventStatus::Enabled
            } else {
                EventStatus::Disabled
            };
            event.comment = comment.into();
        }
        Ok(())
    }
}

impl SqlRaw for Shared {
    fn query(&mut self, statement: &str) -> Result<Rows, SqlError> {
        let mut db = self.db()?;
        db.calls.push(format!("QUERY {statement}"));
        Ok(Vec::new())
    }
}

/// VIP ownership as a test sets it.
pub struct HeldVips(pub BTreeSet<String>);

impl Vip for HeldVips {
    fn holds(&mut self, address: &str) -> Result<bool, String> {
        Ok(self.0.contains(address))
    }

    fn clients(&mut self, _address: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// A failover flag with a scripted answer.
pub struct ScriptedFlag(pub Result<bool, String>);

impl FailoverFlag for ScriptedFlag {
    fn is_raised(&mut self) -> Result<bool, String> {
        self.0.clone()
    }
}
