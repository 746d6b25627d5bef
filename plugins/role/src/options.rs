//! What a role hook is told: the seed scripts' arguments, the plugin's settings and
//! the site's VRRP instances. Arguments win over settings.

use std::time::Duration;

use mmvip_sdk::{Call, HookError, Transition, parse_bool, usage};

/// What `master` does when the relay log cannot be applied in time (or at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchupPolicy {
    StayReadOnly,
    GoWritable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ReadWrite,
    ReadOnly,
}

/// One `[instances.NAME]` of the site config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub vip: String,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub instance: Option<String>,
    pub wait: bool,
    pub variable: String,
    pub kill: bool,
    pub catchup_timeout: Duration,
    pub on_catchup_timeout: CatchupPolicy,
    pub handle_events: bool,
    pub spare_users: Vec<String>,
    pub instances: Vec<Instance>,
}

impl Options {
    /// Parses everything; problems are collected rather than stopping at the first,
    /// so a demotion can still go ahead with safe defaults and report them after.
    pub fn parse(call: &Call) -> (Options, Vec<String>) {
        let mut problems = Vec::new();
        let mut options = Options {
            instance: None,
            wait: true,
            variable: "read_only".into(),
            kill: true,
            catchup_timeout: Duration::from_secs(30),
            on_catchup_timeout: CatchupPolicy::StayReadOnly,
            handle_events: false,
            spare_users: Vec::new(),
            instances: instances(call, &mut problems),
        };
        note(
            &mut problems,
            call.setting_bool("wait", true).map(|v| options.wait = v),
        );
        note(
            &mut problems,
            call.setting_bool("kill", true).map(|v| options.kill = v),
        );
        note(
            &mut problems,
            call.setting_bool("handle_events", false)
                .map(|v| options.handle_events = v),
        );
        if let Some(variable) = call.setting("variable") {
            options.variable = variable.to_string();
        }
        if let Some(timeout) = call.setting("catchup_timeout") {
            note(
                &mut problems,
                parse_duration(timeout).map(|d| options.catchup_timeout = d),
            );
        }
        if let Some(policy) = call.setting("on_catchup_timeout") {
            note(
                &mut problems,
                parse_policy(policy).map(|p| options.on_catchup_timeout = p),
            );
        }
        if let Some(users) = call.setting("spare_users") {
            options.spare_users = users
                .split(|c: char| c == ',' || c.is_whitespace())
                .map(|u| u.trim_matches(|c| c == '"' || c == '\'' || c == '[' || c == ']'))
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect();
        }
        for arg in &call.args {
            let (key, value) = match arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
                Some(pair) => pair,
                None => (arg.trim_start_matches('-'), ""),
            };
            match key {
                "wait" => note(&mut problems, flag(key, value).map(|v| options.wait = v)),
                "kill" => note(&mut problems, flag(key, value).map(|v| options.kill = v)),
                "variable" if !value.is_empty() => options.variable = value.to_string(),
                "instance" if !value.is_empty() => options.instance = Some(value.to_string()),
                "user" | "password" => problems.push(format!(
                    "--{key} is refused: mmvip never takes credentials from the command line; set [mariadb] user and password_file in the config"
                )),
                _ => problems.push(format!("unknown argument `{arg}`")),
            }
        }
        (options, problems)
    }

    /// The instance this run is about: `--instance`, else keepalived's `notify`
    /// arguments, else the only configured instance.
    pub fn target(&self, event: Option<&Transition>) -> Result<Option<&Instance>, HookError> {
        let name = self.instance.as_deref().or(event.map(|e| e.name.as_str()));
        match name {
            Some(name) => self.instances.iter().find(|i| i.name == name).map(Some).ok_or_else(|| {
                usage(format!("instance `{name}` is not configured: add [instances.{name}] vip and role to the config"))
            }),
            None if self.instances.len() == 1 => Ok(self.instances.first()),
            None => Ok(None),
        }
    }
}

/// Keeps a problem for the report instead of stopping at it.
fn note(problems: &mut Vec<String>, result: Result<(), HookError>) {
    if let Err(HookError::Usage(why) | HookError::Failed(why)) = result {
        problems.push(why);
    }
}

fn flag(key: &str, value: &str) -> Result<bool, HookError> {
    parse_bool(value).ok_or_else(|| usage(format!("--{key} takes yes or no, not `{value}`")))
}

fn instances(call: &Call, problems: &mut Vec<String>) -> Vec<Instance> {
    let mut found: Vec<Instance> = Vec::new();
    for setting in &call.settings {
        let Some(rest) = setting.key.strip_prefix("instances.") else {
            continue;
        };
        let Some(name) = rest.strip_suffix(".vip") else {
            continue;
        };
        let role = match call.setting(&format!("instances.{name}.role")) {
            Some("ro") => Role::ReadOnly,
            Some("rw") | None => Role::ReadWrite,
            Some(other) => {
                problems.push(format!("instance `{name}` has unknown role `{other}`"));
                Role::ReadWrite
            }
        };
        found.push(Instance {
            name: name.to_string(),
            vip: setting.value.clone(),
            role,
        });
    }
    found
}

/// `30`, `30s`, `1500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, HookError> {
    let text = text.trim();
    let parsed = if let Some(ms) = text.strip_suffix("ms") {
        ms.trim().parse().map(Duration::from_millis)
    } else {
        text.trim_end_matches('s')
            .trim()
            .parse()
            .map(Duration::from_secs)
    };
    parsed.map_err(|_| {
        usage(format!(
            "catchup_timeout `{text}` is not a duration such as 30s or 1500ms"
        ))
    })
}

fn parse_policy(text: &str) -> Result<CatchupPolicy, HookError> {
    match text {
        "stay-read-only" => Ok(CatchupPolicy::StayReadOnly),
        "go-writable" => Ok(CatchupPolicy::GoWritable),
        other => Err(usage(format!(
            "on_catchup_timeout must be stay-read-only or go-writable, not `{other}`"
        ))),
    }
}
