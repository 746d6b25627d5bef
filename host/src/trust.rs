//! Path trust rules in the spirit of keepalived's `enable_script_security`: code and
//! configuration that mmvip runs as root must not be replaceable by anyone but root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const GROUP_OR_OTHER_ACCESS: u32 = 0o077;
const STICKY: u32 = 0o1000;
/// As many links as the kernel follows in one path (`canonicalize` already succeeded).
const MAX_SYMLINKS: usize = 40;

/// Refuses `path` unless it and every directory above it are owned by root (or by the
/// user running mmvip) and writable by nobody else. Sticky directories such as /tmp
/// are exempt, as keepalived exempts them. A symlink is checked where it lives as well
/// as where it points; callers then use the returned, resolved path.
pub fn require_trusted(path: &Path, what: &str) -> Result<PathBuf> {
    let resolved = path
        .canonicalize()
        .map_err(|e| Error::usage(format!("{what} {}: {e}", path.display())))?;
    for component in resolved.ancestors() {
        check_component(path, component, component == resolved, what)?;
    }
    // The directories holding each link of a chain (a -> b -> c) matter too: whoever
    // can write one of them can repoint the chain.
    let mut link = std::path::absolute(path)
        .map_err(|e| Error::usage(format!("{what} {}: {e}", path.display())))?;
    for _ in 0..MAX_SYMLINKS {
        let Ok(target) = std::fs::read_link(&link) else {
            break;
        };
        let holder = link.parent().unwrap_or(Path::new("/")).to_path_buf();
        for dir in holder.ancestors() {
            check_component(path, dir, false, what)?;
        }
        link = holder.join(target);
    }
    Ok(resolved)
}

/// One file or directory on the way to `path` (`is_target`: the file itself, to which
/// the sticky-directory exemption does not apply).
fn check_component(path: &Path, component: &Path, is_target: bool, what: &str) -> Result<()> {
    let meta = component
        .metadata()
        .map_err(|e| Error::usage(format!("{what} {}: {e}", component.display())))?;
    let mode = meta.permissions().mode();
    let trusted_owner = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != trusted_owner {
        return Err(Error::usage(format!(
            "refusing {what} {}: {} is owned by uid {}, not root",
            path.display(),
            component.display(),
            meta.uid()
        )));
    }
    let sticky_dir = !is_target && meta.is_dir() && mode & STICKY != 0;
    if mode & GROUP_OR_OTHER_WRITE != 0 && !sticky_dir {
        return Err(Error::usage(format!(
            "refusing {what} {}: {} is writable by group or others (mode {:04o})",
            path.display(),
            component.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

/// Like [`require_trusted`], and also refuses a file that group or others can read:
/// for secrets such as the MariaDB password file.
pub fn require_secret(path: &Path, what: &str) -> Result<PathBuf> {
    let resolved = require_trusted(path, what)?;
    let mode = resolved
        .metadata()
        .map_err(|e| Error::usage(format!("{what} {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & GROUP_OR_OTHER_ACCESS != 0 {
        return Err(Error::usage(format!(
            "refusing {what} {}: readable by group or others (mode {:04o}); use 0600 or 0400",
            path.display(),
            mode & 0o7777
        )));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn private_file_in_private_dir_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugin.wasm");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o644);
        assert!(require_trusted(&file, "plugin").is_ok());
    }

    #[test]
    fn world_writable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugin.wasm");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o666);
        let err = require_trusted(&file, "plugin").unwrap_err();
        assert!(
            err.message().contains("writable by group or others"),
            "{err}"
        );
    }

    #[test]
    fn group_writable_parent_is_refused_but_sticky_parent_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let file = sub.join("plugin.wasm");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o600);
        set_mode(&sub, 0o775);
        assert!(require_trusted(&file, "plugin").is_err());
        set_mode(&sub, 0o1777);
        assert!(require_trusted(&file, "plugin").is_ok());
    }

    #[test]
    fn symlink_counts_where_it_lives_and_where_it_points() {
        let dir = tempfile::tempdir().unwrap();
        let trusted = dir.path().join("trusted");
        let open = dir.path().join("open");
        fs::create_dir(&trusted).unwrap();
        fs::create_dir(&open).unwrap();
        let file = trusted.join("plugin.wasm");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o644);
        let link_in_trusted = trusted.join("link.wasm");
        std::os::unix::fs::symlink(&file, &link_in_trusted).unwrap();
        let resolved = require_trusted(&link_in_trusted, "plugin").unwrap();
        assert_eq!(resolved, file.canonicalize().unwrap());

        // Anyone who can write `open` can repoint this link between check and use.
        let link_in_open = open.join("plugin.wasm");
        std::os::unix::fs::symlink(&file, &link_in_open).unwrap();
        set_mode(&open, 0o777);
        let err = require_trusted(&link_in_open, "plugin").unwrap_err();
        assert!(
            err.message()
                .contains(&format!("{} is writable", open.display())),
            "{err}"
        );

        // The middle link of trusted -> open -> trusted is just as repointable.
        let chain = trusted.join("chain.wasm");
        std::os::unix::fs::symlink(&link_in_open, &chain).unwrap();
        let err = require_trusted(&chain, "plugin").unwrap_err();
        assert!(
            err.message()
                .contains(&format!("{} is writable", open.display())),
            "{err}"
        );
    }

    #[test]
    fn readable_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        fs::write(&file, b"secret").unwrap();
        set_mode(&file, 0o640);
        let err = require_secret(&file, "password file").unwrap_err();
        assert!(
            err.message().contains("readable by group or others"),
            "{err}"
        );
        set_mode(&file, 0o400);
        assert!(require_secret(&file, "password file").is_ok());
    }
}
