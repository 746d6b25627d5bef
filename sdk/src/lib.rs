//! Write mmvip hook plugins: implement [`Plugin`] for a type and export it with
//! [`export!`], which also writes the plugin's manifest (its kind, purpose, default
//! grants and timeout).
//!
//! ```ignore
//! use mmvip_sdk::{Call, Outcome, Plugin, failed, sql};
//!
//! struct Health;
//!
//! impl Plugin for Health {
//!     fn run(call: &Call) -> Outcome {
//!         call.expect_no_args()?;
//!         sql::read::ping().map_err(|e| failed(e.to_string()))?;
//!         Ok("mariadb answered".into())
//!     }
//! }
//!
//! mmvip_sdk::export!(Health {
//!     kind: check,
//!     about: "passes while MariaDB answers over its socket",
//!     grants: ["log", "sql-read"],
//!     timeout_ms: 800,
//! });
//! ```
//!
//! Capabilities are plain functions in the modules below; a plugin imports only the
//! ones it calls, and the host refuses it unless the site grants each of them.

use std::fmt;
use std::time::{Duration, Instant};

// Lets the generated bindings name this crate the same way from inside and outside.
extern crate self as mmvip_sdk;

#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "mmvip_sdk::__bindings",
        runtime_path: "mmvip_sdk::__rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

use __bindings::mmvip::hooks as wit;

pub use wit::types::{InstanceRole, Transition, VrrpInstance, VrrpState};

/// What a hook returns: `Ok(summary)` on success, or why it did not succeed.
pub type Outcome = Result<String, HookError>;

/// Why a hook did not succeed: `Failed` ends it with exit status 1, `Usage` (bad
/// arguments or settings) with 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    Failed(String),
    Usage(String),
}

/// A hook plugin.
pub trait Plugin {
    fn run(call: &Call) -> Outcome;
}

/// Grant `log`: lines in mmvip's log.
pub mod log {
    pub use crate::wit::log::Level;
    use crate::wit::log::write;

    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }

    pub fn info(message: &str) {
        write(Level::Info, message);
    }

    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }

    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}

/// Grant `failover-flag`: the site's planned switch-over flag.
pub mod failover_flag {
    pub use crate::wit::failover_flag::is_raised;
}

/// Grants `sql-read`, `sql-admin` and `sql-raw`: the local MariaDB.
pub mod sql {
    use std::fmt;

    use crate::wit::sql_types::SqlError;
    pub use crate::wit::sql_types::{
        ClientConnection, EventInfo, EventStatus, IoState, ReplicaStatus, SqlState,
    };

    /// Why an SQL operation did not happen.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Error {
        /// The server could not be reached (down, refusing, socket missing).
        Unreachable(String),
        /// The server did not answer in time.
        Timeout(String),
        /// The server answered with an error.
        Server { code: u16, message: String },
        /// mmvip refused the operation before sending it.
        Refused(String),
    }

    impl From<SqlError> for Error {
        fn from(error: SqlError) -> Error {
            match error {
                SqlError::Unreachable(why) => Error::Unreachable(why),
                SqlError::Timeout(why) => Error::Timeout(why),
                SqlError::Server(e) => Error::Server {
                    code: e.code,
                    message: e.message,
                },
                SqlError::Refused(why) => Error::Refused(why),
            }
        }
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Error::Unreachable(why) => write!(f, "mariadb unreachable: {why}"),
                Error::Timeout(why) => write!(f, "mariadb timed out: {why}"),
                Error::Server { code, message } => write!(f, "mariadb error {code}: {message}"),
                Error::Refused(why) => write!(f, "refused by mmvip: {why}"),
            }
        }
    }

    impl std::error::Error for Error {}

    pub type Result<T> = std::result::Result<T, Error>;

    /// Grant `sql-read`.
    pub mod read {
        use super::{ClientConnection, EventInfo, ReplicaStatus, Result};
        use crate::wit::sql_read as wit;

        /// Connects (if not yet connected) and runs a trivial query.
        pub fn ping() -> Result<()> {
            Ok(wit::ping()?)
        }

        /// A global variable's value; none when NULL.
        pub fn global_variable(name: &str) -> Result<Option<String>> {
            Ok(wit::global_variable(name)?)
        }

        /// One entry per replication connection (`SHOW ALL SLAVES STATUS`).
        pub fn replicas() -> Result<Vec<ReplicaStatus>> {
            Ok(wit::replicas()?)
        }

        pub fn connections() -> Result<Vec<ClientConnection>> {
            Ok(wit::connections()?)
        }

        pub fn events() -> Result<Vec<EventInfo>> {
            Ok(wit::events()?)
        }

        /// Accounts that can write while `read_only` is ON on this server.
        pub fn privileged_users() -> Result<Vec<String>> {
            Ok(wit::privileged_users()?)
        }
    }

    /// Grant `sql-admin`.
    pub mod admin {
        use super::Result;
        use crate::wit::sql_admin as wit;

        /// `SET GLOBAL name = value` for a variable the site lets plugins set; false
        /// when it had not taken effect within `within_ms` (it is then cancelled).
        pub fn set_global_variable(name: &str, value: &str, within_ms: u32) -> Result<bool> {
            Ok(wit::set_global_variable(name, value, within_ms)?)
        }

        /// True when `position` was applied within `timeout_ms`.
        pub fn wait_for_gtid(position: &str, timeout_ms: u32) -> Result<bool> {
            Ok(wit::wait_for_gtid(position, timeout_ms)?)
        }

        /// False when the connection was already gone.
        pub fn kill_connection(id: u64) -> Result<bool> {
            Ok(wit::kill_connection(id)?)
        }

        /// `ALTER EVENT ... ENABLE|DISABLE COMMENT ...`, kept out of the binlog.
        pub fn set_event_enabled(
            schema: &str,
            name: &str,
            enabled: bool,
            comment: &str,
        ) -> Result<()> {
            Ok(wit::set_event_enabled(schema, name, enabled, comment)?)
        }

        /// `START SLAVE [connection] IO_THREAD`.
        pub fn start_replica_io(connection_name: &str) -> Result<()> {
            Ok(wit::start_replica_io(connection_name)?)
        }

        /// `STOP SLAVE [connection] IO_THREAD` (contract 0.2.1).
        pub fn stop_replica_io(connection_name: &str) -> Result<()> {
            Ok(wit::stop_replica_io(connection_name)?)
        }
    }

    /// Grant `sql-raw`.
    pub mod raw {
        use super::Result;
        use crate::wit::sql_raw as wit;

        /// One statement; rows of text columns, NULL as none.
        pub fn query(statement: &str) -> Result<Vec<Vec<Option<String>>>> {
            Ok(wit::query(statement)?)
        }
    }
}

