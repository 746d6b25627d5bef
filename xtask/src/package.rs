//! `cargo xtask package`: the `.deb` (cargo-deb) and the `.rpm` (cargo-generate-rpm)
//! from the release build. What goes where is in the root Cargo.toml
//! (`[package.metadata.deb]`, `[package.metadata.generate-rpm]`); this stages the files
//! those lists name under `target/package/` (a stripped host, the man page and the
//! shell completions generated from the clap definitions) and runs both tools.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap_complete::Shell;

// The host's command line, compiled into the xtask on its own: the man page and the
// completions cannot drift from what the binary parses.
#[path = "../../host/src/args.rs"]
#[allow(dead_code)]
mod args;

/// The pinned packaging tools: `.ci/run` installs exactly these.
const TOOLS: &[(&str, &str, &str)] = &[
    ("deb", "cargo-deb", "3.8.0"),
    ("generate-rpm", "cargo-generate-rpm", "0.21.1"),
];

/// Where the staged files and both packages go (relative to the workspace root, as
/// the asset lists in Cargo.toml expect).
pub const OUT_DIR: &str = "target/package";

/// What the man page says beyond the clap definitions: the paths the packages
/// install and the commands next to this one.
const MAN_FILES: &str = r#".SH FILES
.TP
\fI/usr/sbin/mmvip\fR
This program; keepalived runs it as a script, so it and every directory above it are root-owned and writable by root alone.
.TP
\fI/etc/mmvip/mmvip.toml\fR
The site configuration (root-owned, mode 0640): paths, the MariaDB socket and account, the VRRP instances, per-plugin settings, the guard.
.TP
\fI/usr/lib/mmvip/plugins/\fR
The plugins, one \fINAME\fR.wasm each: health, failover, notify, master, backup, fault, stop. \fBmmvip plugins\fR lists them with their purpose and grants.
.TP
\fI/var/cache/mmvip/\fR
Precompiled plugins (root only, mode 0700), filled by \fBmmvip compile\fR; the packages run it after installing and remove it when removed.
.TP
\fI/run/mmvip/\fR
The hook lock, the state file and the guard's track files for keepalived.
.TP
\fI/var/log/mmvip.log\fR
The log, unless the configuration sends it to the journal or syslog only.
.TP
\fI/usr/share/doc/mmvip/examples/\fR
keepalived.conf for one and for two VIPs, and my.cnf snippets for both nodes.
.TP
\fI/usr/lib/systemd/system/mmvip-guard.service\fR
The guard's unit (not enabled by the package).
.SH SEE ALSO
\fBkeepalived\fR(8), \fBkeepalived.conf\fR(5), \fBmariadbd\fR(8), /usr/share/doc/mmvip/README.md
"#;

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

fn run(program: &str, args: &[&str], root: &Path) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

/// Fails with the install command when a packaging tool is missing or another version.
fn check_tools(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (subcommand, krate, version) in TOOLS {
        let output = Command::new(&cargo)
            .args([subcommand, "--version"])
            .current_dir(root)
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {cargo}: {e}"))?;
        let said = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !said.contains(version) {
            return Err(format!(
                "{krate} {version} is needed to build the packages (found: {}); install it with `cargo install --locked {krate} --version {version}`",
                if output.status.success() {
                    said.trim()
                } else {
                    "none"
                }
            ));
        }
    }
    Ok(())
}

