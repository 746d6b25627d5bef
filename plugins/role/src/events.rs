//! `handle_events`: the demoted node's enabled events are disabled and marked, and
//! promotion re-enables exactly the marked ones (MaxScale's `handle_events` idea).

use mmvip_sdk::sql::EventStatus;
use mmvip_sdk::{HookError, failed};

use crate::node::Node;

/// Prefix put on the comment of events mmvip disabled.
const MARK: &str = "mmvip-disabled:";
/// MariaDB keeps 64 characters of an event comment.
const COMMENT_CHARS: usize = 64;

pub fn disable_enabled(node: &mut impl Node) -> Result<String, HookError> {
    let events = node
        .events()
        .map_err(|e| failed(format!("cannot list events: {e}")))?;
    let mut disabled = 0;
    for event in events.iter().filter(|e| e.status == EventStatus::Enabled) {
        let comment: String = format!("{MARK}{}", event.comment)
            .chars()
            .take(COMMENT_CHARS)
            .collect();
        node.set_event_enabled(&event.schema, &event.name, false, &comment)
            .map_err(|e| {
                failed(format!(
                    "cannot disable event {}.{}: {e}",
                    event.schema, event.name
                ))
            })?;
        disabled += 1;
    }
    Ok(format!("disabled {disabled} events"))
}

/// Re-enables the events mmvip disabled, including those the server itself marked
/// `SLAVESIDE_DISABLED` after they replicated here.
pub fn enable_disabled_by_mmvip(node: &mut impl Node) -> Result<String, HookError> {
    let events = node
        .events()
        .map_err(|e| failed(format!("cannot list events: {e}")))?;
    let mut enabled = 0;
    for event in events.iter().filter(|e| e.status != EventStatus::Enabled) {
        let Some(original) = event.comment.strip_prefix(MARK) else {
            continue;
        };
        node.set_event_enabled(&event.schema, &event.name, true, original)
            .map_err(|e| {
                failed(format!(
                    "cannot enable event {}.{}: {e}",
                    event.schema, event.name
                ))
            })?;
        enabled += 1;
    }
    Ok(format!("re-enabled {enabled} events"))
}
