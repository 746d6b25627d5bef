//! A plugin built against mmvip:hooks@0.2.0, before `sql-admin` gained
//! `stop-replica-io`: a later 0.2.x host must still run it.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::mmvip::hooks::hook::Guest;
use mmvip::hooks::types::{Call, HookError};
use mmvip::hooks::{log, sql_admin};

// What the SDK's export! macro would write.
#[used]
#[unsafe(link_section = "mmvip:manifest")]
static MANIFEST: [u8; 95] = *b"kind = \"check\"\nabout = \"from an older release\"\ngrants = [\"log\", \"sql-admin\"]\ntimeout_ms = 1000\n";

struct FromAnOlderRelease;

impl Guest for FromAnOlderRelease {
    fn run(_call: Call) -> Result<String, HookError> {
        // No server in the test: the call is made and answered with an error.
        let answered = sql_admin::start_replica_io("").is_err();
        log::write(
            log::Level::Info,
            &format!("built for 0.2.0, running; start-replica-io answered: {answered}"),
        );
        Ok("ran".into())
    }
}

export!(FromAnOlderRelease);
