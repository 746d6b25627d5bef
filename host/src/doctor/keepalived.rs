//! keepalived's configuration as keepalived reads it (`include`s followed), checked
//! for the instances of `[instances.*]`; and `keepalived -t` on it.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Check;
use crate::config::{Config, PluginSpec};
use crate::guard::{FAILOVER_TRACK, HEALTH_TRACK};
use crate::runtime::OVERRUN_GRACE;

const MAX_FILE_BYTES: u64 = 1 << 20;
const MAX_FILES: usize = 64;
const MAX_INCLUDE_DEPTH: usize = 8;
/// The notify lines of the role hooks, one per state.
const ROLE_NOTIFIES: &[&str] = &[
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
];

pub(super) fn check(
    config: &Config,
    conf: &Path,
    plugins: &BTreeMap<String, PluginSpec>,
    checks: &mut Vec<Check>,
) {
    let parsed = match Parsed::read(conf) {
        Ok(parsed) => parsed,
        Err(why) => {
            checks.push(Check::fail(
                "keepalived.conf",
                format!("cannot read keepalived's config: {why}"),
                "point --keepalived-conf at keepalived's config (default /etc/keepalived/keepalived.conf), owned by root and writable by root alone — keepalived runs what it says as root",
            ));
            return;
        }
    };
    let included = parsed.files.len() - 1;
    checks.push(Check::pass(
        "keepalived.conf",
        format!(
            "keepalived config {} read{}",
            conf.display(),
            match included {
                0 => String::new(),
                1 => " (and 1 included file)".to_string(),
                n => format!(" (and {n} included files)"),
            }
        ),
    ));
    checks.push(config_test(conf));
    let global = parsed.top("global_defs").flat_map(Statement::children);
    let global: Vec<&Statement> = global.collect();
    checks.push(
        if global.iter().any(|s| s.keyword() == "enable_script_security") {
            Check::pass(
                "keepalived.enable_script_security",
                "enable_script_security is set",
            )
        } else {
            Check::fail(
                "keepalived.enable_script_security",
                "enable_script_security is not set in global_defs",
                "add enable_script_security to global_defs — without it keepalived runs, as root, scripts whose files or directories others can change",
            )
        },
    );
    checks.push(
        match global.iter().find(|s| s.keyword() == "script_user") {
            Some(user) => Check::pass(
                "keepalived.script_user",
                format!("script_user is {}", user.words[1..].join(" ")),
            ),
            None => Check::fail(
                "keepalived.script_user",
                "script_user is not set in global_defs",
                "add script_user root to global_defs — with enable_script_security and no script_user, keepalived runs scripts as keepalived_script, and when that user does not exist it disables every script without an error",
            ),
        },
    );
    checks.push(track_blocks(&parsed));
    checks.push(script_timeouts(&parsed, plugins));
    for (name, instance) in &config.instances {
        let Some(vrrp) = parsed
            .top("vrrp_instance")
            .find(|s| s.words.get(1).map(String::as_str) == Some(name.as_str()))
        else {
            checks.push(Check::fail(
                format!("keepalived.{name}"),
                format!("no vrrp_instance {name} in keepalived's config"),
                format!(
                    "add vrrp_instance {name} (README: keepalived), or correct [instances.{name}] — mmvip's instances are keepalived's VRRP instances"
                ),
            ));
            continue;
        };
        checks.push(vip(name, vrrp, instance.vip));
        checks.push(unicast(name, vrrp));
        checks.push(notify(name, vrrp, config.instances.len()));
        checks.push(match &config.guard {
            Some(guard) => guard_tracking(name, vrrp, &parsed, &guard.track_dir, &config.state_dir),
            None => script_tracking(name, vrrp, &parsed, plugins),
        });
    }
}

/// `keepalived -t -f FILE`: what keepalived itself says of the config.
fn config_test(conf: &Path) -> Check {
    const NAME: &str = "keepalived.config_test";
    let Some(keepalived) = super::program(&["keepalived"]) else {
        return Check::fail(
            NAME,
            "keepalived is not installed (not on PATH nor in /usr/sbin)",
            "apt-get install keepalived — it moves the VIP and runs every hook",
        );
    };
    let output = match Command::new(&keepalived)
        .arg("-t")
        .arg("-f")
        .arg(conf)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot run {}: {e}", keepalived.display()),
                "see the message",
            );
        }
    };
    if output.status.success() {
        return Check::pass(NAME, format!("keepalived -t accepts {}", conf.display()));
    }
    let said: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&output.stdout).lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    Check::fail(
        NAME,
        format!(
            "keepalived -t rejects {} ({}): {}",
            conf.display(),
            output.status,
            crate::log::cut(&said.join("; "), 600)
        ),
        "correct what it names — keepalived refuses or ignores those lines when it starts",
    )
}

