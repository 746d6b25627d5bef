//! Packets for a VIP that no client should wait on get a TCP reset (nftables,
//! prerouting, a table of mmvip's own):
//!
//! - Always: any TCP packet for a VIP this node does not hold. It reaches this node
//!   only through a client's stale ARP entry, just after the VIP moved, and the kernel
//!   would drop it silently: the client then waits for a retransmission (200 ms at
//!   least; seen at lab failbacks) or its connect timeout. With the reset it
//!   reconnects at once, to the node that holds the VIP by then.
//! - During a planned switch-over, on the writer: every SYN for MariaDB's port on a
//!   VIP it still holds, from before its sessions are killed until the peer serves. A
//!   connection accepted on a VIP just before keepalived removes it can send nothing
//!   once the address is gone, not even MariaDB's greeting, and its client waits out
//!   its read timeout (2 s in the lab). Refusing first, then killing the sessions,
//!   means none is left when the address goes.
//! - Where a node can be writable for one `rw` instance when another's VIP arrives
//!   (several `rw` instances), every TCP packet for a VIP whose instance this node
//!   does not serve: the gate. `read_only` cannot keep the arriving VIP's clients
//!   from writing on a node already writable, before its `master` has caught up
//!   (a switch-over) or while it holds no lease for that VIP (a heartbeat cut).

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use crate::log::{Level, Log};

/// The nftables table, mmvip's alone. It stays in place; the switch-over's sets are
/// empty but during one: adding an element takes one short nft run (about 5 ms),
/// creating the rule three times that, inside the switch-over's gap.
const TABLE: &str = "mmvip";

/// The table for `vips`, with `gated` closed, replacing whatever a guard that died
/// mid-switch-over left (adding it first makes deleting it succeed when it was not
/// there). Priority raw: before connection tracking, which has nothing to add here.
fn define(vips: &[IpAddr], gated: &[IpAddr]) -> String {
    let set = |name: &str, kind: &str, v4: bool, addresses: &[IpAddr]| {
        let members: Vec<String> = addresses
            .iter()
            .filter(|vip| vip.is_ipv4() == v4)
            .map(IpAddr::to_string)
            .collect();
        if members.is_empty() {
            format!("set {name} {{ type {kind}; }}")
        } else {
            format!(
                "set {name} {{ type {kind}; elements = {{ {} }}; }}",
                members.join(", ")
            )
        }
    };
    [
        format!("add table inet {TABLE}"),
        format!("delete table inet {TABLE}"),
        format!("table inet {TABLE} {{"),
        set("vips4", "ipv4_addr", true, vips),
        set("vips6", "ipv6_addr", false, vips),
        set("gated4", "ipv4_addr", true, gated),
        set("gated6", "ipv6_addr", false, gated),
        "set refused4 { type ipv4_addr . inet_service; }".into(),
        "set refused6 { type ipv6_addr . inet_service; }".into(),
        "chain turn_away {".into(),
        "type filter hook prerouting priority raw; policy accept;".into(),
        "fib daddr type != local ip daddr @vips4 meta l4proto tcp reject with tcp reset".into(),
        "fib daddr type != local ip6 daddr @vips6 meta l4proto tcp reject with tcp reset".into(),
        "ip daddr @gated4 meta l4proto tcp reject with tcp reset".into(),
        "ip6 daddr @gated6 meta l4proto tcp reject with tcp reset".into(),
        "ip daddr . tcp dport @refused4 tcp flags & (fin | syn | rst | ack) == syn reject with tcp reset".into(),
        "ip6 daddr . tcp dport @refused6 tcp flags & (fin | syn | rst | ack) == syn reject with tcp reset".into(),
        "}".into(),
        "}".into(),
    ]
    .join("\n")
        + "\n"
}

