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

#[cfg(test)]
mod tests {
    use super::*;

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