/// Items in a `track_*` block must be one per line: keepalived takes a second item
/// on the line as an option of the first.
fn track_blocks(parsed: &Parsed) -> Check {
    const NAME: &str = "keepalived.track_blocks";
    let mut crowded = Vec::new();
    let mut stack: Vec<&Statement> = parsed.statements.iter().collect();
    while let Some(statement) = stack.pop() {
        let children = statement.children();
        if statement.keyword().starts_with("track_") {
            for item in children {
                let options_only = item.words[1..].iter().all(|w| {
                    matches!(w.as_str(), "weight" | "reverse" | "no_reverse")
                        || w.parse::<i64>().is_ok()
                });
                if !options_only {
                    crowded.push(format!(
                        "{}: {} {{ {} }}",
                        parsed.place(item),
                        statement.keyword(),
                        item.words.join(" ")
                    ));
                }
            }
        } else {
            stack.extend(children);
        }
    }
    if crowded.is_empty() {
        Check::pass(NAME, "every track_* block has one item per line")
    } else {
        crowded.sort();
        Check::fail(
            NAME,
            format!("several items on one line: {}", crowded.join("; ")),
            "put each item on a line of its own — keepalived reads the second item as an option of the first and drops it, so that check or file is never tracked",
        )
    }
}

/// keepalived kills a script at its `timeout` (default: its `interval`, 1 s) and
/// counts a failure: each mmvip check must be given longer than its own bound.
fn script_timeouts(parsed: &Parsed, plugins: &BTreeMap<String, PluginSpec>) -> Check {
    const NAME: &str = "keepalived.script_timeouts";
    let mut fine = Vec::new();
    let mut short = Vec::new();
    for script in parsed.top("vrrp_script") {
        let name = script.words.get(1).cloned().unwrap_or_default();
        let Some(command) = script.child("script").and_then(Statement::mmvip_command) else {
            continue;
        };
        let Some(spec) = plugins.get(&command.plugin) else {
            // The plugin check already says why it does not load.
            continue;
        };
        let seconds = |keyword: &str| {
            script
                .child(keyword)
                .and_then(|s| s.words.get(1))
                .and_then(|w| w.parse::<f64>().ok())
        };
        let allowed_ms = seconds("timeout")
            .or_else(|| seconds("interval"))
            .unwrap_or(1.0)
            * 1000.0;
        let bound_ms = command
            .timeout_ms
            .unwrap_or(spec.timeout.as_millis() as u64)
            + OVERRUN_GRACE.as_millis() as u64;
        let said = format!(
            "{name} gives `mmvip {}` {} s for at most {bound_ms} ms",
            command.plugin,
            allowed_ms / 1000.0
        );
        if allowed_ms >= bound_ms as f64 {
            fine.push(said);
        } else {
            short.push((name, said, bound_ms.div_ceil(1000)));
        }
    }
    if short.is_empty() {
        return Check::pass(
            NAME,
            if fine.is_empty() {
                "no vrrp_script runs mmvip".to_string()
            } else {
                format!("vrrp_script timeouts cover the hooks: {}", fine.join("; "))
            },
        );
    }
    let fixes: Vec<String> = short
        .iter()
        .map(|(name, _, seconds)| format!("timeout {seconds} in vrrp_script {name}"))
        .collect();
    Check::fail(
        NAME,
        short
            .iter()
            .map(|(_, said, _)| said.clone())
            .collect::<Vec<_>>()
            .join("; "),
        format!(
            "set {} (or lower the hook's timeout_ms) — keepalived kills the hook at its timeout and counts a failure, so a slow but healthy server looks dead",
            fixes.join(", ")
        ),
    )
}

