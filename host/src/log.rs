//! mmvip's log: one entry per hook run and per plugin log call, to the targets the
//! site chose: `log_file` (one line, appended with a single `write` so concurrent hooks
//! never interleave within a line), systemd's journal (structured fields, its native
//! protocol) and syslog (`/dev/log`). keepalived discards a hook's output, so these
//! are where an operator looks.
//!
//! What a plugin causes (its log calls, the SQL statements it sends, its stderr) is
//! counted against one budget per run, and every value is cut to a bounded length, so
//! no plugin can fill the disk or the host's memory through the log.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags};

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn word(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The longest value written into a line; longer ones are cut, saying by how much.
pub const MAX_VALUE_BYTES: usize = 4 << 10;
/// What a plugin may cause in one run: lines and bytes.
pub const PLUGIN_LINE_BUDGET: u32 = 10_000;
pub const PLUGIN_BYTE_BUDGET: usize = 1 << 20;

/// Who is logging: the plugin and, for notify hooks, the VRRP instance and state.
#[derive(Debug, Clone, Default)]
pub struct LogContext {
    pub plugin: String,
    pub instance: Option<String>,
    pub state: Option<String>,
}

/// Lines and bytes a plugin has caused so far in this run.
#[derive(Default)]
struct Spent {
    lines: u32,
    bytes: usize,
    exhausted: bool,
}

/// Where entries go (`log` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub file: Option<PathBuf>,
    /// The journal's native socket (`/run/systemd/journal/socket`).
    pub journal: Option<PathBuf>,
    /// The syslog socket (`/dev/log`).
    pub syslog: Option<PathBuf>,
}

impl Targets {
    /// Only a file.
    pub fn file(path: &Path) -> Targets {
        Targets {
            file: Some(path.to_path_buf()),
            journal: None,
            syslog: None,
        }
    }
}

struct Sink {
    file: Option<File>,
    /// A datagram socket each for the journal and syslog, and where they listen.
    journal: Option<(UnixDatagram, PathBuf)>,
    syslog: Option<(UnixDatagram, PathBuf)>,
    /// The file does not end in a newline (a line torn by a full disk): the next
    /// line starts with one, so it is not glued onto the torn one.
    torn: AtomicBool,
    spent: Mutex<Spent>,
}

#[derive(Clone)]
pub struct Log {
    sink: Arc<Sink>,
    context: LogContext,
}

impl Log {
    /// Opens `path` for appending: through the trust rules for its directory, without
    /// following a link, without blocking, and only if it is a regular file owned by
    /// root (or the user running mmvip). Otherwise lines go to stderr, after one line
    /// saying why, so nothing is lost and nothing hangs.
    pub fn open(targets: &Targets, context: LogContext) -> Log {
        let (file, why) = match targets
            .file
            .as_deref()
            .map(|path| (path, open_append(path)))
        {
            Some((_, Ok(file))) => (Some(file), None),
            Some((path, Err(why))) => (
                None,
                Some(format!("log file {} not used: {why}", path.display())),
            ),
            None => (None, None),
        };
        let torn = file.as_ref().is_some_and(ends_torn);
        let log = Log {
            sink: Arc::new(Sink {
                file,
                journal: targets.journal.as_deref().and_then(datagram_to),
                syslog: targets.syslog.as_deref().and_then(datagram_to),
                torn: AtomicBool::new(torn),
                spent: Mutex::new(Spent::default()),
            }),
            context,
        };
        if let Some(why) = why {
            log.write(Level::Warn, &[("msg", &why)]);
        }
        log
    }

    /// The same log and budget, with another context (known after start-up).
    pub fn with_context(&self, context: LogContext) -> Log {
        Log {
            sink: Arc::clone(&self.sink),
            context,
        }
    }

    pub fn context(&self) -> &LogContext {
        &self.context
    }

    /// Writes one line of the host's own: timestamp, context, `level`, then `fields`
    /// as `key=value`, each value cut to [`MAX_VALUE_BYTES`].
    pub fn write(&self, level: Level, fields: &[(&str, &str)]) {
        let line = self.format(level, fields);
        self.emit(level, fields, &line);
    }

    /// Writes a line a plugin caused, if its budget allows; the first line over
    /// budget is replaced by one saying that further lines are dropped.
    pub fn write_for_plugin(&self, level: Level, fields: &[(&str, &str)]) {
        let line = self.format(level, fields);
        {
            let mut spent = self
                .sink
                .spent
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if spent.exhausted {
                return;
            }
            if spent.lines < PLUGIN_LINE_BUDGET && spent.bytes + line.len() <= PLUGIN_BYTE_BUDGET {
                spent.lines += 1;
                spent.bytes += line.len();
            } else {
                spent.exhausted = true;
                drop(spent);
                let message = format!(
                    "plugin reached its log budget ({PLUGIN_LINE_BUDGET} lines or {} KiB per run); further lines dropped",
                    PLUGIN_BYTE_BUDGET >> 10
                );
                self.write(Level::Warn, &[("msg", &message)]);
                return;
            }
        }
        self.emit(level, fields, &line);
    }