/// Sets up the table at the guard's start, with `gated` closed. Without nft, packets
/// for a VIP held elsewhere are dropped, and switch-overs go on without refusing
/// connections: a client may wait out a retransmission or its read timeout. A gate
/// is not optional: without it, the error is the caller's to refuse on.
pub fn prepare(vips: &[IpAddr], gated: &[IpAddr], log: &Log) -> Result<(), String> {
    match nft(&define(vips, gated)) {
        Ok(()) => Ok(()),
        Err(e) if gated.is_empty() => {
            log.write(
                Level::Warn,
                &[(
                    "msg",
                    &format!("clients of a VIP that moved may wait out timeouts: {e}"),
                )],
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Opens (`open`) or closes the gate of `vip`: closed, every TCP packet for it is
/// answered with a reset. `vips` and `gated` (the gates to close, this one's change
/// included) define the table again if something flushed it since the guard started.
pub fn set_gate(vip: IpAddr, open: bool, vips: &[IpAddr], gated: &[IpAddr]) -> Result<(), String> {
    let set = if vip.is_ipv4() { "gated4" } else { "gated6" };
    let verb = if open { "delete" } else { "add" };
    if nft(&format!("{verb} element inet {TABLE} {set} {{ {vip} }}\n")).is_err() {
        nft(&define(vips, gated))?;
    }
    Ok(())
}

/// New connections to the VIPs are refused while this lives.
pub struct TurnedAway {
    log: Log,
}

/// Starts refusing new TCP connections to `port` on each of `vips`.
pub fn turn_away(
    vips: &[IpAddr],
    gated: &[IpAddr],
    port: u16,
    log: &Log,
) -> Result<TurnedAway, String> {
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
        nft(&format!("{}{elements}", define(vips, gated)))?;
    }
    Ok(TurnedAway { log: log.clone() })
}

impl Drop for TurnedAway {
    fn drop(&mut self) {
        let empty = format!("flush set inet {TABLE} refused4\nflush set inet {TABLE} refused6\n");
        if let Err(e) = nft(&empty) {
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

/// How long one nft run may take (a few milliseconds when well).
const NFT_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<(), String> {
    let mut nft = Command::new("nft");
    nft.args(["-f", "-"]);
    run_bounded(nft, script)
}

/// Runs `program` with `script` on its standard input, for at most [`NFT_WITHIN`].
fn run_bounded(mut program: Command, script: &str) -> Result<(), String> {
    let mut child = program
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
    // Bounded: the guard's start and a switch-over wait on it.
    if !super::exits_within(&mut child, NFT_WITHIN) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "nft did not finish within {} ms",
            NFT_WITHIN.as_millis()
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// nft accepts the table as written, IPv4 and IPv6 VIPs both (its check mode:
    /// nothing is changed). Needs root and nftables.
    #[test]
    fn nft_accepts_the_table() {
        let vips: Vec<IpAddr> = vec!["10.0.0.10".parse().unwrap(), "fd00::10".parse().unwrap()];
        let script = define(&vips, &vips[..1]);
        let mut child = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft (apt-get install nftables)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(script.contains("elements = { 10.0.0.10 }"), "{script}");
        assert!(script.contains("elements = { fd00::10 }"), "{script}");
        assert!(
            script.contains("set gated4 { type ipv4_addr; elements = { 10.0.0.10 }; }")
                && script.contains("set gated6 { type ipv6_addr; }"),
            "{script}"
        );
    }

    /// An nft that hangs (a stuck netlink lock) holds neither the guard's start nor a
    /// switch-over for longer than its bound.
    #[test]
    fn a_hung_nft_is_given_up_on() {
        let started = std::time::Instant::now();
        let mut hung = Command::new("sleep");
        hung.arg("30");
        let outcome = run_bounded(hung, "add table inet mmvip\n");
        assert_eq!(
            outcome,
            Err(format!(
                "nft did not finish within {} ms",
                NFT_WITHIN.as_millis()
            ))
        );
        assert!(
            started.elapsed() < NFT_WITHIN * 2,
            "{:?}",
            started.elapsed()
        );
    }
}
