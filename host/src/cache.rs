//! Compiled-component cache: a plugin is compiled once per content and engine, and
//! the native code is kept in a root-only directory. Every cache file carries a
//! checksum of its payload, so a corrupt or foreign file is rebuilt, never executed.
//! Only root can write there, so the checksum guards against damage, not forgery: a
//! CRC is enough and costs a fraction of a cryptographic hash on every hook run.

use std::fs::{self, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};
use crate::log::Log;

const CACHE_MAGIC: &[u8; 8] = b"MMVIPC02";
/// Magic, then the payload's CRC-32 (IEEE), little-endian.
const HEADER_LEN: usize = CACHE_MAGIC.len() + 4;
/// No hook plugin comes near this; a larger file is refused rather than read.
const MAX_PLUGIN_BYTES: u64 = 64 << 20;
const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Where a component came from on this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Loaded from a valid cache file.
    Cache,
    /// Compiled now (no cache file, or it was stale or corrupt) and cached.
    Compiled,
}

/// Reads the plugin at `wasm_path` and returns its compiled component, using and
/// filling the cache in `cache_dir`. A cache that cannot be written is reported in
/// the log and the hook still runs from the fresh compilation.
pub fn load(
    engine: &Engine,
    wasm_path: &Path,
    cache_dir: &Path,
    log: &Log,
) -> Result<(Component, Source)> {
    let wasm = read_plugin(wasm_path)?;
    if cache_dir.exists() {
        crate::trust::require_trusted(cache_dir, "cache_dir")?;
    }
    let cache_file = cache_dir.join(cache_file_name(engine, &wasm));
    match read_cached(engine, &cache_file) {
        Ok(Some(component)) => return Ok((component, Source::Cache)),
        Ok(None) => {}
        Err(why) => log.write(
            "warn",
            &[(
                "msg",
                &format!("rebuilding cache file {}: {why}", cache_file.display()),
            )],
        ),
    }
    let compiled = compile(engine, wasm_path, &wasm)?;
    if let Err(why) = store(cache_dir, &cache_file, &compiled) {
        log.write(
            "warn",
            &[(
                "msg",
                &format!("cannot write cache {}: {why}", cache_file.display()),
            )],
        );
    }
    // SAFETY: `compiled` was produced by this engine a moment ago, in memory.
    let component = unsafe { Component::deserialize(engine, &compiled) }
        .map_err(|e| Error::failed(format!("loading compiled {}: {e}", wasm_path.display())))?;
    Ok((component, Source::Compiled))
}

/// Reads a plugin file and checks that it is a WebAssembly component.
pub fn read_plugin(path: &Path) -> Result<Vec<u8>> {
    let size = fs::metadata(path)
        .map_err(|e| Error::usage(format!("plugin {}: {e}", path.display())))?
        .len();
    if size > MAX_PLUGIN_BYTES {
        return Err(Error::usage(format!(
            "plugin {}: {size} bytes is larger than the {MAX_PLUGIN_BYTES}-byte limit",
            path.display()
        )));
    }
    let wasm =
        fs::read(path).map_err(|e| Error::usage(format!("plugin {}: {e}", path.display())))?;
    if wasm.len() < 8 || &wasm[..4] != WASM_MAGIC {
        return Err(Error::usage(format!(
            "plugin {} is not a WebAssembly file",
            path.display()
        )));
    }
    if wasm[4..8] == CORE_MODULE_VERSION {
        return Err(Error::usage(format!(
            "plugin {} is a core WebAssembly module, not a component: build it for wasm32-wasip2",
            path.display()
        )));
    }
    Ok(wasm)
}

/// Compiles a component to native code, with a one-line error for a bad binary.
pub fn compile(engine: &Engine, wasm_path: &Path, wasm: &[u8]) -> Result<Vec<u8>> {
    engine.precompile_component(wasm).map_err(|e| {
        Error::usage(format!(
            "plugin {} is not a valid component: {}",
            wasm_path.display(),
            first_line(&format!("{e:#}"))
        ))
    })
}

/// The cache key: the plugin's content hash and the engine's compatibility hash.
fn cache_file_name(engine: &Engine, wasm: &[u8]) -> String {
    let content = hex(&Sha256::digest(wasm));
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{content}-{:016x}.cwasm", hasher.finish())
}

/// `Ok(None)` when there is no cache file; `Err` when there is one but it is unusable.
fn read_cached(engine: &Engine, path: &Path) -> std::result::Result<Option<Component>, String> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if bytes.len() < HEADER_LEN || &bytes[..CACHE_MAGIC.len()] != CACHE_MAGIC {
        return Err("not an mmvip cache file".into());
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if crc32fast::hash(payload).to_le_bytes() != header[CACHE_MAGIC.len()..] {
        return Err("checksum mismatch (corrupt)".into());
    }
    // SAFETY: the payload is byte-for-byte what this host wrote after compiling it
    // (checksum above), in a directory only root can write; wasmtime additionally
    // checks that it was compiled by a compatible engine.
    unsafe { Component::deserialize(engine, payload) }
        .map(Some)
        .map_err(|e| first_line(&format!("{e:#}")))
}

/// Writes the cache file atomically: a private temporary file renamed into place.
fn store(cache_dir: &Path, cache_file: &Path, compiled: &[u8]) -> std::io::Result<()> {
    ensure_cache_dir(cache_dir)?;
    let temp: PathBuf = cache_dir.join(format!(".tmp-{}-{}", std::process::id(), nanos()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(CACHE_MAGIC)?;
        file.write_all(&crc32fast::hash(compiled).to_le_bytes())?;
        file.write_all(compiled)?;
        file.sync_all()?;
        fs::rename(&temp, cache_file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Creates the cache directory (mode 0700) if needed and checks it is root-only.
pub fn ensure_cache_dir(cache_dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)?;
    crate::trust::require_trusted(cache_dir, "cache_dir")
        .map(|_| ())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}
