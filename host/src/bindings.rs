//! Host-side bindings generated from `wit/`: the `plugin` world, whose imports are
//! the capability interfaces and whose one export is the hook.

mod generated {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "plugin",
        imports: { default: trappable },
    });
}

pub use generated::PluginPre;
pub use generated::mmvip::hooks::{
    failover_flag, lease, log, peer, sql_admin, sql_raw, sql_read, sql_types, state, types, vip,
};

/// The WIT package this host implements; a plugin must target the same 0.2 track.
pub const PACKAGE: &str = "mmvip:hooks";
pub const VERSION: &str = "0.2.1";
