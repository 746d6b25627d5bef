//! The site configuration (`/etc/mmvip/mmvip.toml`): where plugins live, what each
//! plugin is granted, and how to reach the local MariaDB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

pub const DEFAULT_CONFIG: &str = "/etc/mmvip/mmvip.toml";
pub const CONFIG_ENV: &str = "MMVIP_CONFIG";
const DEFAULT_MEMORY_MIB: u64 = 64;
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Words `mmvip` takes as commands, so never as plugin names.
pub const RESERVED_NAMES: &[&str] = &[
    "help",
    "compile",
    "plugins",
    "doctor",
    "status",
    "switchover",
    "guard",
    "ack",
];

/// A capability a plugin can be granted; each is one WIT interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    Log,
    FailoverFlag,
    SqlRead,
    SqlAdmin,
    SqlRaw,
    Vip,
    State,
}

impl Grant {
    pub const ALL: [Grant; 7] = [
        Grant::Log,
        Grant::FailoverFlag,
        Grant::SqlRead,
        Grant::SqlAdmin,
        Grant::SqlRaw,
        Grant::Vip,
        Grant::State,
    ];

    /// The grant's name in the config, which is also its WIT interface name.
    pub fn name(self) -> &'static str {
        match self {
            Grant::Log => "log",
            Grant::FailoverFlag => "failover-flag",
            Grant::SqlRead => "sql-read",
            Grant::SqlAdmin => "sql-admin",
            Grant::SqlRaw => "sql-raw",
            Grant::Vip => "vip",
            Grant::State => "state",
        }
    }

    pub fn from_name(name: &str) -> Option<Grant> {
        Grant::ALL.into_iter().find(|grant| grant.name() == name)
    }
}

/// The built-in plugins: their default grants and wall-clock bounds. A check's bound
/// stays under keepalived's default script timeout (the interval, 1 s in the seed).
pub fn builtin_defaults(name: &str) -> Option<(&'static [Grant], Duration)> {
    use Grant::*;
    const DEMOTE: &[Grant] = &[Log, SqlRead, SqlAdmin, Vip, State];
    let defaults: (&'static [Grant], u64) = match name {
        "health" => (&[Log, SqlRead], 800),
        "failover" => (&[Log, FailoverFlag], 800),
        "notify" => (&[Log], 2_000),
        "master" => (DEMOTE, 40_000),
        "backup" | "fault" | "stop" => (DEMOTE, 15_000),
        _ => return None,
    };
    Some((defaults.0, Duration::from_millis(defaults.1)))
}

/// Bound for a site plugin that has no built-in defaults and sets no `timeout_ms`.
const SITE_PLUGIN_TIMEOUT: Duration = Duration::from_millis(1_000);

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub plugin_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub log_file: PathBuf,
    pub failover_file: PathBuf,
    /// Lock and state files of the notify hooks.
    pub state_dir: PathBuf,
    pub mariadb: MariaDbConfig,
    pub plugins: BTreeMap<String, PluginTable>,
    /// VRRP instances by name: the VIP each moves and whether it carries writes.
    pub instances: BTreeMap<String, Instance>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub vip: std::net::IpAddr,
    pub role: Role,
}

/// `rw`: holding this instance's VIP makes the node writable. `ro`: it never
/// changes `read_only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ReadWrite,
    ReadOnly,
}

impl Role {
    pub fn word(self) -> &'static str {
        match self {
            Role::ReadWrite => "rw",
            Role::ReadOnly => "ro",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariaDbConfig {
    pub socket: PathBuf,
    pub user: String,
    pub password_file: Option<PathBuf>,
    pub timeout: Duration,
    /// The global variables a plugin granted `sql-admin` may set.
    pub settable_variables: Vec<String>,
}

/// One `[plugins.NAME]` table as written.
#[derive(Debug, Clone, Default)]
pub struct PluginTable {
    pub file: Option<PathBuf>,
    pub grants: Option<Vec<Grant>>,
    pub timeout: Option<Duration>,
    pub memory_mib: Option<u64>,
    pub settings: Vec<(String, String)>,
}

/// Everything needed to run one plugin: config table and built-in defaults merged.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    pub grants: Vec<Grant>,
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub settings: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    plugin_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    failover_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    mariadb: RawMariaDb,
    #[serde(default)]
    plugins: BTreeMap<String, BTreeMap<String, Spanned<toml::Value>>>,
    #[serde(default)]
    instances: BTreeMap<String, RawInstance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    vip: Spanned<String>,
    #[serde(default)]
    role: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMariaDb {
    socket: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    timeout_ms: Option<Spanned<u64>>,
    settable_variables: Option<Spanned<Vec<String>>>,
}

impl Config {
    /// The config path: `--config` wins, then `$MMVIP_CONFIG`, then the default.
    pub fn locate(explicit: Option<PathBuf>) -> PathBuf {
        explicit
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    /// Reads and validates the config at `path` (after checking it is root-only).
    pub fn load(path: &Path) -> Result<Config> {
        use std::io::Read as _;
        let file = crate::trust::open_file(path, "config")?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::usage(format!("config {}: {e}", path.display())))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(Error::usage(format!(
                "config {}: larger than {MAX_CONFIG_BYTES} bytes",
                path.display()
            )));
        }
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let at = |offset: usize, message: &str| {
            Error::usage(format!(
                "{}:{}: {}",
                path.display(),
                line_of(text, offset),
                message.trim_end()
            ))
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start);
            match toml_key(&e) {
                Some(key) => at(offset, &format!("{key}: {}", e.message())),
                None => at(offset, e.message()),
            }
        })?;

