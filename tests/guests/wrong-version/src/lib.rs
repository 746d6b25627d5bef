//! A check built against mmvip:hooks@0.2.0, which this host does not speak.

wit_bindgen::generate!({ path: "wit", world: "check-plugin" });

use exports::mmvip::hooks::check::Guest;
use mmvip::hooks::types::HookError;

struct FromTheFuture;

impl Guest for FromTheFuture {
    fn run(_args: Vec<String>) -> Result<String, HookError> {
        Ok("I should never run".into())
    }
}

export!(FromTheFuture);
