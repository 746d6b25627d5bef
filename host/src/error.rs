//! The one error type of the host: every failure carries the exit status it maps to.

use std::fmt;

/// An error that ends an `mmvip` run with a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Usage or configuration problem: exit status 2.
    Usage(String),
    /// The check failed or the hook could not do its job: exit status 1.
    Failed(String),
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Usage(message) | Error::Failed(message) => message,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One line for a wasmtime error: each cause once, joined with `: `, without the wasm
/// backtrace wasmtime attaches (its first line would otherwise hide the cause).
pub fn describe_wasmtime(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.contains("wasm backtrace:") {
            continue;
        }
        let first = text.lines().next().unwrap_or("").trim().to_string();
        if !first.is_empty() && !parts.iter().any(|p| p.contains(&first)) {
            parts.push(first);
        }
    }
    parts.join(": ")
}