        let mut plugins = BTreeMap::new();
        for (name, table) in raw.plugins {
            if !is_valid_plugin_name(&name) {
                return Err(Error::usage(format!(
                    "{}: [plugins.{name}]: plugin names are lowercase letters, digits, `-` and `_`",
                    path.display()
                )));
            }
            let parsed =
                PluginTable::from_raw(&name, table).map_err(|(offset, m)| at(offset, &m))?;
            plugins.insert(name, parsed);
        }

        let mut instances = BTreeMap::new();
        for (name, raw_instance) in raw.instances {
            let vip = raw_instance.vip.get_ref().parse().map_err(|_| {
                at(
                    raw_instance.vip.span().start,
                    &format!(
                        "[instances.{name}] vip: `{}` is not an IP address",
                        raw_instance.vip.get_ref()
                    ),
                )
            })?;
            let role = match raw_instance.role {
                None => Role::ReadWrite,
                Some(role) => match role.get_ref().as_str() {
                    "rw" => Role::ReadWrite,
                    "ro" => Role::ReadOnly,
                    other => {
                        return Err(at(
                            role.span().start,
                            &format!(
                                "[instances.{name}] role: expected \"rw\" or \"ro\", not `{other}`"
                            ),
                        ));
                    }
                },
            };
            instances.insert(name, Instance { vip, role });
        }

