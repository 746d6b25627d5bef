//! mmvip itself: the trust of every path it reads, every plugin loading with its
//! grants, the compiled cache, and the guard.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::Check;
use crate::config::{Config, PluginSpec};
use crate::log::{Log, one_line};
use crate::plugin;
use crate::runtime;

const TRUST_FIX: &str = "make the path and every directory above it owned by root and writable by root alone (chown root:root, chmod go-w) — mmvip runs as root and refuses what anyone else could replace, as keepalived's enable_script_security does for scripts";
const SECRET_FIX: &str = "make it a file owned by root with mode 0600 or 0400, in directories only root can change — mmvip refuses a secret others could read or replace";

/// Runs the checks of mmvip itself; returns the specs of the plugins that load.
pub(super) fn check(
    config: &Config,
    log: &Log,
    checks: &mut Vec<Check>,
) -> BTreeMap<String, PluginSpec> {
    trust(config, checks);
    let plugins = plugins(config, checks);
    if config.guard.is_some() {
        checks.push(guard(config));
    }
    checks.push(flap_damping(config, log));
    plugins
}

/// Whether the role hooks' flap damping holds this node's promotion back.
fn flap_damping(config: &Config, log: &Log) -> Check {
    let state = crate::caps::state::StateStore::read(&config.state_dir, log);
    let (changes, held_back) = crate::cli::damping(&state);
    match held_back {
        Some(why) => Check::fail(
            "flap_damping",
            format!("promotion is held back by flap damping ({why})"),
            "find why the pair keeps failing over (the log's role changes, the other checks here), then run `mmvip ack` on this node",
        ),
        None => Check::pass(
            "flap_damping",
            format!("flap damping holds nothing back ({changes} role changes recorded)"),
        ),
    }
}

fn trust(config: &Config, checks: &mut Vec<Check>) {
    checks.push(
        match crate::trust::open_dir(&config.plugin_dir, "plugin_dir", false) {
            Ok(_) => Check::pass(
                "trust.plugin_dir",
                format!("plugin_dir {} is trusted", config.plugin_dir.display()),
            ),
            Err(e) => Check::fail("trust.plugin_dir", e.message(), TRUST_FIX),
        },
    );
    checks.push(created_dir(&config.cache_dir, "cache_dir"));
    checks.push(created_dir(&config.state_dir, "state_dir"));
    if let Some(path) = &config.log.file {
        checks.push(log_file(path));
    }
    let mut secrets = vec![
        (
            "trust.mariadb_password_file",
            "[mariadb] password_file",
            config.mariadb.password_file.as_deref(),
        ),
        (
            "trust.peer_password_file",
            "[peer] password_file",
            config
                .peer
                .as_ref()
                .and_then(|p| p.password_file.as_deref()),
        ),
    ];
    if let Some(guard) = &config.guard {
        secrets.push((
            "trust.guard_secret_file",
            "[guard] secret_file",
            Some(guard.secret_file.as_path()),
        ));
        secrets.push((
            "trust.witness_password_file",
            "[guard.witness] password_file",
            guard
                .witness
                .as_ref()
                .and_then(|w| w.password_file.as_deref()),
        ));
    }
    for (name, what, path) in secrets {
        let Some(path) = path else { continue };
        checks.push(match crate::trust::read_secret(path, what) {
            Ok(_) => Check::pass(name, format!("{what} {} is trusted", path.display())),
            Err(e) => Check::fail(name, e.message(), SECRET_FIX),
        });
    }
}

/// A directory mmvip creates (0700) when missing: it must be trusted, or the directory
/// it will be created in must be.
fn created_dir(path: &Path, what: &str) -> Check {
    let name = format!("trust.{what}");
    let result = if path.exists() {
        crate::trust::open_dir(path, what, false).map(|_| "is trusted")
    } else {
        crate::trust::open_parent(path, what)
            .map(|_| "does not exist yet; mmvip creates it in a trusted directory")
    };
    match result {
        Ok(state) => Check::pass(name, format!("{what} {} {state}", path.display())),
        Err(e) => Check::fail(name, e.message(), TRUST_FIX),
    }
}

