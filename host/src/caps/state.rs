//! The `state` capability: a small key/value file per node, read once at the start of
//! a hook and replaced atomically (temporary file + rename) after it returns. Every
//! user of the file holds the node lock, so the fixed temporary name is never shared
//! and one left behind by a stopped hook is removed by the next.
//!
//! The file is the role hooks' memory, not a requirement for demoting: a file that is
//! missing, unreadable, not a regular file or not text is treated as empty (and
//! logged), and a failure to write it is logged after the hook has acted.

use std::collections::BTreeMap;
use std::io::Read as _;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use wasmtime::component::{HasData, Linker};

use super::Capability;
use crate::bindings::state as wit;
use crate::log::{Level, Log};
use crate::runtime::HookState;
use crate::trust::TrustedDir;

pub const CAPABILITY: Capability = Capability {
    grant: "state",
    link,
};

fn link(linker: &mut Linker<HookState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HookState, Linked>(linker, |state| &mut state.caps.state)
}

struct Linked;

impl HasData for Linked {
    type Data<'a> = &'a mut StateStore;
}

impl wit::Host for &mut StateStore {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(StateStore::get(self, &key))
    }

    fn set(&mut self, key: String, value: Option<String>) -> wasmtime::Result<Result<(), String>> {
        Ok(StateStore::set(self, key, value))
    }
}

const STATE_FILE: &str = "state";
const TEMP_FILE: &str = "state.tmp";
/// Bounds of the store, so no plugin can grow the file (often on a RAM-backed /run)
/// or the host's memory without limit.
pub const MAX_KEYS: usize = 256;
pub const MAX_KEY_BYTES: usize = 128;
pub const MAX_VALUE_BYTES: usize = 4 << 10;
pub const MAX_TOTAL_BYTES: usize = 64 << 10;

/// The back-end: the node's state file, loaded once when the run starts.
pub struct StateStore {
    dir: Option<TrustedDir>,
    values: BTreeMap<String, String>,
    dirty: bool,
}

impl StateStore {
    /// Loads the state file of `dir` for a hook holding the node lock (which also
    /// removes a temporary file a stopped hook left); anything unusable is an empty
    /// state, logged. Without a directory (it could not be opened) the state lives
    /// for this run only.
    pub fn load(dir: Option<TrustedDir>, log: &Log) -> StateStore {
        if let Some(dir) = &dir {
            let _ = rustix::fs::unlinkat(dir.fd(), TEMP_FILE, AtFlags::empty());
        }
        StateStore::from_file(dir, log)
    }

