//! mmvip's log: one line per hook run and per plugin log call, appended with a single
//! `write` so concurrent hooks never interleave within a line.
//!
//! What a plugin causes (its log calls, the SQL statements it sends, its stderr) is
//! counted against one budget per run, and every value is cut to a bounded length, so
//! no plugin can fill the disk or the host's memory through the log.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
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

struct Sink {
    file: Option<File>,
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
    pub fn open(path: &Path, context: LogContext) -> Log {
        let opened = open_append(path);
        let (file, why) = match opened {
            Ok(file) => (Some(file), None),
            Err(why) => (None, Some(why)),
        };
        let torn = file.as_ref().is_some_and(ends_torn);
        let log = Log {
            sink: Arc::new(Sink {
                file,
                torn: AtomicBool::new(torn),
                spent: Mutex::new(Spent::default()),
            }),
            context,
        };
        if let Some(why) = why {
            log.write(
                Level::Warn,
                &[(
                    "msg",
                    &format!("log file {} not used: {why}", path.display()),
                )],
            );
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
        self.append(&line);
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
        self.append(&line);
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

    fn append(&self, line: &str) {
        let written = match &self.sink.file {
            Some(file) => {
                let mut file = file;
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
            None => false,
        };
        if !written {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
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
        Log::open(&path, context.clone()).write(Level::Info, &[("msg", "first")]);
        Log::open(&path, context).write(Level::Info, &[("msg", "second line")]);
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
        Log::open(&path, LogContext::default()).write(Level::Info, &[("msg", "next")]);
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
        Log::open(&path, context).write(Level::Error, &[("msg", "refused")]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn plugin_lines_stop_at_the_budget() {
        let dir = private_dir();
        let path = dir.path().join("mmvip.log");
        let log = Log::open(&path, LogContext::default());
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
        Log::open(&link, LogContext::default()).write(Level::Info, &[("msg", "x")]);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
        let fifo = dir.path().join("fifo.log");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        // Opening must neither block nor write into the FIFO.
        Log::open(&fifo, LogContext::default()).write(Level::Info, &[("msg", "x")]);
    }
}
