//! The write lease: who may write for an `rw` instance.
//!
//! Voters are this node, its peer and, optionally, a witness. A node holds an
//! instance's lease while it has the votes of a majority: itself and one other (with a
//! witness), or itself and its peer (without one). Each vote is counted on the clock
//! of whoever counts it:
//! - the holder counts the lease from the time it *sent* its requests, on its
//!   monotonic clock, for `lease`;
//! - a guard that grants counts from the time it *received* the request, on its
//!   monotonic clock, for `lease + margin`;
//! - the witness (a MariaDB server) counts `lease + margin` from its own `NOW(6)`.
//!
//! So a grantor always waits longer than the holder believes it holds: node clocks
//! never need to agree, only their rates may drift (within the margin), and the fence
//! must complete within the margin.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The votes this node has given, by instance: to itself or to its peer.
#[derive(Default)]
pub struct Ballots {
    given: HashMap<String, Given>,
}

#[derive(Debug, Clone)]
struct Given {
    holder: String,
    until: Instant,
}

/// A vote refused: who holds it, for how much longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub holder: String,
    pub left: Duration,
}

impl Ballots {
    /// Votes for `candidate` unless another holds this node's vote; `hold` is how long
    /// the vote stands (counted from now, the receipt).
    pub fn vote(
        &mut self,
        instance: &str,
        candidate: &str,
        now: Instant,
        hold: Duration,
    ) -> Result<(), Refusal> {
        if let Some(given) = self.given.get(instance)
            && given.holder != candidate
            && given.until > now
        {
            return Err(Refusal {
                holder: given.holder.clone(),
                left: given.until - now,
            });
        }
        self.given.insert(
            instance.to_string(),
            Given {
                holder: candidate.to_string(),
                until: now + hold,
            },
        );
        Ok(())
    }

    /// Withdraws `holder`'s vote (a release); another's stays.
    pub fn release(&mut self, instance: &str, holder: &str) {
        if self.given.get(instance).is_some_and(|g| g.holder == holder) {
            self.given.remove(instance);
        }
    }

    /// Who holds this node's vote for `instance`, and for how long.
    pub fn holder(&self, instance: &str, now: Instant) -> Option<(String, Duration)> {
        self.given
            .get(instance)
            .filter(|g| g.until > now)
            .map(|g| (g.holder.clone(), g.until - now))
    }
}

/// One voter's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Granted,
    Refused(Refusal),
    /// No answer (or no valid one) on any of its addresses.
    Silent(String),
}

/// What a round of votes gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Held until then (the send time plus the lease).
    Held(Instant),
    /// Another node holds a majority, or the votes are split.
    Lost(String),
}

/// The rules of a round: how many votes make a majority, and what a node without a
/// witness may do when its peer is silent.
pub struct Rules {
    pub lease: Duration,
    pub has_witness: bool,
    /// Without a witness, keep or take the lease on this node's own vote when the
    /// peer answers on no address and this node is not cut off from everything.
    pub alone_when_peer_silent: bool,
}