    fn from_file(dir: Option<TrustedDir>, log: &Log) -> StateStore {
        let values = match &dir {
            Some(dir) => read_values(dir).unwrap_or_else(|why| {
                log.write(
                    Level::Warn,
                    &[(
                        "msg",
                        &format!(
                            "state file {} ignored ({why}); starting from an empty state",
                            dir.path().join(STATE_FILE).display()
                        ),
                    )],
                );
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        StateStore {
            dir,
            values,
            dirty: false,
        }
    }

    /// The state as it stands, for a command that only reads it (status, doctor): an
    /// untrusted or missing directory reads as empty. Without the node lock, so it
    /// leaves the temporary file alone: a hook may be writing it right now (the
    /// rename makes every read see one whole version).
    pub fn read(state_dir: &std::path::Path, log: &Log) -> StateStore {
        let dir = crate::trust::open_dir(state_dir, "state_dir", false).ok();
        StateStore::from_file(dir, log)
    }

    /// One value, for a resident poller (the guard): read like [`StateStore::read`],
    /// and a state that cannot be read is silently none, so it logs nothing each time.
    pub fn peek(state_dir: &std::path::Path, key: &str) -> Option<String> {
        let dir = crate::trust::open_dir(state_dir, "state_dir", false).ok()?;
        read_values(&dir).ok()?.remove(key)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values.iter()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    /// Stages a change, refusing one that would pass the store's bounds.
    pub fn set(&mut self, key: String, value: Option<String>) -> Result<(), String> {
        let Some(value) = value else {
            self.dirty |= self.values.remove(&key).is_some();
            return Ok(());
        };
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "state keys are 1 to {MAX_KEY_BYTES} bytes, not {}",
                key.len()
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "state values are at most {MAX_VALUE_BYTES} bytes, not {}",
                value.len()
            ));
        }
        let replaced = self.values.get(&key).map_or(0, |old| key.len() + old.len());
        if replaced == 0 && self.values.len() >= MAX_KEYS {
            return Err(format!("the state holds at most {MAX_KEYS} keys"));
        }
        let total = self.total_bytes() - replaced + key.len() + value.len();
        if total > MAX_TOTAL_BYTES {
            return Err(format!(
                "the state holds at most {MAX_TOTAL_BYTES} bytes of keys and values"
            ));
        }
        if self.values.get(&key) != Some(&value) {
            self.values.insert(key, value);
            self.dirty = true;
        }
        Ok(())
    }

    fn total_bytes(&self) -> usize {
        self.values.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Writes staged changes, if any; a failure is logged (the hook has already acted)
    /// and returns false.
    pub fn commit(&mut self, log: &Log) -> bool {
        if !self.dirty {
            return true;
        }
        let Some(dir) = &self.dir else {
            log.write(
                Level::Error,
                &[(
                    "msg",
                    "state not saved: the state directory could not be opened",
                )],
            );
            return false;
        };
        match write_values(dir, &self.values) {
            Ok(()) => {
                self.dirty = false;
                true
            }
            Err(e) => {
                log.write(
                    Level::Error,
                    &[(
                        "msg",
                        &format!(
                            "cannot write state file {}: {e}",
                            dir.path().join(STATE_FILE).display()
                        ),
                    )],
                );
                false
            }
        }
    }
}

fn read_values(dir: &TrustedDir) -> Result<BTreeMap<String, String>, String> {
    let fd = match rustix::fs::openat(
        dir.fd(),
        STATE_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(BTreeMap::new()),
        Err(e) => return Err(std::io::Error::from(e).to_string()),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err("not a regular file".into());
    }
    // Escaping can double a value's size; anything larger was not written by mmvip.
    let limit = 2 * MAX_TOTAL_BYTES + 2 * MAX_KEYS;
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(key, value)| (unescape(key), unescape(value)))
        .take(MAX_KEYS)
        .collect())
}

fn write_values(dir: &TrustedDir, values: &BTreeMap<String, String>) -> std::io::Result<()> {
    let mut text = String::new();
    for (key, value) in values {
        text.push_str(&escape(key));
        text.push('\t');
        text.push_str(&escape(value));
        text.push('\n');
    }
    // Every user of the state file holds the node lock: one fixed temporary name.
    dir.replace(STATE_FILE, TEMP_FILE, &[text.as_bytes()])
}

