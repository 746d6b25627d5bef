//! `[guard]`: the resident guard of a node (see `guard/mod.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// What a node without a witness does when its peer answers on no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WithoutPeer {
    /// Keep (or take) the lease alone while the probes answer: keepalived's classic
    /// behaviour; two writers if both nodes reach the clients but not each other.
    KeepWriting,
    /// Never write without the peer's vote: no two writers, no writer at all while
    /// the peer is silent.
    ReadOnly,
}

/// What the guard does when `read_only` cannot be set in time while fencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LastResort {
    /// SIGKILL the local mariadbd (its pid file): it can no longer write.
    StopMariadb,
    /// Nothing beyond read_only and kills (not recommended).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub address: (String, u16),
    pub user: String,
    pub password_file: Option<PathBuf>,
    /// The database holding the lease table (created there by `mmvip guard`).
    pub database: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// This node's name in the lease (unique in the pair).
    pub node: String,
    /// Where this guard answers the peer's guard.
    pub listen: Vec<SocketAddr>,
    /// The peer's guard: heartbeat network first.
    pub peer: Vec<SocketAddr>,
    /// The secret both guards share to authenticate each message.
    pub secret_file: PathBuf,
    pub lease: Duration,
    /// Added by a grantor to the lease it grants: covers clock-rate drift and the
    /// fence (which must complete within it).
    pub margin: Duration,
    /// Where keepalived's track files are: `<instance>` (1 = FAULT).
    pub track_dir: PathBuf,
    /// keepalived's VRRP process (`keepalived -r`): alive and MASTER, or fence.
    pub keepalived_pidfile: PathBuf,
    pub mariadb_pidfile: PathBuf,
    /// Addresses that answer ICMP when this node is not cut off from everything.
    pub probes: Vec<std::net::IpAddr>,
    pub without_peer: WithoutPeer,
    pub last_resort: LastResort,
    /// How often the local MariaDB is pinged on the guard's connection (a hang).
    pub ping_interval: Duration,
    pub witness: Option<Witness>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuard {
    node: Option<String>,
    listen: Vec<String>,
    peer: Vec<String>,
    secret_file: PathBuf,
    lease_ms: Option<u64>,
    margin_ms: Option<u64>,
    track_dir: Option<PathBuf>,
    keepalived_pidfile: Option<PathBuf>,
    mariadb_pidfile: Option<PathBuf>,
    #[serde(default)]
    probes: Vec<String>,
    without_peer: Option<WithoutPeer>,
    last_resort: Option<LastResort>,
    ping_interval_ms: Option<u64>,
    witness: Option<RawWitness>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWitness {
    address: String,
    user: Option<String>,
    password_file: Option<PathBuf>,
    database: Option<String>,
}

fn socket_address(text: &str, what: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("[guard] {what}: `{text}` is not ip:port"))
}

impl RawGuard {
    pub(crate) fn validate(
        self,
        parse_host_port: fn(&str) -> Option<(String, u16)>,
    ) -> Result<GuardConfig, String> {
        let listen = self
            .listen
            .iter()
            .map(|a| socket_address(a, "listen"))
            .collect::<Result<Vec<_>, _>>()?;
        let peer = self
            .peer
            .iter()
            .map(|a| socket_address(a, "peer"))
            .collect::<Result<Vec<_>, _>>()?;
        if listen.is_empty() || peer.is_empty() {
            return Err("[guard] listen and peer: list at least one address each".into());
        }
        let lease = Duration::from_millis(self.lease_ms.unwrap_or(2_000));
        let margin = Duration::from_millis(self.margin_ms.unwrap_or(1_000));
        // A round with a silent voter takes its 300 ms timeout; two of them back to
        // back must fit in a lease, with room to fence before it ends.
        if lease < Duration::from_millis(1000) {
            return Err(
                "[guard] lease_ms: at least 1000 (a renewal with a silent voter takes 300 ms)"
                    .into(),
            );
        }
        let probes = self
            .probes
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|_| format!("[guard] probes: `{p}` is not an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let node = match self.node {
            Some(node) => node,
            None => rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        };
        if node.is_empty() || node.len() > 64 || node.contains(char::is_whitespace) {
            return Err(format!(
                "[guard] node: `{node}` must be 1 to 64 characters without spaces"
            ));
        }
        let witness = match self.witness {
            None => None,
            Some(w) => Some(Witness {
                address: parse_host_port(&w.address).ok_or_else(|| {
                    format!("[guard.witness] address: `{}` is not host:port", w.address)
                })?,
                user: w.user.unwrap_or_else(|| "mmvip_witness".into()),
                password_file: w.password_file,
                database: w.database.unwrap_or_else(|| "mmvip".into()),
            }),
        };
        if let Some(w) = &witness
            && !w
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!(
                "[guard.witness] database: `{}` is not a plain name",
                w.database
            ));
        }
        Ok(GuardConfig {
            node,
            listen,
            peer,
            secret_file: self.secret_file,
            lease,
            margin,
            track_dir: self.track_dir.unwrap_or_else(|| "/run/mmvip/track".into()),
            // Where Debian's keepalived 2.2 writes its VRRP process's pid (`-r`).
            keepalived_pidfile: self
                .keepalived_pidfile
                .unwrap_or_else(|| "/run/vrrp.pid".into()),
            mariadb_pidfile: self
                .mariadb_pidfile
                .unwrap_or_else(|| "/run/mysqld/mysqld.pid".into()),
            probes,
            without_peer: self.without_peer.unwrap_or(WithoutPeer::KeepWriting),
            last_resort: self.last_resort.unwrap_or(LastResort::StopMariadb),
            ping_interval: Duration::from_millis(self.ping_interval_ms.unwrap_or(200)),
            witness,
        })
    }
}
