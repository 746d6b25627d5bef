//! Path trust rules in the spirit of keepalived's `enable_script_security`: code and
//! configuration that mmvip runs as root must not be replaceable by anyone but root.
//!
//! A path is walked from `/` one component at a time, each opened relative to the
//! directory before it without following links, so what is checked is what is used:
//! - every directory is owned by root (or the user running mmvip) and writable by
//!   nobody else, unless it is sticky (as /tmp), where others cannot rename or delete
//!   entries they do not own;
//! - every symlink met on the way is owned by root (or that user); its target is then
//!   walked by the same rules;
//! - the object itself is owned by root (or that user), writable by nobody else, and
//!   of the expected type (a regular file or a directory). It is returned open, so a
//!   FIFO or device never blocks an open and nothing can be swapped in afterwards.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, Result};

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const GROUP_OR_OTHER_ACCESS: u32 = 0o077;
const STICKY: u32 = 0o1000;
/// As many links as the kernel follows in one path.
const MAX_SYMLINKS: usize = 40;

/// What a trusted path must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    File,
    Dir,
}

/// A trusted directory, open for `*at` calls.
pub struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl TrustedDir {
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces file `name` atomically: `parts` go into the private temporary file
    /// `temp` (mode 0600, created here, never a link), which is synced and renamed
    /// over `name`; a failed attempt removes it.
    pub fn replace(&self, name: &str, temp: &str, parts: &[&[u8]]) -> std::io::Result<()> {
        use std::io::Write as _;
        let result = (|| {
            let fd = rustix::fs::openat(
                &self.fd,
                temp,
                OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::TRUNC
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut file = File::from(fd);
            for part in parts {
                file.write_all(part)?;
            }
            file.sync_all()?;
            rustix::fs::renameat(&self.fd, temp, &self.fd, name)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, temp, AtFlags::empty());
        }
        result
    }
}

/// Opens `path` for reading after checking it and every component on the way to it.
pub fn open_file(path: &Path, what: &str) -> Result<File> {
    let (parent, name) = walk(path, what, false)?;
    let (fd, _) = open_checked(&parent, &name, path, what, Want::File)?;
    Ok(File::from(fd))
}

/// Like [`open_file`], and also refuses a file that group or others can read: for
/// secrets such as the MariaDB password file.
pub fn open_secret(path: &Path, what: &str) -> Result<File> {
    let (parent, name) = walk(path, what, false)?;
    let (fd, stat) = open_checked(&parent, &name, path, what, Want::File)?;
    let mode = stat.st_mode & 0o7777;
    if mode & GROUP_OR_OTHER_ACCESS != 0 {
        return Err(Error::usage(format!(
            "refusing {what} {}: readable by group or others (mode {mode:04o}); use 0600 or 0400",
            path.display()
        )));
    }
    Ok(File::from(fd))
}

/// Reads a secret (a password, the guard's shared secret) from a file that
/// [`open_secret`] accepts: at most 4 KiB, without its trailing line break.
pub fn read_secret(path: &Path, what: &str) -> Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    open_secret(path, what)?
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| Error::usage(format!("{what} {}: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Opens the directory `path` after checking it and every component on the way.
/// With `create`, missing directories are made (mode 0700) first.
pub fn open_dir(path: &Path, what: &str, create: bool) -> Result<TrustedDir> {
    let (parent, name) = walk(path, what, create)?;
    if name.is_empty() {
        // The path is `/` itself (or resolves to it).
        return Ok(TrustedDir {
            fd: parent.fd,
            path: path.to_path_buf(),
        });
    }
    if create {
        make_dir(&parent.fd, &name, path, what)?;
    }
    let (fd, _) = open_checked(&parent, &name, path, what, Want::Dir)?;
    Ok(TrustedDir {
        fd,
        path: path.to_path_buf(),
    })
}

/// The directory that holds `path`'s last component, checked, and that component's
/// name: for files mmvip creates (the log file).
pub fn open_parent(path: &Path, what: &str) -> Result<(TrustedDir, OsString)> {
    let (parent, name) = walk(path, what, false)?;
    if name.is_empty() {
        return Err(Error::usage(format!(
            "{what} {} names no file",
            path.display()
        )));
    }
    Ok((parent, name))
}

/// Checks an object opened relative to a trusted directory: owner, mode and type.
pub fn check_opened(stat: &Stat, path: &Path, what: &str, dir: bool) -> Result<()> {
    check_object(stat, path, what, if dir { Want::Dir } else { Want::File })
}

/// Walks every component but the last, returning the checked directory holding it
/// and its name (empty when the path is `/`). Links in the last component are
/// resolved too, so the name returned is never a symlink.
fn walk(path: &Path, what: &str, create: bool) -> Result<(TrustedDir, OsString)> {
    let absolute = std::path::absolute(path)
        .map_err(|e| Error::usage(format!("{what} {}: {e}", path.display())))?;
    let root = open_path_dir(&rustix::fs::CWD, OsStr::new("/"))
        .map_err(|e| Error::usage(format!("{what} {}: /: {e}", path.display())))?;
    let mut dirs: Vec<(OwnedFd, PathBuf)> = vec![(root, PathBuf::from("/"))];
    check_dir(
        &stat_fd(&dirs[0].0, path, what)?,
        path,
        Path::new("/"),
        what,
    )?;
    let mut pending: Vec<OsString> = components(&absolute);
    pending.reverse();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let (dir, dir_path) = dirs.last().expect("the root is never popped");
        let here = dir_path.join(&name);
        let stat = match rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Some(stat),
            Err(Errno::NOENT) if create || pending.is_empty() => None,
            Err(e) => return Err(io_error(what, path, &here, e)),
        };
        let is_link = stat
            .as_ref()
            .is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
        if is_link {
            let stat = stat.expect("checked above");
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Error::usage(format!(
                    "{what} {}: too many levels of symbolic links",
                    path.display()
                )));
            }
            check_owner(&stat, path, &here, what, "symlink")?;
            let target = rustix::fs::readlinkat(dir, name.as_os_str(), Vec::new())
                .map_err(|e| io_error(what, path, &here, e))?;
            let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
            if target.is_absolute() {
                dirs.truncate(1);
            }
            let mut parts = components(&target);
            parts.reverse();
            pending.extend(parts);
            continue;
        }
        if pending.is_empty() {
            let (fd, dir_path) = dirs.pop().expect("the root is never popped");
            return Ok((TrustedDir { fd, path: dir_path }, name));
        }
        if stat.is_none() {
            make_dir(dir, &name, path, what)?;
        }
        let fd = open_path_dir(dir, &name).map_err(|e| io_error(what, path, &here, e))?;
        check_dir(&stat_fd(&fd, path, what)?, path, &here, what)?;
        dirs.push((fd, here));
    }
    // Only `/` (or a path that climbs back to it) ends here.
    let (fd, dir_path) = dirs.swap_remove(0);
    Ok((TrustedDir { fd, path: dir_path }, OsString::new()))
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn open_path_dir(dir: &impl std::os::fd::AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn make_dir(dir: &OwnedFd, name: &OsStr, path: &Path, what: &str) -> Result<()> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(Error::failed(format!(
            "{what} {}: cannot create {}: {e}",
            path.display(),
            name.to_string_lossy()
        ))),
    }
}