    /// Sends an entry to every target; one no target took goes to stderr.
    fn emit(&self, level: Level, fields: &[(&str, &str)], line: &str) {
        let mut taken = self.sink.file.is_some() && self.append(line);
        if let Some((socket, path)) = &self.sink.journal {
            taken |= socket
                .send_to(&self.journal_entry(level, fields), path)
                .is_ok();
        }
        if let Some((socket, path)) = &self.sink.syslog {
            taken |= socket
                .send_to(self.syslog_entry(level, line).as_bytes(), path)
                .is_ok();
        }
        if !taken {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    /// The journal's native protocol: `NAME=value` lines, or for a value holding a
    /// newline, `NAME`, its length as 64-bit little endian, the value. `MESSAGE` is
    /// the `msg` field (or all fields, for an entry without one); every field is
    /// also its own `MMVIP_*` field, for `journalctl MMVIP_VERDICT=fail`.
    fn journal_entry(&self, level: Level, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut entry = Vec::with_capacity(256);
        let message = match fields.iter().find(|(key, _)| *key == "msg") {
            Some((_, msg)) => cut(msg, MAX_VALUE_BYTES).into_owned(),
            None => fields
                .iter()
                .map(|(key, value)| format!("{key}={}", quote(&cut(value, MAX_VALUE_BYTES))))
                .collect::<Vec<_>>()
                .join(" "),
        };
        journal_field(&mut entry, "MESSAGE", &message);
        journal_field(&mut entry, "PRIORITY", syslog_severity(level));
        journal_field(&mut entry, "SYSLOG_IDENTIFIER", "mmvip");
        journal_field(&mut entry, "MMVIP_PLUGIN", &self.context.plugin);
        if let Some(instance) = &self.context.instance {
            journal_field(&mut entry, "MMVIP_INSTANCE", instance);
        }
        if let Some(state) = &self.context.state {
            journal_field(&mut entry, "MMVIP_STATE", state);
        }
        for (key, value) in fields.iter().filter(|(key, _)| *key != "msg") {
            let name: String = key
                .chars()
                .map(|c| match c.to_ascii_uppercase() {
                    c @ ('A'..='Z' | '0'..='9') => c,
                    _ => '_',
                })
                .collect();
            journal_field(
                &mut entry,
                &format!("MMVIP_{name}"),
                &cut(value, MAX_VALUE_BYTES),
            );
        }
        entry
    }

    /// A local syslog message (facility daemon): the line without the timestamp
    /// and pid it starts with, which syslog adds.
    fn syslog_entry(&self, level: Level, line: &str) -> String {
        let body = line
            .trim_end_matches('\n')
            .splitn(3, ' ')
            .nth(2)
            .unwrap_or_default();
        format!(
            "<{}>mmvip[{}]: {body}",
            3 * 8 + syslog_severity(level).parse::<u8>().unwrap_or(6),
            std::process::id()
        )
    }

    fn format(&self, level: Level, fields: &[(&str, &str)]) -> String {
        let mut line = String::with_capacity(160);
        let now = humantime::format_rfc3339_millis(SystemTime::now());
        let _ = write!(
            line,
            "{now} pid={} plugin={}",
            std::process::id(),
            quote(&self.context.plugin)
        );
        if let Some(instance) = &self.context.instance {
            let _ = write!(line, " instance={}", quote(instance));
        }
        if let Some(state) = &self.context.state {
            let _ = write!(line, " state={}", quote(state));
        }
        let _ = write!(line, " level={}", level.word());
        for (key, value) in fields {
            let _ = write!(line, " {key}={}", quote(&cut(value, MAX_VALUE_BYTES)));
        }
        line.push('\n');
        line
    }

    /// Appends the line to the log file; false if it could not.
    fn append(&self, line: &str) -> bool {
        let Some(mut file) = self.sink.file.as_ref() else {
            return false;
        };
        let line = if self.sink.torn.swap(false, Ordering::Relaxed) {
            format!("\n{line}")
        } else {
            line.to_string()
        };
        match file.write_all(line.as_bytes()) {
            Ok(()) => true,
            Err(_) => {
                // Part of the line may be in the file.
                self.sink.torn.store(true, Ordering::Relaxed);
                false
            }
        }
    }
}

/// A socket to send datagrams to `path` without ever blocking a hook (a stuck
/// journal drops entries; they then go to stderr).
fn datagram_to(path: &Path) -> Option<(UnixDatagram, PathBuf)> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.set_nonblocking(true).ok()?;
    Some((socket, path.to_path_buf()))
}

fn syslog_severity(level: Level) -> &'static str {
    match level {
        Level::Debug => "7",
        Level::Info => "6",
        Level::Warn => "4",
        Level::Error => "3",
    }
}

fn journal_field(entry: &mut Vec<u8>, name: &str, value: &str) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
        entry.extend_from_slice(value.as_bytes());
    } else {
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
    }
    entry.push(b'\n');
}

