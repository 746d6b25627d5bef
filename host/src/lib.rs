//! mmvip: a small native host that runs keepalived's hooks for a MariaDB
//! master/master pair as sandboxed WebAssembly plugins.

pub mod bindings;
pub mod cache;
pub mod caps;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod error;
pub mod gtid;
pub mod guard;
pub mod hook;
pub mod keepalived;
pub mod lock;
pub mod log;
pub mod manifest;
pub mod mariadb;
pub mod plugin;
pub mod runtime;
pub mod status;
pub mod trust;
