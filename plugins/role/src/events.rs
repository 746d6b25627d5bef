//! `handle_events`: the demoted node's enabled events are disabled and marked, and
//! promotion re-enables exactly the marked ones (MaxScale's `handle_events` idea).

use mmvip_sdk::{HookError, describe, failed, sql_admin, sql_read};

/// Prefix put on the comment of events mmvip disabled (MariaDB keeps 64 characters).
const MARK: &str = "mmvip-disabled:";
const COMMENT_LIMIT: usize = 64;

pub fn disable_enabled() -> Result<String, HookError> {
    let events =
        sql_read::events().map_err(|e| failed(format!("cannot list events: {}", describe(&e))))?;
    let mut disabled = 0;
    for event in events.iter().filter(|e| e.status == "ENABLED") {
        let mut comment = format!("{MARK}{}", event.comment);
        while comment.len() > COMMENT_LIMIT {
            comment.pop();
        }
        sql_admin::set_event_enabled(&event.schema, &event.name, false, &comment).map_err(|e| {
            failed(format!(
                "cannot disable event {}.{}: {}",
                event.schema,
                event.name,
                describe(&e)
            ))
        })?;
        disabled += 1;
    }
    Ok(format!("disabled {disabled} events"))
}

pub fn enable_disabled_by_mmvip() -> Result<String, HookError> {
    let events =
        sql_read::events().map_err(|e| failed(format!("cannot list events: {}", describe(&e))))?;
    let mut enabled = 0;
    for event in events.iter().filter(|e| e.status != "ENABLED") {
        let Some(original) = event.comment.strip_prefix(MARK) else {
            continue;
        };
        sql_admin::set_event_enabled(&event.schema, &event.name, true, original).map_err(|e| {
            failed(format!(
                "cannot enable event {}.{}: {}",
                event.schema,
                event.name,
                describe(&e)
            ))
        })?;
        enabled += 1;
    }
    Ok(format!("re-enabled {enabled} events"))
}
