//! The bucket map of a cluster and how `ringmail cluster rebalance` computes
//! a new one. Pure: no etcd, no I/O.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a node publishes under `nodes/<id>`, attached to its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// Where other nodes reach this one (node-to-node traffic).
    pub internal: String,
    pub smtp: Vec<String>,
    pub imap: Vec<String>,
    pub pop3: Vec<String>,
    pub cores: usize,
    /// The node's bucket count (its data directory's `meta`).
    pub buckets: u32,
    /// Implicit-TLS listeners, where other nodes proxy IMAP and POP3
    /// sessions to.
    #[serde(default)]
    pub imaps: Vec<String>,
    #[serde(default)]
    pub pop3s: Vec<String>,
    /// SHA-256 fingerprints of the node's certificates: a proxying node
    /// accepts exactly these (pinned), whoever signed them.
    #[serde(default)]
    pub tls_sha256: Vec<String>,
    /// The newest bucket map version whose gained buckets this node has
    /// finished copying (`runtime::catchup`; 0: none).
    #[serde(default)]
    pub copied: i64,
}

impl NodeRecord {
    /// The internal address, parsed (None: not an address).
    pub fn internal_addr(&self) -> Option<std::net::SocketAddr> {
        self.internal.parse().ok()
    }
}

/// `placement`: per bucket, its primary and (with two nodes or more) its
/// replica, as indexes into `nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub buckets: u32,
    pub nodes: Vec<String>,
    pub primary: Vec<u16>,
    pub replica: Vec<Option<u16>>,
}

impl Placement {
    /// Parse and check the shape (every index names a node, one entry per bucket).
    pub fn from_json(bytes: &[u8]) -> Result<Placement, String> {
        let p: Placement = serde_json::from_slice(bytes).map_err(|e| format!("placement: {e}"))?;
        let n = p.nodes.len();
        if p.primary.len() != p.buckets as usize || p.replica.len() != p.buckets as usize {
            return Err("placement: one primary and one replica entry per bucket".into());
        }
        let bad = |i: u16| usize::from(i) >= n;
        if p.primary.iter().any(|&i| bad(i)) || p.replica.iter().flatten().any(|&i| bad(i)) {
            return Err("placement: a bucket names a node that is not listed".into());
        }
        Ok(p)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("placement serializes")
    }

    pub fn primary_of(&self, bucket: u32) -> Option<&str> {
        let i = *self.primary.get(bucket as usize)?;
        self.nodes.get(usize::from(i)).map(String::as_str)
    }

    pub fn replica_of(&self, bucket: u32) -> Option<&str> {
        let i = (*self.replica.get(bucket as usize)?)?;
        self.nodes.get(usize::from(i)).map(String::as_str)
    }

    /// Per node: (buckets it is primary for, buckets it is replica for).
    pub fn counts(&self) -> BTreeMap<&str, (usize, usize)> {
        let mut c: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for b in 0..self.buckets {
            if let Some(p) = self.primary_of(b) {
                c.entry(p).or_default().0 += 1;
            }
            if let Some(r) = self.replica_of(b) {
                c.entry(r).or_default().1 += 1;
            }
        }
        c
    }
}