fn log_file(path: &Path) -> Check {
    let result = crate::trust::open_parent(path, "log_file").and_then(|_| {
        // An existing log must be trusted too: mmvip appends to it.
        match path.symlink_metadata() {
            Ok(_) => crate::trust::open_file(path, "log_file").map(drop),
            Err(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => Check::pass(
            "trust.log_file",
            format!("log_file {} is trusted", path.display()),
        ),
        Err(e) => Check::fail("trust.log_file", e.message(), TRUST_FIX),
    }
}

/// Every plugin loads and links with its grants; the cache holds each compiled for
/// this mmvip.
fn plugins(config: &Config, checks: &mut Vec<Check>) -> BTreeMap<String, PluginSpec> {
    let mut loaded = BTreeMap::new();
    let names = match config.plugin_names() {
        Ok(names) => names,
        Err(e) => {
            checks.push(Check::fail("plugins", e.message(), TRUST_FIX));
            return loaded;
        }
    };
    if names.is_empty() {
        checks.push(Check::fail(
            "plugins",
            format!("no plugin in {}", config.plugin_dir.display()),
            "install the plugins (README: Install from a package) — every keepalived hook line runs one, and a missing plugin exits 2",
        ));
        return loaded;
    }
    let engine = match runtime::engine() {
        Ok(engine) => engine,
        Err(e) => {
            checks.push(Check::fail(
                "plugins",
                format!("cannot start the WebAssembly engine: {}", e.message()),
                "see the message — no hook can run",
            ));
            return loaded;
        }
    };
    // Why the cache cannot serve each plugin, with the plugins it applies to.
    let mut uncached: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in names {
        let check = format!("plugin.{name}");
        let result = config
            .plugin(&name)
            .and_then(plugin::find)
            .and_then(|found| found.load_without_caching(&engine, config));
        match result {
            Ok((plugin, cached)) => {
                let spec = plugin.spec;
                let grants: Vec<&str> = spec.grants.iter().map(|g| g.name()).collect();
                checks.push(Check::pass(
                    check,
                    format!(
                        "plugin {name} loads: {} hook, grants {}, timeout {} ms",
                        spec.kind.word(),
                        if grants.is_empty() {
                            "none".to_string()
                        } else {
                            grants.join(",")
                        },
                        spec.timeout.as_millis()
                    ),
                ));
                if let Err(why) = cached {
                    uncached.entry(why).or_default().push(name.clone());
                }
                loaded.insert(name, spec);
            }
            Err(e) => checks.push(Check::fail(
                check,
                format!("plugin {name} does not load: {}", one_line(e.message())),
                format!(
                    "reinstall {name}.wasm or correct [plugins.{name}] (see `mmvip plugins`) — a hook whose plugin does not load exits 2, which keepalived takes as a failed check or a failed transition"
                ),
            )),
        }
    }
    checks.push(if uncached.is_empty() {
        Check::pass(
            "cache",
            format!(
                "every plugin is compiled in {} for this mmvip",
                config.cache_dir.display()
            ),
        )
    } else {
        Check::fail(
            "cache",
            format!(
                "plugins not in the cache: {}",
                uncached
                    .iter()
                    .map(|(why, names)| format!("{} ({why})", names.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "run `mmvip compile` (after every install or upgrade) — otherwise the next hook compiles its plugin first, which takes a large part of its timeout: a health check can time out and a promotion start late",
        )
    });
    loaded
}

/// The guard answers on its control socket.
fn guard(config: &Config) -> Check {
    match crate::guard::control::ask(&config.state_dir, "STATUS", Duration::from_secs(2)) {
        Ok(line) => Check::pass("guard", format!("the guard answers: {}", one_line(&line))),
        Err(why) => Check::fail(
            "guard",
            why,
            "start it: systemctl enable --now mmvip-guard (journalctl -u mmvip-guard says why it stopped) — without the guard nothing holds the write lease or fences this node, and keepalived, which tracks its process, keeps every instance in FAULT",
        ),
    }
}