fn vip(name: &str, vrrp: &Statement, vip: IpAddr) -> Check {
    let check = format!("keepalived.{name}.vip");
    let moved: Vec<IpAddr> = vrrp
        .children()
        .filter(|s| {
            matches!(
                s.keyword(),
                "virtual_ipaddress" | "virtual_ipaddress_excluded"
            )
        })
        .flat_map(Statement::children)
        .filter_map(|item| item.keyword().split('/').next()?.parse().ok())
        .collect();
    if moved.contains(&vip) {
        Check::pass(
            check,
            format!("vrrp_instance {name} moves {vip}, as [instances.{name}] vip says"),
        )
    } else {
        let moved: Vec<String> = moved.iter().map(IpAddr::to_string).collect();
        Check::fail(
            check,
            format!(
                "vrrp_instance {name} moves {}, not [instances.{name}] vip {vip}",
                if moved.is_empty() {
                    "no address".to_string()
                } else {
                    moved.join(", ")
                }
            ),
            format!(
                "make virtual_ipaddress of {name} and [instances.{name}] vip the same address — master goes writable only while this node holds the instance's VIP, so it would never promote, or act on the wrong address"
            ),
        )
    }
}

fn unicast(name: &str, vrrp: &Statement) -> Check {
    let check = format!("keepalived.{name}.unicast_peer");
    let peers: Vec<String> = vrrp
        .children()
        .filter(|s| s.keyword() == "unicast_peer")
        .flat_map(Statement::children)
        .map(|item| item.keyword().to_string())
        .collect();
    if peers.is_empty() {
        Check::fail(
            check,
            format!("vrrp_instance {name} has no unicast_peer (VRRP by multicast)"),
            "add unicast_src_ip and unicast_peer { <the peer's heartbeat address> } — many networks drop or filter VRRP multicast, and two nodes that do not hear each other both become MASTER",
        )
    } else {
        Check::pass(
            check,
            format!("vrrp_instance {name} sends VRRP to {}", peers.join(", ")),
        )
    }
}

/// A `notify_*` line per state runs its role hook, naming its instance unless the
/// site has exactly one.
fn notify(name: &str, vrrp: &Statement, instances: usize) -> Check {
    let check = format!("keepalived.{name}.notify");
    let mut problems = Vec::new();
    let mut hooks = Vec::new();
    for keyword in ROLE_NOTIFIES {
        let commands: Vec<MmvipCommand> = vrrp
            .children()
            .filter(|s| s.keyword() == *keyword)
            .filter_map(Statement::mmvip_command)
            .collect();
        if commands.is_empty() {
            problems.push(format!("no {keyword} line runs mmvip"));
        }
        for command in commands {
            let named = command
                .args
                .iter()
                .find_map(|a| a.strip_prefix("--instance="));
            match named {
                Some(other) if other != name => problems.push(format!(
                    "{keyword} runs `mmvip {}` for --instance={other}",
                    command.plugin
                )),
                None if instances != 1 => problems.push(format!(
                    "{keyword} runs `mmvip {}` without --instance={name}",
                    command.plugin
                )),
                _ => hooks.push(command.plugin),
            }
        }
    }
    if problems.is_empty() {
        Check::pass(
            check,
            format!(
                "vrrp_instance {name} runs mmvip {} on its transitions",
                hooks.join("/")
            ),
        )
    } else {
        Check::fail(
            check,
            format!("vrrp_instance {name}: {}", problems.join("; ")),
            format!(
                "one line per state: notify_master \"/usr/local/sbin/mmvip master --instance={name}\", and likewise backup, fault and stop — keepalived passes notify_* scripts no instance name, so with several instances a hook cannot tell which VIP it acts for, and a state without its line never changes read_only"
            ),
        )
    }
}

