//! Guest-side SDK for mmvip hook plugins.
//!
//! A plugin is a `cdylib` built for `wasm32-wasip2`: implement [`Check`] or [`Notify`]
//! for a unit struct and export it with [`export_check!`] or [`export_notify!`].
//! Capabilities are plain functions in the re-exported modules ([`log`],
//! [`failover_flag`], [`sql_read`], ...); a plugin imports only the ones it calls,
//! and the host refuses it unless the site config grants each of them.

// Lets the generated bindings name this crate the same way from inside and outside.
extern crate self as mmvip_sdk;

#[doc(hidden)]
pub mod bindings {
    pub mod check {
        wit_bindgen::generate!({
            path: "../wit",
            world: "check-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_check_world",
            default_bindings_module: "mmvip_sdk::bindings::check",
            runtime_path: "mmvip_sdk::__rt",
        });
    }
    pub mod notify {
        // The capability imports are shared with the check world so both worlds use
        // one set of types.
        wit_bindgen::generate!({
            path: "../wit",
            world: "notify-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_notify_world",
            default_bindings_module: "mmvip_sdk::bindings::notify",
            runtime_path: "mmvip_sdk::__rt",
            with: {
                "mmvip:hooks/types@0.1.0": crate::bindings::check::mmvip::hooks::types,
                "mmvip:hooks/log@0.1.0": crate::bindings::check::mmvip::hooks::log,
                "mmvip:hooks/failover-flag@0.1.0": crate::bindings::check::mmvip::hooks::failover_flag,
                "mmvip:hooks/sql-types@0.1.0": crate::bindings::check::mmvip::hooks::sql_types,
                "mmvip:hooks/sql-read@0.1.0": crate::bindings::check::mmvip::hooks::sql_read,
                "mmvip:hooks/sql-admin@0.1.0": crate::bindings::check::mmvip::hooks::sql_admin,
                "mmvip:hooks/sql-raw@0.1.0": crate::bindings::check::mmvip::hooks::sql_raw,
                "mmvip:hooks/vip@0.1.0": crate::bindings::check::mmvip::hooks::vip,
                "mmvip:hooks/state@0.1.0": crate::bindings::check::mmvip::hooks::state,
            },
        });
    }
}

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

pub use bindings::check::mmvip::hooks::types::{HookError, Setting};
pub use bindings::check::mmvip::hooks::{
    failover_flag, log, sql_admin, sql_raw, sql_read, sql_types, state, vip,
};
pub use bindings::notify::exports::mmvip::hooks::notify::{TargetKind, Transition, VrrpState};
pub use sql_types::SqlError;

/// What a hook returns: `Ok(summary)` on success, or why it did not succeed.
pub type Outcome = Result<String, HookError>;

/// A check hook (`vrrp_script`): `Ok` passes, `Err(HookError::Failed)` fails.
pub trait Check {
    fn check(call: &Call) -> Outcome;
}

/// A notify hook (`notify`, `notify_master`, `notify_backup`, ...).
pub trait Notify {
    /// `event` is `None` for `notify_*` lines, which carry no arguments of their own.
    fn notify(event: Option<&Transition>, call: &Call) -> Outcome;
}

/// The plugin's arguments (from the keepalived line) and settings (from the config).
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub args: Vec<String>,
    pub settings: Vec<Setting>,
}

impl Call {
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.value.as_str())
    }

    /// A usage error naming the arguments, for a plugin that takes none: a typo on the
    /// keepalived line should not pass unnoticed.
    pub fn expect_no_args(&self) -> Result<(), HookError> {
        if self.args.is_empty() {
            Ok(())
        } else {
            Err(usage(format!(
                "takes no arguments, got `{}`",
                self.args.join(" ")
            )))
        }
    }

    /// A boolean setting; `default` when absent, a usage error when not a boolean.
    pub fn setting_bool(&self, key: &str, default: bool) -> Result<bool, HookError> {
        match self.setting(key) {
            None => Ok(default),
            Some(value) => parse_bool(value).ok_or_else(|| {
                usage(format!(
                    "setting `{key}` must be true or false, not `{value}`"
                ))
            }),
        }
    }

    /// A whole-number setting; `default` when absent.
    pub fn setting_u64(&self, key: &str, default: u64) -> Result<u64, HookError> {
        match self.setting(key) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| {
                usage(format!(
                    "setting `{key}` must be a whole number, not `{value}`"
                ))
            }),
        }
    }

    /// The value of `--name=value` (or `--name value`) among the arguments.
    pub fn option(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if let Some(value) = arg.strip_prefix(&flag) {
                if let Some(value) = value.strip_prefix('=') {
                    return Some(value);
                }
                if value.is_empty() {
                    return args.next().map(String::as_str);
                }
            }
        }
        None
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

/// Log helpers; each call becomes one line in mmvip's log (needs the `log` grant).
pub fn info(message: &str) {
    log::write(log::Level::Info, message);
}

pub fn warn(message: &str) {
    log::write(log::Level::Warn, message);
}

pub fn error(message: &str) {
    log::write(log::Level::Error, message);
}

/// A one-line description of an SQL capability error.
pub fn describe(error: &SqlError) -> String {
    match error {
        SqlError::Unreachable(why) => format!("mariadb unreachable: {why}"),
        SqlError::Timeout(why) => format!("mariadb timed out: {why}"),
        SqlError::Server((code, message)) => format!("mariadb error {code}: {message}"),
    }
}

#[doc(hidden)]
pub struct CheckExport<T>(std::marker::PhantomData<T>);

impl<T: Check> bindings::check::exports::mmvip::hooks::check::Guest for CheckExport<T> {
    fn run(args: Vec<String>, settings: Vec<Setting>) -> Outcome {
        T::check(&Call { args, settings })
    }
}

#[doc(hidden)]
pub struct NotifyExport<T>(std::marker::PhantomData<T>);

impl<T: Notify> bindings::notify::exports::mmvip::hooks::notify::Guest for NotifyExport<T> {
    fn run(event: Option<Transition>, args: Vec<String>, settings: Vec<Setting>) -> Outcome {
        T::notify(event.as_ref(), &Call { args, settings })
    }
}

/// Export a [`Check`] implementation as this component's hook.
#[macro_export]
macro_rules! export_check {
    ($plugin:ty) => {
        type __MmvipCheckExport = $crate::CheckExport<$plugin>;
        $crate::bindings::check::__export_check_world!(__MmvipCheckExport with_types_in $crate::bindings::check);
    };
}

/// Export a [`Notify`] implementation as this component's hook.
#[macro_export]
macro_rules! export_notify {
    ($plugin:ty) => {
        type __MmvipNotifyExport = $crate::NotifyExport<$plugin>;
        $crate::bindings::notify::__export_notify_world!(__MmvipNotifyExport with_types_in $crate::bindings::notify);
    };
}
