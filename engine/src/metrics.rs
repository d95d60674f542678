//! Metrics: what each shard counts, and the Prometheus text a scrape gets.
//!
//! Owns: the per-shard counters and histograms ([`ShardMetrics`]: plain
//! `Cell`s in the shard's own memory, so counting on the hot path is an
//! increment with no atomic and no cache line shared between cores), the
//! copy each shard publishes once a second ([`Snapshot`], into its slot of
//! [`Published`]), and the rendering of every slot with `prometheus-client`
//! (a [`Collector`] that encodes constant values; no text format written
//! here by hand).
//!
//! Must never: take a lock on the hot path (only the once-a-second publish
//! and the scrape touch the slot mutex), or know about sockets and glommio.
//!
//! Names follow Prometheus conventions: `ringmail_` prefix, units in the
//! name (`_seconds`, `_bytes`), counters end in `_total` (added by the
//! encoder), every series labelled with its `shard`.
use std::cell::Cell;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Listener kinds, as the `proto` label spells them.
pub const PROTOS: [&str; 8] = [
    "smtp",
    "submission",
    "submissions",
    "pop3",
    "pop3s",
    "imap",
    "imaps",
    // Cluster mode: node-to-node SMTP (`[cluster] internal`).
    "internal",
];
/// Login protocols (`proto` of `ringmail_logins_total`).
pub const LOGIN_PROTOS: [&str; 3] = ["smtp", "pop3", "imap"];
/// Login outcomes: a good password, a bad one, refused before any check
/// (address banned, too many checks queued).
pub const LOGIN_RESULTS: [&str; 3] = ["success", "failure", "refused"];
/// Reply classes of the reply that ended an SMTP transaction.
pub const REPLY_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];
/// TLS handshake outcomes.
pub const TLS_RESULTS: [&str; 3] = ["ok", "failed", "timeout"];
/// TLS versions (`version` label of successful handshakes).
pub const TLS_VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];
/// Relay delivery attempt outcomes, per recipient.
pub const RELAY_RESULTS: [&str; 3] = ["delivered", "deferred", "bounced"];

/// Cluster mode: what a hand-over to another node carried: a delivery's
/// share or replica copy, a primary's changes, an IMAP APPEND's copy.
pub const HANDOVER_KINDS: [&str; 3] = ["delivery", "change", "append"];
/// Cluster mode: how a hand-over ended. `timeout`: the other node did not
/// answer within `peer_timeout_ms` (it is then marked silent).
pub const HANDOVER_RESULTS: [&str; 3] = ["ok", "failed", "timeout"];
/// Cluster mode: how a bucket copy from another node ended. `busy`: the
/// source asked for time (it sends as many copies as it may, waits for
/// older deliveries, or has not seen the map yet); asked again later.
pub const COPY_RESULTS: [&str; 3] = ["ok", "failed", "busy"];

/// Histogram bounds of hand-over latencies, seconds: as [`LATENCY_BOUNDS`],
/// and beyond the largest `peer_timeout_ms`.
pub const HANDOVER_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0, 30.0, 65.0,
];

/// Histogram bounds of latencies, seconds (100 µs to 10 s).
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];
/// Histogram bounds of group-commit batch sizes, records.
pub const BATCH_BOUNDS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A histogram with fixed bounds, counted in `Cell`s.
#[derive(Debug)]
pub struct Hist {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is +Inf.
    counts: Vec<Cell<u64>>,
    sum: Cell<f64>,
}

impl Hist {
    pub fn new(bounds: &'static [f64]) -> Hist {
        Hist {
            bounds,
            counts: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0.0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        let c = &self.counts[i];
        c.set(c.get() + 1);
        self.sum.set(self.sum.get() + v);
    }

    pub fn snapshot(&self) -> HistSnapshot {
        HistSnapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(Cell::get).collect(),
            sum: self.sum.get(),
        }
    }
}

/// A histogram's values at one moment.
#[derive(Debug, Clone)]
pub struct HistSnapshot {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
}

