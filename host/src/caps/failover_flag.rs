//! Grant `failover-flag`: is the site's failover flag file there? The flag file's
//! directory is opened with cap-std on first use, and only the one name inside it is
//! ever looked at.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use wasmtime::component::{HasData, Linker};

use super::Capability;
use crate::bindings::failover_flag as wit;
use crate::runtime::HookState;

pub const CAPABILITY: Capability = Capability {
    grant: "failover-flag",
    link,
};

/// The back-end: whether the flag is raised.
pub trait FailoverFlag: Send {
    fn is_raised(&mut self) -> Result<bool, String>;
}

/// The site's flag file, `failover_file` in the config.
pub fn backend(path: &Path) -> Box<dyn FailoverFlag> {
    Box::new(FlagFile {
        path: path.to_path_buf(),
        dir: None,
    })
}

fn link(linker: &mut Linker<HookState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HookState, Linked>(linker, |state| Cap(&mut *state.caps.failover_flag))
}

struct Linked;

impl HasData for Linked {
    type Data<'a> = Cap<'a>;
}

struct Cap<'a>(&'a mut dyn FailoverFlag);

impl wit::Host for Cap<'_> {
    fn is_raised(&mut self) -> wasmtime::Result<Result<bool, String>> {
        Ok(self.0.is_raised())
    }
}

struct FlagFile {
    path: PathBuf,
    /// The flag's directory, opened on first use.
    dir: Option<Dir>,
}

impl FlagFile {
    fn name(&self) -> Result<&std::ffi::OsStr, String> {
        self.path
            .file_name()
            .ok_or_else(|| format!("failover_file {} names no file", self.path.display()))
    }

    fn dir(&mut self) -> Result<&Dir, String> {
        if self.dir.is_none() {
            let parent = match self.path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            let dir = Dir::open_ambient_dir(parent, ambient_authority())
                .map_err(|e| format!("cannot open {}: {e}", parent.display()))?;
            self.dir = Some(dir);
        }
        Ok(self.dir.as_ref().expect("opened above"))
    }
}

impl FailoverFlag for FlagFile {
    fn is_raised(&mut self) -> Result<bool, String> {
        let name = self.name()?.to_os_string();
        // Any entry under the flag's name raises it, even a dangling symlink.
        match self.dir()?.symlink_metadata(&name) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("cannot check {}: {e}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_exactly_while_the_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("failover");
        let mut probe = backend(&flag);
        assert_eq!(probe.is_raised(), Ok(false));
        std::fs::write(&flag, "").unwrap();
        assert_eq!(probe.is_raised(), Ok(true));
        std::fs::remove_file(&flag).unwrap();
        assert_eq!(probe.is_raised(), Ok(false));
    }

    #[test]
    fn missing_directory_is_an_error_not_a_verdict() {
        let mut probe = backend(Path::new("/nonexistent-mmvip-dir/failover"));
        assert!(probe.is_raised().unwrap_err().contains("cannot open"));
    }
}
