//! The failover flag back-end: the flag file's directory is opened once with cap-std,
//! and only the one file name inside it is ever looked at.

use std::io::ErrorKind;
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

pub struct FlagFile {
    dir: Result<Dir, String>,
    name: String,
}

impl FlagFile {
    pub fn new(path: &Path) -> FlagFile {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let dir = if name.is_empty() {
            Err(format!("failover_file {} names no file", path.display()))
        } else {
            Dir::open_ambient_dir(parent, ambient_authority())
                .map_err(|e| format!("cannot open {}: {e}", parent.display()))
        };
        FlagFile { dir, name }
    }
}

impl super::FailoverFlag for FlagFile {
    fn is_raised(&mut self) -> Result<bool, String> {
        let dir = self.dir.as_ref().map_err(Clone::clone)?;
        // Any entry under the flag's name raises it, even a dangling symlink.
        match dir.symlink_metadata(&self.name) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("cannot check {}: {e}", self.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::FailoverFlag;

    #[test]
    fn raised_exactly_while_the_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("failover");
        let mut probe = FlagFile::new(&flag);
        assert_eq!(probe.is_raised(), Ok(false));
        std::fs::write(&flag, "").unwrap();
        assert_eq!(probe.is_raised(), Ok(true));
        std::fs::remove_file(&flag).unwrap();
        assert_eq!(probe.is_raised(), Ok(false));
    }

    #[test]
    fn missing_directory_is_an_error_not_a_verdict() {
        let mut probe = FlagFile::new(Path::new("/nonexistent-mmvip-dir/failover"));
        assert!(probe.is_raised().unwrap_err().contains("cannot open"));
    }
}
