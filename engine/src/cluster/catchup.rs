//! Which buckets a node must copy from another node after the bucket map
//! changed, and from where. Pure: the copying is `runtime::catchup`.
//!
//! Per-delivery replication gives a bucket's replica every message
//! delivered while it is replica, nothing from before. So a node that
//! gains a bucket (as its new replica, or as its new primary through a
//! drain or a rebalance that moves primaries) copies what the bucket
//! already holds from the node that held it, in the background. A node
//! that starts has no earlier map to compare with: it copies every bucket
//! it is replica for (it missed what was delivered while it was down, and
//! a killed primary that comes back as replica catches up this way).
//!
//! A bucket none of whose earlier holders is live is still planned: the
//! copy waits for one of them to come back (`runtime::catchup`). That is
//! the second failure during a copy: the new replica, promoted before its
//! copy was done, lacks acknowledged mail that only the dead nodes' disks
//! hold.
use super::Placement;

/// A bucket to copy and the node to copy it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub bucket: u32,
    pub from: String,
    /// The other nodes that held the bucket, in the order to try them if
    /// `from` is gone by the time of the copy (live or not when planned).
    pub also: Vec<String>,
}

/// The buckets `me` gained between `before` (None: the node just started)
/// and `now`, among those `mine` selects (a shard's own), each with the
/// node to copy from: the bucket's previous primary while it is live (it
/// holds everything), else its previous replica (every acknowledged
/// message), else its current primary. When none of them is live the
/// first is named all the same (the copy waits for one to come back); a
/// bucket no other node ever held is left out.
pub fn pulls(
    before: Option<&Placement>,
    now: &Placement,
    me: &str,
    live: impl Fn(&str) -> bool,
    mine: impl Fn(u32) -> bool,
) -> Vec<Pull> {
    let holds = |p: &Placement, b: u32| p.primary_of(b) == Some(me) || p.replica_of(b) == Some(me);
    (0..now.buckets)
        .filter(|&b| mine(b) && holds(now, b))
        .filter_map(|b| {
            let candidates = match before {
                Some(p) if holds(p, b) => return None,
                Some(p) => vec![p.primary_of(b), p.replica_of(b), now.primary_of(b)],
                // Just started: the replica copies what it missed; a node
                // that is still primary holds what it acknowledged.
                None if now.replica_of(b) == Some(me) => vec![now.primary_of(b)],
                None => return None,
            };
            let mut others: Vec<String> = Vec::new();
            for c in candidates.into_iter().flatten() {
                if c != me && !others.iter().any(|o| o == c) {
                    others.push(c.to_string());
                }
            }
            if others.is_empty() {
                return None;
            }
            let at = others.iter().position(|o| live(o)).unwrap_or(0);
            let from = others.remove(at);
            Some(Pull {
                bucket: b,
                from,
                also: others,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(nodes: &[&str], primary: &[u16], replica: &[Option<u16>]) -> Placement {
        Placement {
            buckets: primary.len() as u32,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            primary: primary.to_vec(),
            replica: replica.to_vec(),
        }
    }

    fn all(_: u32) -> bool {
        true
    }

    #[test]
    fn a_new_replica_copies_from_the_primary() {
        // b0: a -> b; b1: b -> c. c dies: b1 goes to b (promoted), replica a.
        let before = map(&["a", "b", "c"], &[0, 1], &[Some(1), Some(2)]);
        let now = map(&["a", "b"], &[0, 1], &[Some(1), Some(0)]);
        let live = |id: &str| id != "c";
        assert_eq!(
            pulls(Some(&before), &now, "a", live, all),
            vec![Pull {
                bucket: 1,
                from: "b".into(),
                // c held it too (gone now: tried last).
                also: vec!["c".into()],
            }]
        );
        // b held both buckets before: nothing to copy.
        assert!(pulls(Some(&before), &now, "b", live, all).is_empty());
        // The shard filter.
        assert!(pulls(Some(&before), &now, "a", live, |b| b == 0).is_empty());
    }

    #[test]
    fn a_moved_primary_copies_from_the_old_one_while_it_lives() {
        // b0 moves from a (drained, still live) to c.
        let before = map(&["a", "b", "c"], &[0], &[Some(1)]);
        let now = map(&["a", "b", "c"], &[2], &[Some(1)]);
        let from = |live: &dyn Fn(&str) -> bool| {
            pulls(Some(&before), &now, "c", live, all)
                .into_iter()
                .map(|p| p.from)
                .collect::<Vec<_>>()
        };
        assert_eq!(from(&|_| true), vec!["a".to_string()]);
        // a is gone: its replica b holds every acknowledged message.
        assert_eq!(from(&|id| id != "a"), vec!["b".to_string()]);
        // Both gone: planned from the old primary, which the copy waits for.
        let waits = pulls(Some(&before), &now, "c", |id| id == "c", all);
        assert_eq!(
            waits,
            vec![Pull {
                bucket: 0,
                from: "a".into(),
                also: vec!["b".into()],
            }]
        );
    }

    #[test]
    fn a_starting_node_copies_what_it_is_replica_for() {
        let now = map(&["a", "b"], &[0, 1, 0], &[Some(1), Some(0), Some(1)]);
        let got: Vec<u32> = pulls(None, &now, "b", |_| true, all)
            .into_iter()
            .map(|p| p.bucket)
            .collect();
        assert_eq!(got, vec![0, 2]);
        // Its source is gone: planned all the same (the copy waits for it).
        assert_eq!(pulls(None, &now, "b", |id| id != "a", all).len(), 2);
        // No replica at all (one node): nothing.
        let solo = map(&["a"], &[0], &[None]);
        assert!(pulls(None, &solo, "a", |_| true, all).is_empty());
    }
}
