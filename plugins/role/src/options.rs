//! What a role hook is told: the seed scripts' arguments and the plugin's settings
//! (arguments win), and which of the site's VRRP instances the run is about.

use std::time::Duration;

pub use mmvip_sdk::redact;
use mmvip_sdk::{Call, HookError, InstanceRole, VrrpInstance, parse_bool, usage};
use serde::Deserialize;

/// What `master` does when the relay log cannot be applied in time (or at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CatchupPolicy {
    StayReadOnly,
    GoWritable,
}

/// The `[plugins.master|backup|fault|stop]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub wait: bool,
    pub kill: bool,
    pub handle_events: bool,
    pub variable: String,
    #[serde(deserialize_with = "duration")]
    pub catchup_timeout: Duration,
    pub on_catchup_timeout: CatchupPolicy,
    /// How long `master` waits for a live peer to become read-only.
    #[serde(deserialize_with = "duration")]
    pub peer_read_only_timeout: Duration,
    /// How long `master` waits for the write lease (a silent peer's must expire).
    #[serde(deserialize_with = "duration")]
    pub lease_timeout: Duration,
    #[serde(deserialize_with = "users")]
    pub spare_users: Vec<String>,
    /// Accounts the peer replicates as, never killed (besides the accounts this node
    /// replicates as, which are spared anyway).
    #[serde(deserialize_with = "users")]
    pub replication_users: Vec<String>,
    /// `master` refuses once this node changed roles this many times within
    /// `flap_window` (0: never).
    pub flap_limit: u32,
    #[serde(deserialize_with = "duration")]
    pub flap_window: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            wait: true,
            kill: true,
            handle_events: false,
            variable: "read_only".into(),
            catchup_timeout: Duration::from_secs(30),
            on_catchup_timeout: CatchupPolicy::StayReadOnly,
            peer_read_only_timeout: Duration::from_secs(5),
            lease_timeout: Duration::from_secs(6),
            spare_users: Vec::new(),
            replication_users: Vec::new(),
            flap_limit: 4,
            flap_window: Duration::from_secs(10 * 60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub settings: Settings,
    /// `--instance`, when given.
    pub instance: Option<String>,
    /// `--fence`: the guard demotes the node unconditionally (it lost the lease, or
    /// its keepalived died).
    pub fence: bool,
}

impl Options {
    /// Parses everything; problems are collected rather than stopping at the first,
    /// so a demotion can still go ahead with safe defaults and report them after.
    pub fn parse(call: &Call) -> (Options, Vec<String>) {
        let mut problems = Vec::new();
        let settings = call.settings::<Settings>().unwrap_or_else(|e| {
            problems.push(e.to_string());
            Settings::default()
        });
        let mut options = Options {
            settings,
            instance: None,
            fence: false,
        };
        for arg in call.args() {
            let (key, value) = match arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
                Some(pair) => pair,
                None => (arg.trim_start_matches('-'), ""),
            };
            let settings = &mut options.settings;
            match key {
                "wait" => note(&mut problems, flag(key, value).map(|v| settings.wait = v)),
                "kill" => note(&mut problems, flag(key, value).map(|v| settings.kill = v)),
                "variable" if !value.is_empty() => settings.variable = value.to_string(),
                "instance" if !value.is_empty() => options.instance = Some(value.to_string()),
                "fence" if value.is_empty() => options.fence = true,
                "user" | "password" => problems.push(format!(
                    "--{key} is refused: mmvip never takes credentials from the command line; set [mariadb] user and password_file in the config"
                )),
                _ => problems.push(format!("unknown argument `{}`", redact(arg))),
            }
        }
        (options, problems)
    }

    /// The instance this run is about: `--instance`, else keepalived's `notify`
    /// arguments, else the only configured instance.
    pub fn target<'a>(&self, call: &'a Call) -> Result<Option<&'a VrrpInstance>, HookError> {
        let name = self
            .instance
            .as_deref()
            .or(call.event().map(|e| e.name.as_str()));
        let instances = call.instances();
        match name {
            Some(name) => instances.iter().find(|i| i.name == name).map(Some).ok_or_else(|| {
                usage(format!("instance `{name}` is not configured: add [instances.{name}] vip and role to the config"))
            }),
            None if instances.len() == 1 => Ok(instances.first()),
            None => Ok(None),
        }
    }
}

/// Keeps a problem for the report instead of stopping at it.
fn note(problems: &mut Vec<String>, result: Result<(), HookError>) {
    if let Err(why) = result {
        problems.push(why.to_string());
    }
}

fn flag(key: &str, value: &str) -> Result<bool, HookError> {
    parse_bool(value).ok_or_else(|| usage(format!("--{key} takes yes or no, not `{value}`")))
}

/// `30` (seconds), `"30s"`, `"1500ms"`, `"10m"`.
fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let number = |digits: &str| digits.trim().parse::<u64>().ok();
    let parsed = if let Some(ms) = text.strip_suffix("ms") {
        number(ms).map(Duration::from_millis)
    } else if let Some(minutes) = text.strip_suffix('m') {
        number(minutes)
            .and_then(|m| m.checked_mul(60))
            .map(Duration::from_secs)
    } else {
        number(text.strip_suffix('s').unwrap_or(text)).map(Duration::from_secs)
    };
    parsed.ok_or_else(|| format!("`{text}` is not a duration such as 30s, 1500ms or 10m"))
}

/// A list of users, or the seed's comma-separated text.
fn users<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let list = match Raw::deserialize(deserializer)? {
        Raw::List(list) => list,
        Raw::Text(text) => text
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(String::from)
            .collect(),
    };
    Ok(list
        .into_iter()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect())
}

pub fn is_read_write(instance: &VrrpInstance) -> bool {
    instance.role == InstanceRole::ReadWrite
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str], settings: &str) -> Call {
        Call::new(args, settings, Duration::from_secs(10))
    }

    #[test]
    fn settings_and_arguments_combine_with_arguments_winning() {
        let (options, problems) = Options::parse(&call(
            &["--wait=no", "--instance=VI_2"],
            r#"{"wait": true, "catchup_timeout": "1500ms", "spare_users": "monitor, backup"}"#,
        ));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!options.settings.wait);
        assert_eq!(options.instance.as_deref(), Some("VI_2"));
        assert_eq!(
            options.settings.catchup_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(options.settings.spare_users, ["monitor", "backup"]);
    }

    #[test]
    fn problems_are_collected_and_secrets_not_repeated() {
        let (options, problems) = Options::parse(&call(
            &["-psecret", "--password=hunter2", "--kill=maybe"],
            r#"{"catchup_timout": 5}"#,
        ));
        let all = problems.join("; ");
        assert!(all.contains("unknown field `catchup_timout`"), "{all}");
        assert!(all.contains("--password is refused"), "{all}");
        assert!(all.contains("--kill takes yes or no"), "{all}");
        assert!(!all.contains("secret") && !all.contains("hunter2"), "{all}");
        // Safe defaults stand in for what could not be read.
        assert!(options.settings.kill);
    }

    #[test]
    fn policy_and_duration_spellings() {
        let (options, problems) = Options::parse(&call(
            &[],
            r#"{"on_catchup_timeout": "go-writable", "catchup_timeout": 7}"#,
        ));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            options.settings.on_catchup_timeout,
            CatchupPolicy::GoWritable
        );
        assert_eq!(options.settings.catchup_timeout, Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
    }
}