/// A balanced map over `live` nodes that keeps as many of `current`'s
/// assignments as balance allows: every node is primary for `buckets / n`
/// or one more, the same for replicas, and no bucket's replica is its
/// primary. Deterministic for the same inputs.
///
/// `move_primaries: false` keeps every bucket whose primary is live where
/// it is, however unbalanced (moving one means copying its mail first:
/// `staging`), so only buckets without a live primary are placed: on
/// their live replica, however many it holds then (the failover: it holds
/// every acknowledged delivery; any other node would serve the bucket
/// before it had copied its mail), and where there is none on the node
/// with the fewest. Replicas always rebalance; a new replica copies the
/// bucket in the background (`runtime::catchup`).
pub fn plan(
    current: Option<&Placement>,
    live: &[String],
    buckets: u32,
    move_primaries: bool,
) -> Result<Placement, String> {
    if live.is_empty() {
        return Err("no live node to place buckets on".into());
    }
    if live.len() > usize::from(u16::MAX) {
        return Err("too many nodes".into());
    }
    let mut nodes: Vec<String> = live.to_vec();
    nodes.sort();
    nodes.dedup();
    let n = nodes.len();
    let index: BTreeMap<&str, u16> = nodes
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u16))
        .collect();
    let target = |i: usize| buckets as usize / n + usize::from(i < buckets as usize % n);
    // The same bucket count is required to keep anything: buckets are the
    // storage's hash ranges, a different count is a different space.
    let current = current.filter(|c| c.buckets == buckets);
    let was = |b: u32, f: fn(&Placement, u32) -> Option<&str>| -> Option<u16> {
        current
            .and_then(|c| f(c, b))
            .and_then(|id| index.get(id).copied())
    };

    // A bucket whose primary is gone goes to its replica first: that node
    // holds the bucket's records (promotion, once replication exists).
    let keep_all = |_: usize| usize::MAX;
    let primary = assign(
        buckets,
        n,
        if move_primaries { &target } else { &keep_all },
        if move_primaries { &target } else { &keep_all },
        |b| was(b, Placement::primary_of),
        |b| was(b, Placement::replica_of),
        |_, _| true,
    );
    let replica = if n < 2 {
        vec![None; buckets as usize]
    } else {
        assign(
            buckets,
            n,
            &target,
            &target,
            |b| was(b, Placement::replica_of).filter(|&r| r != primary[b as usize]),
            |_| None,
            |b, node| node != primary[b as usize],
        )
        .into_iter()
        .map(Some)
        .collect()
    };
    Ok(Placement {
        buckets,
        nodes,
        primary,
        replica,
    })
}

/// One role (primary or replica) for every bucket: keep `previous` while
/// that node is under `keep_up_to`, then give the rest, in bucket order, to
/// `fallback` if it is under its target, else to the allowed node with the
/// fewest.
fn assign(
    buckets: u32,
    n: usize,
    keep_up_to: &dyn Fn(usize) -> usize,
    target: &dyn Fn(usize) -> usize,
    previous: impl Fn(u32) -> Option<u16>,
    fallback: impl Fn(u32) -> Option<u16>,
    allowed: impl Fn(u32, u16) -> bool,
) -> Vec<u16> {
    let mut count = vec![0usize; n];
    let mut out: Vec<Option<u16>> = vec![None; buckets as usize];
    for b in 0..buckets {
        if let Some(p) = previous(b) {
            if count[usize::from(p)] < keep_up_to(usize::from(p)) && allowed(b, p) {
                count[usize::from(p)] += 1;
                out[b as usize] = Some(p);
            }
        }
    }
    for b in 0..buckets {
        if out[b as usize].is_some() {
            continue;
        }
        if let Some(f) = fallback(b) {
            if count[usize::from(f)] < target(usize::from(f)) && allowed(b, f) {
                count[usize::from(f)] += 1;
                out[b as usize] = Some(f);
                continue;
            }
        }
        // No allowed node is under its target, but one is (the bucket's
        // other role is on it): hand it a bucket that may take it, and
        // give this bucket that bucket's node.
        let under = |i: u16| count[usize::from(i)] < target(usize::from(i));
        if !(0..n as u16).any(|i| allowed(b, i) && under(i)) {
            if let Some(u) = (0..n as u16).find(|&i| under(i)) {
                let swap = (0..buckets).find(|&y| {
                    out[y as usize].is_some_and(|v| v != u && allowed(b, v) && allowed(y, u))
                });
                if let Some(y) = swap {
                    out[b as usize] = out[y as usize];
                    out[y as usize] = Some(u);
                    count[usize::from(u)] += 1;
                    continue;
                }
            }
        }
        // Prefer a node under its target; among those, the fewest.
        let pick = (0..n as u16)
            .filter(|&i| allowed(b, i))
            .min_by_key(|&i| {
                let i = usize::from(i);
                (count[i] >= target(i), count[i], i)
            })
            .expect("with two nodes or more some node is allowed");
        count[usize::from(pick)] += 1;
        out[b as usize] = Some(pick);
    }
    out.into_iter().map(|o| o.expect("assigned")).collect()
}

