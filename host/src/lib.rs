//! mmvip: a small native host that runs keepalived's hooks for a MariaDB
//! master/master pair as sandboxed WebAssembly plugins.

pub mod args;
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

/// The property tests' settings: a short run in the normal test suite,
/// `PROPTEST_CASES=N` for a long one; a failing case is kept as a plain unit test.
#[cfg(test)]
pub(crate) fn proptest_config(short_run_cases: u32) -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = short_run_cases;
    }
    config.failure_persistence = None;
    config
}
