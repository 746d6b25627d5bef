//! The site configuration (`/etc/mmvip/mmvip.toml`): where plugins live, what each
//! plugin is granted, and how to reach the local MariaDB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::caps::Grant;
use crate::error::{Error, Result};
use crate::manifest::{Kind, Manifest};

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

/// Bound for loading a plugin whose site table sets no `timeout_ms`: its own
/// default is known only once its file is read, and reading must not hang either.
pub const LOAD_BOUND: Duration = Duration::from_secs(5);
/// mmvip's own keys in a `[plugins.NAME]` table; every other key is the plugin's.
const PLUGIN_KEYS: &[&str] = &["file", "grants", "timeout_ms", "memory_mib"];

#[derive(Debug, Clone)]
pub struct Config {
    pub plugin_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// Where log entries go: `log_file`, the journal, syslog (`log`).
    pub log: crate::log::Targets,
    pub failover_file: PathBuf,
    /// Lock and state files of the notify hooks.
    pub state_dir: PathBuf,
    pub mariadb: MariaDbConfig,
    pub peer: Option<PeerConfig>,
    /// The resident guard (`mmvip guard`): absent in polled-only sites.
    pub guard: Option<crate::guard::config::GuardConfig>,
    pub plugins: BTreeMap<String, PluginTable>,
    /// VRRP instances by name: the VIP each moves and whether it carries writes.
    pub instances: BTreeMap<String, Instance>,
}

/// `rw` (`read-write`): holding the instance's VIP makes the node writable. `ro`
/// (`read-only`): it never changes `read_only`. Plugins get the same type.
pub use crate::bindings::types::InstanceRole as Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub vip: std::net::IpAddr,
    pub role: Role,
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

impl MariaDbConfig {
    /// Whether `[mariadb] settable_variables` lets mmvip set `name` (MariaDB's
    /// variable names are case-insensitive).
    pub fn may_set(&self, name: &str) -> bool {
        may_set(&self.settable_variables, name)
    }
}

/// Whether the list `settable` names `name`, in any case.
pub fn may_set(settable: &[String], name: &str) -> bool {
    settable.iter().any(|v| v.eq_ignore_ascii_case(name))
}

/// The peer node's MariaDB, as `peer` asks it: over TCP, with an account of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// `host:port` pairs, tried in order (heartbeat network first).
    pub addresses: Vec<(String, u16)>,
    pub user: String,
    pub password_file: Option<PathBuf>,
    /// Connect/read/write timeout per address.
    pub timeout: Duration,
}

/// One `[plugins.NAME]` table as written.
#[derive(Debug, Clone, Default)]
pub struct PluginTable {
    pub file: Option<PathBuf>,
    pub grants: Option<Vec<Grant>>,
    pub timeout: Option<Duration>,
    pub memory_mib: Option<u64>,
    /// Every other key: the plugin's own settings.
    pub settings: toml::Table,
}

/// What the site says of one plugin, before its file is read.
#[derive(Debug, Clone)]
pub struct PluginSite {
    pub name: String,
    pub path: PathBuf,
    pub table: PluginTable,
}

impl PluginSite {
    /// The bound for reading the plugin: the site's own, else [`LOAD_BOUND`].
    pub fn load_bound(&self) -> Duration {
        self.table.timeout.unwrap_or(LOAD_BOUND)
    }
}

/// Everything needed to run one plugin: the site's table over the plugin's manifest.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
    pub about: String,
    pub grants: Vec<Grant>,
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// The plugin's settings as a JSON object.
    pub settings: String,
}

