//! Capabilities: what a plugin can be granted. Each is one module owning its grant
//! name, its back-end trait, how it is linked, how its back-end is built from the
//! site config, and its `Host` implementation. A back-end performs operations and
//! never decides policy (that is the plugin's job).
//!
//! Adding a capability: its module here (with a line in `ALL` and a field in
//! `Backends`), its interface in `wit/mmvip.wit`, and one line in the SDK.

use std::cmp::Ordering;

use wasmtime::component::Linker;

use crate::runtime::HookState;

pub mod failover_flag;
pub mod lease;
pub mod log;
pub mod peer;
pub mod sql;
pub mod sql_admin;
pub mod sql_raw;
pub mod sql_read;
pub mod state;
pub mod vip;

/// One capability as the host sees it.
pub struct Capability {
    /// The grant's name in the config, which is also its WIT interface name.
    pub grant: &'static str,
    /// Adds its interface to a linker; only granted capabilities are linked.
    pub link: fn(&mut Linker<HookState>) -> wasmtime::Result<()>,
}

/// Every capability, in the order `mmvip plugins` lists grants.
pub const ALL: &[&Capability] = &[
    &log::CAPABILITY,
    &failover_flag::CAPABILITY,
    &sql_read::CAPABILITY,
    &sql_admin::CAPABILITY,
    &sql_raw::CAPABILITY,
    &vip::CAPABILITY,
    &state::CAPABILITY,
    &peer::CAPABILITY,
    &lease::CAPABILITY,
];

/// A capability granted to a plugin.
#[derive(Clone, Copy)]
pub struct Grant(&'static Capability);

impl Grant {
    pub fn from_name(name: &str) -> Option<Grant> {
        ALL.iter().find(|c| c.grant == name).map(|c| Grant(c))
    }

    pub fn name(self) -> &'static str {
        self.0.grant
    }

    pub fn link(self, linker: &mut Linker<HookState>) -> wasmtime::Result<()> {
        (self.0.link)(linker)
    }

    fn position(self) -> usize {
        ALL.iter()
            .position(|c| std::ptr::eq(*c, self.0))
            .expect("grants come from ALL")
    }

    /// Every grant's name, for messages.
    pub fn known() -> String {
        ALL.iter().map(|c| c.grant).collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for Grant {
    fn eq(&self, other: &Grant) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Grant {}

impl PartialOrd for Grant {
    fn partial_cmp(&self, other: &Grant) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Grant {
    fn cmp(&self, other: &Grant) -> Ordering {
        self.position().cmp(&other.position())
    }
}

/// The back-ends of one run. All are built without I/O; only the granted ones are
/// linked, and a back-end does I/O only when a plugin calls it.
pub struct Backends {
    pub log: crate::log::Log,
    pub failover_flag: Box<dyn failover_flag::FailoverFlag>,
    pub sql: Box<dyn sql::SqlBackend>,
    pub vip: Box<dyn vip::Vip>,
    pub state: state::StateStore,
    pub peer: Box<dyn peer::Peer>,
    pub lease: Box<dyn lease::Lease>,
}
