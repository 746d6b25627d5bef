//! Grant `sql-raw`: free-form SQL, for site plugins; no built-in plugin has it.

use wasmtime::component::{HasData, Linker};

use super::Capability;
use super::sql::{SqlBackend, SqlError};
use crate::bindings::sql_raw as wit;
use crate::runtime::HookState;

pub const CAPABILITY: Capability = Capability {
    grant: "sql-raw",
    link,
};

/// Rows as text columns, NULL as `None`.
pub type Rows = Vec<Vec<Option<String>>>;

/// The back-end of `sql-raw`.
pub trait SqlRaw: Send {
    /// One statement; a result too large for the plugin is refused before it is read.
    fn query(&mut self, statement: &str) -> Result<Rows, SqlError>;
}

fn link(linker: &mut Linker<HookState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HookState, Linked>(linker, |state| Cap(&mut *state.caps.sql))
}

struct Linked;

impl HasData for Linked {
    type Data<'a> = Cap<'a>;
}

struct Cap<'a>(&'a mut dyn SqlBackend);

impl wit::Host for Cap<'_> {
    fn query(&mut self, statement: String) -> wasmtime::Result<Result<Rows, SqlError>> {
        Ok(self.0.query(&statement))
    }
}
