//! A check built against mmvip:hooks@0.1.9, whose `log` has a `flush` this host lacks.

wit_bindgen::generate!({ path: "wit", world: "check-plugin" });

use exports::mmvip::hooks::check::Guest;
use mmvip::hooks::log;
use mmvip::hooks::types::{HookError, Setting};

struct FromANewerRelease;

impl Guest for FromANewerRelease {
    fn run(_args: Vec<String>, _settings: Vec<Setting>) -> Result<String, HookError> {
        log::write(log::Level::Info, "about to flush");
        log::flush();
        Ok("I should never run".into())
    }
}

export!(FromANewerRelease);
