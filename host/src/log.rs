//! mmvip's log: one line per hook run and per plugin log call, appended with a single
//! `write` so concurrent hooks never interleave within a line.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Who is logging: the plugin and, for notify hooks, the VRRP instance and state.
#[derive(Debug, Clone, Default)]
pub struct LogContext {
    pub plugin: String,
    pub instance: Option<String>,
    pub state: Option<String>,
}

#[derive(Clone)]
pub struct Log {
    file: Option<Arc<File>>,
    context: LogContext,
}

impl Log {
    /// Opens `path` for appending. When it cannot be opened the lines go to stderr,
    /// with one line saying why, so nothing is lost.
    pub fn open(path: &Path, context: LogContext) -> Log {
        let opened = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            // A planted symlink must not redirect root's writes.
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path);
        let log = Log {
            file: opened
                .as_ref()
                .ok()
                .and_then(|f| f.try_clone().ok())
                .map(Arc::new),
            context,
        };
        if let Err(error) = opened {
            log.write(
                "warn",
                &[(
                    "msg",
                    &format!("cannot open log file {}: {error}", path.display()),
                )],
            );
        }
        log
    }

    /// A log that only writes to stderr (before the config is known).
    pub fn stderr(context: LogContext) -> Log {
        Log {
            file: None,
            context,
        }
    }

    /// Writes one line: timestamp, context, `level`, then `fields` as `key=value`.
    pub fn write(&self, level: &str, fields: &[(&str, &str)]) {
        let mut line = String::with_capacity(160);
        let now = humantime::format_rfc3339_millis(SystemTime::now());
        let _ = write!(
            line,
            "{now} pid={} plugin={}",
            std::process::id(),
            self.context.plugin
        );
        if let Some(instance) = &self.context.instance {
            let _ = write!(line, " instance={}", quote(instance));
        }
        if let Some(state) = &self.context.state {
            let _ = write!(line, " state={state}");
        }
        let _ = write!(line, " level={level}");
        for (key, value) in fields {
            let _ = write!(line, " {key}={}", quote(value));
        }
        line.push('\n');
        let written = match &self.file {
            Some(file) => (&**file).write_all(line.as_bytes()).is_ok(),
            None => false,
        };
        if !written {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
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
    fn lines_are_appended_with_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mmvip.log");
        let context = LogContext {
            plugin: "notify".into(),
            instance: Some("VI_1".into()),
            state: Some("MASTER".into()),
        };
        Log::open(&path, context.clone()).write("info", &[("msg", "first")]);
        Log::open(&path, context).write("info", &[("msg", "second line")]);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("plugin=notify instance=VI_1 state=MASTER level=info msg=first"));
        assert!(lines[1].ends_with("msg=\"second line\""));
    }

    #[test]
    fn symlinked_log_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("mmvip.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        Log::open(&link, LogContext::default()).write("info", &[("msg", "x")]);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    }
}