/// Counts a round of votes that was sent at `sent`.
pub fn count(
    rules: &Rules,
    sent: Instant,
    own: &Result<(), Refusal>,
    peer: &Answer,
    witness: Option<&Answer>,
    reaches_probes: bool,
) -> Outcome {
    let granted = |answer: &Answer| *answer == Answer::Granted;
    let own_vote = own.is_ok();
    let others = usize::from(granted(peer)) + usize::from(witness.is_some_and(granted));
    if own_vote && others >= 1 {
        return Outcome::Held(sent + rules.lease);
    }
    if own_vote
        && !rules.has_witness
        && rules.alone_when_peer_silent
        && matches!(peer, Answer::Silent(_))
        && reaches_probes
    {
        return Outcome::Held(sent + rules.lease);
    }
    let why = match (own, peer, witness) {
        (Err(refusal), _, _) => format!(
            "this node's own vote is with {} for {} ms more",
            refusal.holder,
            refusal.left.as_millis()
        ),
        (_, Answer::Refused(r), _) => format!(
            "the peer's vote is with {} for {} ms more",
            r.holder,
            r.left.as_millis()
        ),
        (_, _, Some(Answer::Refused(r))) => format!(
            "the witness's vote is with {} for {} ms more",
            r.holder,
            r.left.as_millis()
        ),
        (_, Answer::Silent(why), Some(Answer::Silent(witness))) => {
            format!("neither the peer ({why}) nor the witness ({witness}) answered")
        }
        (_, Answer::Silent(why), None) if rules.alone_when_peer_silent => {
            format!("the peer is silent ({why}) and this node reaches none of its probes (cut off)")
        }
        (_, Answer::Silent(why), None) => format!(
            "the peer is silent ({why}) and without a witness this node does not write alone (without_peer = read-only)"
        ),
        _ => "no majority".to_string(),
    };
    Outcome::Lost(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(2);
    const HOLD: Duration = Duration::from_secs(3);

    fn rules(has_witness: bool, alone: bool) -> Rules {
        Rules {
            lease: LEASE,
            has_witness,
            alone_when_peer_silent: alone,
        }
    }

    #[test]
    fn a_vote_goes_to_one_candidate_until_it_lapses_or_is_released() {
        let mut ballots = Ballots::default();
        let t0 = Instant::now();
        assert!(ballots.vote("VI_1", "node1", t0, HOLD).is_ok());
        // Renewal by the same candidate.
        assert!(ballots.vote("VI_1", "node1", t0 + LEASE, HOLD).is_ok());
        let refusal = ballots.vote("VI_1", "node2", t0 + LEASE, HOLD).unwrap_err();
        assert_eq!(refusal.holder, "node1");
        assert_eq!(refusal.left, HOLD);
        // Other instances are separate.
        assert!(ballots.vote("VI_2", "node2", t0, HOLD).is_ok());
        // Lapsed: counted from the last receipt plus the hold.
        assert!(
            ballots
                .vote("VI_1", "node2", t0 + LEASE + HOLD, HOLD)
                .is_ok()
        );
        // A release by someone else does nothing; by the holder, frees the vote.
        ballots.release("VI_1", "node1");
        assert_eq!(
            ballots.holder("VI_1", t0 + LEASE + HOLD).unwrap().0,
            "node2"
        );
        ballots.release("VI_1", "node2");
        assert!(ballots.holder("VI_1", t0).is_none());
    }

    #[test]
    fn a_majority_holds_from_the_send_time() {
        let sent = Instant::now();
        let held = count(
            &rules(false, true),
            sent,
            &Ok(()),
            &Answer::Granted,
            None,
            true,
        );
        assert_eq!(held, Outcome::Held(sent + LEASE));
        let with_witness = count(
            &rules(true, false),
            sent,
            &Ok(()),
            &Answer::Silent("timeout".into()),
            Some(&Answer::Granted),
            false,
        );
        assert_eq!(with_witness, Outcome::Held(sent + LEASE));
    }

    #[test]
    fn no_majority_no_lease_and_the_reason_is_given() {
        let sent = Instant::now();
        let refusal = Refusal {
            holder: "node1".into(),
            left: Duration::from_millis(2500),
        };
        let lost = count(
            &rules(true, false),
            sent,
            &Ok(()),
            &Answer::Refused(refusal.clone()),
            Some(&Answer::Refused(refusal.clone())),
            true,
        );
        assert!(
            matches!(lost, Outcome::Lost(ref why) if why.contains("node1")),
            "{lost:?}"
        );
        // Its own vote given away: nothing else counts.
        let lost = count(
            &rules(true, false),
            sent,
            &Err(refusal),
            &Answer::Granted,
            Some(&Answer::Granted),
            true,
        );
        assert!(matches!(lost, Outcome::Lost(_)));
    }

    #[test]
    fn without_a_witness_a_silent_peer_is_the_sites_choice_and_never_for_a_cut_off_node() {
        let sent = Instant::now();
        let silent = Answer::Silent("no route".into());
        assert_eq!(
            count(&rules(false, true), sent, &Ok(()), &silent, None, true),
            Outcome::Held(sent + LEASE)
        );
        // Cut off from everything: no lease, whatever the choice.
        assert!(matches!(
            count(&rules(false, true), sent, &Ok(()), &silent, None, false),
            Outcome::Lost(ref why) if why.contains("cut off")
        ));
        // without_peer = read-only.
        assert!(matches!(
            count(&rules(false, false), sent, &Ok(()), &silent, None, true),
            Outcome::Lost(_)
        ));
        // With a witness, a silent peer needs the witness's vote.
        assert!(matches!(
            count(
                &rules(true, true),
                sent,
                &Ok(()),
                &silent,
                Some(&Answer::Silent("down".into())),
                true
            ),
            Outcome::Lost(_)
        ));
    }
}
