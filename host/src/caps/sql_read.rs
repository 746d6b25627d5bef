//! Grant `sql-read`: read-only operations on the local MariaDB.

use wasmtime::component::{HasData, Linker};

use super::Capability;
use super::sql::{ClientConnection, EventInfo, ReplicaStatus, SqlBackend, SqlError};
use crate::bindings::sql_read as wit;
use crate::runtime::HookState;

pub const CAPABILITY: Capability = Capability {
    grant: "sql-read",
    link,
};

/// The back-end of `sql-read`.
pub trait SqlRead: Send {
    fn ping(&mut self) -> Result<(), SqlError>;
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError>;
    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError>;
    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError>;
    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError>;
    fn privileged_users(&mut self) -> Result<Vec<String>, SqlError>;
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
    fn ping(&mut self) -> Answer<()> {
        Ok(self.0.ping())
    }

    fn global_variable(&mut self, name: String) -> Answer<Option<String>> {
        Ok(self.0.global_variable(&name))
    }

    fn replicas(&mut self) -> Answer<Vec<ReplicaStatus>> {
        Ok(self.0.replicas())
    }

    fn connections(&mut self) -> Answer<Vec<ClientConnection>> {
        Ok(self.0.connections())
    }

    fn events(&mut self) -> Answer<Vec<EventInfo>> {
        Ok(self.0.events())
    }

    fn privileged_users(&mut self) -> Answer<Vec<String>> {
        Ok(self.0.privileged_users())
    }
}
