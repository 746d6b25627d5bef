//! The workspace's components (plugins and test guests), built for wasm32-wasip2 by
//! this crate's build script whenever their sources change.

use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The built file of component crate `name` (such as `mmvip-plugin-health`).
///
/// # Panics
/// When no component crate has that name: a test asking for one is wrong.
pub fn path(name: &str) -> PathBuf {
    COMPONENTS
        .iter()
        .find(|(package, _)| *package == name)
        .map(|(_, file)| PathBuf::from(file))
        .unwrap_or_else(|| panic!("no component crate `{name}` in the workspace"))
}
