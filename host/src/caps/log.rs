//! Grant `log`: the plugin's own lines in mmvip's log, within the run's log budget.

use wasmtime::component::{HasData, Linker};

use super::Capability;
use crate::bindings::log as wit;
use crate::log::{Level, Log};
use crate::runtime::HookState;

pub const CAPABILITY: Capability = Capability { grant: "log", link };

fn link(linker: &mut Linker<HookState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HookState, Linked>(linker, |state| Cap(&state.caps.log))
}

struct Linked;

impl HasData for Linked {
    type Data<'a> = Cap<'a>;
}

struct Cap<'a>(&'a Log);

impl wit::Host for Cap<'_> {
    fn write(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            wit::Level::Debug => Level::Debug,
            wit::Level::Info => Level::Info,
            wit::Level::Warn => Level::Warn,
            wit::Level::Error => Level::Error,
        };
        self.0.write_for_plugin(level, &[("msg", &message)]);
        Ok(())
    }
}