impl HistSnapshot {
    /// (upper bound, count in that bucket alone) pairs, +Inf last, and the
    /// total: the form prometheus-client's encoder takes (it writes the
    /// cumulative `_bucket` series itself).
    fn buckets(&self) -> (Vec<(f64, u64)>, u64) {
        let out = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (self.bounds.get(i).copied().unwrap_or(f64::INFINITY), *c))
            .collect();
        (out, self.count())
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

fn inc(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

fn cells<const N: usize>() -> [Cell<u64>; N] {
    std::array::from_fn(|_| Cell::new(0))
}

fn values<const N: usize>(c: &[Cell<u64>; N]) -> [u64; N] {
    std::array::from_fn(|i| c[i].get())
}

/// What one shard counts. Single-threaded: only its executor touches it.
#[derive(Debug)]
pub struct ShardMetrics {
    pub connections_accepted: [Cell<u64>; PROTOS.len()],
    /// Refused at accept: connection limits, per-address rate.
    pub connections_refused: [Cell<u64>; PROTOS.len()],
    pub sessions_open: [Cell<u64>; PROTOS.len()],
    /// [proto][reply class]
    pub smtp_transactions: [[Cell<u64>; 3]; 2],
    /// Recipients delivered into local mailboxes / queued for relay.
    pub recipients_local: Cell<u64>,
    pub recipients_queued: Cell<u64>,
    pub message_bytes_received: Cell<u64>,
    /// [proto][result]
    pub logins: [[Cell<u64>; 3]; 3],
    pub tls_handshakes: [Cell<u64>; 3],
    pub tls_versions: [Cell<u64>; 2],
    pub relay_attempts: [Cell<u64>; 3],
    /// End of message data to the final reply being sent, seconds.
    pub delivery_seconds: Hist,
    /// Cluster mode: [kind][result] (`HANDOVER_KINDS`, `HANDOVER_RESULTS`).
    pub handovers: [[Cell<u64>; 3]; 3],
    /// Cluster mode: hand-overs that were tried, start to answer, seconds.
    pub handover_seconds: Hist,
    /// Cluster mode: changes written here that the replica never took.
    pub changes_unreplicated: Cell<u64>,
    /// Cluster mode: hand-over attempts not made, their node being marked
    /// silent (refused at once; a change counts each of its attempts).
    pub refused_silent: Cell<u64>,
    /// Cluster mode: bucket copies pulled from other nodes, by result.
    pub bucket_copies: [Cell<u64>; 3],
    /// Cluster mode: bucket copies waiting for a node that held the bucket
    /// to come back (a gauge).
    pub copies_waiting: Cell<u64>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            connections_accepted: cells(),
            connections_refused: cells(),
            sessions_open: cells(),
            smtp_transactions: [cells(), cells()],
            recipients_local: Cell::new(0),
            recipients_queued: Cell::new(0),
            message_bytes_received: Cell::new(0),
            logins: [cells(), cells(), cells()],
            tls_handshakes: cells(),
            tls_versions: cells(),
            relay_attempts: cells(),
            delivery_seconds: Hist::new(&LATENCY_BOUNDS),
            handovers: [cells(), cells(), cells()],
            handover_seconds: Hist::new(&HANDOVER_BOUNDS),
            changes_unreplicated: Cell::new(0),
            refused_silent: Cell::new(0),
            bucket_copies: cells(),
            copies_waiting: Cell::new(0),
        }
    }
}

impl ShardMetrics {
    /// A connection accepted (admitted or not; see [`ShardMetrics::refused`]).
    pub fn accepted(&self, proto: usize) {
        inc(&self.connections_accepted[proto]);
        inc(&self.sessions_open[proto]);
    }

    /// A session handed over by another shard after login (counted open
    /// here; the accepting shard counted it closed).
    pub fn accepted_handoff(&self, proto: usize) {
        inc(&self.sessions_open[proto]);
    }

    pub fn closed(&self, proto: usize) {
        let c = &self.sessions_open[proto];
        c.set(c.get().saturating_sub(1));
    }

    pub fn refused(&self, proto: usize) {
        inc(&self.connections_refused[proto]);
    }

    /// An SMTP transaction ended (after DATA/BDAT) with `code`; `submission`
    /// for the submission listeners.
    pub fn smtp_transaction(&self, submission: bool, code: u16) {
        let class = match code / 100 {
            2 => 0,
            4 => 1,
            _ => 2,
        };
        inc(&self.smtp_transactions[usize::from(submission)][class]);
    }

