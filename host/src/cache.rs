//! Compiled-component cache: a plugin is compiled once per content and engine, and
//! the native code is kept in a directory only root can change.
//!
//! Native code is executed, so a cache file is used only when all of these hold:
//! - its directory passed the trust rules and was opened once, without following
//!   links; the file is opened relative to it, without following links;
//! - the file is a regular file owned by the user running mmvip, writable by nobody
//!   else;
//! - its trailer names the SHA-256 of this very plugin and this engine's
//!   compatibility hash (a foreign or renamed file is rebuilt, never run), and its
//!   CRC matches (damage);
//! - the bytes checked are the bytes run: the file is mapped once, checked in that
//!   mapping, and the same mapping is handed to wasmtime (made executable in place).
//!
//! Anything wrong with the cache is logged and the plugin is compiled in memory: an
//! unusable cache never stops a hook.

use std::hash::{Hash, Hasher};
use std::io::Read as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{CustomCodeMemory, Engine};

use crate::error::{Error, Result};
use crate::log::{Level, Log};
use crate::trust::{self, TrustedDir};

/// A cache file is wasmtime's compiled image followed by a trailer: this magic, the
/// plugin's SHA-256, the engine hash (little-endian u64) and the image's CRC-32.
/// The image stays at offset 0 so it is used where it is mapped.
const CACHE_MAGIC: &[u8; 8] = b"MMVIPC04";
const TRAILER_LEN: usize = CACHE_MAGIC.len() + 32 + 8 + 4;
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
    /// Compiled in memory because the cache could not be used (logged).
    Uncached,
}

/// A plugin file's bytes and their SHA-256.
pub struct PluginBytes {
    pub wasm: Vec<u8>,
    pub sha256: [u8; 32],
}

/// Reads a plugin through the trust rules and checks that it is a WebAssembly
/// component.
pub fn read_plugin(path: &Path) -> Result<PluginBytes> {
    let file = trust::open_file(path, "plugin")?;
    let mut wasm = Vec::new();
    file.take(MAX_PLUGIN_BYTES + 1)
        .read_to_end(&mut wasm)
        .map_err(|e| Error::usage(format!("plugin {}: {e}", path.display())))?;
    if wasm.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(Error::usage(format!(
            "plugin {}: larger than the {MAX_PLUGIN_BYTES}-byte limit",
            path.display()
        )));
    }
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
    let sha256 = Sha256::digest(&wasm).into();
    Ok(PluginBytes { wasm, sha256 })
}

/// The engine's code publisher: makes a text section executable where it lies. With
/// it, a cache file's own checked mapping can be run without a copy (wasmtime cannot
/// change the protection of memory it did not map itself).
pub struct PublishInPlace;

impl CustomCodeMemory for PublishInPlace {
    fn required_alignment(&self) -> usize {
        rustix::param::page_size()
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        // SAFETY: wasmtime hands over a page-aligned range of one image it owns or
        // that this module mapped for it and never unmaps.
        unsafe {
            rustix::mm::mprotect(
                ptr.cast_mut().cast(),
                len,
                MprotectFlags::READ | MprotectFlags::EXEC,
            )
        }
        .map_err(|e| wasmtime::format_err!("cannot make compiled code executable: {e}"))
    }

    fn unpublish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        // SAFETY: as above; wasmtime guarantees no code runs in the range any more.
        unsafe {
            rustix::mm::mprotect(
                ptr.cast_mut().cast(),
                len,
                MprotectFlags::READ | MprotectFlags::WRITE,
            )
        }
        .map_err(|e| wasmtime::format_err!("cannot make compiled code writable: {e}"))
    }
}

/// Installs [`PublishInPlace`] on an engine configuration.
pub fn configure(config: &mut wasmtime::Config) {
    config.with_custom_code_memory(Some(Arc::new(PublishInPlace)));
}

