//! Grant `sql-admin`: operations that change the local MariaDB's role.

use wasmtime::component::{HasData, Linker};

use super::Capability;
use super::sql::{SqlBackend, SqlError};
use crate::bindings::sql_admin as wit;
use crate::runtime::HookState;

pub const CAPABILITY: Capability = Capability {
    grant: "sql-admin",
    link,
};

/// The back-end of `sql-admin`.
pub trait SqlAdmin: Send {
    /// Only `[mariadb] settable_variables`, only plain decimal or keyword values;
    /// false when it had not taken effect within `within_ms` (it is then cancelled).
    fn set_global_variable(
        &mut self,
        name: &str,
        value: &str,
        within_ms: u32,
    ) -> Result<bool, SqlError>;
    fn wait_for_gtid(&mut self, position: &str, timeout_ms: u32) -> Result<bool, SqlError>;
    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError>;
    /// With the session's `sql_log_bin` off around it: the change stays on this node.
    fn set_event_enabled(
        &mut self,
        schema: &str,
        name: &str,
        enabled: bool,
        comment: &str,
    ) -> Result<(), SqlError>;
    fn start_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError>;
    fn stop_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError>;
}

fn link(linker: &mut Linker<HookState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HookState, Linked>(linker, |state| Cap(&mut *state.caps.sql))
}

struct Linked;

impl HasData for Linked {
    type Data<'a> = Cap<'a>;
}

struct Cap<'a>(&'a mut dyn SqlBackend);

type Answer<T> = wasmtime::Result<Result<T, SqlError>>;

impl wit::Host for Cap<'_> {
    fn set_global_variable(&mut self, name: String, value: String, within_ms: u32) -> Answer<bool> {
        Ok(self.0.set_global_variable(&name, &value, within_ms))
    }

    fn wait_for_gtid(&mut self, position: String, timeout_ms: u32) -> Answer<bool> {
        Ok(self.0.wait_for_gtid(&position, timeout_ms))
    }

    fn kill_connection(&mut self, id: u64) -> Answer<bool> {
        Ok(self.0.kill_connection(id))
    }

    fn set_event_enabled(
        &mut self,
        schema: String,
        name: String,
        enabled: bool,
        comment: String,
    ) -> Answer<()> {
        Ok(self.0.set_event_enabled(&schema, &name, enabled, &comment))
    }

    fn start_replica_io(&mut self, connection_name: String) -> Answer<()> {
        Ok(self.0.start_replica_io(&connection_name))
    }

    fn stop_replica_io(&mut self, connection_name: String) -> Answer<()> {
        Ok(self.0.stop_replica_io(&connection_name))
    }
}