/// `\r` too: reading splits lines at `\r\n` as well, so a value ending in `\r` would
/// lose it.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogContext;

    fn state_dir() -> (tempfile::TempDir, TrustedDir, Log) {
        let temp = tempfile::tempdir().unwrap();
        let dir = crate::trust::open_dir(&temp.path().join("state"), "state_dir", true).unwrap();
        let log = Log::open(
            &crate::log::Targets::file(&temp.path().join("log")),
            LogContext::default(),
        );
        (temp, dir, log)
    }

    fn reopen(temp: &tempfile::TempDir) -> Option<TrustedDir> {
        crate::trust::open_dir(&temp.path().join("state"), "state_dir", false).ok()
    }

    #[test]
    fn values_survive_a_round_trip() {
        let (temp, dir, log) = state_dir();
        let mut state = StateStore::load(Some(dir), &log);
        assert_eq!(state.get("VI_1"), None);
        state
            .set("VI_1".into(), Some("MASTER\twith\nodd \\ chars".into()))
            .unwrap();
        state.set("VI_2".into(), Some("BACKUP".into())).unwrap();
        state.commit(&log);
        let mut state = StateStore::load(reopen(&temp), &log);
        assert_eq!(
            state.get("VI_1").as_deref(),
            Some("MASTER\twith\nodd \\ chars")
        );
        state.set("VI_2".into(), None).unwrap();
        state.commit(&log);
        let state = StateStore::load(reopen(&temp), &log);
        assert_eq!(state.get("VI_2"), None);
        assert!(state.get("VI_1").is_some());
    }

    #[test]
    fn bounds_are_refused_with_a_reason() {
        let (_temp, dir, log) = state_dir();
        let mut state = StateStore::load(Some(dir), &log);
        let err = state.set("k".repeat(MAX_KEY_BYTES + 1), Some("v".into()));
        assert!(err.unwrap_err().contains("state keys"));
        let err = state.set("k".into(), Some("v".repeat(MAX_VALUE_BYTES + 1)));
        assert!(err.unwrap_err().contains("state values"));
        let total_bound_hit = (0..MAX_KEYS).find_map(|n| {
            state
                .set(format!("key{n}"), Some("v".repeat(MAX_VALUE_BYTES)))
                .err()
        });
        assert!(
            total_bound_hit.is_some_and(|why| why.contains("bytes of keys and values")),
            "the total bound never applied"
        );
        let (_temp, dir, log) = state_dir();
        let mut state = StateStore::load(Some(dir), &log);
        let key_bound_hit =
            (0..=MAX_KEYS).find_map(|n| state.set(format!("k{n}"), Some("v".into())).err());
        assert!(key_bound_hit.is_some_and(|why| why.contains("at most 256 keys")));
        // Replacing a key is not adding one.
        assert!(state.set("k0".into(), Some("w".into())).is_ok());
    }

    #[test]
    fn an_unreadable_state_file_is_an_empty_state() {
        let (temp, dir, log) = state_dir();
        let path = temp.path().join("state/state");
        std::fs::write(&path, b"VI_1\tMASTER\n\xff\xfe\n").unwrap();
        let state = StateStore::load(Some(dir), &log);
        assert_eq!(state.get("VI_1"), None);
        let logged = std::fs::read_to_string(temp.path().join("log")).unwrap();
        assert!(logged.contains("not UTF-8"), "{logged}");
    }

    #[test]
    fn a_fifo_state_file_neither_blocks_nor_counts() {
        let (temp, dir, log) = state_dir();
        let path = temp.path().join("state/state");
        rustix::fs::mkfifoat(rustix::fs::CWD, &path, Mode::from_raw_mode(0o600)).unwrap();
        let state = StateStore::load(Some(dir), &log);
        assert_eq!(state.get("anything"), None);
    }

    #[test]
    fn a_leftover_temporary_file_is_removed() {
        let (temp, dir, log) = state_dir();
        let leftover = temp.path().join("state").join(TEMP_FILE);
        std::fs::write(&leftover, "half").unwrap();
        let _state = StateStore::load(Some(dir), &log);
        assert!(!leftover.exists());
    }

    /// Found by the property below: a value ending in `\r` came back without it.
    #[test]
    fn a_value_ending_in_a_carriage_return_keeps_it() {
        let (temp, dir, log) = state_dir();
        let mut state = StateStore::load(Some(dir), &log);
        state.set("k".into(), Some("MASTER\r".into())).unwrap();
        state.commit(&log);
        let state = StateStore::load(reopen(&temp), &log);
        assert_eq!(state.get("k").as_deref(), Some("MASTER\r"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn text() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("\\".to_string()),
                Just("\t".to_string()),
                Just("\n".to_string()),
                Just("\r".to_string()),
                Just("\u{0}".to_string()),
                Just("\\n".to_string()),
                any::<String>(),
            ];
            prop::collection::vec(piece, 0..5).prop_map(|p| p.concat())
        }

        proptest! {
            #![proptest_config(crate::proptest_config(300))]

            #[test]
            fn whatever_a_plugin_stores_comes_back_as_it_was(
                values in prop::collection::btree_map(text(), text(), 0..6),
            ) {
                let (temp, dir, log) = state_dir();
                let mut state = StateStore::load(Some(dir), &log);
                let mut kept = BTreeMap::new();
                for (key, value) in values {
                    // An empty key is refused with a reason, and not kept.
                    if state.set(key.clone(), Some(value.clone())).is_ok() {
                        kept.insert(key, value);
                    }
                }
                state.commit(&log);
                let state = StateStore::load(reopen(&temp), &log);
                for (key, value) in &kept {
                    prop_assert_eq!(state.get(key), Some(value.clone()), "key {:?}", key);
                }
            }

            #[test]
            fn any_state_file_reads_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
                let (temp, dir, log) = state_dir();
                std::fs::write(temp.path().join("state").join(STATE_FILE), &bytes).unwrap();
                let _ = StateStore::load(Some(dir), &log);
            }
        }
    }
}
