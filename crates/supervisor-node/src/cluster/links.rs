//! The pure part of keeping links to peers: names on the wire, redial backoff, and what
//! to do with each session when the membership read changes (no sockets, no actors, no
//! clock of its own, so every rule is a unit test).

use std::collections::BTreeMap;
use std::time::Duration;

use super::Peer;
use crate::backoff::{self, Delays};

/// Who a ractor_cluster session talks to, as read from its node name
/// `<node id>#<epoch>@<advertised address>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName {
    /// The store's node id.
    pub id: String,
    /// The incarnation.
    pub epoch: u64,
}

impl NodeName {
    /// The ractor node name of this incarnation (without the `@host` ractor appends).
    pub fn wire_name(&self) -> String {
        format!("{}#{}", self.id, self.epoch)
    }

    /// Reads `<id>#<epoch>@<host>` (or without `@<host>`); `None` for a name this
    /// cluster did not give (another ractor application on the port).
    pub fn parse(full: &str) -> Option<NodeName> {
        let name = full.rsplit_once('@').map_or(full, |(n, _)| n);
        let (id, epoch) = name.rsplit_once('#')?;
        if id.is_empty() {
            return None;
        }
        Some(NodeName {
            id: id.to_string(),
            epoch: epoch.parse().ok()?,
        })
    }
}

/// Delay before the next dial of a peer: starts at the base, doubles on each failure,
/// and stays at ten times the base.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    delays: Delays,
}

impl Backoff {
    /// A backoff starting at `base`.
    pub fn new(base: Duration) -> Self {
        Backoff {
            base,
            delays: backoff::exponential(base, base * 10),
        }
    }

    /// The delay after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.base * 10)
    }

    /// A success: the next failure starts from the base again.
    pub fn reset(&mut self) {
        *self = Backoff::new(self.base);
    }
}

/// What becomes of one authenticated session when the peers are read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It talks to a listed peer's current incarnation: the link to that peer.
    Serves(String),
    /// Keep it for now (a peer the store does not list yet, or a newer incarnation the
    /// store has not caught up with).
    Keep,
    /// Close it, for this reason.
    Drop(String),
}

/// How many membership reads may miss a connected node before its session is closed: a
/// node that just started may dial before this node's read of the store lists it.
pub const UNLISTED_READS_TOLERATED: u32 = 1;

/// Judges a session talking to `name`, given the listed `peers` (by node id) and how
/// many reads in a row have not listed it (including this one).
pub fn judge(name: &NodeName, peers: &BTreeMap<String, Peer>, unlisted_reads: u32) -> Verdict {
    match peers.get(&name.id) {
        Some(p) if p.epoch == name.epoch => Verdict::Serves(p.node_id.clone()),
        Some(p) if p.epoch > name.epoch => Verdict::Drop(format!(
            "node {} epoch {} was replaced by epoch {} (fenced or restarted)",
            name.id, name.epoch, p.epoch
        )),
        Some(_) => Verdict::Keep,
        None if unlisted_reads > UNLISTED_READS_TOLERATED => Verdict::Drop(format!(
            "node {} epoch {} is no longer a live member",
            name.id, name.epoch
        )),
        None => Verdict::Keep,
    }
}

/// Whether the listed peer `new` replaces the entry kept for `old` (a new incarnation or
/// a new address: forget the old link and its backoff, dial at once).
pub fn replaces(old: &Peer, new: &Peer) -> bool {
    old.epoch != new.epoch || old.address != new.address
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, epoch: u64) -> Peer {
        Peer {
            node_id: id.into(),
            epoch,
            address: format!("{id}:4697"),
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_ten_times_it() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![500, 1000, 2000, 4000, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
        let mut many = Backoff::new(Duration::from_secs(1));
        for _ in 0..100 {
            assert!(many.next_delay() <= Duration::from_secs(10));
        }
    }

    #[test]
    fn names_round_trip_and_foreign_names_are_rejected() {
        let n = NodeName {
            id: "eu#west-1".into(),
            epoch: 7,
        };
        assert_eq!(
            NodeName::parse(&format!("{}@10.0.0.5:4697", n.wire_name())),
            Some(n.clone())
        );
        assert_eq!(NodeName::parse(&n.wire_name()), Some(n));
        assert_eq!(NodeName::parse("node@localhost"), None);
        assert_eq!(NodeName::parse("a#x@h"), None);
        assert_eq!(NodeName::parse("#3@h"), None);
    }

    #[test]
    fn sessions_follow_the_store_not_the_socket() {
        let peers: BTreeMap<String, Peer> = [peer("b", 4), peer("c", 1)]
            .into_iter()
            .map(|p| (p.node_id.clone(), p))
            .collect();
        let name = |id: &str, epoch| NodeName {
            id: id.into(),
            epoch,
        };
        assert_eq!(judge(&name("b", 4), &peers, 0), Verdict::Serves("b".into()));
        // An older incarnation was fenced: its session goes even if TCP is still up.
        assert!(
            matches!(judge(&name("b", 3), &peers, 0), Verdict::Drop(why) if why.contains("replaced"))
        );
        // A newer one: the store will list it on a later read.
        assert_eq!(judge(&name("b", 5), &peers, 0), Verdict::Keep);
        // Not listed: tolerated for one read (it may have just joined), then dropped.
        assert_eq!(judge(&name("d", 1), &peers, 1), Verdict::Keep);
        assert!(
            matches!(judge(&name("d", 1), &peers, 2), Verdict::Drop(why) if why.contains("no longer"))
        );
    }

    #[test]
    fn a_new_epoch_or_address_replaces_a_peer() {
        let p = peer("b", 1);
        assert!(!replaces(&p, &p.clone()));
        assert!(replaces(&p, &peer("b", 2)));
        let mut moved = p.clone();
        moved.address = "10.0.0.9:4697".into();
        assert!(replaces(&p, &moved));
    }
}