/// Returns the plugin's compiled component, using and filling the cache in
/// `cache_dir` when it can be trusted, else compiling in memory.
pub fn load(
    engine: &Engine,
    plugin: &PluginBytes,
    plugin_path: &Path,
    cache_dir: &Path,
    log: &Log,
) -> Result<(Component, Source)> {
    let name = cache_file_name(engine, plugin);
    let dir = match trust::open_dir(cache_dir, "cache_dir", true) {
        Ok(dir) => dir,
        Err(why) => {
            log.write(
                Level::Warn,
                &[(
                    "msg",
                    &format!("cache not used ({why}); compiling in memory"),
                )],
            );
            return compile_in_memory(engine, plugin, plugin_path).map(|c| (c, Source::Uncached));
        }
    };
    match read_cached(engine, &dir, &name, plugin) {
        Ok(Some(component)) => return Ok((component, Source::Cache)),
        Ok(None) => {}
        Err(why) => log.write(
            Level::Warn,
            &[(
                "msg",
                &format!(
                    "rebuilding cache file {}: {why}",
                    dir.path().join(&name).display()
                ),
            )],
        ),
    }
    let compiled = compile(engine, plugin_path, &plugin.wasm)?;
    if let Err(why) = store(&dir, &name, &compiled, &trailer(engine, plugin, &compiled)) {
        log.write(
            Level::Warn,
            &[(
                "msg",
                &format!("cannot write cache file in {}: {why}", dir.path().display()),
            )],
        );
    }
    // SAFETY: `compiled` was produced by this engine a moment ago, in memory.
    let component = unsafe { Component::deserialize(engine, &compiled) }
        .map_err(|e| Error::failed(format!("loading compiled {}: {e}", plugin_path.display())))?;
    Ok((component, Source::Compiled))
}

/// The plugin's component as `mmvip compile` left it in `cache_dir` for this engine,
/// or why there is none; only reads (nothing is compiled, created or written), for
/// `mmvip doctor`.
pub fn cached(
    engine: &Engine,
    plugin: &PluginBytes,
    cache_dir: &Path,
) -> std::result::Result<Component, String> {
    let dir = trust::open_dir(cache_dir, "cache_dir", false).map_err(|e| e.to_string())?;
    match read_cached(engine, &dir, &cache_file_name(engine, plugin), plugin)? {
        Some(component) => Ok(component),
        None => Err("not compiled for this mmvip".into()),
    }
}

pub fn compile_in_memory(engine: &Engine, plugin: &PluginBytes, path: &Path) -> Result<Component> {
    Component::from_binary(engine, &plugin.wasm).map_err(|e| invalid_component(path, &e))
}

/// Compiles a component to native code, with a one-line error for a bad binary.
pub fn compile(engine: &Engine, wasm_path: &Path, wasm: &[u8]) -> Result<Vec<u8>> {
    engine
        .precompile_component(wasm)
        .map_err(|e| invalid_component(wasm_path, &e))
}

fn invalid_component(path: &Path, error: &wasmtime::Error) -> Error {
    Error::usage(format!(
        "plugin {} is not a valid component: {}",
        path.display(),
        crate::error::describe_wasmtime(error)
    ))
}

fn engine_hash(engine: &Engine) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// The file name: the plugin's content hash and the engine hash, so versions of mmvip
/// sharing a directory do not overwrite each other's files. The trailer repeats both:
/// a name proves nothing.
fn cache_file_name(engine: &Engine, plugin: &PluginBytes) -> String {
    format!("{}-{:016x}.cwasm", hex(&plugin.sha256), engine_hash(engine))
}

fn trailer(engine: &Engine, plugin: &PluginBytes, image: &[u8]) -> Vec<u8> {
    let mut trailer = Vec::with_capacity(TRAILER_LEN);
    trailer.extend_from_slice(CACHE_MAGIC);
    trailer.extend_from_slice(&plugin.sha256);
    trailer.extend_from_slice(&engine_hash(engine).to_le_bytes());
    trailer.extend_from_slice(&crc32fast::hash(image).to_le_bytes());
    trailer
}

