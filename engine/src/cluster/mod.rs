//! Cluster mode: membership and the bucket map, kept in etcd (see
//! ARCHITECTURE.md, "Cluster mode").
//!
//! `placement` is pure. With the `cluster` feature, `etcd` holds the side
//! thread that joins the cluster, keeps the node's lease alive and watches
//! the map, and the `ringmail cluster` commands. Shards only read the
//! published [`View`]; they never wait for etcd.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

pub mod catchup;
pub mod changes;
pub mod duplicates;
#[cfg(feature = "cluster")]
pub mod etcd;
pub mod placement;

pub use placement::{NodeRecord, Placement};

/// Keys of a cluster in etcd.
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            prefix: format!("/ringmail/{cluster}/"),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }
    pub fn node(&self, id: &str) -> String {
        format!("{}nodes/{id}", self.prefix)
    }
    pub fn placement(&self) -> String {
        format!("{}placement", self.prefix)
    }
    pub fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }
    pub fn drained(&self) -> String {
        format!("{}drained/", self.prefix)
    }
}

/// What a node knows of its cluster, as of the last etcd answer.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Live members (their lease-backed keys), by id.
    pub members: BTreeMap<String, NodeRecord>,
    /// The bucket map and its version (etcd mod_revision), if one was written.
    pub placement: Option<(Placement, i64)>,
    /// Until when this node's lease is certainly alive on etcd: the moment
    /// the last successful keep-alive was *sent*, plus the TTL etcd granted
    /// (etcd's own deadline is later). None: not joined.
    pub lease_until: Option<Instant>,
    /// Nodes drained by `ringmail cluster drain`: members that are given
    /// no buckets.
    pub drained: std::collections::BTreeSet<String>,
}

impl View {
    /// The members buckets may be placed on.
    pub fn placeable(&self) -> Vec<String> {
        self.members
            .keys()
            .filter(|id| !self.drained.contains(*id))
            .cloned()
            .collect()
    }
}

impl View {
    /// May this node acknowledge a change now? Only while it holds its
    /// lease: once the lease may have expired, another node may already
    /// have been given this node's buckets.
    pub fn may_acknowledge(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|t| now < t)
    }
}

/// The published view; the cluster thread swaps it, shards load it.
pub type Shared = Arc<arc_swap::ArcSwap<View>>;

/// How far each shard has copied the buckets this node gained
/// (`runtime::catchup`): the newest map version whose copies it finished
/// (0: none yet). The membership thread publishes the smallest as the
/// node record's `copied`, which `rebalance --move-primaries` waits for.
#[derive(Debug)]
pub struct Progress(Vec<std::sync::atomic::AtomicI64>);

impl Progress {
    pub fn new(shards: usize) -> Progress {
        Progress((0..shards).map(|_| Default::default()).collect())
    }

    pub fn set(&self, shard: usize, version: i64) {
        if let Some(v) = self.0.get(shard) {
            v.fetch_max(version, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The version every shard has copied.
    pub fn copied(&self) -> i64 {
        self.0
            .iter()
            .map(|v| v.load(std::sync::atomic::Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

/// Per shard, the oldest bucket map version that an operation still in
/// flight there routed with (a delivery or an APPEND, or one another node
/// routed with that map and handed over: from the moment it chose where
/// its copies go until its local commit is durable); `i64::MAX` when none.
/// (Changes need none: they pick their replica after the local write.) A bucket copy's source waits until
/// none older than the puller's map is left before it takes its snapshot
/// (`runtime::catchup::serve`): otherwise a delivery that sent its copy to
/// the old replica and committed here just after the snapshot would be on
/// neither the new replica nor in the copy.
///
/// Each operation also gets a ticket from its shard's counter: a source
/// about to take the snapshots of a bucket copy first waits until every
/// operation registered before the request has ended ([`InFlight::mark`],
/// [`InFlight::passed`]), whatever its map: one that sent its copy to
/// the puller (which may hold it from before the copy) and commits here
/// after the snapshot would otherwise look like mail this node no longer
/// has.
#[derive(Debug)]
pub struct InFlight {
    oldest: Vec<std::sync::atomic::AtomicI64>,
    /// Per shard: tickets given so far, and the oldest still in flight
    /// (u64::MAX: none).
    tickets: Vec<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
}

impl InFlight {
    pub fn new(shards: usize) -> InFlight {
        use std::sync::atomic::{AtomicI64, AtomicU64};
        InFlight {
            oldest: (0..shards).map(|_| AtomicI64::new(i64::MAX)).collect(),
            tickets: (0..shards)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(u64::MAX)))
                .collect(),
        }
    }

    pub fn set(&self, shard: usize, oldest: i64) {
        if let Some(v) = self.oldest.get(shard) {
            v.store(oldest, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A shard's ticket counter and its oldest ticket in flight.
    pub fn set_tickets(&self, shard: usize, issued: u64, oldest: u64) {
        if let Some((i, o)) = self.tickets.get(shard) {
            // The oldest first: a reader that sees the new counter sees
            // an oldest at least as new.
            o.store(oldest, std::sync::atomic::Ordering::SeqCst);
            i.store(issued, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Every shard's ticket counter now.
    pub fn mark(&self) -> Vec<u64> {
        self.tickets
            .iter()
            .map(|(i, _)| i.load(std::sync::atomic::Ordering::SeqCst))
            .collect()
    }

    /// Has every operation registered before `mark` ended?
    pub fn passed(&self, mark: &[u64]) -> bool {
        self.tickets
            .iter()
            .zip(mark)
            .all(|((_, o), m)| o.load(std::sync::atomic::Ordering::SeqCst) >= *m)
    }

    /// The oldest map version any shard has an operation in flight with.
    pub fn oldest(&self) -> i64 {
        self.oldest
            .iter()
            .map(|v| v.load(std::sync::atomic::Ordering::SeqCst))
            .min()
            .unwrap_or(i64::MAX)
    }
}