/// Grant `peer`: the peer node's MariaDB, read-only.
pub mod peer {
    pub use crate::wit::peer::PeerStatus;

    /// The peer's role and binlog position (each of its addresses tried in turn).
    pub fn status() -> crate::sql::Result<PeerStatus> {
        Ok(crate::wit::peer::status()?)
    }
}

/// Grant `lease`: the node's write lease, held by its guard.
pub mod lease {
    pub use crate::wit::lease::{Answer, acquire, peer_answers, release};
}

/// Grant `vip`: addresses held by this node.
pub mod vip {
    pub use crate::wit::vip::{clients, holds};
}

/// Grant `state`: the node's small key/value store.
pub mod state {
    /// A key's value, if set.
    pub use crate::wit::state::get;
    /// Stages a change, written after the hook returns; refused past the store's
    /// bounds (256 keys, 4 KiB values, 64 KiB in all).
    pub use crate::wit::state::set;
}

/// One run of a hook: keepalived's words, the site's settings, the time left and,
/// for notify hooks, the transition and the site's VRRP instances.
#[derive(Debug, Clone)]
pub struct Call {
    args: Vec<String>,
    settings: String,
    deadline: Instant,
    event: Option<Transition>,
    instances: Vec<VrrpInstance>,
    exclusive: bool,
}

impl Call {
    /// A call as a test would make it (the host makes the real ones).
    pub fn new(args: &[&str], settings_json: &str, time_left: Duration) -> Call {
        Call {
            args: args.iter().map(|a| a.to_string()).collect(),
            settings: settings_json.to_string(),
            deadline: Instant::now() + time_left,
            event: None,
            instances: Vec::new(),
            exclusive: true,
        }
    }

    /// The same call for a notify hook.
    pub fn with_event(
        mut self,
        event: Option<Transition>,
        instances: Vec<VrrpInstance>,
        exclusive: bool,
    ) -> Call {
        self.event = event;
        self.instances = instances;
        self.exclusive = exclusive;
        self
    }

    fn from_wit(call: wit::types::Call) -> Call {
        Call {
            deadline: Instant::now() + Duration::from_millis(call.time_left_ms.into()),
            args: call.args,
            settings: call.settings,
            event: call.event,
            instances: call.instances,
            exclusive: call.exclusive,
        }
    }