fn open_append(path: &Path) -> Result<File, String> {
    let (dir, name) =
        crate::trust::open_parent(path, "log_file").map_err(|e| e.message().to_string())?;
    // An existing entry is checked before it is opened: opening a FIFO or device for
    // writing can block or act.
    match rustix::fs::statat(
        dir.fd(),
        name.as_os_str(),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(stat) => crate::trust::check_opened(&stat, path, "log_file", false)
            .map_err(|e| e.message().to_string())?,
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(std::io::Error::from(e).to_string()),
    }
    // Read access only to look at the last byte (see `ends_torn`).
    let fd = rustix::fs::openat(
        dir.fd(),
        name.as_os_str(),
        OFlags::RDWR
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o640),
    )
    .map_err(|e| std::io::Error::from(e).to_string())?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
    crate::trust::check_opened(&stat, path, "log_file", false)
        .map_err(|e| e.message().to_string())?;
    Ok(File::from(fd))
}

/// Whether a non-empty file's last byte is not a newline.
fn ends_torn(file: &File) -> bool {
    use std::os::unix::fs::FileExt as _;
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if meta.len() == 0 {
        return false;
    }
    let mut last = [0u8];
    matches!(file.read_at(&mut last, meta.len() - 1), Ok(1) if last[0] != b'\n')
}

/// `text` cut to at most `limit` bytes on a character boundary, saying how much was
/// left out.
pub fn cut(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return text.into();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes)", &text[..end], text.len() - end).into()
}

/// Quotes a value when it holds spaces, quotes or control characters, so each log
/// entry stays on one line and splits cleanly on spaces.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=');
    if plain {
        return value.to_string();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => push_control(&mut quoted, c),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `text` with line breaks and other control characters escaped: for messages a
/// plugin chose, printed where one line is promised.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            push_control(&mut escaped, c);
        } else {
            escaped.push(c);
        }
    }
    escaped.into()
}

fn push_control(out: &mut String, c: char) {
    if c == '\n' {
        out.push_str("\\n");
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_dir() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[test]
    fn values_with_spaces_and_newlines_stay_on_one_line() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("a\nb \"c\""), "\"a\\nb \\\"c\\\"\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("tab\there"), "\"tab\\u{9}here\"");
    }

    #[test]
    fn one_line_escapes_only_control_characters() {
        assert_eq!(one_line("a \"plain\" message"), "a \"plain\" message");
        assert_eq!(one_line("first\nsecond\r"), "first\\nsecond\\u{d}");
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let text = "é".repeat(10);
        assert_eq!(cut(&text, 5), "éé... (16 more bytes)");
        assert_eq!(cut("short", 5), "short");
    }

    #[test]
    fn lines_are_appended_with_context() {
        let dir = private_dir();
        let path = dir.path().join("mmvip.log");
        let context = LogContext {
            plugin: "notify".into(),
            instance: Some("VI_1".into()),
            state: Some("MASTER".into()),
        };
        Log::open(&Targets::file(&path), context.clone()).write(Level::Info, &[("msg", "first")]);
        Log::open(&Targets::file(&path), context).write(Level::Info, &[("msg", "second line")]);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("plugin=notify instance=VI_1 state=MASTER level=info msg=first"));
        assert!(lines[1].ends_with("msg=\"second line\""));
    }

    #[test]
    fn a_torn_last_line_is_not_continued() {
        let dir = private_dir();
        let path = dir.path().join("mmvip.log");
        std::fs::write(
            &path,
            "2026-11-29T00:00:00.000Z pid=1 plugin=health level=in",
        )
        .unwrap();
        Log::open(&Targets::file(&path), LogContext::default())
            .write(Level::Info, &[("msg", "next")]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with("msg=next"), "{text}");
    }

    #[test]
    fn a_plugin_name_cannot_forge_a_line() {
        let dir = private_dir();
        let path = dir.path().join("mmvip.log");
        let context = LogContext {
            plugin: "x\n2026-11-29T00:00:00.000Z pid=1 plugin=master level=info verdict=pass"
                .into(),
            ..LogContext::default()
        };
        Log::open(&Targets::file(&path), context).write(Level::Error, &[("msg", "refused")]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn plugin_lines_stop_at_the_budget() {
        let dir = private_dir();
        let path = dir.path().join("mmvip.log");
        let log = Log::open(&Targets::file(&path), LogContext::default());
        let long = "x".repeat(100 << 10);
        for _ in 0..1_000 {
            log.write_for_plugin(Level::Info, &[("msg", &long)]);
        }
        let size = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(size <= PLUGIN_BYTE_BUDGET + 1024, "{size}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("log budget"), "budget line missing");
        assert!(text.lines().all(|l| l.len() < MAX_VALUE_BYTES + 200));
    }

    #[test]
    fn symlinked_or_fifo_log_file_is_not_used() {
        let dir = private_dir();
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("mmvip.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // A link another user planted must not redirect root's writes.
        rustix::fs::chownat(
            rustix::fs::CWD,
            &link,
            Some(rustix::process::Uid::from_raw(65534)),
            None,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        Log::open(&Targets::file(&link), LogContext::default()).write(Level::Info, &[("msg", "x")]);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
        let fifo = dir.path().join("fifo.log");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        // Opening must neither block nor write into the FIFO.
        Log::open(&Targets::file(&fifo), LogContext::default()).write(Level::Info, &[("msg", "x")]);
    }
}