/// The man pages: `mmvip(8)`, whose after-help is its EXIT STATUS and which ends with
/// FILES and SEE ALSO, and `mmvip-<command>(8)` for each command it lists.
fn man_pages() -> Result<Vec<(String, Vec<u8>)>, String> {
    let error = |e: std::io::Error| format!("render a man page: {e}");
    let command = args::command();
    let man = clap_mangen::Man::new(command.clone())
        .section("8")
        .manual("System Administration");
    let mut page = Vec::new();
    man.render_title(&mut page).map_err(error)?;
    man.render_name_section(&mut page).map_err(error)?;
    man.render_synopsis_section(&mut page).map_err(error)?;
    man.render_description_section(&mut page).map_err(error)?;
    man.render_options_section(&mut page).map_err(error)?;
    man.render_subcommands_section(&mut page).map_err(error)?;
    if let Some(exit_status) = command.get_after_help() {
        page.extend_from_slice(b".SH \"EXIT STATUS\"\n");
        for line in exit_status.to_string().lines() {
            page.extend_from_slice(format!("{line}\n.br\n").as_bytes());
        }
    }
    page.extend_from_slice(MAN_FILES.as_bytes());
    man.render_version_section(&mut page).map_err(error)?;
    let mut pages = vec![("mmvip.8".to_string(), page)];
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        // clap takes a 'static name (its `string` feature is off in the workspace).
        let name: &'static str = format!("mmvip-{}", sub.get_name()).leak();
        let sub = sub
            .clone()
            .name(name)
            .bin_name(format!("mmvip {}", sub.get_name()));
        let mut page = Vec::new();
        clap_mangen::Man::new(sub)
            .section("8")
            .manual("System Administration")
            .render(&mut page)
            .map_err(error)?;
        page.extend_from_slice(b".SH \"SEE ALSO\"\n\\fBmmvip\\fR(8)\n");
        pages.push((format!("{name}.8"), page));
    }
    Ok(pages)
}

/// `gzip -9n`: what Debian policy asks of man pages, and reproducible (no name or time).
fn gzip(path: &Path) -> Result<(), String> {
    let path = path.to_str().ok_or("non-UTF-8 path")?;
    run("gzip", &["-9nf", path], Path::new("/"))
}

/// Stages the generated files and builds both packages into `target/package/`.
pub fn build(root: &Path) -> Result<(), String> {
    check_tools(root)?;
    let out = root.join(OUT_DIR);
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| format!("clear {}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(out.join("completions"))
        .map_err(|e| format!("create {}: {e}", out.display()))?;

    // Stripped once here for both tools (cargo-generate-rpm does not strip).
    let built = target_dir(root).join("release/mmvip");
    let staged = out.join("mmvip");
    run(
        "strip",
        &[
            "--strip-all",
            "-o",
            staged.to_str().ok_or("non-UTF-8 path")?,
            built.to_str().ok_or("non-UTF-8 path")?,
        ],
        root,
    )?;

    std::fs::create_dir_all(out.join("man")).map_err(|e| format!("create man dir: {e}"))?;
    for (file, page) in man_pages()? {
        let path = out.join("man").join(file);
        std::fs::write(&path, page).map_err(|e| format!("write {}: {e}", path.display()))?;
        gzip(&path)?;
    }

    for (shell, file) in [
        (Shell::Bash, "mmvip.bash"),
        (Shell::Zsh, "_mmvip"),
        (Shell::Fish, "mmvip.fish"),
    ] {
        let path = out.join("completions").join(file);
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut args::command(), "mmvip", &mut script);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&script))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }

    let out_arg = out.to_str().ok_or("non-UTF-8 path")?;
    let started = Instant::now();
    super::cargo(root, &["deb", "--no-build", "--no-strip", "-o", out_arg])?;
    let deb_time = started.elapsed();
    let started = Instant::now();
    super::cargo(root, &["generate-rpm", "-o", out_arg])?;
    let rpm_time = started.elapsed();

    for entry in std::fs::read_dir(&out).map_err(|e| format!("list {}: {e}", out.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("deb" | "rpm")) {
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            let took = if ext == Some("deb") {
                deb_time
            } else {
                rpm_time
            };
            eprintln!(
                "xtask: {} ({} KiB, {:.1} s)",
                path.display(),
                size / 1024,
                took.as_secs_f64()
            );
        }
    }
    Ok(())
}