    /// The plugin's words from the keepalived line.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The plugin's `[plugins.NAME]` settings, deserialized: a usage error (exit 2)
    /// names what is wrong with them.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, HookError> {
        serde_json::from_str(&self.settings).map_err(|e| {
            // serde_json's position is in the host's JSON, not the site's TOML.
            let text = e.to_string();
            let why = text.split(" at line ").next().unwrap_or(&text);
            usage(format!("settings: {why}"))
        })
    }

    /// When the host stops the hook.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// What keepalived's `notify` appended (none for `notify_*` lines and checks).
    pub fn event(&self) -> Option<&Transition> {
        self.event.as_ref()
    }

    /// The site's VRRP instances (notify hooks only).
    pub fn instances(&self) -> &[VrrpInstance] {
        &self.instances
    }

    /// Whether this run holds the node lock; false only when it could not be taken.
    pub fn exclusive(&self) -> bool {
        self.exclusive
    }

    /// A usage error naming the arguments, for a plugin that takes none: a typo on the
    /// keepalived line should not pass unnoticed.
    pub fn expect_no_args(&self) -> Result<(), HookError> {
        if self.args.is_empty() {
            Ok(())
        } else {
            let shown: Vec<String> = self.args.iter().map(|arg| redact(arg)).collect();
            Err(usage(format!(
                "takes no arguments, got `{}`",
                shown.join(" ")
            )))
        }
    }
}

/// An argument as it may be shown: a value that could be a secret (`-pSECRET`,
/// `--password=...`) is not repeated.
pub fn redact(arg: &str) -> String {
    let lower = arg.to_ascii_lowercase();
    if lower.starts_with("-p") && !lower.starts_with("--") || lower.contains("pass") {
        let mut cut = arg.find('=').map_or(2.min(arg.len()), |i| i + 1);
        // Never inside a character: less is shown rather than a panic.
        while !arg.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &arg[..cut])
    } else {
        arg.to_string()
    }
}

/// Accepts the spellings keepalived-era scripts used: yes/no, true/false, on/off, 1/0.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

pub fn failed(reason: impl Into<String>) -> HookError {
    HookError::Failed(reason.into())
}

pub fn usage(reason: impl Into<String>) -> HookError {
    HookError::Usage(reason.into())
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::Failed(why) | HookError::Usage(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for HookError {}

impl fmt::Display for VrrpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VrrpState::Master => "MASTER",
            VrrpState::Backup => "BACKUP",
            VrrpState::Fault => "FAULT",
            VrrpState::Stop => "STOP",
            VrrpState::Deleted => "DELETED",
        })
    }
}

impl fmt::Display for Transition {
    /// As keepalived writes it: `INSTANCE VI_1 MASTER 100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.group { "GROUP" } else { "INSTANCE" };
        write!(f, "{kind} {} {} {}", self.name, self.state, self.priority)
    }
}

impl fmt::Display for sql::IoState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            sql::IoState::Running => "running",
            sql::IoState::Connecting => "connecting",
            sql::IoState::Preparing => "preparing",
            sql::IoState::Stopped => "stopped",
        })
    }
}

impl fmt::Display for sql::SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            sql::SqlState::Running => "running",
            sql::SqlState::Stopped => "stopped",
        })
    }
}

impl fmt::Display for sql::EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            sql::EventStatus::Enabled => "ENABLED",
            sql::EventStatus::Disabled => "DISABLED",
            sql::EventStatus::ReplicaSideDisabled => "SLAVESIDE_DISABLED",
        })
    }
}

#[doc(hidden)]
pub struct Export<T>(std::marker::PhantomData<T>);

impl<T: Plugin> __bindings::exports::mmvip::hooks::hook::Guest for Export<T> {
    fn run(call: wit::types::Call) -> Result<String, wit::types::HookError> {
        T::run(&Call::from_wit(call)).map_err(|error| match error {
            HookError::Failed(why) => wit::types::HookError::Failed(why),
            HookError::Usage(why) => wit::types::HookError::Usage(why),
        })
    }
}

/// The manifest text as bytes of a fixed length, for the custom section.
#[doc(hidden)]
pub const fn __manifest<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Exports a [`Plugin`] as this component's hook, with its manifest:
/// `kind` (`check` for a `vrrp_script`, `notify` for keepalived's notify lines), a
/// one-line `about`, the default `grants` and the default `timeout_ms`.
#[macro_export]
macro_rules! export {
    ($plugin:ty {
        kind: $kind:ident,
        about: $about:literal,
        grants: [$($grant:literal),* $(,)?],
        timeout_ms: $timeout:literal $(,)?
    }) => {
        const _: () = {
            const MANIFEST: &str = concat!(
                "kind = \"", stringify!($kind), "\"\n",
                "about = ", stringify!($about), "\n",
                "grants = [", $(stringify!($grant), ", ",)* "]\n",
                "timeout_ms = ", stringify!($timeout), "\n",
            );
            #[used]
            #[unsafe(link_section = "mmvip:manifest")]
            static SECTION: [u8; MANIFEST.len()] = $crate::__manifest(MANIFEST);
        };
        type __MmvipExport = $crate::Export<$plugin>;
        $crate::__bindings::__export_plugin!(__MmvipExport with_types_in $crate::__bindings);
    };
}
