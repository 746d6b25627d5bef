//! mmvip: a small native host that runs keepalived's hooks for a MariaDB
//! master/master pair as sandboxed WebAssembly components.

pub mod bindings;
pub mod cache;
pub mod caps;
pub mod cli;
pub mod config;
pub mod error;
pub mod keepalived;
pub mod lock;
pub mod log;
pub mod runtime;
pub mod trust;