/// Opens the final object without following a link and without blocking (a FIFO
/// opens at once and is then refused by its type), and checks it through its fd.
fn open_checked(
    parent: &TrustedDir,
    name: &OsStr,
    path: &Path,
    what: &str,
    want: Want,
) -> Result<(OwnedFd, Stat)> {
    let here = parent.path.join(name);
    // Refuse what is not a file or directory before opening it at all: opening a
    // device can have effects of its own.
    let before = rustix::fs::statat(&parent.fd, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_error(what, path, &here, e))?;
    check_object(&before, path, what, want)?;
    let flags = match want {
        Want::File => OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
        Want::Dir => OFlags::RDONLY | OFlags::DIRECTORY,
    } | OFlags::NOFOLLOW
        | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&parent.fd, name, flags, Mode::empty())
        .map_err(|e| io_error(what, path, &here, e))?;
    let stat = stat_fd(&fd, path, what)?;
    check_object(&stat, path, what, want)?;
    Ok((fd, stat))
}

fn stat_fd(fd: &OwnedFd, path: &Path, what: &str) -> Result<Stat> {
    rustix::fs::fstat(fd).map_err(|e| Error::usage(format!("{what} {}: {e}", path.display())))
}

fn io_error(what: &str, path: &Path, here: &Path, error: Errno) -> Error {
    let error = std::io::Error::from(error);
    if here == path {
        Error::usage(format!("{what} {}: {error}", path.display()))
    } else {
        Error::usage(format!(
            "{what} {}: {}: {error}",
            path.display(),
            here.display()
        ))
    }
}

fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

fn check_owner(stat: &Stat, path: &Path, here: &Path, what: &str, kind: &str) -> Result<()> {
    if trusted_uid(stat.st_uid) {
        return Ok(());
    }
    Err(Error::usage(format!(
        "refusing {what} {}: {kind} {} is owned by uid {}, not root",
        path.display(),
        here.display(),
        stat.st_uid
    )))
}

fn check_dir(stat: &Stat, path: &Path, here: &Path, what: &str) -> Result<()> {
    check_owner(stat, path, here, what, "directory")?;
    let mode = stat.st_mode & 0o7777;
    if mode & GROUP_OR_OTHER_WRITE != 0 && mode & STICKY == 0 {
        return Err(Error::usage(format!(
            "refusing {what} {}: {} is writable by group or others (mode {mode:04o})",
            path.display(),
            here.display()
        )));
    }
    Ok(())
}

fn check_object(stat: &Stat, path: &Path, what: &str, want: Want) -> Result<()> {
    let kind = FileType::from_raw_mode(stat.st_mode);
    let (expected, ok) = match want {
        Want::File => ("a regular file", kind == FileType::RegularFile),
        Want::Dir => ("a directory", kind == FileType::Directory),
    };
    if !ok {
        return Err(Error::usage(format!(
            "refusing {what} {}: not {expected} ({})",
            path.display(),
            type_name(kind)
        )));
    }
    check_owner(stat, path, path, what, "it")?;
    let mode = stat.st_mode & 0o7777;
    if mode & GROUP_OR_OTHER_WRITE != 0 {
        return Err(Error::usage(format!(
            "refusing {what} {}: writable by group or others (mode {mode:04o})",
            path.display()
        )));
    }
    Ok(())
}

