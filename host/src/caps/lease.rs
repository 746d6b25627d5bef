//! Grant `lease`: asks this node's guard for an instance's write lease, over the
//! guard's socket in the state directory.

use std::path::PathBuf;
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
}

/// The guard of a site with `[guard]`; without one, the lease is not used.
pub fn backend(state_dir: PathBuf, guarded: bool, deadline: Instant) -> Box<dyn Lease> {
    if guarded {
        Box::new(GuardSocket {
            state_dir,
            deadline,
        })
    } else {
        Box::new(NotUsed)
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
}

struct NotUsed;

impl Lease for NotUsed {
    fn acquire(&mut self, _: &str, _: Duration) -> Answer {
        Answer::NotUsed
    }

    fn release(&mut self, _: &str) -> Answer {
        Answer::NotUsed
    }
}

struct GuardSocket {
    state_dir: PathBuf,
    deadline: Instant,
}

impl GuardSocket {
    fn ask(&self, request: &str, wait: Duration) -> Answer {
        // The answer may take as long as the wait asked for, within the hook's bound.
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timeout = (wait + Duration::from_millis(500)).min(left);
        match crate::guard::control::ask(&self.state_dir, request, timeout) {
            Ok(line) => match line.split_once(' ').unwrap_or((&line, "")) {
                ("HELD", left) => Answer::Held(left.parse().unwrap_or(0)),
                ("RELEASED", _) => Answer::Held(0),
                (_, why) => Answer::Refused(why.to_string()),
            },
            Err(why) => Answer::Refused(why),
        }
    }
}

impl Lease for GuardSocket {
    fn acquire(&mut self, instance: &str, timeout: Duration) -> Answer {
        self.ask(
            &format!("ACQUIRE {instance} {}", timeout.as_millis()),
            timeout,
        )
    }

    fn release(&mut self, instance: &str) -> Answer {
        self.ask(&format!("RELEASE {instance}"), Duration::from_secs(1))
    }
}
