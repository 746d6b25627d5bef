//! Host-side bindings generated from `wit/`. One module per world; the notify world
//! reuses the check world's capability interfaces so both share one set of types.

mod check_world {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "check-plugin",
        imports: { default: trappable },
    });
}

mod notify_world {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "notify-plugin",
        imports: { default: trappable },
        with: {
            "mmvip:hooks/types": super::check_world::mmvip::hooks::types,
            "mmvip:hooks/log": super::check_world::mmvip::hooks::log,
            "mmvip:hooks/failover-flag": super::check_world::mmvip::hooks::failover_flag,
            "mmvip:hooks/sql-types": super::check_world::mmvip::hooks::sql_types,
            "mmvip:hooks/sql-read": super::check_world::mmvip::hooks::sql_read,
            "mmvip:hooks/sql-admin": super::check_world::mmvip::hooks::sql_admin,
            "mmvip:hooks/sql-raw": super::check_world::mmvip::hooks::sql_raw,
            "mmvip:hooks/vip": super::check_world::mmvip::hooks::vip,
            "mmvip:hooks/state": super::check_world::mmvip::hooks::state,
        },
    });
}

pub use check_world::CheckPluginPre;
pub use check_world::mmvip::hooks::{
    failover_flag, log, sql_admin, sql_raw, sql_read, sql_types, state, types, vip,
};
pub use notify_world::NotifyPluginPre;
pub use notify_world::exports::mmvip::hooks::notify::{TargetKind, Transition, VrrpState};

/// The WIT package this host implements; a plugin must target the same 0.1 track.
pub const PACKAGE: &str = "mmvip:hooks";
pub const VERSION: &str = "0.1.0";
