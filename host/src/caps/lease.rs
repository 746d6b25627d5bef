//! Grant `lease`: asks this node's guard for an instance's write lease, over the
//! guard's socket in the state directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker};

use super::Capability;
use crate::bindings::lease as wit;
use crate::runtime::HookState;

pub use wit::Answer;

pub const CAPABILITY: Capability = Capability {
    grant: "lease",
    link,
};

/// The back-end: the guard's answers.
pub trait Lease: Send {
    fn acquire(&mut self, instance: &str, timeout: Duration) -> Answer;
    fn release(&mut self, instance: &str) -> Answer;
    fn peer_answers(&mut self) -> bool;
}

/// The instances whose lease a run was granted, for [`serve`] once it has passed.
pub type Granted = Arc<Mutex<Vec<String>>>;

/// The guard of a site with `[guard]`; without one, the lease is not used.
pub fn backend(
    state_dir: PathBuf,
    guarded: bool,
    deadline: Instant,
    granted: Granted,
) -> Box<dyn Lease> {
    if guarded {
        Box::new(GuardSocket {
            state_dir,
            deadline,
            granted,
        })
    } else {
        Box::new(NotUsed)
    }
}

/// Tells the guard that a run granted these leases has passed: each instance's VIP
/// is served from now on (its gate opens, where there are gates). The promotion is
/// the run's; the guard only learns that it is complete.
pub fn serve(state_dir: &Path, granted: &Granted, log: &crate::log::Log) {
    let instances = std::mem::take(&mut *granted.lock().unwrap_or_else(PoisonError::into_inner));
    for instance in instances {
        let answer = crate::guard::control::ask(
            state_dir,
            &format!("SERVE {instance}"),
            Duration::from_secs(2),
        );
        let why = match answer {
            Ok(line) if line.split(' ').next() == Some("SERVING") => continue,
            Ok(line) => {
                let why = line.split_once(' ').map_or(line.as_str(), |(_, why)| why);
                crate::log::one_line(why).into_owned()
            }
            Err(why) => why,
        };
        log.write(
            crate::log::Level::Error,
            &[(
                "msg",
                &format!("{instance}: its VIP is not served here: {why}"),
            )],
        );
    }
}

fn link(linker: &mut Linker<HookState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HookState, Linked>(linker, |state| Cap(&mut *state.caps.lease))
}

struct Linked;

impl HasData for Linked {
    type Data<'a> = Cap<'a>;
}

struct Cap<'a>(&'a mut dyn Lease);

impl wit::Host for Cap<'_> {
    fn acquire(&mut self, instance: String, timeout_ms: u32) -> wasmtime::Result<Answer> {
        Ok(self
            .0
            .acquire(&instance, Duration::from_millis(timeout_ms.into())))
    }

    fn release(&mut self, instance: String) -> wasmtime::Result<Answer> {
        Ok(self.0.release(&instance))
    }

    fn peer_answers(&mut self) -> wasmtime::Result<bool> {
        Ok(self.0.peer_answers())
    }
}

struct NotUsed;

impl Lease for NotUsed {
    fn acquire(&mut self, _: &str, _: Duration) -> Answer {
        Answer::NotUsed
    }

    fn release(&mut self, _: &str) -> Answer {
        Answer::NotUsed
    }

    fn peer_answers(&mut self) -> bool {
        false
    }
}

struct GuardSocket {
    state_dir: PathBuf,
    deadline: Instant,
    granted: Granted,
}

impl GuardSocket {
    fn ask(&self, request: &str, wait: Duration) -> Answer {
        // The answer may take as long as the wait asked for, within the hook's bound.
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timeout = (wait + Duration::from_millis(500)).min(left);
        match crate::guard::control::ask(&self.state_dir, request, timeout) {
            Ok(line) => answer_of(&line),
            Err(why) => Answer::Refused(why),
        }
    }
}

/// The guard's answer line. Anything but a well-formed `HELD` or `RELEASED` is a
/// refusal: a garbled grant must not make a node writable.
fn answer_of(line: &str) -> Answer {
    match line.split_once(' ').unwrap_or((line, "")) {
        ("HELD", left) => match left.parse() {
            Ok(left) => Answer::Held(left),
            Err(_) => Answer::Refused(format!(
                "unreadable answer from the guard: `{}`",
                crate::log::cut(&crate::log::one_line(line), 100)
            )),
        },
        ("RELEASED", "") => Answer::Held(0),
        ("REFUSED", why) => Answer::Refused(why.to_string()),
        _ => Answer::Refused(format!(
            "unreadable answer from the guard: `{}`",
            crate::log::cut(&crate::log::one_line(line), 100)
        )),
    }
}

impl Lease for GuardSocket {
    fn acquire(&mut self, instance: &str, timeout: Duration) -> Answer {
        let answer = self.ask(
            &format!("ACQUIRE {instance} {}", timeout.as_millis()),
            timeout,
        );
        if matches!(answer, Answer::Held(_)) {
            let mut granted = self.granted.lock().unwrap_or_else(PoisonError::into_inner);
            if !granted.iter().any(|name| name == instance) {
                granted.push(instance.to_string());
            }
        }
        answer
    }

    fn release(&mut self, instance: &str) -> Answer {
        self.ask(&format!("RELEASE {instance}"), Duration::from_secs(1))
    }

    /// Anything but `ANSWERS` (no guard, a garbled line) is a silent peer: the
    /// caller then promotes as it did before it could ask.
    fn peer_answers(&mut self) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        crate::guard::control::ask(&self.state_dir, "PEER", left.min(Duration::from_secs(1)))
            .is_ok_and(|line| line == "ANSWERS")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_guards_answers_read_as_they_are_meant() {
        assert!(matches!(answer_of("HELD 1900"), Answer::Held(1900)));
        assert!(matches!(answer_of("RELEASED"), Answer::Held(0)));
        assert!(
            matches!(answer_of("REFUSED the peer holds it"), Answer::Refused(why) if why == "the peer holds it")
        );
    }

    /// `HELD` with a garbled number read as a lease held for 0 ms: a grant.
    #[test]
    fn a_garbled_grant_is_a_refusal() {
        for line in [
            "HELD",
            "HELD soon",
            "HELD -5",
            "HELD 99999999999",
            "HELD\u{0}",
        ] {
            assert!(
                matches!(answer_of(line), Answer::Refused(why) if why.contains("unreadable answer")),
                "{line}"
            );
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config(2000))]

        #[test]
        fn only_a_well_formed_grant_is_held(
            line in prop_oneof![
                "(HELD|RELEASED|REFUSED)( [0-9]{0,12})?",
                any::<String>(),
                any::<String>().prop_map(|s| format!("HELD {s}")),
            ],
        ) {
            match answer_of(&line) {
                Answer::Held(left) => prop_assert!(
                    line.strip_prefix("HELD ").and_then(|n| n.parse().ok()) == Some(left)
                        || (["RELEASED", "RELEASED "].contains(&line.as_str()) && left == 0),
                    "{}", line
                ),
                Answer::Refused(why) => prop_assert!(!why.contains('\n') || line.contains('\n')),
                Answer::NotUsed => prop_assert!(false, "{}", line),
            }
        }
    }
}
