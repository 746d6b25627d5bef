//! keepalived track files (`vrrp_track_file`, `weight 0`): a non-zero value puts the
//! instances tracking the file in FAULT, and keepalived re-reads a file as soon as it
//! changes. Each is replaced atomically (temporary file, rename) so keepalived never
//! reads a half-written value.

use std::io::Write as _;
use std::path::Path;

use crate::log::{Level, Log};

/// Writes `1` (FAULT) or `0`; a failure is logged.
pub fn write(path: &Path, fault: bool, log: &Log) {
    let temp = path.with_extension("tmp");
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(if fault { b"1\n" } else { b"0\n" })?;
        std::fs::rename(&temp, path)
    })();
    if let Err(error) = result {
        log.write(
            Level::Error,
            &[(
                "msg",
                &format!("cannot write track file {}: {error}", path.display()),
            )],
        );
    }
}
