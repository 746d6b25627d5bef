//! A plugin built against mmvip:hooks@0.2.9, whose `log` has a `flush` this host lacks.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::mmvip::hooks::hook::Guest;
use mmvip::hooks::log;
use mmvip::hooks::types::{Call, HookError};

// What the SDK's export! macro would write.
#[used]
#[unsafe(link_section = "mmvip:manifest")]
static MANIFEST: [u8; 81] =
    *b"kind = \"check\"\nabout = \"from a newer release\"\ngrants = [\"log\"]\ntimeout_ms = 1000\n";

struct FromANewerRelease;

impl Guest for FromANewerRelease {
    fn run(_call: Call) -> Result<String, HookError> {
        log::write(log::Level::Info, "about to flush");
        log::flush();
        Ok("I should never run".into())
    }
}

export!(FromANewerRelease);
