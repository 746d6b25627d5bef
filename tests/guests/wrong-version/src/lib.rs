//! A check built for mmvip:hooks@0.1.0, as every plugin before mmvip 0.2 was.

wit_bindgen::generate!({ path: "wit", world: "check-plugin" });

use exports::mmvip::hooks::check::Guest;
use mmvip::hooks::types::{HookError, Setting};

struct FromThePast;

impl Guest for FromThePast {
    fn run(_args: Vec<String>, _settings: Vec<Setting>) -> Result<String, HookError> {
        Ok("I should never run".into())
    }
}

export!(FromThePast);
