//! Whether the running mariadbd comes up read-only when it restarts: its option files
//! (found from its own command line, read with `my_print_defaults`) and then its
//! command line, the last `read_only` option winning, as mariadbd reads them.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Check, Facts};

const NAME: &str = "read_only_at_start";
/// Debian's name first; later MariaDB packages also ship it as mariadb-print-defaults.
const PRINT_DEFAULTS: &[&str] = &["my_print_defaults", "mariadb-print-defaults"];
/// Where mariadbd's option files are on Debian, for the fix.
const DEBIAN_OPTION_FILE: &str = "/etc/mysql/mariadb.conf.d/50-server.cnf";

pub(super) fn read_only_at_start(facts: &Facts) -> Check {
    match start_options(facts) {
        Ok(start) => judge(&start),
        Err(why) => Check::fail(
            NAME,
            format!("cannot tell whether read_only is ON at start: {why}"),
            "see the message — a node that restarts writable takes writes beside the peer",
        ),
    }
}

/// Where mariadbd's options come from.
struct StartOptions {
    /// How mariadbd was told to read option files (`--defaults-file=…`), or `None`
    /// for the default files.
    files: Option<String>,
    /// From the option files, then from the command line.
    from_files: Vec<String>,
    from_command_line: Vec<String>,
}

fn judge(start: &StartOptions) -> Check {
    let files = start.files.as_deref().unwrap_or("the default option files");
    let fix_file = start
        .files
        .as_deref()
        .and_then(|flag| flag.split_once('=').map(|(_, file)| file))
        .unwrap_or(DEBIAN_OPTION_FILE);
    let fix = format!(
        "add read_only = ON under [mariadbd] in {fix_file} — a node that restarts after a crash or a reboot must stay read-only until keepalived makes it MASTER and `master` has caught up; one that comes up writable takes writes beside the peer's and the two diverge"
    );
    let (value, source) = match read_only_option(&start.from_command_line) {
        Some(found) => (Some(found), "on mariadbd's command line".to_string()),
        None => (read_only_option(&start.from_files), format!("in {files}")),
    };
    match value {
        Some((true, option)) => Check::pass(
            NAME,
            format!("read_only is ON at start ({option} {source})"),
        ),
        Some((false, option)) => Check::fail(
            NAME,
            format!("read_only is OFF at start ({option} {source})"),
            fix,
        ),
        None => Check::fail(
            NAME,
            format!("read_only is OFF at start (not set in {files}, nor on the command line)"),
            fix,
        ),
    }
}

/// The running mariadbd's options: its pid from `@@pid_file`, its command line from
/// /proc, and what `my_print_defaults` finds in the option files it reads.
fn start_options(facts: &Facts) -> Result<StartOptions, String> {
    let pid_file = Path::new(facts.text("datadir")).join(facts.text("pid_file"));
    let pid = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("pid_file {}: {e}", pid_file.display()))?;
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("pid_file {} holds no pid", pid_file.display()))?;
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
    if !matches!(comm.trim(), "mariadbd" | "mysqld") {
        return Err(format!(
            "process {pid} (from {}) is not mariadbd here (in another container?)",
            pid_file.display()
        ));
    }
    let cmdline =
        std::fs::read(proc.join("cmdline")).map_err(|e| format!("/proc/{pid}/cmdline: {e}"))?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // A relative option file is relative to where mariadbd started.
    let cwd = std::fs::read_link(proc.join("cwd")).unwrap_or_else(|_| PathBuf::from("/"));
    let mut defaults = Vec::new();
    let mut no_defaults = false;
    let mut from_command_line = Vec::new();
    for arg in args {
        if arg == "--no-defaults" {
            no_defaults = true;
        } else if let Some((flag, file)) = arg
            .split_once('=')
            .filter(|(flag, _)| matches!(*flag, "--defaults-file" | "--defaults-extra-file"))
        {
            defaults.push(format!("{flag}={}", cwd.join(file).display()));
        } else if arg.starts_with("--defaults-group-suffix=") {
            defaults.push(arg);
        } else {
            from_command_line.push(arg);
        }
    }
    let from_files = if no_defaults {
        Vec::new()
    } else {
        print_defaults(&defaults)?
    };
    let files = if no_defaults {
        Some("no option files (--no-defaults)".to_string())
    } else {
        defaults
            .iter()
            .find(|d| !d.starts_with("--defaults-group-suffix="))
            .cloned()
    };
    Ok(StartOptions {
        files,
        from_files,
        from_command_line,
    })
}

/// The options mariadbd reads from its option files: the groups it reads
/// (`--mysqld`: mysqld, mariadbd, server, mariadb, client-server and their
/// version-suffixed forms).
fn print_defaults(defaults: &[String]) -> Result<Vec<String>, String> {
    let program = super::program(PRINT_DEFAULTS).ok_or_else(|| {
        "my_print_defaults not found (Debian: apt-get install mariadb-client-core)".to_string()
    })?;
    let output = Command::new(&program)
        .args(defaults)
        .arg("--mysqld")
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} {}: {}",
            program.display(),
            defaults.join(" "),
            crate::log::one_line(String::from_utf8_lossy(&output.stderr).trim())
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// The value the last `read_only` option among `options` sets, and that option as
/// written: `--read-only`, `--read_only=ON`, `--skip-read-only`, `--loose-read-only=1`.
fn read_only_option(options: &[String]) -> Option<(bool, String)> {
    options.iter().rev().find_map(|option| {
        let text = option.strip_prefix("--")?;
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (text, None),
        };
        let name = name.replace('_', "-");
        let name = name.strip_prefix("loose-").unwrap_or(&name);
        let (negated, name) = match name
            .strip_prefix("skip-")
            .or_else(|| name.strip_prefix("disable-"))
        {
            Some(rest) => (true, rest),
            None => (false, name.strip_prefix("enable-").unwrap_or(name)),
        };
        if name != "read-only" {
            return None;
        }
        let set = match value.map(str::to_ascii_lowercase).as_deref() {
            None => true,
            // 11.x also has NO_LOCK and NO_LOCK_NO_ADMIN, both read-only.
            Some("0" | "off" | "false" | "no") => false,
            Some(_) => true,
        };
        Some((set != negated, option.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(options: &[&str]) -> Option<bool> {
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        read_only_option(&options).map(|(on, _)| on)
    }

    #[test]
    fn the_last_read_only_option_wins_in_every_spelling() {
        assert_eq!(last(&["--read_only=ON"]), Some(true));
        assert_eq!(last(&["--read-only"]), Some(true));
        assert_eq!(last(&["--read-only=1", "--read_only=OFF"]), Some(false));
        assert_eq!(last(&["--read-only", "--skip-read-only"]), Some(false));
        assert_eq!(
            last(&["--loose-read-only=0", "--enable-read-only"]),
            Some(true)
        );
        assert_eq!(last(&["--disable-read_only"]), Some(false));
        assert_eq!(last(&["--read_only=NO_LOCK"]), Some(true));
        assert_eq!(last(&["--read-only-compressed=ON", "--datadir=/x"]), None);
        assert_eq!(last(&[]), None);
    }
}