/// `Ok(None)` when there is no cache file; `Err` when there is one but it is unusable.
fn read_cached(
    engine: &Engine,
    dir: &TrustedDir,
    name: &str,
    plugin: &PluginBytes,
) -> std::result::Result<Option<Component>, String> {
    let fd = match rustix::fs::openat(
        dir.fd(),
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err("not a regular file".into());
    }
    if stat.st_uid != rustix::process::geteuid().as_raw() {
        return Err(format!(
            "owned by uid {}, not by the user running mmvip",
            stat.st_uid
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:04o})",
            stat.st_mode & 0o7777
        ));
    }
    let len = usize::try_from(stat.st_size).map_err(|_| "too large".to_string())?;
    if len <= TRAILER_LEN {
        return Err("not an mmvip cache file".into());
    }
    let mapping = map_private(&fd, len).map_err(|e| e.to_string())?;
    // SAFETY: `mapping` is `len` readable bytes, mapped above and unmapped only on
    // the error paths below, after the last use of `bytes`.
    let bytes = unsafe { std::slice::from_raw_parts(mapping.as_ptr().cast::<u8>(), len) };
    let (image, found) = bytes.split_at(len - TRAILER_LEN);
    let check = (|| {
        let expected = trailer(engine, plugin, &[]);
        let (magic, rest) = found.split_at(CACHE_MAGIC.len());
        let (sha, rest) = rest.split_at(32);
        let (engine_bytes, crc) = rest.split_at(8);
        if magic != CACHE_MAGIC {
            return Err("not an mmvip cache file".to_string());
        }
        if sha != plugin.sha256 {
            return Err("compiled from a different plugin".into());
        }
        if engine_bytes != &expected[40..48] {
            return Err("compiled by a different engine".into());
        }
        if crc32fast::hash(image).to_le_bytes() != crc {
            return Err("checksum mismatch (corrupt)".into());
        }
        Ok(())
    })();
    if let Err(why) = check {
        unmap(mapping, len);
        return Err(why);
    }
    let image_ptr = NonNull::slice_from_raw_parts(mapping.cast::<u8>(), len - TRAILER_LEN);
    // SAFETY: the image is exactly the bytes checked above, in a private mapping of
    // a file only this user can write, which is never unmapped or written again: a
    // component's code may be in use by any store until the process ends. wasmtime
    // checks the image's own header and engine compatibility before using it.
    match unsafe { Component::deserialize_raw(engine, image_ptr) } {
        Ok(component) => Ok(Some(component)),
        Err(e) => {
            unmap(mapping, len);
            Err(crate::error::describe_wasmtime(&e))
        }
    }
}

fn map_private(fd: &OwnedFd, len: usize) -> rustix::io::Result<NonNull<std::ffi::c_void>> {
    // SAFETY: a fresh private read-only mapping of `len` bytes of an open file;
    // nothing else refers to this address range.
    let address = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ,
            MapFlags::PRIVATE,
            fd.as_fd(),
            0,
        )
    }?;
    Ok(NonNull::new(address).expect("mmap never returns null on success"))
}

fn unmap(mapping: NonNull<std::ffi::c_void>, len: usize) {
    // SAFETY: unmaps exactly a range mapped by `map_private`, no longer in use.
    let _ = unsafe { rustix::mm::munmap(mapping.as_ptr(), len) };
}

/// Writes the cache file atomically, under a temporary name of this process's own
/// (hooks are not serialized: two may compile at once).
fn store(dir: &TrustedDir, name: &str, image: &[u8], trailer: &[u8]) -> std::io::Result<()> {
    let temp = format!(".tmp-{}-{}", std::process::id(), nanos());
    dir.replace(name, &temp, &[image, trailer])
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