/// With the guard: the instance tracks the guard's files (weight 0: a 1 is FAULT) and
/// its process.
fn guard_tracking(
    name: &str,
    vrrp: &Statement,
    parsed: &Parsed,
    track_dir: &Path,
    state_dir: &Path,
) -> Check {
    let check = format!("keepalived.{name}.tracking");
    let mut problems = Vec::new();
    for file in [HEALTH_TRACK, FAILOVER_TRACK, name] {
        let path = track_dir.join(file);
        let tracked = vrrp
            .children()
            .filter(|s| s.keyword() == "track_file")
            .flat_map(Statement::children)
            .find_map(|item| {
                let definition = parsed
                    .top("vrrp_track_file")
                    .find(|d| d.words.get(1) == Some(&item.words[0]))?;
                let file = definition.child("file")?.words.get(1)?;
                (Path::new(file) == path).then_some((item, definition))
            });
        match tracked {
            None => problems.push(format!("does not track the file {}", path.display())),
            Some((item, definition)) => {
                if weight(item).or_else(|| definition.child("weight").and_then(weight_of))
                    != Some(0)
                {
                    problems.push(format!("tracks {} without weight 0", path.display()));
                }
            }
        }
    }
    let definitions: Vec<(&Statement, &Statement)> = vrrp
        .children()
        .filter(|s| s.keyword() == "track_process")
        .flat_map(Statement::children)
        .filter_map(|item| {
            let definition = parsed
                .top("vrrp_track_process")
                .find(|d| d.words.get(1) == Some(&item.words[0]))?;
            Some((item, definition))
        })
        .collect();
    let running = running_guard(state_dir);
    let guard_tracked = definitions.iter().find(|(_, definition)| {
        ProcessMatch::of(definition).is_some_and(|m| match &running {
            None => m.names_the_guard(),
            Some((comm, argv)) => m.matches(comm, argv),
        })
    });
    match (guard_tracked, &running) {
        (None, None) => {
            problems.push("does not track the process `mmvip guard` (in vrrp_track_process: `process /usr/sbin/mmvip guard`, its path and arguments as the guard's unit starts it)".into());
        }
        (None, Some((_, argv))) => problems.push(format!(
            "tracks no process that matches the running guard (`{}`): keepalived compares a process line with arguments to the command line word for word, the path included",
            argv.join(" ")
        )),
        (Some((item, definition)), _) => {
            if weight(item).or_else(|| definition.child("weight").and_then(weight_of)) != Some(0)
            {
                problems.push("tracks the guard's process without weight 0".into());
            }
        }
    }
    if problems.is_empty() {
        Check::pass(
            check,
            format!(
                "vrrp_instance {name} tracks the guard's files ({HEALTH_TRACK}, {FAILOVER_TRACK}, {name}; weight 0) and its process"
            ),
        )
    } else {
        Check::fail(
            check,
            format!("vrrp_instance {name} {}", problems.join("; ")),
            "add the vrrp_track_file and vrrp_track_process blocks of README \"The guard\" (weight 0) and list them in the instance's track_file and track_process — otherwise keepalived does not act on what the guard sees, and the VIP stays on a node the guard fenced",
        )
    }
}

/// This config's running guard (the process on its control socket): its comm and
/// command line, as keepalived reads them from /proc.
fn running_guard(state_dir: &Path) -> Option<(String, Vec<String>)> {
    let pid = crate::guard::control::serving_pid(state_dir).ok()?;
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let comm = std::fs::read_to_string(proc.join("comm")).ok()?;
    let cmdline = std::fs::read(proc.join("cmdline")).ok()?;
    let argv = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some((comm.trim_end().to_string(), argv))
}

/// A `vrrp_track_process` as keepalived 2.2 matches it: with arguments on its
/// `process` line (or `full_command`, or `param_match`) the name is compared with the
/// command line's first word and the arguments per `param_match` (exact unless it
/// says `partial` or `initial`); otherwise the name is compared with the process's comm.
struct ProcessMatch {
    name: String,
    params: Vec<String>,
    full_command: bool,
    param_match: Option<String>,
}

impl ProcessMatch {
    fn of(definition: &Statement) -> Option<ProcessMatch> {
        let process = definition.child("process")?;
        let param_match = definition.child("param_match").map(|s| {
            s.words
                .get(1)
                .cloned()
                .unwrap_or_else(|| "exact".to_string())
        });
        let params = process.words.get(2..).unwrap_or_default().to_vec();
        Some(ProcessMatch {
            name: process.words.get(1)?.clone(),
            full_command: !params.is_empty()
                || param_match.is_some()
                || definition.child("full_command").is_some(),
            params,
            param_match,
        })
    }

    fn matches(&self, comm: &str, argv: &[String]) -> bool {
        if !self.full_command {
            return self.name == comm;
        }
        if argv.first() != Some(&self.name) {
            return false;
        }
        // keepalived compares the NUL-separated arguments as bytes.
        let joined =
            |words: &[String]| -> String { words.iter().map(|w| format!("{w}\0")).collect() };
        let (actual, wanted) = (joined(&argv[1..]), joined(&self.params));
        match self.param_match.as_deref() {
            None if self.params.is_empty() => true,
            Some("partial") => actual.starts_with(&wanted),
            Some("initial") => actual.starts_with(wanted.trim_end_matches('\0')),
            _ => actual == wanted,
        }
    }