        let mariadb = raw.mariadb;
        let timeout_ms = match mariadb.timeout_ms {
            Some(t) if *t.get_ref() == 0 => {
                return Err(at(t.span().start, "[mariadb] timeout_ms must be above 0"));
            }
            Some(t) => t.into_inner(),
            None => 1_000,
        };
        let settable_variables = match mariadb.settable_variables {
            Some(list) => {
                let offset = list.span().start;
                let list = list.into_inner();
                if let Some(bad) = list.iter().find(|v| {
                    v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                }) {
                    return Err(at(
                        offset,
                        &format!("[mariadb] settable_variables: `{bad}` is not a variable name"),
                    ));
                }
                list
            }
            None => vec!["read_only".to_string()],
        };
        Ok(Config {
            path: path.to_path_buf(),
            plugin_dir: raw
                .plugin_dir
                .unwrap_or_else(|| "/usr/local/lib/mmvip/plugins".into()),
            cache_dir: raw.cache_dir.unwrap_or_else(|| "/var/cache/mmvip".into()),
            log_file: raw.log_file.unwrap_or_else(|| "/var/log/mmvip.log".into()),
            failover_file: raw
                .failover_file
                .unwrap_or_else(|| "/etc/keepalived/failover".into()),
            state_dir: raw.state_dir.unwrap_or_else(|| "/run/mmvip".into()),
            mariadb: MariaDbConfig {
                socket: mariadb
                    .socket
                    .unwrap_or_else(|| "/run/mysqld/mysqld.sock".into()),
                user: mariadb.user.unwrap_or_else(|| "root".into()),
                password_file: mariadb.password_file,
                timeout: Duration::from_millis(timeout_ms),
                settable_variables,
            },
            plugins,
            instances,
        })
    }

    /// The instances as settings for notify plugins: `instances.NAME.vip` and
    /// `instances.NAME.role` for each `[instances.NAME]`.
    pub fn instance_settings(&self) -> Vec<(String, String)> {
        self.instances
            .iter()
            .flat_map(|(name, instance)| {
                [
                    (format!("instances.{name}.vip"), instance.vip.to_string()),
                    (
                        format!("instances.{name}.role"),
                        instance.role.word().to_string(),
                    ),
                ]
            })
            .collect()
    }

    /// The merged spec for plugin `name`. A plugin with neither a config table nor
    /// built-in defaults is granted nothing (fail closed).
    pub fn plugin(&self, name: &str) -> Result<PluginSpec> {
        if !is_valid_plugin_name(name) {
            return Err(Error::usage(format!(
                "invalid plugin name `{name}`: use lowercase letters, digits, `-` and `_`"
            )));
        }
        let table = self.plugins.get(name).cloned().unwrap_or_default();
        let (default_grants, default_timeout) =
            builtin_defaults(name).unwrap_or((&[], SITE_PLUGIN_TIMEOUT));
        let file = table.file.unwrap_or_else(|| format!("{name}.wasm").into());
        let mut grants = table.grants.unwrap_or_else(|| default_grants.to_vec());
        grants.sort();
        grants.dedup();
        Ok(PluginSpec {
            name: name.to_string(),
            path: self.plugin_dir.join(file),
            grants,
            timeout: table.timeout.unwrap_or(default_timeout),
            memory_bytes: (table.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB) << 20) as usize,
            settings: table.settings,
        })
    }

    /// Names of every plugin the site has: configured tables and `*.wasm` files.
    pub fn plugin_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.plugins.keys().cloned().collect();
        let entries = std::fs::read_dir(&self.plugin_dir)
            .map_err(|e| Error::usage(format!("plugin_dir {}: {e}", self.plugin_dir.display())))?;
        for entry in entries.flatten() {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if let Some(stem) = file.strip_suffix(".wasm")
                && is_valid_plugin_name(stem)
            {
                names.push(stem.to_string());
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

impl PluginTable {
    fn from_raw(
        name: &str,
        table: BTreeMap<String, Spanned<toml::Value>>,
    ) -> std::result::Result<PluginTable, (usize, String)> {
        let mut parsed = PluginTable::default();
        for (key, value) in table {
            let offset = value.span().start;
            let wrong = |expected: &str| {
                (
                    offset,
                    format!("[plugins.{name}] {key}: expected {expected}"),
                )
            };
            match key.as_str() {
                "file" => {
                    let file = value
                        .get_ref()
                        .as_str()
                        .ok_or_else(|| wrong("a file name"))?;
                    parsed.file = Some(file.into());
                }
                "grants" => {
                    let list = value
                        .get_ref()
                        .as_array()
                        .ok_or_else(|| wrong("a list of grants"))?;
                    let mut grants = Vec::new();
                    for item in list {
                        let grant = item.as_str().and_then(Grant::from_name).ok_or_else(|| {
                            let known: Vec<_> = Grant::ALL.iter().map(|g| g.name()).collect();
                            (
                                offset,
                                format!(
                                    "[plugins.{name}] grants: unknown grant {item}; known: {}",
                                    known.join(", ")
                                ),
                            )
                        })?;
                        grants.push(grant);
                    }
                    parsed.grants = Some(grants);
                }
                "timeout_ms" => {
                    let ms = positive_integer(value.get_ref())
                        .ok_or_else(|| wrong("a whole number of milliseconds above 0"))?;
                    parsed.timeout = Some(Duration::from_millis(ms));
                }
                "memory_mib" => {
                    let mib = positive_integer(value.get_ref())
                        .filter(|mib| *mib <= 4096)
                        .ok_or_else(|| wrong("a whole number of MiB from 1 to 4096"))?;
                    parsed.memory_mib = Some(mib);
                }
                _ => {
                    let text = match value.into_inner() {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    parsed.settings.push((key, text));
                }
            }
        }
        Ok(parsed)
    }
}

fn positive_integer(value: &toml::Value) -> Option<u64> {
    value.as_integer().filter(|n| *n > 0).map(|n| n as u64)
}

pub fn is_valid_plugin_name(name: &str) -> bool {
    !RESERVED_NAMES.contains(&name)
        && !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-')
}

/// The key a deserialization error is about, written as in the file
/// (`[mariadb] timeout_ms`). toml only shows the key path in its rendering without
/// the source excerpt.
fn toml_key(error: &toml::de::Error) -> Option<String> {
    let mut bare = error.clone();
    bare.set_input(None);
    let rendered = bare.to_string();
    let path = rendered.lines().find_map(|line| {
        line.strip_prefix("in `")
            .and_then(|rest| rest.strip_suffix('`'))
    })?;
    Some(match path.rsplit_once('.') {
        Some((table, key)) => format!("[{table}] {key}"),
        None => path.to_string(),
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("/etc/mmvip/mmvip.toml"), text)
    }

    #[test]
    fn defaults_apply_to_an_empty_config() {
        let config = parse("").unwrap();
        assert_eq!(config.plugin_dir, Path::new("/usr/local/lib/mmvip/plugins"));
        assert_eq!(config.mariadb.socket, Path::new("/run/mysqld/mysqld.sock"));
        assert_eq!(config.mariadb.timeout, Duration::from_millis(1000));
        let health = config.plugin("health").unwrap();
        assert_eq!(health.grants, vec![Grant::Log, Grant::SqlRead]);
        assert_eq!(
            health.path,
            Path::new("/usr/local/lib/mmvip/plugins/health.wasm")
        );
        assert_eq!(health.memory_bytes, 64 << 20);
    }

    #[test]
    fn plugin_table_overrides_and_passes_settings() {
        let config = parse(
            "plugin_dir = \"/p\"\n[plugins.health]\nfile = \"h2.wasm\"\ngrants = [\"log\"]\ntimeout_ms = 500\nretries = 3\nmode = \"strict\"\n",
        )
        .unwrap();
        let health = config.plugin("health").unwrap();
        assert_eq!(health.path, Path::new("/p/h2.wasm"));
        assert_eq!(health.grants, vec![Grant::Log]);
        assert_eq!(health.timeout, Duration::from_millis(500));
        assert_eq!(
            health.settings,
            vec![
                ("mode".to_string(), "strict".to_string()),
                ("retries".to_string(), "3".to_string())
            ]
        );
    }

    #[test]
    fn unknown_site_plugin_is_granted_nothing() {
        let spec = parse("").unwrap().plugin("site-check").unwrap();
        assert!(spec.grants.is_empty());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("log_file = \"/x\"\n\nlogfile = \"/y\"\n").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.message().starts_with("/etc/mmvip/mmvip.toml:3:"),
            "{err}"
        );
        assert!(err.message().contains("logfile"), "{err}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let err = parse("[mariadb]\ntimeout_ms = \"fast\"\n").unwrap_err();
        assert!(
            err.message()
                .starts_with("/etc/mmvip/mmvip.toml:2: [mariadb] timeout_ms: invalid type"),
            "{err}"
        );
        let err = parse("log_file = \"/x\"\nplugin_dir = 5\n").unwrap_err();
        assert!(
            err.message()
                .starts_with("/etc/mmvip/mmvip.toml:2: plugin_dir: invalid type"),
            "{err}"
        );
        let err = parse("[plugins.health]\n\ntimeout_ms = -5\n").unwrap_err();
        assert!(
            err.message().starts_with("/etc/mmvip/mmvip.toml:3:"),
            "{err}"
        );
        assert!(err.message().contains("timeout_ms"), "{err}");
    }

    #[test]
    fn instances_map_names_to_vip_and_role() {
        let config = parse("[instances.VI_1]\nvip = \"10.77.1.99\"\nrole = \"rw\"\n[instances.VI_2]\nvip = \"10.77.1.98\"\nrole = \"ro\"\n").unwrap();
        assert_eq!(config.instances["VI_2"].role, Role::ReadOnly);
        assert_eq!(
            config.instance_settings(),
            vec![
                ("instances.VI_1.vip".to_string(), "10.77.1.99".to_string()),
                ("instances.VI_1.role".to_string(), "rw".to_string()),
                ("instances.VI_2.vip".to_string(), "10.77.1.98".to_string()),
                ("instances.VI_2.role".to_string(), "ro".to_string()),
            ]
        );
        let err = parse("[instances.VI_1]\nvip = \"10.77.1.99\"\nrole = \"writer\"\n").unwrap_err();
        assert!(
            err.message().starts_with("/etc/mmvip/mmvip.toml:3:"),
            "{err}"
        );
        let err = parse("[instances.VI_1]\nvip = \"vip-host\"\n").unwrap_err();
        assert!(err.message().contains("not an IP address"), "{err}");
    }

    #[test]
    fn unknown_grant_is_refused() {
        let err = parse("[plugins.health]\ngrants = [\"root-shell\"]\n").unwrap_err();
        assert!(err.message().contains("unknown grant"), "{err}");
    }

    #[test]
    fn path_like_plugin_names_are_refused() {
        let config = parse("").unwrap();
        assert!(config.plugin("../etc/passwd").is_err());
        assert!(config.plugin("Health").is_err());
        assert!(config.plugin("").is_err());
    }

    #[test]
    fn command_words_are_not_plugin_names() {
        let config = parse("").unwrap();
        for word in ["help", "compile", "plugins"] {
            let err = config.plugin(word).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{word}");
        }
        assert!(parse("[plugins.compile]\ntimeout_ms = 5\n").is_err());
    }

    #[test]
    fn settable_variables_default_to_read_only() {
        let config = parse("").unwrap();
        assert_eq!(config.mariadb.settable_variables, vec!["read_only"]);
        let config =
            parse("[mariadb]\nsettable_variables = [\"read_only\", \"event_scheduler\"]\n")
                .unwrap();
        assert_eq!(config.mariadb.settable_variables.len(), 2);
        let err = parse("[mariadb]\nsettable_variables = [\"x; DROP\"]\n").unwrap_err();
        assert!(err.message().contains("not a variable name"), "{err}");
    }
}
