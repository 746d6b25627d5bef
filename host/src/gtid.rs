//! GTID lists as MariaDB writes them (`domain-server-seq`, comma-separated), for the
//! host's own checks. The role plugins parse them in their own crate: the host does
//! not depend on a plugin.

/// One GTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// Parses `0-1-100,1-2-50`; an empty text is an empty list.
pub fn parse(text: &str) -> Result<Vec<Gtid>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let bad = || format!("`{part}` is not a GTID (domain-server-sequence)");
            let mut numbers = part.splitn(3, '-');
            let mut next = || numbers.next().ok_or_else(bad);
            let domain = next()?.parse().map_err(|_| bad())?;
            let server = next()?.parse().map_err(|_| bad())?;
            let seq = next()?.parse().map_err(|_| bad())?;
            Ok(Gtid {
                domain,
                server,
                seq,
            })
        })
        .collect()
}

/// The GTID of `domain` in a position (which has at most one per domain).
pub fn in_domain(position: &[Gtid], domain: u32) -> Option<Gtid> {
    position.iter().copied().find(|g| g.domain == domain)
}

/// What binlog state `ours` has in `domain` that binlog state `theirs` lacks: per
/// server, our last GTID from it where theirs is older or missing (`1-2-6`, or
/// `1-2-6 (after 1-2-3)`). A binlog state keeps only the last GTID of each server
/// in a domain, and the servers share a domain's sequence numbers, so which earlier
/// ones are missing too cannot be told from the states.
pub fn missing_from(ours: &[Gtid], theirs: &[Gtid], domain: u32) -> Vec<String> {
    ours.iter()
        .filter(|ours| ours.domain == domain)
        .filter_map(|ours| {
            let last = theirs
                .iter()
                .find(|t| t.domain == domain && t.server == ours.server);
            match last {
                None => Some(ours.to_string()),
                Some(last) if last.seq < ours.seq => Some(format!("{ours} (after {last})")),
                Some(_) => None,
            }
        })
        .collect()
}

/// The replica position to ask the peer from when this node's crash recovery dropped
/// its own last transactions after they had come back around the ring.
/// `init_rpl_role = SLAVE` truncates a prepared transaction from the binlog; but if
/// the peer had applied it and sent it back, `gtid_slave_pos` already counts it as
/// seen, and the replica would ask from after it, so it never came back and the
/// nodes diverged (a lab reboot). `slave_pos` ahead of `binlog_state` for this
/// server in its own domain is that trace: the position is rewound to the binlog's.
/// None when nothing needs rewinding, or the binlog has nothing of this server in
/// the domain (a reset binlog: fetching the whole domain would apply it twice).
pub fn rewound_slave_pos(
    slave_pos: &[Gtid],
    binlog_state: &[Gtid],
    domain: u32,
    server: u32,
) -> Option<Vec<Gtid>> {
    let binlogged = binlog_state
        .iter()
        .copied()
        .find(|g| g.domain == domain && g.server == server)?;
    let seen = in_domain(slave_pos, domain)?;
    if seen.server != server || seen.seq <= binlogged.seq {
        return None;
    }
    Some(
        slave_pos
            .iter()
            .map(|g| if g.domain == domain { binlogged } else { *g })
            .collect(),
    )
}

/// A position as MariaDB writes it.
pub fn render(position: &[Gtid]) -> String {
    position
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slave_pos_past_the_own_binlog_is_rewound_to_it() {
        let rewound = |slave, binlog| {
            rewound_slave_pos(&parse(slave).unwrap(), &parse(binlog).unwrap(), 1, 1)
                .map(|position| render(&position))
        };
        // Recovery dropped 1-1-5, which had come back from the peer.
        assert_eq!(
            rewound("1-1-5,2-2-9", "1-1-4,2-2-9").as_deref(),
            Some("1-1-4,2-2-9")
        );
        // Nothing dropped; or the own domain not yet seen from the peer.
        assert_eq!(rewound("1-1-4,2-2-9", "1-1-4,2-2-9"), None);
        assert_eq!(rewound("1-1-3,2-2-9", "1-1-4,2-2-9"), None);
        assert_eq!(rewound("2-2-9", "1-1-4,2-2-9"), None);
        // The peer's server wrote last in this domain (a failover): not a drop.
        assert_eq!(rewound("1-2-6,2-2-9", "1-1-4,2-2-9"), None);
        // A reset binlog: nothing to rewind to.
        assert_eq!(rewound("1-1-5,2-2-9", "2-2-9"), None);
    }

    #[test]
    fn lists_parse() {
        let gtids = parse("2-2-7, 1-1-10").unwrap();
        assert_eq!(gtids[1].to_string(), "1-1-10");
        assert_eq!(in_domain(&gtids, 2).unwrap().seq, 7);
        assert!(in_domain(&gtids, 3).is_none());
        assert!(parse("").unwrap().is_empty());
        assert!(parse("1-1").is_err());
        assert!(parse("a-1-1").is_err());
    }

    #[test]
    fn missing_transactions_are_per_server_in_one_domain() {
        let ours = parse("1-1-12,1-2-3,2-2-50").unwrap();
        let theirs = parse("1-1-10,2-2-40").unwrap();
        assert_eq!(
            missing_from(&ours, &theirs, 1),
            ["1-1-12 (after 1-1-10)", "1-2-3"]
        );
        assert!(missing_from(&ours, &theirs, 3).is_empty());
        assert!(missing_from(&theirs, &theirs, 1).is_empty());
    }
}
