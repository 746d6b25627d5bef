//! Loading a plugin: its file (through the trust rules), its manifest, its compiled
//! code (through the cache), and a check of its imports against its grants, which
//! links exactly the granted capabilities.

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};

use crate::bindings;
use crate::cache::{self, PluginBytes, Source};
use crate::caps::Grant;
use crate::config::{Config, PluginSite, PluginSpec};
use crate::error::{Error, Result};
use crate::log::Log;
use crate::manifest;
use crate::runtime::HookState;

/// WASI interfaces a plugin may import. They expose nothing of the host: no
/// preopened directories, no environment, no arguments; stdout is discarded and
/// stderr is captured into the log. Sockets and HTTP are never linked.
const ALLOWED_WASI: &[&str] = &[
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
];
/// Interfaces that only carry types; importing them needs no grant.
const TYPE_ONLY: &[&str] = &["types", "sql-types"];

/// A plugin file read and its manifest merged with the site's table.
pub struct Found {
    pub spec: PluginSpec,
    bytes: PluginBytes,
}

/// Reads plugin `site` and what it declares of itself.
pub fn find(site: PluginSite) -> Result<Found> {
    let bytes = cache::read_plugin(&site.path)?;
    let manifest = manifest::read(&bytes.wasm, &site.name)?;
    Ok(Found {
        spec: PluginSpec::new(site, manifest),
        bytes,
    })
}

/// A plugin ready to instantiate: linked to exactly its granted capabilities.
pub struct Plugin {
    pub spec: PluginSpec,
    pub linked: InstancePre<HookState>,
}

impl Found {
    /// Compiles (or loads from the cache), checks and links the plugin.
    pub fn load(self, engine: &Engine, config: &Config, log: &Log) -> Result<(Plugin, Source)> {
        let (component, source) =
            cache::load(engine, &self.bytes, &self.spec.path, &config.cache_dir, log)?;
        let linked = link(engine, &component, &self.spec.name, &self.spec.grants)?;
        Ok((
            Plugin {
                spec: self.spec,
                linked,
            },
            source,
        ))
    }

    /// Like [`Found::load`], but the cache is only read: a plugin it does not hold
    /// compiled for this engine is compiled in memory. Returns why the cache could
    /// not serve it beside the plugin (for `mmvip doctor`, which changes nothing).
    pub fn load_without_caching(
        self,
        engine: &Engine,
        config: &Config,
    ) -> Result<(Plugin, std::result::Result<(), String>)> {
        let (component, cached) = match cache::cached(engine, &self.bytes, &config.cache_dir) {
            Ok(component) => (component, Ok(())),
            Err(why) => (
                cache::compile_in_memory(engine, &self.bytes, &self.spec.path)?,
                Err(why),
            ),
        };
        let linked = link(engine, &component, &self.spec.name, &self.spec.grants)?;
        Ok((
            Plugin {
                spec: self.spec,
                linked,
            },
            cached,
        ))
    }
}

/// Refuses a component, fail closed, when it imports something it was not granted
/// or calls a function this host does not have; links it to its capabilities.
pub fn link(
    engine: &Engine,
    component: &Component,
    plugin: &str,
    grants: &[Grant],
) -> Result<InstancePre<HookState>> {
    let ty = component.component_type();
    let mut imports = Vec::new();
    for (name, _) in ty.imports(engine) {
        imports.push(name.to_string());
        if let Some(interface) = hooks_interface(name) {
            manifest::check_version(plugin, name)?;
            if TYPE_ONLY.contains(&interface) {
                continue;
            }
            match Grant::from_name(interface) {
                Some(grant) if grants.contains(&grant) => {}
                Some(grant) => {
                    return Err(Error::usage(format!(
                        "plugin `{plugin}` imports {name} but is not granted `{}`; refused (grant it in [plugins.{plugin}] grants)",
                        grant.name()
                    )));
                }
                None => {
                    return Err(Error::usage(format!(
                        "plugin `{plugin}` imports unknown interface {name}; refused"
                    )));
                }
            }
        } else if !ALLOWED_WASI.iter().any(|prefix| name.starts_with(prefix)) {
            return Err(Error::usage(format!(
                "plugin `{plugin}` imports {name}, which mmvip never provides; refused"
            )));
        }
    }
    let exports_hook = ty
        .exports(engine)
        .any(|(name, _)| hooks_interface(name) == Some("hook"));
    if !exports_hook {
        return Err(Error::usage(format!(
            "plugin `{plugin}` exports no {}/hook (built for another host?)",
            bindings::PACKAGE
        )));
    }
    // Type-checks every import against what this host provides, so a plugin from a
    // later 0.2.x release that calls something new is refused like any load problem.
    linker(engine, &imports, grants)?
        .instantiate_pre(component)
        .map_err(|e| {
            Error::usage(format!(
                "plugin `{plugin}` needs what this mmvip ({}@{}) does not provide: {}; rebuild it with a matching mmvip-sdk",
                bindings::PACKAGE,
                bindings::VERSION,
                crate::error::describe_wasmtime(&e)
            ))
        })
}

