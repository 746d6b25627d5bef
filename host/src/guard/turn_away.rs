//! During a planned switch-over the writer turns away new client connections to its
//! VIPs: a TCP reset to every SYN for the MariaDB port (nftables, prerouting), from
//! before its sessions are killed until the peer serves.
//!
//! Why: a connection accepted on a VIP just before keepalived removes it can send
//! nothing once the address is gone, not even MariaDB's greeting, and its client waits
//! out its read timeout (2 s in the lab). Refusing first, then killing the sessions,
//! means none is left when the address goes. Because the rule sits in prerouting, it
//! also resets SYNs that still reach this node after the VIP left and before the
//! peer's gratuitous ARP: a client sees a refused connect at once instead of a connect
//! that times out. The table stays between switch-overs, its sets empty.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use crate::log::{Level, Log};

/// The nftables table, this feature's alone. It stays in place, its sets empty but
/// during a switch-over: adding an element takes one short nft run (about 5 ms),
/// creating the rule three times that, inside the switch-over's gap.
const TABLE: &str = "mmvip_switchover";

/// The table with empty sets, replacing whatever a guard that died mid-switch-over
/// left (adding it first makes deleting it succeed when it was not there).
/// Priority raw: before connection tracking, which has nothing to add here.
const DEFINE: &str = "add table inet mmvip_switchover
delete table inet mmvip_switchover
table inet mmvip_switchover {
  set refused4 { type ipv4_addr . inet_service; }
  set refused6 { type ipv6_addr . inet_service; }
  chain turn_away {
    type filter hook prerouting priority raw; policy accept;
    ip daddr . tcp dport @refused4 tcp flags & (fin | syn | rst | ack) == syn reject with tcp reset
    ip6 daddr . tcp dport @refused6 tcp flags & (fin | syn | rst | ack) == syn reject with tcp reset
  }
}
";

const EMPTY: &str = "flush set inet mmvip_switchover refused4
flush set inet mmvip_switchover refused6
";

/// Sets up the table at the guard's start. Without nft, switch-overs go on without
/// refusing connections, and a client may wait out its read timeout.
pub fn prepare(log: &Log) {
    if let Err(e) = nft(DEFINE) {
        log.write(
            Level::Warn,
            &[(
                "msg",
                &format!("switch-overs will not refuse new connections to the VIPs: {e}"),
            )],
        );
    }
}

/// New connections to the VIPs are refused while this lives.
pub struct TurnedAway {
    log: Log,
}

/// Starts refusing new TCP connections to `port` on each of `vips`.
pub fn turn_away(vips: &[IpAddr], port: u16, log: &Log) -> Result<TurnedAway, String> {
    let mut elements = String::new();
    for vip in vips {
        let set = if vip.is_ipv4() {
            "refused4"
        } else {
            "refused6"
        };
        elements.push_str(&format!(
            "add element inet {TABLE} {set} {{ {vip} . {port} }}\n"
        ));
    }
    // The table is gone if something flushed the ruleset since the guard started.
    if nft(&elements).is_err() {
        nft(&format!("{DEFINE}{elements}"))?;
    }
    Ok(TurnedAway { log: log.clone() })
}

impl Drop for TurnedAway {
    fn drop(&mut self) {
        if let Err(e) = nft(EMPTY) {
            self.log.write(
                Level::Error,
                &[(
                    "msg",
                    &format!(
                        "new connections to the VIPs are still refused: {e}; run: nft flush set inet {TABLE} refused4; nft flush set inet {TABLE} refused6"
                    ),
                )],
            );
        }
    }
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables): {e}"))?;
    let failed = |e: std::io::Error| format!("nft: {e}");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .map_err(failed)?;
    let out = child.wait_with_output().map_err(failed)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("failed")
        ))
    }
}
