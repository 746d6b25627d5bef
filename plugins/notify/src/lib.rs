//! `mmvip notify`: keepalived's generic `notify` hook, replacing
//! `keepalived_notify.sh`: one log line `TYPE NAME STATE PRIORITY` per transition.

use mmvip_sdk::{Call, Outcome, Plugin, log, usage};

struct NotifyLog;

impl Plugin for NotifyLog {
    fn run(call: &Call) -> Outcome {
        call.expect_no_args()?;
        let Some(event) = call.event() else {
            return Err(usage(
                "no transition: use this plugin on keepalived's `notify` line, \
                 which appends TYPE NAME STATE PRIORITY",
            ));
        };
        let line = event.to_string();
        log::info(&line);
        Ok(line)
    }
}

mmvip_sdk::export!(NotifyLog {
    kind: notify,
    about: "logs each VRRP transition keepalived reports",
    grants: ["log"],
    timeout_ms: 2000,
});
