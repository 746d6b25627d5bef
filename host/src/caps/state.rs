//! The `state` capability: a small key/value file per node, read once at the start of
//! a hook and replaced atomically (temporary file + rename) after it returns.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::log::Log;

/// Creates the node's state directory (mode 0700) if needed and checks that only root
/// can change it; returns its resolved path. Holds the state file and the hook lock.
pub fn prepare_state_dir(state_dir: &Path) -> crate::error::Result<PathBuf> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| {
            crate::error::Error::failed(format!("state_dir {}: {e}", state_dir.display()))
        })?;
    crate::trust::require_trusted(state_dir, "state_dir")
}

pub struct StateStore {
    path: PathBuf,
    values: BTreeMap<String, String>,
    dirty: bool,
}

impl StateStore {
    /// Loads `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> std::io::Result<StateStore> {
        let values = match fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter_map(|line| line.split_once('\t'))
                .map(|(key, value)| (unescape(key), unescape(value)))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(StateStore {
            path: path.to_path_buf(),
            values,
            dirty: false,
        })
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    pub fn set(&mut self, key: String, value: Option<String>) {
        let changed = match value {
            Some(value) => self.values.insert(key, value.clone()).as_ref() != Some(&value),
            None => self.values.remove(&key).is_some(),
        };
        self.dirty |= changed;
    }

    /// Writes staged changes, if any; a failure is logged (the hook has already acted).
    pub fn commit(&mut self, log: &Log) {
        if !self.dirty {
            return;
        }
        match self.write() {
            Ok(()) => self.dirty = false,
            Err(e) => log.write(
                "error",
                &[(
                    "msg",
                    &format!("cannot write state file {}: {e}", self.path.display()),
                )],
            ),
        }
    }

    fn write(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for (key, value) in &self.values {
            text.push_str(&escape(key));
            text.push('\t');
            text.push_str(&escape(value));
            text.push('\n');
        }
        let temp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
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

    #[test]
    fn values_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let log = Log::stderr(LogContext::default());
        let mut state = StateStore::load(&path).unwrap();
        assert_eq!(state.get("VI_1"), None);
        state.set("VI_1".into(), Some("MASTER\twith\nodd \\ chars".into()));
        state.set("VI_2".into(), Some("BACKUP".into()));
        state.commit(&log);
        let mut state = StateStore::load(&path).unwrap();
        assert_eq!(
            state.get("VI_1").as_deref(),
            Some("MASTER\twith\nodd \\ chars")
        );
        state.set("VI_2".into(), None);
        state.commit(&log);
        let state = StateStore::load(&path).unwrap();
        assert_eq!(state.get("VI_2"), None);
        assert!(state.get("VI_1").is_some());
    }
}
