//! Flap damping: a node that keeps changing roles stops promoting itself until an
//! operator has looked (`mmvip ack`) or the window has passed. Each flap costs the
//! clients a failover and risks a write that was acknowledged just before it; a
//! pair that flaps has a cause (a bad link, a dying disk) that another promotion
//! does not fix.
//!
//! The role changes this node made are kept in the state file under
//! [`CHANGES_KEY`] as Unix seconds; a refusal leaves its reason under
//! [`DAMPED_KEY`], which `mmvip status` shows and `mmvip ack` removes with the
//! history.

use crate::Node;
use crate::options::Settings;

/// The state key holding the times of this node's last role changes.
pub const CHANGES_KEY: &str = "role_changes";
/// The state key holding why promotion is held back, while it is.
pub const DAMPED_KEY: &str = "damped";
/// How many change times are kept: enough for any sensible `flap_limit`, and far
/// inside the state store's value bound.
const KEPT: usize = 64;

/// Notes that the node just changed role (made writable or read-only).
pub fn record_change(node: &mut impl Node) {
    let mut times = recorded(node);
    times.push(node.unix_time());
    let skip = times.len().saturating_sub(KEPT);
    let text: Vec<String> = times[skip..].iter().map(u64::to_string).collect();
    node.remember(CHANGES_KEY, &text.join(" "));
}

/// Whether another role change is allowed now; the refusal says why and until when.
pub fn allows_promotion(node: &mut impl Node, settings: &Settings) -> Result<(), String> {
    let limit = settings.flap_limit as usize;
    let now = node.unix_time();
    let window = settings.flap_window.as_secs();
    // A time ahead of the clock (it was stepped back) still counts as recent.
    let mut recent: Vec<u64> = recorded(node)
        .into_iter()
        .filter(|&at| now.saturating_sub(at) < window)
        .collect();
    if limit == 0 || recent.len() < limit {
        if node.recall(DAMPED_KEY).is_some() {
            node.forget(DAMPED_KEY);
        }
        return Ok(());
    }
    recent.sort_unstable();
    // Promotion is allowed again once all but `limit - 1` of them are out of the window.
    let frees_at = recent[recent.len() - limit] + window;
    let why = format!(
        "flap damping: {} role changes in the last {} (flap_limit = {limit}); not promoting for {} more unless an operator runs `mmvip ack`",
        recent.len(),
        minutes(window),
        minutes(frees_at.saturating_sub(now).max(1)),
    );
    node.remember(DAMPED_KEY, &format!("since {now}: {why}"));
    Err(why)
}

fn recorded(node: &mut impl Node) -> Vec<u64> {
    node.recall(CHANGES_KEY)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|at| at.parse().ok())
        .collect()
}

fn minutes(seconds: u64) -> String {
    if seconds < 120 {
        format!("{seconds} s")
    } else {
        format!("{} min", seconds.div_ceil(60))
    }
}