/// `mmvip:hooks/log@0.2.0` → `log`.
fn hooks_interface(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(bindings::PACKAGE)?.strip_prefix('/')?;
    Some(
        rest.split_once('@')
            .map_or(rest, |(interface, _)| interface),
    )
}

fn linker(engine: &Engine, imports: &[String], grants: &[Grant]) -> Result<Linker<HookState>> {
    let mut linker = Linker::new(engine);
    let link_error = |e: wasmtime::Error| Error::failed(format!("linking capabilities: {e}"));
    for import in imports {
        link_wasi(&mut linker, import).map_err(link_error)?;
    }
    bindings::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(link_error)?;
    bindings::sql_types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(link_error)?;
    for grant in grants {
        grant.link(&mut linker).map_err(link_error)?;
    }
    Ok(linker)
}

/// The resource table, for the `wasi:io` interfaces.
struct IoTable;

impl wasmtime::component::HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links one WASI interface the component imports (`link` already refused any
/// outside `ALLOWED_WASI`). Only what a plugin imports is linked: it costs time at
/// every hook run, and sockets are never linked at all.
fn link_wasi(linker: &mut Linker<HookState>, import: &str) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sync};
    use wasmtime_wasi::random::WasiRandom;
    fn table(state: &mut HookState) -> &mut ResourceTable {
        state.table()
    }
    fn rng(state: &mut HookState) -> &mut wasmtime_wasi::random::WasiRandomCtx {
        state.random()
    }
    let interface = import.split('@').next().unwrap_or(import);
    let l = linker;
    match interface {
        "wasi:io/error" => sync::io::error::add_to_linker::<_, IoTable>(l, table),
        "wasi:io/poll" => sync::io::poll::add_to_linker::<_, IoTable>(l, table),
        "wasi:io/streams" => sync::io::streams::add_to_linker::<_, IoTable>(l, table),
        "wasi:clocks/wall-clock" => {
            clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, HookState::clocks)
        }
        "wasi:clocks/monotonic-clock" => {
            clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(l, HookState::clocks)
        }
        "wasi:random/random" => random::random::add_to_linker::<_, WasiRandom>(l, rng),
        "wasi:random/insecure" => random::insecure::add_to_linker::<_, WasiRandom>(l, rng),
        "wasi:random/insecure-seed" => {
            random::insecure_seed::add_to_linker::<_, WasiRandom>(l, rng)
        }
        "wasi:filesystem/types" => {
            sync::filesystem::types::add_to_linker::<_, WasiFilesystem>(l, HookState::filesystem)
        }
        "wasi:filesystem/preopens" => {
            filesystem::preopens::add_to_linker::<_, WasiFilesystem>(l, HookState::filesystem)
        }
        "wasi:cli/environment" => cli::environment::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/exit" => cli::exit::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/stdin" => cli::stdin::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/stdout" => cli::stdout::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/stderr" => cli::stderr::add_to_linker::<_, WasiCli>(l, HookState::cli),
        "wasi:cli/terminal-input" => {
            cli::terminal_input::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        "wasi:cli/terminal-output" => {
            cli::terminal_output::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        "wasi:cli/terminal-stdin" => {
            cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        "wasi:cli/terminal-stdout" => {
            cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        "wasi:cli/terminal-stderr" => {
            cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, HookState::cli)
        }
        // mmvip's own interfaces are linked by grant; anything else fails to
        // instantiate with wasmtime's message naming the import.
        _ => Ok(()),
    }
}