    /// `proto`: index in [`LOGIN_PROTOS`]; `result`: index in [`LOGIN_RESULTS`].
    pub fn login(&self, proto: usize, result: usize) {
        inc(&self.logins[proto][result]);
    }

    /// A finished handshake: `Ok(version)` or the failure's index in [`TLS_RESULTS`].
    pub fn tls_handshake(&self, outcome: Result<&str, usize>) {
        match outcome {
            Ok(version) => {
                inc(&self.tls_handshakes[0]);
                if let Some(v) = TLS_VERSIONS.iter().position(|v| *v == version) {
                    inc(&self.tls_versions[v]);
                }
            }
            Err(i) => inc(&self.tls_handshakes[i]),
        }
    }

    pub fn relay_attempt(&self, result: usize) {
        inc(&self.relay_attempts[result]);
    }

    /// A hand-over ended: `kind` and `result` index [`HANDOVER_KINDS`] and
    /// [`HANDOVER_RESULTS`]; `seconds` from its start.
    pub fn handover(&self, kind: usize, result: usize, seconds: f64) {
        inc(&self.handovers[kind][result]);
        self.handover_seconds.observe(seconds);
    }

    /// A hand-over not tried: its node is marked silent.
    pub fn refused_silent(&self) {
        inc(&self.refused_silent);
    }

    pub fn change_unreplicated(&self) {
        inc(&self.changes_unreplicated);
    }

    /// `result`: index in [`COPY_RESULTS`].
    pub fn bucket_copy(&self, result: usize) {
        inc(&self.bucket_copies[result]);
    }
}

/// Storage figures a shard adds to its snapshot (from `storage::StoreStats`
/// and its segment usage).
#[derive(Debug, Clone, Default)]
pub struct StorageFigures {
    pub records: u64,
    pub syncs: u64,
    pub checkpoints: u64,
    pub compactions: u64,
    pub segment_bytes: u64,
    pub live_bytes: u64,
    pub accounts: u64,
    /// Messages in the accounts' mailboxes (refreshed with `live_bytes`).
    pub messages: u64,
    pub queue_messages: u64,
    pub sync_seconds: Option<HistSnapshot>,
    pub commit_batch_records: Option<HistSnapshot>,
}

/// One shard's figures at one moment, published into its slot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    connections_accepted: [u64; PROTOS.len()],
    connections_refused: [u64; PROTOS.len()],
    sessions_open: [u64; PROTOS.len()],
    smtp_transactions: [[u64; 3]; 2],
    recipients_local: u64,
    recipients_queued: u64,
    message_bytes_received: u64,
    logins: [[u64; 3]; 3],
    tls_handshakes: [u64; 3],
    tls_versions: [u64; 2],
    relay_attempts: [u64; 3],
    delivery_seconds: HistSnapshot,
    handovers: [[u64; 3]; 3],
    handover_seconds: HistSnapshot,
    changes_unreplicated: u64,
    refused_silent: u64,
    bucket_copies: [u64; 3],
    copies_waiting: u64,
    pub storage: StorageFigures,
}

impl ShardMetrics {
    pub fn snapshot(&self, storage: StorageFigures) -> Snapshot {
        Snapshot {
            connections_accepted: values(&self.connections_accepted),
            connections_refused: values(&self.connections_refused),
            sessions_open: values(&self.sessions_open),
            smtp_transactions: [
                values(&self.smtp_transactions[0]),
                values(&self.smtp_transactions[1]),
            ],
            recipients_local: self.recipients_local.get(),
            recipients_queued: self.recipients_queued.get(),
            message_bytes_received: self.message_bytes_received.get(),
            logins: std::array::from_fn(|i| values(&self.logins[i])),
            tls_handshakes: values(&self.tls_handshakes),
            tls_versions: values(&self.tls_versions),
            relay_attempts: values(&self.relay_attempts),
            delivery_seconds: self.delivery_seconds.snapshot(),
            handovers: std::array::from_fn(|i| values(&self.handovers[i])),
            handover_seconds: self.handover_seconds.snapshot(),
            changes_unreplicated: self.changes_unreplicated.get(),
            refused_silent: self.refused_silent.get(),
            bucket_copies: values(&self.bucket_copies),
            copies_waiting: self.copies_waiting.get(),
            storage,
        }
    }
}