fn type_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "an unknown file type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o700);
        dir
    }

    #[test]
    fn private_file_in_private_dir_is_trusted() {
        let dir = private_dir();
        let file = dir.path().join("plugin.wasm");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o644);
        assert!(open_file(&file, "plugin").is_ok());
    }

    #[test]
    fn world_writable_file_is_refused() {
        let dir = private_dir();
        let file = dir.path().join("plugin.wasm");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o666);
        let err = open_file(&file, "plugin").unwrap_err();
        assert!(
            err.message().contains("writable by group or others"),
            "{err}"
        );
    }

    #[test]
    fn group_writable_parent_is_refused_but_sticky_parent_is_not() {
        let dir = private_dir();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let file = sub.join("plugin.wasm");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o600);
        set_mode(&sub, 0o775);
        assert!(open_file(&file, "plugin").is_err());
        set_mode(&sub, 0o1777);
        assert!(open_file(&file, "plugin").is_ok());
    }

    #[test]
    fn a_symlinked_directory_in_the_middle_is_checked_where_it_lives() {
        let dir = private_dir();
        let trusted = dir.path().join("trusted");
        let open = dir.path().join("open");
        fs::create_dir(&trusted).unwrap();
        fs::create_dir(&open).unwrap();
        fs::write(trusted.join("plugin.wasm"), b"x").unwrap();
        set_mode(&trusted.join("plugin.wasm"), 0o644);
        std::os::unix::fs::symlink(&trusted, open.join("via")).unwrap();
        set_mode(&open, 0o777);
        // open/via -> trusted: whoever can write `open` chooses where `via` leads.
        let err = open_file(&open.join("via/plugin.wasm"), "plugin").unwrap_err();
        assert!(
            err.message()
                .contains(&format!("{} is writable", open.display())),
            "{err}"
        );
        set_mode(&open, 0o755);
        assert!(open_file(&open.join("via/plugin.wasm"), "plugin").is_ok());
    }

    #[test]
    fn a_link_chain_is_checked_link_by_link() {
        let dir = private_dir();
        let trusted = dir.path().join("trusted");
        let open = dir.path().join("open");
        fs::create_dir(&trusted).unwrap();
        fs::create_dir(&open).unwrap();
        let file = trusted.join("plugin.wasm");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o644);
        let link_in_open = open.join("plugin.wasm");
        std::os::unix::fs::symlink(&file, &link_in_open).unwrap();
        set_mode(&open, 0o777);
        let chain = trusted.join("chain.wasm");
        std::os::unix::fs::symlink(&link_in_open, &chain).unwrap();
        let err = open_file(&chain, "plugin").unwrap_err();
        assert!(
            err.message()
                .contains(&format!("{} is writable", open.display())),
            "{err}"
        );
        // Relative links and `..` resolve like the kernel resolves them.
        let relative = trusted.join("relative.wasm");
        std::os::unix::fs::symlink("../trusted/./plugin.wasm", &relative).unwrap();
        assert!(open_file(&relative, "plugin").is_ok());
    }

    #[test]
    fn another_users_symlink_in_a_sticky_directory_is_refused() {
        let dir = private_dir();
        let sticky = dir.path().join("tmp");
        fs::create_dir(&sticky).unwrap();
        set_mode(&sticky, 0o1777);
        let file = dir.path().join("mmvip.toml");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o644);
        let link = sticky.join("mmvip.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open_file(&link, "config").is_ok());
        // The sticky bit protects root's entries, not a link another user planted.
        let nobody = rustix::process::Uid::from_raw(65534);
        rustix::fs::chownat(
            rustix::fs::CWD,
            &link,
            Some(nobody),
            None,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let err = open_file(&link, "config").unwrap_err();
        assert!(err.message().contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn fifo_and_directory_are_not_files() {
        let dir = private_dir();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        let err = open_file(&fifo, "config").unwrap_err();
        assert!(
            err.message().contains("not a regular file (a FIFO)"),
            "{err}"
        );
        let err = open_file(dir.path(), "config").unwrap_err();
        assert!(err.message().contains("(a directory)"), "{err}");
    }

    #[test]
    fn missing_directories_are_created_private() {
        let dir = private_dir();
        let deep = dir.path().join("a/b/c");
        let opened = open_dir(&deep, "state_dir", true).unwrap();
        assert_eq!(opened.path(), deep);
        let mode = fs::metadata(&deep).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(open_dir(&dir.path().join("missing"), "cache_dir", false).is_err());
    }

    #[test]
    fn readable_secret_is_refused() {
        let dir = private_dir();
        let file = dir.path().join("password");
        fs::write(&file, b"secret").unwrap();
        set_mode(&file, 0o640);
        let err = open_secret(&file, "password file").unwrap_err();
        assert!(
            err.message().contains("readable by group or others"),
            "{err}"
        );
        set_mode(&file, 0o400);
        assert!(open_secret(&file, "password file").is_ok());
    }
}
