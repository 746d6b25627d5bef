//! What the role plugins parse from outside: keepalived's words, the site's settings,
//! and GTID lists from the server. Never a panic; a clear error; GTID lists
//! round-trip through their printer.

use std::time::Duration;

use mmvip_sdk::Call;
use proptest::prelude::*;

use super::properties::config;
use crate::gtid::{self, Gtid};
use crate::options::{Options, redact};
use crate::parse_duration;

/// Text that looks like what the parsers expect, mixed with hostile pieces.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("--".to_string()),
        Just("-p".to_string()),
        Just("=".to_string()),
        Just("pass".to_string()),
        Just("instance".to_string()),
        Just("wait".to_string()),
        Just("kill".to_string()),
        Just("fence".to_string()),
        Just("é".to_string()),
        Just("\u{0}".to_string()),
        Just("\n".to_string()),
        Just(",".to_string()),
        Just("-".to_string()),
        Just("ms".to_string()),
        Just("s".to_string()),
        "[0-9]{1,25}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

fn gtid() -> impl Strategy<Value = Gtid> {
    (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(domain, server, seq)| Gtid {
        domain,
        server,
        seq,
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gtid_lists_parse_or_say_which_part_is_wrong(text in hostile_text()) {
        match gtid::parse(&text) {
            Ok(gtids) => {
                let again = gtid::parse(&gtid::render(&gtids)).unwrap();
                prop_assert_eq!(gtid::render(&again), gtid::render(&gtids));
            }
            Err(why) => prop_assert!(why.contains("is not a GTID"), "{}", why),
        }
    }

    #[test]
    fn gtid_lists_round_trip(gtids in prop::collection::vec(gtid(), 0..6)) {
        let mut sorted = gtids.clone();
        sorted.sort();
        prop_assert_eq!(gtid::parse(&gtid::render(&gtids)).unwrap(), sorted);
    }

    #[test]
    fn arguments_and_settings_never_panic_and_secrets_stay_hidden(
        args in prop::collection::vec(hostile_text(), 0..5),
        settings in prop_oneof![
            hostile_text(),
            hostile_text().prop_map(|t| format!(r#"{{"catchup_timeout": {:?}}}"#, t)),
            hostile_text().prop_map(|t| format!(r#"{{"spare_users": {:?}}}"#, t)),
            any::<i64>().prop_map(|n| format!(r#"{{"lease_timeout": {n}}}"#)),
        ],
    ) {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let call = Call::new(&words, &settings, Duration::from_secs(10));
        let (_, problems) = Options::parse(&call);
        for problem in &problems {
            prop_assert!(!problem.is_empty());
        }
        for arg in &args {
            let shown = redact(arg);
            if arg.to_ascii_lowercase().contains("pass") {
                prop_assert!(shown.ends_with('…'), "{}", shown);
            }
        }
    }

    #[test]
    fn durations_parse_or_name_the_text(text in hostile_text()) {
        if let Err(why) = parse_duration(&text) {
            prop_assert!(why.contains("is not a duration"), "{}", why);
        }
    }
}

/// `redact` cut a secret-looking argument at byte 2, inside a multi-byte character:
/// the plugin panicked (a trap) on `xépass`.
#[test]
fn a_secret_looking_argument_with_wide_characters_is_redacted_not_a_panic() {
    assert_eq!(redact("xépass"), "x…");
    assert_eq!(redact("-pé"), "-p…");
    let call = Call::new(&["xépass"], "{}", Duration::from_secs(10));
    let (_, problems) = Options::parse(&call);
    assert_eq!(problems, ["unknown argument `x…`"]);
}