/// Process-wide figures that live outside the shards.
#[derive(Debug, Clone, Default)]
pub struct ProcessFigures {
    pub dns_queries: u64,
    pub dns_cache_hits: u64,
    pub uptime_seconds: u64,
    /// Cluster mode only (no cluster series without it).
    pub cluster: Option<ClusterFigures>,
}

/// The node's view of its cluster at the scrape.
#[derive(Debug, Clone, Default)]
pub struct ClusterFigures {
    /// Members whose lease is live, this node included.
    pub live_nodes: u64,
    /// The bucket map's version; 0 before the first `rebalance`.
    pub map_version: u64,
    /// This node holds its lease, so it may acknowledge mail and changes.
    pub lease_valid: bool,
    /// Buckets this node is primary and replica for.
    pub primary_buckets: u64,
    pub replica_buckets: u64,
    /// Other nodes marked silent now (`peer::Silence`).
    pub silent_nodes: u64,
}

/// Seconds of history kept per shard for rates (`ringmail status`).
pub const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Per shard: (when, records, group commits), oldest first.
type History = std::collections::VecDeque<(std::time::Instant, u64, u64)>;

/// Every shard's latest snapshot, and a minute of its commit counters;
/// shared by the shards (which publish), the HTTP thread (which renders) and
/// the control thread (`ringmail status`).
#[derive(Debug)]
pub struct Published {
    slots: Mutex<Vec<Option<Snapshot>>>,
    /// Within [`RATE_WINDOW`].
    history: Mutex<Vec<History>>,
}

/// One shard in `ringmail status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardStatus {
    pub shard: usize,
    /// Open sessions by listener (the names of [`PROTOS`]).
    pub sessions: std::collections::BTreeMap<&'static str, u64>,
    pub accounts: u64,
    pub messages: u64,
    pub segment_bytes: u64,
    pub live_bytes: u64,
    pub queue_messages: u64,
    /// Over the last minute (or since start).
    pub records_per_second: f64,
    pub commits_per_second: f64,
}

impl Published {
    pub fn new(shards: usize) -> Published {
        Published {
            slots: Mutex::new(vec![None; shards]),
            history: Mutex::new(vec![History::new(); shards]),
        }
    }

    pub fn publish(&self, shard: usize, s: Snapshot) {
        let now = std::time::Instant::now();
        if let Some(h) = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(shard)
        {
            h.push_back((now, s.storage.records, s.storage.syncs));
            while h
                .front()
                .is_some_and(|(t, _, _)| now.duration_since(*t) > RATE_WINDOW)
            {
                h.pop_front();
            }
        }
        if let Some(slot) = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(shard)
        {
            *slot = Some(s);
        }
    }

    /// Every shard that has published, for `ringmail status`.
    pub fn status(&self) -> Vec<ShardStatus> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let history = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        slots
            .iter()
            .zip(history.iter())
            .enumerate()
            .filter_map(|(i, (s, h))| {
                let s = s.as_ref()?;
                let (records, commits) = match (h.front(), h.back()) {
                    (Some(a), Some(b)) if b.0 > a.0 => {
                        let secs = b.0.duration_since(a.0).as_secs_f64();
                        ((b.1 - a.1) as f64 / secs, (b.2 - a.2) as f64 / secs)
                    }
                    _ => (0.0, 0.0),
                };
                Some(ShardStatus {
                    shard: i,
                    sessions: PROTOS
                        .iter()
                        .enumerate()
                        .map(|(p, n)| (*n, s.sessions_open[p]))
                        .collect(),
                    accounts: s.storage.accounts,
                    messages: s.storage.messages,
                    segment_bytes: s.storage.segment_bytes,
                    live_bytes: s.storage.live_bytes,
                    queue_messages: s.storage.queue_messages,
                    records_per_second: records,
                    commits_per_second: commits,
                })
            })
            .collect()
    }

    /// Content-Type of [`Published::render`]'s text.
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// The Prometheus text exposition (format 0.0.4) of every slot.
    pub fn render(&self, process: ProcessFigures) -> String {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Render { slots, process }));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