impl PluginSpec {
    pub fn new(site: PluginSite, manifest: Manifest) -> PluginSpec {
        let table = site.table;
        let mut grants = table.grants.unwrap_or(manifest.grants);
        grants.sort();
        grants.dedup();
        PluginSpec {
            name: site.name,
            path: site.path,
            kind: manifest.kind,
            about: manifest.about,
            grants,
            timeout: table.timeout.unwrap_or(manifest.timeout),
            memory_bytes: (table.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB) << 20) as usize,
            settings: serde_json::to_string(&table.settings)
                .expect("a TOML table always serializes to JSON"),
        }
    }

    pub fn granted(&self, name: &str) -> bool {
        self.grants.iter().any(|g| g.name() == name)
    }

    /// Whether runs of this plugin hold the node lock: those that can change the
    /// node's role or its state file, whatever kind of hook they are.
    pub fn exclusive(&self) -> bool {
        ["sql-admin", "sql-raw", "state"]
            .iter()
            .any(|grant| self.granted(grant))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    plugin_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    log: Option<Spanned<Vec<String>>>,
    journal_socket: Option<PathBuf>,
    syslog_socket: Option<PathBuf>,
    failover_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    mariadb: RawMariaDb,
    peer: Option<RawPeer>,
    guard: Option<Spanned<crate::guard::config::RawGuard>>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    addresses: Spanned<Vec<String>>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    timeout_ms: Option<Spanned<u64>>,
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
            if RESERVED_NAMES.contains(&name.as_str()) {
                return Err(Error::usage(format!(
                    "{}: [plugins.{name}]: `{name}` is a command of mmvip, not a plugin name",
                    path.display()
                )));
            }
            if !is_valid_plugin_name(&name) {
                return Err(Error::usage(format!(
                    "{}: [plugins.{}]: plugin names are lowercase letters, digits, `-` and `_`",
                    path.display(),
                    crate::log::one_line(&name)
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
                    "rw" | "read-write" => Role::ReadWrite,
                    "ro" | "read-only" => Role::ReadOnly,
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
        let peer = match raw.peer {
            None => None,
            Some(peer) => {
                let offset = peer.addresses.span().start;
                let mut addresses = Vec::new();
                for text in peer.addresses.get_ref() {
                    addresses.push(parse_address(text).ok_or_else(|| {
                        at(
                            offset,
                            &format!("[peer] addresses: `{text}` is not host:port (or host)"),
                        )
                    })?);
                }
                if addresses.is_empty() {
                    return Err(at(offset, "[peer] addresses: list at least one address"));
                }
                let timeout_ms = match peer.timeout_ms {
                    Some(t) if *t.get_ref() == 0 => {
                        return Err(at(t.span().start, "[peer] timeout_ms must be above 0"));
                    }
                    Some(t) => t.into_inner(),
                    None => 500,
                };
                Some(PeerConfig {
                    addresses,
                    user: peer.user.unwrap_or_else(|| "mmvip_peer".into()),
                    password_file: peer.password_file,
                    timeout: Duration::from_millis(timeout_ms),
                })
            }
        };
        let log = {
            let (mut file, mut journal, mut syslog) = (false, false, false);
            match raw.log {
                None => file = true,
                Some(list) => {
                    let offset = list.span().start;
                    for target in list.into_inner() {
                        match target.as_str() {
                            "file" => file = true,
                            "journal" => journal = true,
                            "syslog" => syslog = true,
                            other => {
                                return Err(at(
                                    offset,
                                    &format!(
                                        "log: `{other}` is not a log target (file, journal, syslog)"
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            crate::log::Targets {
                file: file.then(|| raw.log_file.unwrap_or_else(|| "/var/log/mmvip.log".into())),
                journal: journal.then(|| {
                    raw.journal_socket
                        .unwrap_or_else(|| "/run/systemd/journal/socket".into())
                }),
                syslog: syslog.then(|| raw.syslog_socket.unwrap_or_else(|| "/dev/log".into())),
            }
        };
        let guard = match raw.guard {
            None => None,
            Some(guard) => {
                let offset = guard.span().start;
                Some(
                    guard
                        .into_inner()
                        .validate(parse_address)
                        .map_err(|why| at(offset, &why))?,
                )
            }
        };
        Ok(Config {
            peer,
            guard,
            plugin_dir: raw
                .plugin_dir
                .unwrap_or_else(|| "/usr/lib/mmvip/plugins".into()),
            cache_dir: raw.cache_dir.unwrap_or_else(|| "/var/cache/mmvip".into()),
            log,
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

    /// What the site says of plugin `name`. A plugin name is checked here, before
    /// it is used in any path or log line.
    pub fn plugin(&self, name: &str) -> Result<PluginSite> {
        if RESERVED_NAMES.contains(&name) {
            return Err(Error::usage(format!(
                "`{name}` is a command of mmvip, not a plugin (see mmvip --help)"
            )));
        }
        if !is_valid_plugin_name(name) {
            return Err(Error::usage(format!(
                "invalid plugin name `{}`: use lowercase letters, digits, `-` and `_`",
                crate::log::one_line(name)
            )));
        }
        let table = self.plugins.get(name).cloned().unwrap_or_default();
        let file = table
            .file
            .clone()
            .unwrap_or_else(|| format!("{name}.wasm").into());
        Ok(PluginSite {
            name: name.to_string(),
            path: self.plugin_dir.join(file),
            table,
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
                            (
                                offset,
                                format!(
                                    "[plugins.{name}] grants: unknown grant {item}; known: {}",
                                    Grant::known()
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
                    debug_assert!(!PLUGIN_KEYS.contains(&key.as_str()));
                    parsed.settings.insert(key, value.into_inner());
                }
            }
        }
        Ok(parsed)
    }
}

/// `host:port`, `host` (port 3306) or `[v6-address]:port`.
fn parse_address(text: &str) -> Option<(String, u16)> {
    const DEFAULT_PORT: u16 = 3306;
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once(']')?;
        let port = match port.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if port.is_empty() => DEFAULT_PORT,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (text, DEFAULT_PORT),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    valid.then(|| (host.to_string(), port))
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
        assert_eq!(config.plugin_dir, Path::new("/usr/lib/mmvip/plugins"));
        assert_eq!(config.mariadb.socket, Path::new("/run/mysqld/mysqld.sock"));
        assert_eq!(config.mariadb.timeout, Duration::from_millis(1000));
        let health = config.plugin("health").unwrap();
        assert_eq!(health.path, Path::new("/usr/lib/mmvip/plugins/health.wasm"));
        assert_eq!(health.load_bound(), LOAD_BOUND);
    }

    fn manifest(grants: &[&str], timeout_ms: u64) -> Manifest {
        Manifest {
            kind: Kind::Check,
            about: "a check".into(),
            grants: grants
                .iter()
                .map(|g| Grant::from_name(g).unwrap())
                .collect(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn the_plugins_manifest_gives_the_defaults() {
        let config = parse("").unwrap();
        let site = config.plugin("health").unwrap();
        let spec = PluginSpec::new(site, manifest(&["sql-read", "log"], 800));
        let grants: Vec<_> = spec.grants.iter().map(|g| g.name()).collect();
        assert_eq!(grants, ["log", "sql-read"]);
        assert_eq!(spec.timeout, Duration::from_millis(800));
        assert_eq!(spec.memory_bytes, 64 << 20);
        assert_eq!(spec.settings, "{}");
        assert!(!spec.exclusive());
    }

    #[test]
    fn plugin_table_overrides_and_passes_settings() {
        let config = parse(
            "plugin_dir = \"/p\"\n[plugins.health]\nfile = \"h2.wasm\"\ngrants = [\"log\"]\ntimeout_ms = 500\nretries = 3\nmode = \"strict\"\n",
        )
        .unwrap();
        let site = config.plugin("health").unwrap();
        assert_eq!(site.path, Path::new("/p/h2.wasm"));
        assert_eq!(site.load_bound(), Duration::from_millis(500));
        let health = PluginSpec::new(site, manifest(&["log", "sql-read", "state"], 800));
        let grants: Vec<_> = health.grants.iter().map(|g| g.name()).collect();
        assert_eq!(grants, ["log"]);
        assert_eq!(health.timeout, Duration::from_millis(500));
        assert_eq!(health.settings, r#"{"mode":"strict","retries":3}"#);
    }

    #[test]
    fn the_lock_follows_what_a_plugin_can_change() {
        let site = parse("").unwrap().plugin("probe").unwrap();
        assert!(PluginSpec::new(site.clone(), manifest(&["log", "state"], 1)).exclusive());
        assert!(PluginSpec::new(site.clone(), manifest(&["sql-admin"], 1)).exclusive());
        assert!(!PluginSpec::new(site, manifest(&["log", "sql-read", "vip"], 1)).exclusive());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("log_file = \"/x\"\n\nlogfile = \"/y\"\n").unwrap_err();
        assert!(matches!(err, Error::Usage(_)));
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
        assert_eq!(config.instances["VI_1"].role, Role::ReadWrite);
        assert_eq!(config.instances["VI_1"].vip.to_string(), "10.77.1.99");
        let err = parse("[instances.VI_1]\nvip = \"10.77.1.99\"\nrole = \"writer\"\n").unwrap_err();
        assert!(
            err.message().starts_with("/etc/mmvip/mmvip.toml:3:"),
            "{err}"
        );
        let err = parse("[instances.VI_1]\nvip = \"vip-host\"\n").unwrap_err();
        assert!(err.message().contains("not an IP address"), "{err}");
    }

    #[test]
    fn the_peer_is_addresses_an_account_and_a_timeout() {
        let config = parse(
            "[peer]\naddresses = [\"10.0.0.2:3307\", \"db2.example\", \"[fd00::2]:3306\"]\npassword_file = \"/etc/mmvip/peer-password\"\n",
        )
        .unwrap();
        let peer = config.peer.unwrap();
        assert_eq!(
            peer.addresses,
            [
                ("10.0.0.2".to_string(), 3307),
                ("db2.example".to_string(), 3306),
                ("fd00::2".to_string(), 3306)
            ]
        );
        assert_eq!(peer.user, "mmvip_peer");
        assert_eq!(peer.timeout, Duration::from_millis(500));
        assert!(parse("").unwrap().peer.is_none());
        let err = parse("[peer]\naddresses = [\"10.0.0.2:x\"]\n").unwrap_err();
        assert!(err.message().contains("is not host:port"), "{err}");
        let err = parse("[peer]\naddresses = []\n").unwrap_err();
        assert!(err.message().contains("at least one"), "{err}");
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
            assert!(matches!(err, Error::Usage(_)), "{word}");
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
        // The guard, doctor and sql-admin ask the same question, in any case.
        assert!(config.mariadb.may_set("EVENT_SCHEDULER"));
        assert!(!config.mariadb.may_set("rpl_semi_sync_master_enabled"));
        let err = parse("[mariadb]\nsettable_variables = [\"x; DROP\"]\n").unwrap_err();
        assert!(err.message().contains("not a variable name"), "{err}");
    }

    mod properties {
        use std::time::Instant;

        use proptest::prelude::*;

        use super::*;

        /// `text` as a TOML basic string, control characters escaped.
        fn toml_string(text: &str) -> String {
            let mut quoted = String::from("\"");
            for c in text.chars() {
                match c {
                    '"' | '\\' => {
                        quoted.push('\\');
                        quoted.push(c);
                    }
                    c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
                    c => quoted.push(c),
                }
            }
            quoted.push('"');
            quoted
        }

        /// Text a key may hold: the spellings the config knows, and hostile text.
        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                2 => any::<String>(),
                1 => "[a-z0-9:._\\[\\]-]{0,24}",
                6 => prop::sample::select(&[
                    "10.0.1.100", "127.0.0.1:7000", "127.0.0.1", "[::1]:3306", "db2:3306",
                    "rw", "ro", "read_only", "keep-writing", "read-only", "stop-mariadb",
                    "none", "file", "journal", "syslog", "log", "sql-read", "node1",
                    "/run/mmvip/secret", "", "a\u{0}b", "é",
                ][..]).prop_map(String::from),
            ]
        }

        /// A value for `key`: mostly of its kind, sometimes anything.
        fn value(key: &str) -> BoxedStrategy<String> {
            let number = key.ends_with("_ms") || key == "memory_mib";
            let list = [
                "log",
                "settable_variables",
                "addresses",
                "listen",
                "peer",
                "probes",
                "grants",
            ]
            .contains(&key);
            let fitting = if number {
                prop_oneof![
                    any::<i64>().prop_map(|n| n.to_string()),
                    (0..5000i64).prop_map(|n| n.to_string()),
                ]
                .boxed()
            } else if list {
                prop::collection::vec(text(), 0..3)
                    .prop_map(|list| {
                        let items: Vec<String> = list.iter().map(|t| toml_string(t)).collect();
                        format!("[{}]", items.join(", "))
                    })
                    .boxed()
            } else {
                text().prop_map(|t| toml_string(&t)).boxed()
            };
            let anything = prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                text().prop_map(|t| toml_string(&t)),
                Just("true".to_string()),
                Just("1.5".to_string()),
                Just("[1, \"a\"]".to_string()),
                Just("{}".to_string()),
            ];
            prop_oneof![30 => fitting, 1 => anything].boxed()
        }

        const TOP: &[&str] = &[
            "plugin_dir",
            "cache_dir",
            "log_file",
            "log",
            "journal_socket",
            "syslog_socket",
            "failover_file",
            "state_dir",
        ];
        const MARIADB: &[&str] = &[
            "socket",
            "user",
            "password_file",
            "timeout_ms",
            "settable_variables",
        ];
        const PEER: &[&str] = &["user", "password_file", "timeout_ms"];
        const GUARD: &[&str] = &[
            "node",
            "lease_ms",
            "margin_ms",
            "probes",
            "without_peer",
            "last_resort",
            "ping_interval_ms",
            "track_dir",
        ];
        const WITNESS: &[&str] = &["user", "database", "password_file"];
        const INSTANCE: &[&str] = &["role"];
        const PLUGIN: &[&str] = &["file", "grants", "timeout_ms", "memory_mib", "anything"];

        /// One table: its header, its required keys, and some of its other keys.
        fn table(
            header: String,
            required: &'static [&'static str],
            optional: &'static [&'static str],
        ) -> impl Strategy<Value = String> {
            prop::sample::subsequence(optional, 0..=optional.len())
                .prop_flat_map(move |mut keys| {
                    keys.extend_from_slice(required);
                    let values: Vec<BoxedStrategy<String>> =
                        keys.iter().map(|k| value(k)).collect();
                    (Just(keys), values)
                })
                .prop_map(move |(keys, values)| {
                    let mut text = if header.is_empty() {
                        String::new()
                    } else {
                        format!("[{header}]\n")
                    };
                    for (key, value) in keys.iter().zip(values) {
                        text.push_str(&format!("{key} = {value}\n"));
                    }
                    text
                })
        }

        fn config_text() -> impl Strategy<Value = String> {
            let name = |usual: &'static str| {
                prop_oneof![
                    3 => Just(usual.to_string()),
                    1 => any::<String>().prop_map(|n| toml_string(&n)),
                ]
            };
            (
                table(String::new(), &[], TOP),
                prop::option::of(table("mariadb".into(), &[], MARIADB)),
                prop::option::of(table("peer".into(), &["addresses"], PEER)),
                prop::option::weighted(
                    0.3,
                    (
                        table("guard".into(), &["listen", "peer", "secret_file"], GUARD),
                        prop::option::weighted(
                            0.3,
                            table("guard.witness".into(), &["address"], WITNESS),
                        ),
                    )
                        .prop_map(|(guard, witness)| guard + &witness.unwrap_or_default()),
                ),
                prop::option::of(
                    name("VI_1")
                        .prop_flat_map(|n| table(format!("instances.{n}"), &["vip"], INSTANCE)),
                ),
                prop::option::of(
                    name("health").prop_flat_map(|n| table(format!("plugins.{n}"), &[], PLUGIN)),
                ),
            )
                .prop_map(|(top, mariadb, peer, guard, instance, plugin)| {
                    [Some(top), mariadb, peer, guard, instance, plugin]
                        .into_iter()
                        .flatten()
                        .collect::<String>()
                })
        }

        fn check(text: &str) -> std::result::Result<(), TestCaseError> {
            let path = Path::new("/etc/mmvip/mmvip.toml");
            match Config::parse(path, text) {
                Ok(config) => {
                    // What was accepted is usable: its bounds can be added to a clock.
                    let now = Instant::now();
                    let mut bounds = vec![config.mariadb.timeout];
                    bounds.extend(config.peer.as_ref().map(|p| p.timeout));
                    bounds.extend(config.plugins.values().filter_map(|p| p.timeout));
                    if let Some(guard) = &config.guard {
                        bounds.extend([guard.lease + guard.margin, guard.ping_interval]);
                    }
                    for bound in bounds {
                        prop_assert!(now.checked_add(bound * 4).is_some(), "{:?}", bound);
                    }
                }
                Err(error) => {
                    prop_assert!(matches!(error, Error::Usage(_)));
                    prop_assert!(
                        error.message().starts_with("/etc/mmvip/mmvip.toml"),
                        "{}",
                        error
                    );
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(crate::proptest_config(1000))]

            #[test]
            fn any_config_text_parses_or_says_where_it_is_wrong(text in config_text()) {
                check(&text)?;
            }

            #[test]
            fn any_bytes_as_config_text_are_an_error_not_a_panic(text in any::<String>()) {
                check(&text)?;
            }
        }
    }
}
