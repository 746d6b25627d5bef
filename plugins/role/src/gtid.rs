//! GTID positions and binlog states as MariaDB writes them: `domain-server-seq`,
//! comma-separated.

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
            let mut numbers = part.splitn(3, '-');
            let bad = || format!("`{part}` is not a GTID (domain-server-sequence)");
            let domain = numbers
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?;
            let server = numbers
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?;
            let seq = numbers
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?;
            Ok(Gtid {
                domain,
                server,
                seq,
            })
        })
        .collect()
}

/// A position as `MASTER_GTID_WAIT` takes it.
pub fn render(gtids: &[Gtid]) -> String {
    let mut sorted = gtids.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(Gtid::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One server's sequence numbers that one binlog state has and another lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    pub domain: u32,
    pub server: u32,
    pub first: u64,
    pub last: u64,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Missing {
            domain,
            server,
            first,
            last,
        } = self;
        if first == last {
            write!(f, "{domain}-{server}-{last}")
        } else {
            write!(f, "{domain}-{server}-{first}..{last}")
        }
    }
}

/// What this node's binlog state has in `domain` that the peer's does not: per
/// server, the range of sequence numbers past the peer's last one.
pub fn missing(ours: &[Gtid], peers: &[Gtid], domain: u32) -> Vec<Missing> {
    ours.iter()
        .filter(|ours| ours.domain == domain)
        .filter_map(|ours| {
            let theirs = peers
                .iter()
                .find(|p| p.domain == domain && p.server == ours.server)
                .map_or(0, |p| p.seq);
            (ours.seq > theirs).then_some(Missing {
                domain,
                server: ours.server,
                first: theirs + 1,
                last: ours.seq,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_render_sorted() {
        let gtids = parse("2-2-7, 1-1-10").unwrap();
        assert_eq!(render(&gtids), "1-1-10,2-2-7");
        assert!(parse("").unwrap().is_empty());
        assert!(parse("1-1").is_err());
        assert!(parse("a-1-1").is_err());
    }

    #[test]
    fn missing_transactions_are_what_the_peer_lacks_in_a_domain() {
        let ours = parse("1-1-12,1-2-3,2-2-50").unwrap();
        let peers = parse("1-1-10,2-2-40").unwrap();
        let shown = |m: Vec<Missing>| m.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(shown(missing(&ours, &peers, 1)), ["1-1-11..12", "1-2-1..3"]);
        assert_eq!(
            shown(missing(&parse("1-1-11").unwrap(), &peers, 1)),
            ["1-1-11"]
        );
        assert!(missing(&ours, &peers, 3).is_empty());
        assert!(missing(&peers, &peers, 1).is_empty());
    }
}