    /// Whether it can only match an `mmvip … guard` process (none is running to try).
    fn names_the_guard(&self) -> bool {
        self.full_command
            && (self.name == "mmvip" || self.name.ends_with("/mmvip"))
            && self.params.iter().any(|p| p == "guard")
    }
}

/// Without the guard: the instance tracks mmvip's checks of MariaDB and of the
/// failover flag.
fn script_tracking(
    name: &str,
    vrrp: &Statement,
    parsed: &Parsed,
    plugins: &BTreeMap<String, PluginSpec>,
) -> Check {
    let check = format!("keepalived.{name}.tracking");
    let tracked: Vec<(String, MmvipCommand)> = vrrp
        .children()
        .filter(|s| s.keyword() == "track_script")
        .flat_map(Statement::children)
        .filter_map(|item| {
            let definition = parsed
                .top("vrrp_script")
                .find(|d| d.words.get(1) == Some(&item.words[0]))?;
            Some((
                item.words[0].clone(),
                definition.child("script")?.mmvip_command()?,
            ))
        })
        .collect();
    let tracking = |grant: &str| {
        tracked.iter().find(|(_, command)| {
            plugins
                .get(&command.plugin)
                .is_some_and(|spec| spec.granted(grant))
        })
    };
    let mut problems = Vec::new();
    let mut found = Vec::new();
    for (grant, what) in [
        ("sql-read", "MariaDB's health"),
        ("failover-flag", "the failover flag"),
    ] {
        match tracking(grant) {
            Some((script, command)) => found.push(format!("mmvip {} ({script})", command.plugin)),
            None => problems.push(format!("tracks no mmvip check of {what}")),
        }
    }
    if problems.is_empty() {
        Check::pass(
            check,
            format!("vrrp_instance {name} tracks {}", found.join(" and ")),
        )
    } else {
        Check::fail(
            check,
            format!("vrrp_instance {name} {}", problems.join("; ")),
            "track a vrrp_script running `mmvip health` and one running `mmvip failover` (README: keepalived), or run the guard — otherwise the VIP stays on a node whose MariaDB is down, and a planned switch-over cannot move it",
        )
    }
}

/// `weight N` on a track item's line.
fn weight(item: &Statement) -> Option<i64> {
    let at = item.words.iter().position(|w| w == "weight")?;
    item.words.get(at + 1)?.parse().ok()
}

/// A `weight N` statement.
fn weight_of(statement: &Statement) -> Option<i64> {
    statement.words.get(1)?.parse().ok()
}

/// One statement: the words of its line, and its block when it opens one.
struct Statement {
    file: usize,
    line: usize,
    words: Vec<String>,
    block: Option<Vec<Statement>>,
}

/// A script line running mmvip: `/usr/local/sbin/mmvip [--config F] [--timeout-ms MS]
/// PLUGIN ARGS…`.
struct MmvipCommand {
    plugin: String,
    args: Vec<String>,
    timeout_ms: Option<u64>,
}

impl Statement {
    fn keyword(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    fn children(&self) -> impl Iterator<Item = &Statement> {
        self.block.iter().flatten()
    }

    fn child(&self, keyword: &str) -> Option<&Statement> {
        self.children().find(|s| s.keyword() == keyword)
    }

    /// The mmvip command this `script` or `notify_*` line runs, if it runs mmvip.
    /// keepalived splits the line on spaces itself, quoted or not.
    fn mmvip_command(&self) -> Option<MmvipCommand> {
        let line = self.words[1..].join(" ");
        let mut words = line.split_whitespace();
        let program = Path::new(words.next()?);
        if program.file_name()? != "mmvip" {
            return None;
        }
        let mut timeout_ms = None;
        loop {
            let word = words.next()?;
            if word == "--config" {
                words.next()?;
            } else if word == "--timeout-ms" {
                timeout_ms = words.next()?.parse().ok();
            } else if let Some(ms) = word.strip_prefix("--timeout-ms=") {
                timeout_ms = ms.parse().ok();
            } else if !word.starts_with("--config=") {
                return Some(MmvipCommand {
                    plugin: word.to_string(),
                    args: words.map(str::to_string).collect(),
                    timeout_ms,
                });
            }
        }
    }
}

/// The whole configuration: its files and their statements.
struct Parsed {
    files: Vec<PathBuf>,
    statements: Vec<Statement>,
}

/// A word, a `{` or a `}`, where it was written.
enum Token {
    Word(String),
    Open,
    Close,
}

impl Parsed {
    fn read(path: &Path) -> Result<Parsed, String> {
        let mut files = Vec::new();
        let mut tokens = Vec::new();
        read_file(path, 0, &mut files, &mut tokens)?;
        let mut at = 0;
        let statements = statements(&tokens, &mut at);
        Ok(Parsed { files, statements })
    }

