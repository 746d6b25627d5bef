//! Grant `peer`: read-only questions to the peer node's MariaDB over TCP, as the
//! account in the site's `[peer]`, trying each of its addresses in order until one
//! answers; the one that answered is asked first next time.

use std::time::Instant;

use wasmtime::component::{HasData, Linker};

use super::Capability;
use super::sql::{SqlError, refused};
use crate::bindings::peer as wit;
use crate::config::PeerConfig;
use crate::log::{Level, Log};
use crate::mariadb::{Endpoint, Session};
use crate::runtime::HookState;

pub use wit::PeerStatus;

pub const CAPABILITY: Capability = Capability {
    grant: "peer",
    link,
};

/// The back-end: what the peer says of itself.
pub trait Peer: Send {
    fn status(&mut self) -> Result<PeerStatus, SqlError>;
}

/// The peer of the site's `[peer]`; without one, every question is refused with the
/// reason.
pub fn backend(
    config: Option<&PeerConfig>,
    password: Option<String>,
    deadline: Instant,
    log: &Log,
) -> Box<dyn Peer> {
    let Some(config) = config else {
        return Box::new(NotConfigured);
    };
    let sessions = Endpoint::peers(config, password)
        .into_iter()
        .map(|endpoint| Session::new(endpoint, config.timeout, deadline, log.clone()))
        .collect();
    Box::new(PeerServers {
        sessions,
        preferred: 0,
    })
}

fn link(linker: &mut Linker<HookState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HookState, Linked>(linker, |state| Cap(&mut *state.caps.peer))
}

struct Linked;

impl HasData for Linked {
    type Data<'a> = Cap<'a>;
}

struct Cap<'a>(&'a mut dyn Peer);

impl wit::Host for Cap<'_> {
    fn status(&mut self) -> wasmtime::Result<Result<PeerStatus, SqlError>> {
        Ok(self.0.status())
    }
}

struct NotConfigured;

impl Peer for NotConfigured {
    fn status(&mut self) -> Result<PeerStatus, SqlError> {
        Err(refused(
            "no [peer] in the config: the peer's addresses and account are not known",
        ))
    }
}

const STATUS: &str = "SELECT @@GLOBAL.read_only, @@GLOBAL.server_id, @@GLOBAL.gtid_domain_id, @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_binlog_state";

struct PeerServers {
    sessions: Vec<Session>,
    /// The address that answered last.
    preferred: usize,
}

impl Peer for PeerServers {
    fn status(&mut self) -> Result<PeerStatus, SqlError> {
        let count = self.sessions.len();
        let mut failures = Vec::new();
        let mut connected = false;
        for step in 0..count {
            let index = (self.preferred + step) % count;
            let session = &mut self.sessions[index];
            let address = session.target().to_string();
            match session.rows(Level::Debug, STATUS) {
                Ok(rows) => {
                    self.preferred = index;
                    return parse_status(address, rows);
                }
                // An answer with an error is an answer: the account or server is wrong.
                Err(error @ SqlError::Server(_)) => return Err(error),
                Err(error) => {
                    connected |= matches!(error, SqlError::Timeout(_));
                    failures.push(format!("{address}: {}", super::sql::describe(&error)));
                }
            }
        }
        let why = format!("no answer from the peer ({})", failures.join("; "));
        // A server that took the connection and did not answer in time is there,
        // only slow: the caller may not take it for gone.
        Err(if connected {
            SqlError::Timeout(why)
        } else {
            SqlError::Unreachable(why)
        })
    }
}

fn parse_status(address: String, rows: Vec<Vec<Option<String>>>) -> Result<PeerStatus, SqlError> {
    let row = rows.into_iter().next().unwrap_or_default();
    let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let number = |i: usize| {
        cell(i).parse::<u32>().map_err(|_| {
            refused(format!(
                "the peer at {address} answered `{}` for a number",
                cell(i)
            ))
        })
    };
    Ok(PeerStatus {
        read_only: cell(0) == "1",
        server_id: number(1)?,
        gtid_domain_id: number(2)?,
        gtid_binlog_pos: cell(3),
        gtid_binlog_state: cell(4),
        address,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cell() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("1".to_string())),
            Just(Some("0-1-10,1-2-5".to_string())),
            "[0-9]{1,12}".prop_map(Some),
            any::<String>().prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config(2000))]

        #[test]
        fn any_answer_of_the_peer_is_a_status_or_a_refusal_naming_it(
            rows in prop::collection::vec(prop::collection::vec(cell(), 0..7), 0..3),
        ) {
            match parse_status("10.0.0.2:3306".into(), rows) {
                Ok(status) => prop_assert_eq!(status.address, "10.0.0.2:3306"),
                Err(SqlError::Refused(why)) => prop_assert!(why.contains("the peer at 10.0.0.2:3306"), "{}", why),
                Err(other) => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
