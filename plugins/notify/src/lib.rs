//! `mmvip notify`: keepalived's generic `notify` hook, replacing
//! `keepalived_notify.sh`: one log line `TYPE NAME STATE PRIORITY` per transition.

use mmvip_sdk::{Call, Notify, Outcome, TargetKind, Transition, VrrpState, info, usage};

struct NotifyLog;

impl Notify for NotifyLog {
    fn notify(event: Option<&Transition>, call: &Call) -> Outcome {
        call.expect_no_args()?;
        let Some(event) = event else {
            return Err(usage(
                "no transition: use this plugin on keepalived's `notify` line, \
                 which appends TYPE NAME STATE PRIORITY",
            ));
        };
        let line = format!(
            "{} {} {} {}",
            kind_word(event.kind),
            event.name,
            state_word(event.state),
            event.priority
        );
        info(&line);
        Ok(line)
    }
}

fn kind_word(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Instance => "INSTANCE",
        TargetKind::Group => "GROUP",
    }
}

fn state_word(state: VrrpState) -> &'static str {
    match state {
        VrrpState::Master => "MASTER",
        VrrpState::Backup => "BACKUP",
        VrrpState::Fault => "FAULT",
        VrrpState::Stop => "STOP",
        VrrpState::Deleted => "DELETED",
    }
}

mmvip_sdk::export_notify!(NotifyLog);