    /// Top-level statements starting with `keyword`.
    fn top<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Statement> {
        self.statements
            .iter()
            .filter(move |s| s.keyword() == keyword)
    }

    fn place(&self, statement: &Statement) -> String {
        format!(
            "{}:{}",
            self.files[statement.file].display(),
            statement.line
        )
    }
}

/// Reads one file (through the trust rules: keepalived runs what it says as root)
/// into tokens, following `include` lines in place.
fn read_file(
    path: &Path,
    depth: usize,
    files: &mut Vec<PathBuf>,
    tokens: &mut Vec<(usize, usize, Token)>,
) -> Result<(), String> {
    if depth > MAX_INCLUDE_DEPTH || files.len() >= MAX_FILES {
        return Err(format!(
            "{}: includes nest deeper than {MAX_INCLUDE_DEPTH} or name more than {MAX_FILES} files",
            path.display()
        ));
    }
    let mut text = String::new();
    crate::trust::open_file(path, "keepalived config")
        .map_err(|e| e.message().to_string())?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let file = files.len();
    files.push(path.to_path_buf());
    for (index, line) in text.lines().enumerate() {
        let line_tokens = tokenize(line);
        if let [Token::Word(keyword), Token::Word(pattern), ..] = line_tokens.as_slice()
            && keyword == "include"
        {
            // A relative include is relative to the including file's directory.
            let pattern = path.parent().unwrap_or(Path::new("/")).join(pattern);
            for included in expand(&pattern)? {
                read_file(&included, depth + 1, files, tokens)?;
            }
            continue;
        }
        tokens.extend(line_tokens.into_iter().map(|t| (file, index + 1, t)));
    }
    Ok(())
}

/// Splits a line into words (`"…"` is one word), `{` and `}`; `#` and `!` start a
/// comment.
fn tokenize(line: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '#' | '!' => break,
            '{' | '}' => {
                chars.next();
                tokens.push(if c == '{' { Token::Open } else { Token::Close });
            }
            '"' => {
                chars.next();
                let word: String = chars.by_ref().take_while(|c| *c != '"').collect();
                tokens.push(Token::Word(word));
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '{' | '}' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    tokens
}

/// An include's files: the pattern's last component may hold `*` and `?` (as
/// keepalived's glob), matched in name order.
fn expand(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("include {}: {e}", pattern.display()))?
        .flatten()
        .filter(|entry| wildcard(&name, &entry.file_name().to_string_lossy()))
        .map(|entry| entry.path())
        .collect();
    found.sort();
    Ok(found)
}

fn wildcard(pattern: &str, name: &str) -> bool {
    match (pattern.chars().next(), name.chars().next()) {
        (None, None) => true,
        (Some('*'), _) => {
            wildcard(&pattern[1..], name)
                || (!name.is_empty()
                    && wildcard(
                        pattern,
                        &name[name.chars().next().map_or(0, char::len_utf8)..],
                    ))
        }
        (Some('?'), Some(c)) => wildcard(&pattern[1..], &name[c.len_utf8()..]),
        (Some(p), Some(c)) if p == c => wildcard(&pattern[p.len_utf8()..], &name[c.len_utf8()..]),
        _ => false,
    }
}

/// Statements until the end or a `}`: a statement is the words of one line, with
/// the block that follows it (on the same line or the next).
fn statements(tokens: &[(usize, usize, Token)], at: &mut usize) -> Vec<Statement> {
    let mut found = Vec::new();
    while let Some((file, line, token)) = tokens.get(*at) {
        let (file, line) = (*file, *line);
        let mut words = Vec::new();
        match token {
            Token::Close => {
                *at += 1;
                break;
            }
            Token::Open => {}
            Token::Word(_) => {
                while let Some((f, l, Token::Word(word))) = tokens.get(*at) {
                    if (*f, *l) != (file, line) {
                        break;
                    }
                    words.push(word.clone());
                    *at += 1;
                }
            }
        }
        let block = match tokens.get(*at) {
            Some((_, _, Token::Open)) => {
                *at += 1;
                Some(statements(tokens, at))
            }
            _ => None,
        };
        found.push(Statement {
            file,
            line,
            words,
            block,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Statement> {
        let tokens: Vec<(usize, usize, Token)> = text
            .lines()
            .enumerate()
            .flat_map(|(i, line)| tokenize(line).into_iter().map(move |t| (0, i + 1, t)))
            .collect();
        statements(&tokens, &mut 0)
    }

    #[test]
    fn blocks_open_on_the_same_or_the_next_line_and_items_keep_their_lines() {
        let parsed = parse(
            "vrrp_instance VI_1\n{\n  track_script { a b }  # comment\n  notify_master \"/x/mmvip master --instance=VI_1\"\n  track_file {\n    f1 weight 0\n    f2\n  }\n}\n! another comment\nglobal_defs {\n enable_script_security\n}\n",
        );
        assert_eq!(parsed.len(), 2);
        let vrrp = &parsed[0];
        assert_eq!(vrrp.words, ["vrrp_instance", "VI_1"]);
        let track = vrrp.child("track_script").unwrap();
        assert_eq!(track.children().next().unwrap().words, ["a", "b"]);
        let files: Vec<_> = vrrp
            .child("track_file")
            .unwrap()
            .children()
            .map(|s| s.line)
            .collect();
        assert_eq!(files, [6, 7]);
        let command = vrrp
            .child("notify_master")
            .unwrap()
            .mmvip_command()
            .unwrap();
        assert_eq!(command.plugin, "master");
        assert_eq!(command.args, ["--instance=VI_1"]);
        assert_eq!(
            parsed[1].children().next().unwrap().keyword(),
            "enable_script_security"
        );
    }

    #[test]
    fn mmvip_commands_skip_global_options() {
        let parsed = parse(
            "script \"/usr/sbin/mmvip --config /etc/x.toml --timeout-ms 500 health\"\nscript /bin/true\n",
        );
        let command = parsed[0].mmvip_command().unwrap();
        assert_eq!(
            (command.plugin.as_str(), command.timeout_ms),
            ("health", Some(500))
        );
        assert!(parsed[1].mmvip_command().is_none());
    }

    #[test]
    fn track_process_matches_as_keepalived_does() {
        let definition = |text: &str| {
            let parsed = parse(&format!("vrrp_track_process g {{\n{text}\n}}\n"));
            ProcessMatch::of(&parsed[0]).unwrap()
        };
        let argv = |line: &str| -> Vec<String> { line.split(' ').map(str::to_string).collect() };
        let unit = argv("/usr/sbin/mmvip guard");
        // Arguments: the whole command line, the path included.
        let exact = definition("process /usr/sbin/mmvip guard");
        assert!(exact.matches("mmvip", &unit));
        assert!(!exact.matches("mmvip", &argv("/usr/sbin/mmvip --config /x guard")));
        assert!(!definition("process mmvip guard").matches("mmvip", &unit));
        assert!(exact.names_the_guard());
        // The README's first form: `parameters` is no keyword of keepalived 2.2.
        let unknown = definition("process mmvip\nparam_match initial\nparameters guard");
        assert!(!unknown.matches("mmvip", &unit));
        assert!(!unknown.names_the_guard());
        let partial = definition("process /usr/sbin/mmvip --config\nparam_match partial");
        assert!(partial.matches("mmvip", &argv("/usr/sbin/mmvip --config /x guard")));
        assert!(!partial.matches("mmvip", &unit));
        let initial = definition("process /usr/sbin/mmvip gua\nparam_match initial");
        assert!(initial.matches("mmvip", &unit));
        // Only the name: the comm, which every hook run shares.
        let comm = definition("process mmvip");
        assert!(comm.matches("mmvip", &argv("/usr/sbin/mmvip health")));
        assert!(!comm.names_the_guard());
    }

    #[test]
    fn include_patterns_match_names() {
        assert!(wildcard("*.conf", "vi_1.conf"));
        assert!(wildcard("vi_?.conf", "vi_1.conf"));
        assert!(!wildcard("*.conf", "vi_1.conf.bak"));
        assert!(wildcard("*", ""));
    }
}