#[derive(Debug)]
struct Render {
    slots: Vec<Option<Snapshot>>,
    process: ProcessFigures,
}

type Labels = Vec<(&'static str, String)>;

impl Render {
    fn shards(&self) -> impl Iterator<Item = (String, &Snapshot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i.to_string(), s.as_ref()?)))
    }

    fn family(
        &self,
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        kind: MetricType,
        series: Vec<(Labels, u64)>,
    ) -> std::fmt::Result {
        let mut m = e.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in series {
            let f = m.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(v).encode(f)?,
                _ => ConstGauge::new(v as i64).encode(f)?,
            }
        }
        Ok(())
    }

    fn per_shard(&self, f: impl Fn(&Snapshot) -> u64) -> Vec<(Labels, u64)> {
        self.shards()
            .map(|(id, s)| (vec![("shard", id)], f(s)))
            .collect()
    }

    /// Per shard, one series per name of `values`, labelled `label`:
    /// `f(snapshot, index of the name)`.
    fn per_shard_by(
        &self,
        label: &'static str,
        values: &[&str],
        f: impl Fn(&Snapshot, usize) -> u64,
    ) -> Vec<(Labels, u64)> {
        let mut v = Vec::new();
        for (id, s) in self.shards() {
            for (i, value) in values.iter().enumerate() {
                v.push((
                    vec![("shard", id.clone()), (label, value.to_string())],
                    f(s, i),
                ));
            }
        }
        v
    }

    fn histogram(
        &self,
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        get: impl Fn(&Snapshot) -> Option<&HistSnapshot>,
    ) -> std::fmt::Result {
        let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (id, s) in self.shards() {
            let Some(h) = get(s) else { continue };
            let labels: Labels = vec![("shard", id)];
            let mut f = m.encode_family(&labels)?;
            let (buckets, count) = h.buckets();
            f.encode_histogram::<Labels>(h.sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

impl Render {
    /// Cluster mode's series: per shard, the hand-overs and copies; for
    /// the node, its view of the cluster.
    fn cluster(&self, e: &mut DescriptorEncoder, c: &ClusterFigures) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let mut handovers = Vec::new();
        for (id, s) in self.shards() {
            for (k, kind) in HANDOVER_KINDS.iter().enumerate() {
                for (r, result) in HANDOVER_RESULTS.iter().enumerate() {
                    handovers.push((
                        vec![
                            ("shard", id.clone()),
                            ("kind", kind.to_string()),
                            ("result", result.to_string()),
                        ],
                        s.handovers[k][r],
                    ));
                }
            }
        }
        self.family(e, "ringmail_cluster_handovers", "Hand-overs to other nodes (a delivery's share or replica copy, a primary's changes, an APPEND's copy) by result; timeout: no answer within peer_timeout_ms (the node is then marked silent).", Counter, handovers)?;
        self.histogram(
            e,
            "ringmail_cluster_handover_seconds",
            "A hand-over that was tried, from its start to the other node's answer (or the timeout).",
            |s| Some(&s.handover_seconds),
        )?;
        self.family(
            e,
            "ringmail_cluster_changes_unreplicated",
            "Changes written here that the replica did not take after every attempt.",
            Counter,
            self.per_shard(|s| s.changes_unreplicated),
        )?;
        self.family(
            e,
            "ringmail_cluster_refused_silent",
            "Hand-over attempts not made because their node was marked silent (refused at once; a change's retries count each).",
            Counter,
            self.per_shard(|s| s.refused_silent),
        )?;
        self.family(
            e,
            "ringmail_cluster_bucket_copies",
            "Copies of gained buckets pulled from another node, by result (busy: the source asked for time; failed and busy ones are tried again).",
            Counter,
            self.per_shard_by("result", &COPY_RESULTS, |s, i| s.bucket_copies[i]),
        )?;
        self.family(
            e,
            "ringmail_cluster_bucket_copies_waiting",
            "Copies of gained buckets waiting for a node that held the bucket to come back (every one is gone); until then this node may lack older mail of those buckets.",
            Gauge,
            self.per_shard(|s| s.copies_waiting),
        )?;
        for (name, help, v) in [
            (
                "ringmail_cluster_live_nodes",
                "Members whose lease is live, this node included.",
                c.live_nodes,
            ),
            (
                "ringmail_cluster_map_version",
                "Version of the bucket map this node routes with (0: none yet).",
                c.map_version,
            ),
            (
                "ringmail_cluster_lease_valid",
                "1 while this node holds its lease and may acknowledge mail and changes.",
                u64::from(c.lease_valid),
            ),
            (
                "ringmail_cluster_silent_nodes",
                "Other nodes marked silent now (a hand-over ran out of time).",
                c.silent_nodes,
            ),
        ] {
            self.family(e, name, help, Gauge, vec![(vec![], v)])?;
        }
        self.family(
            e,
            "ringmail_cluster_buckets",
            "Buckets of the map this node holds, by role.",
            Gauge,
            vec![
                (vec![("role", "primary".to_string())], c.primary_buckets),
                (vec![("role", "replica".to_string())], c.replica_buckets),
            ],
        )
    }
}

impl Collector for Render {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let by_proto = |f: &dyn Fn(&Snapshot, usize) -> u64| -> Vec<(Labels, u64)> {
            let mut v = Vec::new();
            for (id, s) in self.shards() {
                for (p, name) in PROTOS.iter().enumerate() {
                    v.push((
                        vec![("shard", id.clone()), ("proto", name.to_string())],
                        f(s, p),
                    ));
                }
            }
            v
        };
        self.family(
            &mut e,
            "ringmail_connections_accepted",
            "Connections accepted.",
            Counter,
            by_proto(&|s, p| s.connections_accepted[p]),
        )?;
        self.family(
            &mut e,
            "ringmail_connections_refused",
            "Connections refused at accept (connection limits and rates).",
            Counter,
            by_proto(&|s, p| s.connections_refused[p]),
        )?;
        self.family(
            &mut e,
            "ringmail_sessions_open",
            "Sessions open now, by the listener that accepted them.",
            Gauge,
            by_proto(&|s, p| s.sessions_open[p]),
        )?;
        let mut tx = Vec::new();
        for (id, s) in self.shards() {
            for (p, proto) in ["smtp", "submission"].iter().enumerate() {
                for (c, class) in REPLY_CLASSES.iter().enumerate() {
                    tx.push((
                        vec![
                            ("shard", id.clone()),
                            ("proto", proto.to_string()),
                            ("reply", class.to_string()),
                        ],
                        s.smtp_transactions[p][c],
                    ));
                }
            }
        }
        self.family(&mut e, "ringmail_smtp_transactions", "SMTP transactions that reached the end of message data, by the class of the final reply.", Counter, tx)?;
        let mut rcpt = Vec::new();
        for (id, s) in self.shards() {
            rcpt.push((
                vec![("shard", id.clone()), ("destination", "local".to_string())],
                s.recipients_local,
            ));
            rcpt.push((
                vec![("shard", id), ("destination", "queued".to_string())],
                s.recipients_queued,
            ));
        }
        self.family(&mut e, "ringmail_recipients_accepted", "Recipients of acknowledged messages: delivered into a local mailbox or queued for relay.", Counter, rcpt)?;
        self.family(
            &mut e,
            "ringmail_message_received_bytes",
            "Bytes of acknowledged messages received over SMTP.",
            Counter,
            self.per_shard(|s| s.message_bytes_received),
        )?;
        let mut logins = Vec::new();
        for (id, s) in self.shards() {
            for (p, proto) in LOGIN_PROTOS.iter().enumerate() {
                for (r, result) in LOGIN_RESULTS.iter().enumerate() {
                    logins.push((
                        vec![
                            ("shard", id.clone()),
                            ("proto", proto.to_string()),
                            ("result", result.to_string()),
                        ],
                        s.logins[p][r],
                    ));
                }
            }
        }
        self.family(&mut e, "ringmail_logins", "Logins (SMTP AUTH, IMAP, POP3) by result; refused: banned address or too many checks queued.", Counter, logins)?;
        let mut hs = Vec::new();
        for (id, s) in self.shards() {
            for (i, result) in TLS_RESULTS.iter().enumerate() {
                if i == 0 {
                    for (v, version) in TLS_VERSIONS.iter().enumerate() {
                        hs.push((
                            vec![
                                ("shard", id.clone()),
                                ("result", "ok".to_string()),
                                ("version", version.to_string()),
                            ],
                            s.tls_versions[v],
                        ));
                    }
                } else {
                    hs.push((
                        vec![
                            ("shard", id.clone()),
                            ("result", result.to_string()),
                            ("version", String::new()),
                        ],
                        s.tls_handshakes[i],
                    ));
                }
            }
        }
        self.family(
            &mut e,
            "ringmail_tls_handshakes",
            "TLS handshakes (implicit TLS and STARTTLS) by result and version.",
            Counter,
            hs,
        )?;
        self.family(
            &mut e,
            "ringmail_relay_attempts",
            "Relay delivery attempts per recipient, by outcome.",
            Counter,
            self.per_shard_by("result", &RELAY_RESULTS, |s, i| s.relay_attempts[i]),
        )?;
        self.family(
            &mut e,
            "ringmail_queue_messages",
            "Messages in the relay queue.",
            Gauge,
            self.per_shard(|s| s.storage.queue_messages),
        )?;
        self.histogram(
            &mut e,
            "ringmail_delivery_seconds",
            "End of message data to the final SMTP reply.",
            |s| Some(&s.delivery_seconds),
        )?;
        self.family(
            &mut e,
            "ringmail_storage_records",
            "Records appended to the log.",
            Counter,
            self.per_shard(|s| s.storage.records),
        )?;
        self.family(
            &mut e,
            "ringmail_storage_syncs",
            "Group commits (fdatasync rounds).",
            Counter,
            self.per_shard(|s| s.storage.syncs),
        )?;
        self.histogram(
            &mut e,
            "ringmail_storage_sync_seconds",
            "Time of one group commit's fdatasync calls.",
            |s| s.storage.sync_seconds.as_ref(),
        )?;
        self.histogram(
            &mut e,
            "ringmail_storage_commit_batch_records",
            "Records made durable by one group commit.",
            |s| s.storage.commit_batch_records.as_ref(),
        )?;
        self.family(
            &mut e,
            "ringmail_storage_checkpoints",
            "Index checkpoints written.",
            Counter,
            self.per_shard(|s| s.storage.checkpoints),
        )?;
        self.family(
            &mut e,
            "ringmail_storage_compactions",
            "Segments reclaimed by compaction.",
            Counter,
            self.per_shard(|s| s.storage.compactions),
        )?;
        self.family(
            &mut e,
            "ringmail_storage_segment_bytes",
            "Bytes written into segments.",
            Gauge,
            self.per_shard(|s| s.storage.segment_bytes),
        )?;
        self.family(
            &mut e,
            "ringmail_storage_live_bytes",
            "Bytes of segments still referenced by a message (refreshed every ten seconds).",
            Gauge,
            self.per_shard(|s| s.storage.live_bytes),
        )?;
        self.family(
            &mut e,
            "ringmail_accounts",
            "Accounts with a mailbox on this shard.",
            Gauge,
            self.per_shard(|s| s.storage.accounts),
        )?;
        if let Some(c) = &self.process.cluster {
            self.cluster(&mut e, c)?;
        }
        self.family(
            &mut e,
            "ringmail_dns_queries",
            "DNS queries sent by the relay's resolver.",
            Counter,
            vec![(vec![], self.process.dns_queries)],
        )?;
        self.family(
            &mut e,
            "ringmail_dns_cache_hits",
            "DNS lookups answered from the resolver's cache.",
            Counter,
            vec![(vec![], self.process.dns_cache_hits)],
        )?;
        self.family(
            &mut e,
            "ringmail_uptime_seconds",
            "Seconds since the server started.",
            Gauge,
            vec![(vec![], self.process.uptime_seconds)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_count_each_observation_once_and_end_at_inf() {
        let h = Hist::new(&BATCH_BOUNDS);
        for v in [1.0, 1.0, 3.0, 1000.0] {
            h.observe(v);
        }
        let (b, n) = h.snapshot().buckets();
        assert_eq!(n, 4);
        assert_eq!(b[0], (1.0, 2));
        assert_eq!(b[2], (4.0, 1));
        assert_eq!(*b.last().unwrap(), (f64::INFINITY, 1));
    }

    #[test]
    fn render_names_units_and_shards() {
        let p = Published::new(2);
        let m = ShardMetrics::default();
        m.accepted(0);
        m.smtp_transaction(false, 250);
        m.smtp_transaction(false, 550);
        m.login(1, 1);
        m.tls_handshake(Ok("TLSv1.3"));
        m.delivery_seconds.observe(0.002);
        p.publish(
            1,
            m.snapshot(StorageFigures {
                records: 7,
                ..Default::default()
            }),
        );
        let text = p.render(ProcessFigures {
            uptime_seconds: 3,
            ..Default::default()
        });
        for want in [
            "ringmail_connections_accepted_total{shard=\"1\",proto=\"smtp\"} 1",
            "ringmail_sessions_open{shard=\"1\",proto=\"smtp\"} 1",
            "ringmail_smtp_transactions_total{shard=\"1\",proto=\"smtp\",reply=\"2xx\"} 1",
            "ringmail_smtp_transactions_total{shard=\"1\",proto=\"smtp\",reply=\"5xx\"} 1",
            "ringmail_logins_total{shard=\"1\",proto=\"pop3\",result=\"failure\"} 1",
            "ringmail_tls_handshakes_total{shard=\"1\",result=\"ok\",version=\"TLSv1.3\"} 1",
            "ringmail_delivery_seconds_bucket{shard=\"1\",le=\"0.0025\"} 1",
            "ringmail_delivery_seconds_bucket{shard=\"1\",le=\"+Inf\"} 1",
            "ringmail_delivery_seconds_count{shard=\"1\"} 1",
            "ringmail_storage_records_total{shard=\"1\"} 7",
            "ringmail_uptime_seconds 3",
            "# TYPE ringmail_delivery_seconds histogram",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // A shard that has not published yet has no series.
        assert!(!text.contains("shard=\"0\""), "{text}");
        // No cluster, no cluster series.
        assert!(!text.contains("ringmail_cluster_"), "{text}");
    }

    #[test]
    fn cluster_series_in_cluster_mode() {
        let p = Published::new(1);
        let m = ShardMetrics::default();
        m.handover(0, 0, 0.002);
        m.handover(0, 2, 10.0);
        m.refused_silent();
        m.refused_silent();
        m.handover(1, 1, 0.001);
        m.change_unreplicated();
        m.bucket_copy(0);
        m.bucket_copy(1);
        m.copies_waiting.set(2);
        p.publish(0, m.snapshot(StorageFigures::default()));
        let text = p.render(ProcessFigures {
            cluster: Some(ClusterFigures {
                live_nodes: 3,
                map_version: 42,
                lease_valid: true,
                primary_buckets: 85,
                replica_buckets: 86,
                silent_nodes: 1,
            }),
            ..Default::default()
        });
        for want in [
            "ringmail_cluster_handovers_total{shard=\"0\",kind=\"delivery\",result=\"ok\"} 1",
            "ringmail_cluster_handovers_total{shard=\"0\",kind=\"delivery\",result=\"timeout\"} 1",
            "ringmail_cluster_refused_silent_total{shard=\"0\"} 2",
            "ringmail_cluster_handovers_total{shard=\"0\",kind=\"change\",result=\"failed\"} 1",
            "ringmail_cluster_handovers_total{shard=\"0\",kind=\"append\",result=\"ok\"} 0",
            "ringmail_cluster_handover_seconds_count{shard=\"0\"} 3",
            "ringmail_cluster_handover_seconds_bucket{shard=\"0\",le=\"0.0025\"} 2",
            "ringmail_cluster_changes_unreplicated_total{shard=\"0\"} 1",
            "ringmail_cluster_bucket_copies_total{shard=\"0\",result=\"ok\"} 1",
            "ringmail_cluster_bucket_copies_total{shard=\"0\",result=\"failed\"} 1",
            "ringmail_cluster_bucket_copies_waiting{shard=\"0\"} 2",
            "ringmail_cluster_live_nodes 3",
            "ringmail_cluster_map_version 42",
            "ringmail_cluster_lease_valid 1",
            "ringmail_cluster_silent_nodes 1",
            "ringmail_cluster_buckets{role=\"primary\"} 85",
            "ringmail_cluster_buckets{role=\"replica\"} 86",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
