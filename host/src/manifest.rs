//! A plugin's declaration of itself: the `mmvip:manifest` custom section the SDK's
//! `export!` macro writes into the component. It holds TOML:
//!
//! ```toml
//! kind = "check"            # or "notify"
//! about = "passes while MariaDB answers over its socket"
//! grants = ["log", "sql-read"]
//! timeout_ms = 800
//! ```
//!
//! The host keeps no table of plugins: these are each plugin's defaults, and a site's
//! `[plugins.NAME]` table overrides grants and timeout.

use std::time::Duration;

use serde::Deserialize;

use crate::bindings;
use crate::caps::Grant;
use crate::error::{Error, Result};

pub const SECTION: &str = "mmvip:manifest";
/// Longer than any real manifest; a larger section is refused.
const MAX_BYTES: usize = 4 << 10;

/// How keepalived runs the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `vrrp_script`: its exit status is the check's result.
    Check,
    /// A `notify` or `notify_*` line: it acts on a VRRP transition.
    Notify,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Check => "check",
            Kind::Notify => "notify",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub kind: Kind,
    /// One line: what the plugin is for.
    pub about: String,
    pub grants: Vec<Grant>,
    pub timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    kind: String,
    about: String,
    grants: Vec<String>,
    timeout_ms: u64,
}

/// Reads what a component says of itself, without compiling it: first the contract
/// version its mmvip imports and exports name (a plugin built for another track is
/// refused by that, before anything else), then its manifest.
pub fn read(wasm: &[u8], plugin: &str) -> Result<Manifest> {
    let mut found: Option<&[u8]> = None;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| {
            Error::usage(format!("plugin `{plugin}` is not a valid component: {e}"))
        })?;
        match payload {
            wasmparser::Payload::ComponentImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(|e| invalid(plugin, &e))?;
                    check_version(plugin, import.name.name)?;
                }
            }
            wasmparser::Payload::ComponentExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| invalid(plugin, &e))?;
                    check_version(plugin, export.name.name)?;
                }
            }
            wasmparser::Payload::CustomSection(section) if section.name() == SECTION => {
                if found.is_some() {
                    return Err(Error::usage(format!(
                        "plugin `{plugin}` has more than one {SECTION} section"
                    )));
                }
                found = Some(section.data());
            }
            _ => {}
        }
    }
    let Some(data) = found else {
        return Err(Error::usage(format!(
            "plugin `{plugin}` has no {SECTION} section: build it with mmvip-sdk's export! macro"
        )));
    };
    parse(data, plugin)
}

fn invalid(plugin: &str, error: &wasmparser::BinaryReaderError) -> Error {
    Error::usage(format!(
        "plugin `{plugin}` is not a valid component: {error}"
    ))
}

/// Refuses an import or export of `mmvip:hooks` from another track than this host's.
pub fn check_version(plugin: &str, name: &str) -> Result<()> {
    let Some(rest) = name
        .strip_prefix(bindings::PACKAGE)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Ok(());
    };
    let found = rest.split_once('@').map_or("", |(_, version)| version);
    let track = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if found.is_empty() || track(found) != track(bindings::VERSION) {
        let found = if found.is_empty() {
            "an unversioned package"
        } else {
            found
        };
        return Err(Error::usage(format!(
            "plugin `{plugin}` was built against {}@{found}; this mmvip provides {}@{} ({}.x); rebuild it with a matching mmvip-sdk",
            bindings::PACKAGE,
            bindings::PACKAGE,
            bindings::VERSION,
            track(bindings::VERSION)
        )));
    }
    Ok(())
}

