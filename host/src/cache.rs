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

/// A cache file is wasmtime's compiled image followed by a trailer: this magic, then
/// the image's CRC-32 (IEEE, little-endian). The image stays at offset 0 so wasmtime
/// maps the file directly instead of copying it.
const CACHE_MAGIC: &[u8; 8] = b"MMVIPC03";
const TRAILER_LEN: usize = CACHE_MAGIC.len() + 4;
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
    let cache_dir = if cache_dir.exists() {
        &crate::trust::require_trusted(cache_dir, "cache_dir")?
    } else {
        cache_dir
    };
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
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
    if len <= TRAILER_LEN {
        return Err("not an mmvip cache file".into());
    }
    {
        let mapped = MappedFile::new(&file, len).map_err(|e| e.to_string())?;
        let (image, trailer) = mapped.bytes().split_at(len - TRAILER_LEN);
        let (magic, crc) = trailer.split_at(CACHE_MAGIC.len());
        if magic != CACHE_MAGIC {
            return Err("not an mmvip cache file".into());
        }
        if crc32fast::hash(image).to_le_bytes() != crc {
            return Err("checksum mismatch (corrupt)".into());
        }
    }
    // SAFETY: the file is byte-for-byte what this host wrote after compiling (the
    // checksum above), in a directory only root can write, and cache files are only
    // ever replaced by rename, never changed in place; wasmtime additionally checks
    // that it was compiled by a compatible engine.
    unsafe { Component::deserialize_file(engine, path) }
        .map(Some)
        .map_err(|e| first_line(&format!("{e:#}")))
}

/// A read-only private mapping of a whole file, for checksumming without a copy.
struct MappedFile {
    address: *mut std::ffi::c_void,
    len: usize,
}

impl MappedFile {
    fn new(file: &fs::File, len: usize) -> std::io::Result<MappedFile> {
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        // SAFETY: a fresh read-only mapping of `len` bytes of an open file; nothing
        // else refers to this address range.
        let address = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::PRIVATE,
                file,
                0,
            )
        }?;
        Ok(MappedFile { address, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.address.cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range mapped in `new`, no longer borrowed.
        let _ = unsafe { rustix::mm::munmap(self.address, self.len) };
    }
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
        file.write_all(compiled)?;
        file.write_all(CACHE_MAGIC)?;
        file.write_all(&crc32fast::hash(compiled).to_le_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, cache_file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Creates the cache directory (mode 0700) if needed and checks that only root can
/// change it. An existing directory keeps its mode: it may be shared (`/var/cache`),
/// and what matters is that nobody else can write it.
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