/// The map `rebalance --move-primaries` passes through before `next`:
/// every bucket whose primary moves to a node that does not hold it yet
/// keeps its live primary and takes the new one as its replica, so the new
/// primary copies the bucket and receives every delivery while it does;
/// every other bucket is as in `next`. Equal to `next` when nothing needs
/// staging. `next` must come from [`plan`] (its nodes are the live ones).
pub fn staging(current: &Placement, next: &Placement) -> Placement {
    let mut mid = next.clone();
    let index = |id: &str| next.nodes.iter().position(|n| n == id).map(|i| i as u16);
    for b in 0..next.buckets.min(current.buckets) {
        let (Some(cp), Some(np)) = (current.primary_of(b), next.primary_of(b)) else {
            continue;
        };
        let holds = current.replica_of(b) == Some(np);
        if let (false, false, Some(i), Some(j)) = (cp == np, holds, index(cp), index(np)) {
            mid.primary[b as usize] = i;
            mid.replica[b as usize] = Some(j);
        }
    }
    mid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn check_balanced(p: &Placement) {
        let n = p.nodes.len();
        let lo = p.buckets as usize / n;
        for (node, (prim, rep)) in p.counts() {
            assert!(prim == lo || prim == lo + 1, "{node}: {prim} primaries");
            if n > 1 {
                assert!(rep == lo || rep == lo + 1, "{node}: {rep} replicas");
            }
        }
        for b in 0..p.buckets {
            assert_ne!(p.primary_of(b), p.replica_of(b), "bucket {b}");
        }
    }

    #[test]
    fn moved_primaries_are_staged_as_replicas_first() {
        let two = ids(&["a", "b"]);
        let current = plan(None, &two, 64, true).unwrap();
        let three = ids(&["a", "b", "c"]);
        let next = plan(Some(&current), &three, 64, true).unwrap();
        let mid = staging(&current, &next);
        let mut staged = 0;
        for b in 0..64 {
            let (cp, np) = (current.primary_of(b), next.primary_of(b));
            if cp != np && current.replica_of(b) != np {
                // The old primary stays; the new one holds it as replica.
                assert_eq!(mid.primary_of(b), cp, "bucket {b}");
                assert_eq!(mid.replica_of(b), np, "bucket {b}");
                staged += 1;
            } else {
                assert_eq!(mid.primary_of(b), next.primary_of(b), "bucket {b}");
                assert_eq!(mid.replica_of(b), next.replica_of(b), "bucket {b}");
            }
            assert_ne!(mid.primary_of(b), mid.replica_of(b), "bucket {b}");
        }
        assert!(staged > 0);
        assert_eq!(Placement::from_json(&mid.to_json()).unwrap(), mid);
        // Nothing moves: nothing staged.
        assert_eq!(staging(&current, &current), current);
    }

    #[test]
    fn a_first_plan_is_balanced_and_replicas_differ() {
        for n in 1..=7 {
            let nodes: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let p = plan(None, &nodes, 256, true).unwrap();
            check_balanced(&p);
            assert_eq!(p.replica.iter().all(Option::is_none), n == 1);
            assert_eq!(Placement::from_json(&p.to_json()).unwrap(), p);
        }
    }

    #[test]
    fn a_node_joining_moves_only_its_share() {
        let before = plan(None, &ids(&["a", "b"]), 256, true).unwrap();
        let after = plan(Some(&before), &ids(&["a", "b", "c"]), 256, true).unwrap();
        check_balanced(&after);
        let moved = (0..256)
            .filter(|&b| before.primary_of(b) != after.primary_of(b))
            .count();
        // c takes 85 or 86 buckets; nothing else moves.
        assert!(moved <= 86, "{moved} primaries moved");
        assert!((0..256).all(
            |b| after.primary_of(b) == before.primary_of(b) || after.primary_of(b) == Some("c")
        ));
    }

    #[test]
    fn a_node_leaving_hands_over_only_its_buckets() {
        let before = plan(None, &ids(&["a", "b", "c"]), 256, true).unwrap();
        let after = plan(Some(&before), &ids(&["a", "c"]), 256, false).unwrap();
        for b in 0..256 {
            if before.primary_of(b) != Some("b") {
                assert_eq!(
                    before.primary_of(b),
                    after.primary_of(b),
                    "bucket {b} moved"
                );
            }
        }
        // Its buckets went to their replicas, every one of them.
        for b in (0..256).filter(|&b| before.primary_of(b) == Some("b")) {
            assert_eq!(after.primary_of(b), before.replica_of(b), "bucket {b}");
        }
        // The same live set again changes nothing.
        assert_eq!(
            plan(Some(&after), &ids(&["c", "a"]), 256, false).unwrap(),
            after
        );
    }

    /// A replica is promoted even when it is primary of more than its
    /// share already: any other node would serve the bucket before it had
    /// copied the bucket's mail.
    #[test]
    fn a_failover_promotes_the_replica_however_unbalanced() {
        // c primary of everything, b its replica (a rebalance without
        // moving primaries after c was left alone). c dies.
        let before = Placement {
            buckets: 16,
            nodes: ids(&["a", "b", "c"]),
            primary: vec![2; 16],
            replica: vec![Some(1); 16],
        };
        let after = plan(Some(&before), &ids(&["a", "b"]), 16, false).unwrap();
        for b in 0..16 {
            assert_eq!(after.primary_of(b), Some("b"), "bucket {b}");
            assert_eq!(after.replica_of(b), Some("a"), "bucket {b}");
        }
    }

    #[test]
    fn without_moves_a_joining_node_gets_replicas_only() {
        let before = plan(None, &ids(&["a", "b"]), 256, true).unwrap();
        let after = plan(Some(&before), &ids(&["a", "b", "c"]), 256, false).unwrap();
        assert!((0..256).all(|b| after.primary_of(b) == before.primary_of(b)));
        let c = after.counts()["c"];
        assert_eq!(c.0, 0);
        assert!((85..=86).contains(&c.1), "{c:?}");
        for b in 0..256 {
            assert_ne!(after.primary_of(b), after.replica_of(b), "bucket {b}");
        }
    }

    proptest::proptest! {
        /// Any live set, any previous map (or none), either mode: no
        /// panic, every bucket placed on live nodes, replicas apart from
        /// primaries, balance when primaries may move, and live primaries
        /// kept when they may not.
        #[test]
        fn plans_are_sound(
            buckets in 1u32..300,
            before in proptest::collection::vec(0usize..8, 1..6),
            after in proptest::collection::vec(0usize..8, 1..6),
            had_map: bool,
            move_primaries: bool,
        ) {
            let names = |v: &[usize]| -> Vec<String> { v.iter().map(|i| format!("n{i}")).collect() };
            let old = had_map.then(|| plan(None, &names(&before), buckets, true).unwrap());
            let live = names(&after);
            let p = plan(old.as_ref(), &live, buckets, move_primaries).unwrap();
            let n = p.nodes.len();
            for b in 0..buckets {
                let prim = p.primary_of(b).unwrap();
                proptest::prop_assert!(live.iter().any(|l| l == prim));
                if n > 1 {
                    proptest::prop_assert_ne!(Some(prim), p.replica_of(b));
                } else {
                    proptest::prop_assert_eq!(p.replica_of(b), None);
                }
                if !move_primaries {
                    let is_live = |id: &str| live.iter().any(|l| l == id);
                    let was = old.as_ref().and_then(|o| o.primary_of(b));
                    let was_replica = old.as_ref().and_then(|o| o.replica_of(b));
                    if let Some(was) = was.filter(|w| is_live(w)) {
                        proptest::prop_assert_eq!(prim, was);
                    } else if let Some(r) = was_replica.filter(|r| is_live(r)) {
                        // The failover: the replica, whatever the balance.
                        proptest::prop_assert_eq!(prim, r);
                    }
                }
            }
            if move_primaries {
                let lo = buckets as usize / n;
                let counts = p.counts();
                for node in &p.nodes {
                    let prim = counts.get(node.as_str()).map_or(0, |c| c.0);
                    proptest::prop_assert!(prim == lo || prim == lo + 1, "{} has {}", node, prim);
                }
            }
        }
    }

    #[test]
    fn malformed_maps_are_refused() {
        assert!(Placement::from_json(b"{}").is_err());
        let bad = br#"{"buckets":2,"nodes":["a"],"primary":[0,1],"replica":[null,null]}"#;
        assert!(Placement::from_json(bad).is_err());
        let short = br#"{"buckets":2,"nodes":["a"],"primary":[0],"replica":[null,null]}"#;
        assert!(Placement::from_json(short).is_err());
        assert!(plan(None, &[], 256, true).is_err());
    }
}