fn parse(data: &[u8], plugin: &str) -> Result<Manifest> {
    let bad = |why: &str| Error::usage(format!("plugin `{plugin}`: bad {SECTION}: {why}"));
    if data.len() > MAX_BYTES {
        return Err(bad("larger than 4 KiB"));
    }
    let text = std::str::from_utf8(data).map_err(|_| bad("not UTF-8"))?;
    let raw: Raw = toml::from_str(text).map_err(|e| bad(e.message().trim()))?;
    let kind = match raw.kind.as_str() {
        "check" => Kind::Check,
        "notify" => Kind::Notify,
        other => return Err(bad(&format!("kind `{other}` is neither check nor notify"))),
    };
    let mut grants = Vec::new();
    for name in &raw.grants {
        let grant = Grant::from_name(name).ok_or_else(|| {
            bad(&format!(
                "unknown grant `{name}` (built for a newer mmvip?); this mmvip knows {}",
                Grant::known()
            ))
        })?;
        grants.push(grant);
    }
    grants.sort();
    grants.dedup();
    if raw.timeout_ms == 0 {
        return Err(bad("timeout_ms must be above 0"));
    }
    Ok(Manifest {
        kind,
        about: crate::log::one_line(&raw.about).into_owned(),
        grants,
        timeout: Duration::from_millis(raw.timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_parses_into_defaults() {
        let manifest = parse(
            b"kind = \"notify\"\nabout = \"x\"\ngrants = [\"state\", \"log\"]\ntimeout_ms = 1500\n",
            "p",
        )
        .unwrap();
        assert_eq!(manifest.kind, Kind::Notify);
        let names: Vec<_> = manifest.grants.iter().map(|g| g.name()).collect();
        assert_eq!(names, ["log", "state"]);
        assert_eq!(manifest.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let err = parse(
            b"kind = \"check\"\nabout = \"\"\ngrants = [\"root\"]\ntimeout_ms = 1\n",
            "p",
        )
        .unwrap_err();
        assert!(err.message().contains("unknown grant `root`"), "{err}");
        let err = parse(
            b"kind = \"daemon\"\nabout = \"\"\ngrants = []\ntimeout_ms = 1\n",
            "p",
        )
        .unwrap_err();
        assert!(err.message().contains("neither check nor notify"), "{err}");
        let err = parse(b"kind = \"check\"\n", "p").unwrap_err();
        assert!(err.message().contains("missing field"), "{err}");
        assert!(
            read(b"\0asm\x0d\0\x01\0", "p")
                .unwrap_err()
                .message()
                .contains("no mmvip:manifest")
        );
    }

    #[test]
    fn another_contract_track_is_refused_by_name() {
        assert!(check_version("p", "mmvip:hooks/log@0.2.7").is_ok());
        assert!(check_version("p", "wasi:io/streams@0.2.0").is_ok());
        let err = check_version("p", "mmvip:hooks/check@0.1.0").unwrap_err();
        assert!(
            err.message().contains("built against mmvip:hooks@0.1.0"),
            "{err}"
        );
        assert!(check_version("p", "mmvip:hooks/log").is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn manifest_text() -> impl Strategy<Value = Vec<u8>> {
            let line = prop_oneof![
                Just("kind = \"check\"".to_string()),
                Just("kind = \"notify\"".to_string()),
                any::<String>().prop_map(|a| format!("about = {a:?}")),
                Just("grants = [\"log\", \"state\"]".to_string()),
                any::<String>().prop_map(|g| format!("grants = [{g:?}]")),
                any::<i64>().prop_map(|n| format!("timeout_ms = {n}")),
                any::<String>(),
            ];
            prop_oneof![
                prop::collection::vec(line, 0..6).prop_map(|lines| lines.join("\n").into_bytes()),
                prop::collection::vec(any::<u8>(), 0..5000),
            ]
        }

        proptest! {
            #![proptest_config(crate::proptest_config(1000))]

            #[test]
            fn any_manifest_parses_or_names_the_plugin(data in manifest_text()) {
                match parse(&data, "p") {
                    Ok(manifest) => prop_assert!(!manifest.timeout.is_zero()),
                    Err(error) => prop_assert!(error.message().starts_with("plugin `p`"), "{}", error),
                }
            }
        }

        proptest! {
            #![proptest_config(crate::proptest_config(200))]

            #[test]
            fn a_damaged_component_is_refused_with_a_reason(
                flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let mut wasm = std::fs::read(mmvip_artifacts::path("guest-panic")).unwrap();
                for (at, byte) in flips {
                    let at = at.index(wasm.len());
                    wasm[at] = byte;
                }
                if truncate {
                    wasm.truncate(cut.index(wasm.len()));
                }
                if let Err(error) = read(&wasm, "p") {
                    prop_assert!(error.message().starts_with("plugin `p`"), "{}", error);
                }
            }
        }
    }
}
