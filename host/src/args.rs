//! The command line's definition (clap, nothing else): `cli` runs it, and
//! `cargo xtask package` includes this file on its own to generate the man page and
//! the shell completions from it, so it must not use anything from this crate.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// Where `mmvip doctor` reads keepalived's config unless told otherwise.
pub const DEFAULT_KEEPALIVED_CONF: &str = "/etc/keepalived/keepalived.conf";

#[derive(Parser, Debug)]
#[command(
    name = "mmvip",
    version,
    about = "keepalived hooks for a MariaDB master/master pair, run as sandboxed WebAssembly plugins",
    override_usage = "mmvip [OPTIONS] <PLUGIN> [ARGS...]    run a hook: `mmvip health`, `mmvip master --instance=VI_1`\n       mmvip [OPTIONS] <COMMAND>",
    after_help = "Exit status: 0 the hook succeeded or the check passed; 1 the check failed or the hook could not do its job; 2 usage or configuration error.\nConfig: --config, else $MMVIP_CONFIG, else /etc/mmvip/mmvip.toml."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Bound of this hook run, instead of the configured one (the guard fences with
    /// a tighter bound than keepalived's hooks have).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Precompile every configured plugin into the cache.
    Compile,
    /// List plugins: name, kind, grants, timeout, status and purpose.
    Plugins,
    /// Run this node's resident guard: write lease, fencing, failure detection
    /// (needs [guard]; a systemd unit runs it).
    Guard,
    /// Planned switch-over, run on either node: checks, writer read-only, the other
    /// node applies its last position, then the VIP moves; prints each step's time.
    Switchover,
    /// This node's view: VIPs, read_only, replication, the peer, the write lease,
    /// the last decisions and hook runs.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check everything a failover depends on: this mmvip, the local MariaDB and
    /// replication, the peer, the accounts, keepalived's config; one line per check.
    Doctor {
        /// JSON instead of text: an array of {check, ok, detail, fix}.
        #[arg(long)]
        json: bool,
        /// Also check the peer's server settings (over [peer]).
        #[arg(long)]
        peer: bool,
        /// keepalived's config file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_KEEPALIVED_CONF)]
        keepalived_conf: PathBuf,
    },
    /// Allow promotion again after flap damping held it back: forgets this node's
    /// recorded role changes (an operator has looked at why it flapped).
    Ack,
    /// Run one hook: `mmvip <plugin> [ARGS...]`; the exit status is its verdict.
    #[command(external_subcommand)]
    Hook(Vec<OsString>),
}

/// The whole command line, for generators (man page, completions).
pub fn command() -> clap::Command {
    Cli::command()
}
