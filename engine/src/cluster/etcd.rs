//! The etcd side of cluster mode: the membership thread of a running node,
//! and the `ringmail cluster` commands.
//!
//! The thread owns a current-thread tokio runtime and one etcd client. It
//! joins (checks the cluster's bucket count, takes a lease, creates the
//! node's key only if no live process holds it), then keeps the lease
//! alive every third of its TTL and reloads members and map on every watch
//! event, publishing each new [`View`]. If etcd stops answering, or the
//! lease turns out expired, it starts over with a new lease; meanwhile the
//! published lease deadline passes by itself and the node stops
//! acknowledging (`View::may_acknowledge`).
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

use super::{placement, Keys, NodeRecord, Placement, Shared, View};
use crate::config::Cluster;

/// How long `serve` waits for the first join before it gives up, beyond
/// the wait for a previous process's lease to run out.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    buckets: u32,
}

async fn connect(cfg: &Cluster) -> Result<Client, String> {
    let timeout = Duration::from_secs(cfg.lease_ttl_secs.max(2));
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(timeout);
    // The files are read at each connection: a rotated password or
    // certificate applies from the next one.
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("etcd: reading {}: {e}", p.display()))
    };
    if let Some(ca) = &cfg.etcd_ca {
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&cfg.etcd_cert, &cfg.etcd_key) {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    if let (Some(user), Some(file)) = (&cfg.etcd_user, &cfg.etcd_password_file) {
        let password = String::from_utf8(read(file)?)
            .map_err(|_| format!("etcd: {} is not UTF-8", file.display()))?;
        let password = password.trim_end_matches(['\r', '\n']);
        options = options.with_user(user.clone(), password.to_string());
    }
    Client::connect(&cfg.etcd, Some(options))
        .await
        .map_err(|e| format!("etcd {}: {e}", cfg.etcd.join(",")))
}

fn err(what: &str) -> impl Fn(etcd_client::Error) -> String + '_ {
    move |e| format!("etcd {what}: {e}")
}

/// The cluster's bucket count: written by the first node to join, checked
/// by every later one (in one transaction, so two first nodes cannot
/// disagree).
async fn check_meta(client: &mut Client, keys: &Keys, buckets: u32) -> Result<(), String> {
    let key = keys.meta();
    let value = serde_json::to_vec(&Meta { buckets }).expect("meta serializes");
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), value, None)]);
    if client.txn(txn).await.map_err(err("meta"))?.succeeded() {
        return Ok(());
    }
    let got = client.get(key, None).await.map_err(err("meta"))?;
    let kv = got.kvs().first().ok_or("etcd meta: vanished")?;
    let meta: Meta = serde_json::from_slice(kv.value()).map_err(|e| format!("etcd meta: {e}"))?;
    if meta.buckets != buckets {
        return Err(format!(
            "the cluster has {} buckets, this node's data directory {buckets}: a node cannot join a cluster with another bucket count",
            meta.buckets
        ));
    }
    Ok(())
}

/// Members and map as etcd has them now.
async fn load(client: &mut Client, keys: &Keys) -> Result<View, String> {
    let nodes = client
        .get(keys.nodes(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(err("members"))?;
    let mut view = View::default();
    for kv in nodes.kvs() {
        match serde_json::from_slice::<NodeRecord>(kv.value()) {
            Ok(r) => {
                view.members.insert(r.id.clone(), r);
            }
            Err(e) => {
                tracing::warn!(key = ?kv.key_str().ok(), error = %e, "cluster: unreadable member record")
            }
        }
    }
    let p = client
        .get(keys.placement(), None)
        .await
        .map_err(err("placement"))?;
    if let Some(kv) = p.kvs().first() {
        match Placement::from_json(kv.value()) {
            Ok(pl) => view.placement = Some((pl, kv.mod_revision())),
            Err(e) => tracing::warn!(error = %e, "cluster: unreadable placement"),
        }
    }
    let prefix = keys.drained();
    let drained = client
        .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(err("drained"))?;
    for kv in drained.kvs() {
        if let Some(id) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)) {
            view.drained.insert(id.to_string());
        }
    }
    Ok(view)
}

/// A running membership: the published view, and the way out.
pub struct Member {
    pub view: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    gone: std::sync::mpsc::Receiver<()>,
}

impl Member {
    /// Leave the cluster at a clean shutdown: revoke the lease, so the
    /// node's key goes at once (the others see it leave, and a restart can
    /// take the id again without waiting out the lease). Waits a little.
    pub fn leave(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            let _ = self.gone.recv_timeout(Duration::from_secs(3));
        }
    }
}

/// Start the membership thread and wait for the first join. `pins`: the
/// fingerprints of the node's certificates, published in its record again
/// whenever they change (a certificate reload).
pub fn join(
    cfg: &Cluster,
    record: NodeRecord,
    pins: tokio::sync::watch::Receiver<Vec<String>>,
    progress: Arc<super::Progress>,
) -> Result<Member, String> {
    let shared: Shared = Arc::new(arc_swap::ArcSwap::from_pointee(View::default()));
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let (gone_tx, gone) = std::sync::mpsc::sync_channel(1);
    let view = shared.clone();
    let cfg_ttl = cfg.lease_ttl_secs + 2;
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name("ringmail-cluster".into())
        .spawn(move || {
            let rt = match crate::util::side_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("cluster runtime: {e}")));
                    return;
                }
            };
            rt.block_on(run(cfg, record, pins, progress, view, tx, stop_rx));
            let _ = gone_tx.send(());
        })
        .map_err(|e| format!("cluster thread: {e}"))?;
    match rx.recv_timeout(JOIN_TIMEOUT + Duration::from_secs(cfg_ttl)) {
        Ok(Ok(())) => Ok(Member {
            view: shared,
            stop: Some(stop),
            gone,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no answer from etcd within {} s",
            JOIN_TIMEOUT.as_secs()
        )),
    }
}

/// How a membership ended.
enum End {
    /// `Member::leave`: the lease is revoked, the thread stops.
    Left,
    /// Anything else: join again.
    Lost(String),
}

impl From<String> for End {
    fn from(e: String) -> End {
        End::Lost(e)
    }
}

enum Never {}

/// What the membership thread keeps from one membership to the next.
struct Membership {
    cfg: Cluster,
    keys: Keys,
    record: NodeRecord,
    view: Shared,
    /// Answered once, at the first join (or its failure).
    ready: Option<std::sync::mpsc::SyncSender<Result<(), String>>>,
    stop: tokio::sync::oneshot::Receiver<()>,
    /// The lease this node holds, to resume after a broken connection.
    held: Option<i64>,
    /// The certificate fingerprints to publish (`record.tls_sha256`).
    pins: tokio::sync::watch::Receiver<Vec<String>>,
    /// The bucket copies finished (`record.copied`).
    progress: Arc<super::Progress>,
}

async fn run(
    cfg: Cluster,
    record: NodeRecord,
    pins: tokio::sync::watch::Receiver<Vec<String>>,
    progress: Arc<super::Progress>,
    view: Shared,
    ready: std::sync::mpsc::SyncSender<Result<(), String>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut m = Membership {
        keys: Keys::new(&cfg.name),
        cfg,
        record,
        view,
        ready: Some(ready),
        stop,
        held: None,
        pins,
        progress,
    };
    loop {
        let end = match m.join().await {
            Ok(never) => match never {},
            Err(end) => end,
        };
        let e = match end {
            End::Left => {
                tracing::info!(node = %m.record.id, "left the cluster");
                return;
            }
            End::Lost(e) => e,
        };
        if let Some(r) = m.ready.take() {
            // Never joined: `serve` reports it and stops.
            let _ = r.send(Err(e));
            return;
        }
        tracing::warn!(error = %e, "cluster: membership lost; joining again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Membership {
    fn id_taken(&self) -> String {
        format!(
            "node id {:?} is held by a live member of cluster {:?}",
            self.record.id, self.cfg.name
        )
    }

    /// One membership: join (or resume the lease still held), then serve
    /// it until something ends it.
    async fn join(&mut self) -> Result<Never, End> {
        let ttl = self.cfg.lease_ttl_secs;
        let mut client = connect(&self.cfg).await?;
        check_meta(&mut client, &self.keys, self.record.buckets).await?;
        let node_key = self.keys.node(&self.record.id);
        // After a broken connection, go on with the lease this node still
        // holds, if etcd has kept it (and the key under it): the members
        // see no change.
        if let Some(lease) = self.held {
            let sent = Instant::now();
            if let Some(left) = renew_once(&mut client, lease).await {
                let got = client
                    .get(node_key.clone(), None)
                    .await
                    .map_err(err("join"))?;
                if got.kvs().first().is_some_and(|kv| kv.lease() == lease) {
                    let until = sent + Duration::from_secs(left);
                    return self.serve(client, lease, until).await;
                }
            }
            self.held = None;
        }
        // The key must be free: a live node with the same id holds it, or
        // this node's previous process whose lease has not run out yet
        // (after a kill -9: wait for it, at most one TTL and a bit). The
        // lease is taken only then, so it cannot run out while we wait.
        let wait_until = Instant::now() + Duration::from_secs(ttl + 2);
        loop {
            let got = client
                .get(node_key.clone(), None)
                .await
                .map_err(err("join"))?;
            if got.kvs().is_empty() {
                break;
            }
            if Instant::now() >= wait_until {
                return Err(self.id_taken().into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.record.tls_sha256 = self.pins.borrow_and_update().clone();
        let asked = Instant::now();
        let lease = client
            .lease_grant(ttl as i64, None)
            .await
            .map_err(err("lease"))?
            .id();
        let value = serde_json::to_vec(&self.record).expect("node record serializes");
        let txn = Txn::new()
            .when([Compare::create_revision(
                node_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                node_key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        if !client.txn(txn).await.map_err(err("join"))?.succeeded() {
            // Someone took the id between our look and our write.
            let _ = client.lease_revoke(lease).await;
            return Err(self.id_taken().into());
        }
        self.held = Some(lease);
        self.serve(client, lease, asked + Duration::from_secs(ttl))
            .await
    }

    /// A joined member: publish the view, keep the lease alive, follow the
    /// map, fail over for gone members, leave when told.
    async fn serve(
        &mut self,
        mut client: Client,
        lease: i64,
        mut lease_until: Instant,
    ) -> Result<Never, End> {
        let Membership {
            cfg,
            keys,
            record,
            view,
            ready,
            stop,
            pins,
            progress,
            ..
        } = self;
        let node_key = keys.node(&record.id);
        let (mut keeper, mut alive) = client
            .lease_keep_alive(lease)
            .await
            .map_err(err("keep-alive"))?;
        let mut watch = client
            .watch(keys.prefix(), Some(WatchOptions::new().with_prefix()))
            .await
            .map_err(err("watch"))?;
        let publish = |mut v: View, until: Instant| {
            v.lease_until = Some(until);
            let version = |v: &View| v.placement.as_ref().map(|(_, n)| *n);
            if version(&v) != version(&view.load()) {
                tracing::info!(version = ?version(&v), members = v.members.len(), "cluster: bucket map");
            }
            view.store(Arc::new(v));
        };
        publish(load(&mut client, keys).await?, lease_until);
        tracing::info!(cluster = %cfg.name, node = %record.id, lease, "joined the cluster");
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        let every = Duration::from_millis(cfg.lease_ttl_secs * 1000 / 3);
        let mut pins_open = true;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut *stop => {
                    // No acknowledgement from here on, then the key goes.
                    let mut v = (**view.load()).clone();
                    v.lease_until = None;
                    view.store(Arc::new(v));
                    let _ = tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
                    return Err(End::Left);
                }
                _ = tick.tick() => {
                    let sent = Instant::now();
                    // A slow answer is fine while the lease lasts; past its
                    // end this membership is over (the node stops
                    // acknowledging by itself meanwhile).
                    let patience = lease_until.saturating_duration_since(sent).max(every);
                    let renewed = tokio::time::timeout(patience, async {
                        keeper.keep_alive().await.map_err(err("keep-alive"))?;
                        alive.message().await.map_err(err("keep-alive"))
                    })
                    .await
                    .map_err(|_| "etcd keep-alive: no answer".to_string())??;
                    match renewed {
                        Some(r) if r.ttl() > 0 => {
                            lease_until = sent + Duration::from_secs(r.ttl() as u64);
                            let mut v = (**view.load()).clone();
                            v.lease_until = Some(lease_until);
                            view.store(Arc::new(v));
                        }
                        _ => return Err("the lease expired".to_string().into()),
                    }
                    // Bucket copies that finished since: publish how far.
                    let copied = progress.copied();
                    if copied > record.copied {
                        record.copied = copied;
                        let value = serde_json::to_vec(&*record).expect("node record serializes");
                        client
                            .put(node_key.clone(), value, Some(PutOptions::new().with_lease(lease)))
                            .await
                            .map_err(err("publishing the copies"))?;
                        tracing::info!(copied, "cluster: bucket copies published");
                    }
                }
                changed = pins.changed(), if pins_open => {
                    if changed.is_err() {
                        // The certificates went away with the server;
                        // nothing more to publish.
                        pins_open = false;
                        continue;
                    }
                    record.tls_sha256 = pins.borrow_and_update().clone();
                    let value = serde_json::to_vec(&*record).expect("node record serializes");
                    if let Err(e) = client
                        .put(node_key.clone(), value, Some(PutOptions::new().with_lease(lease)))
                        .await
                    {
                        // Published by the next membership (a resumed
                        // lease keeps the old record otherwise).
                        pins.mark_changed();
                        return Err(err("publishing the certificates")(e).into());
                    }
                    tracing::info!(pins = ?record.tls_sha256, "cluster: new certificate fingerprints published");
                }
                event = watch.message() => {
                    match event.map_err(err("watch"))? {
                        // A canceled watch (etcd compacted past it) sends
                        // nothing more: start over rather than go stale.
                        Some(w) if w.canceled() => return Err("etcd watch: canceled".to_string().into()),
                        Some(_) => {
                            let v = load(&mut client, keys).await?;
                            let fail_over = should_fail_over(&v, &record.id);
                            publish(v, lease_until);
                            if fail_over {
                                // A member's lease ran out: its buckets go to
                                // their replicas, and new replicas are chosen.
                                match replan(&mut client, keys, record.buckets, false, false).await {
                                    Ok(what) => tracing::warn!(what = what.trim(), "cluster: failover"),
                                    Err(e) => tracing::warn!(error = %e, "cluster: failover failed"),
                                }
                            }
                        }
                        None => return Err("etcd watch: closed".to_string().into()),
                    }
                }
            }
        }
    }
}

/// One keep-alive of `lease`, answered: its new TTL (None: expired or no answer).
async fn renew_once(client: &mut Client, lease: i64) -> Option<u64> {
    let once = async {
        let (mut keeper, mut alive) = client.lease_keep_alive(lease).await.ok()?;
        keeper.keep_alive().await.ok()?;
        alive.message().await.ok()?
    };
    let r = tokio::time::timeout(Duration::from_secs(2), once)
        .await
        .ok()??;
    (r.ttl() > 0).then_some(r.ttl() as u64)
}

/// `ringmail cluster status`: the members and the map, as text.
pub fn status(cfg: &Cluster) -> Result<String, String> {
    block_on(async {
        let keys = Keys::new(&cfg.name);
        let mut client = connect(cfg).await?;
        let view = load(&mut client, &keys).await?;
        Ok(describe(&cfg.name, &view))
    })
}

fn describe(name: &str, view: &View) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "cluster {name}: {} live node(s)", view.members.len());
    let counts: std::collections::BTreeMap<String, (usize, usize)> = view
        .placement
        .as_ref()
        .map(|(p, _)| {
            p.counts()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        })
        .unwrap_or_default();
    let version = view.placement.as_ref().map(|(_, v)| *v);
    for (id, r) in &view.members {
        let (p, rep) = counts.get(id).copied().unwrap_or((0, 0));
        // A node that holds buckets of the current map and has not copied
        // what it gained yet lacks their older mail: while it is behind,
        // its buckets' other node is the only one holding all of it.
        let behind = version.is_some_and(|v| r.copied < v) && p + rep > 0;
        let _ = writeln!(
            out,
            "node {id} internal={} cores={} primary={p} replica={rep}{} copied={}{}",
            r.internal,
            r.cores,
            if view.drained.contains(id) {
                " drained"
            } else {
                ""
            },
            r.copied,
            if behind { " copying" } else { "" }
        );
    }
    match &view.placement {
        Some((p, version)) => {
            let _ = writeln!(out, "placement version={version} buckets={}", p.buckets);
            for (id, (prim, rep)) in &counts {
                if !view.members.contains_key(id) {
                    let _ = writeln!(out, "gone {id} primary={prim} replica={rep}");
                }
            }
        }
        None => {
            let _ = writeln!(out, "placement none (run `ringmail cluster rebalance`)");
        }
    }
    out
}

/// `ringmail cluster rebalance`: a balanced map over the live members that
/// moves as few buckets as it can (live primaries stay unless
/// `move_primaries`: then in two steps, see `move_primaries_staged`),
/// written only if the map did not change meanwhile (compare its version; retried on a
/// conflict).
pub fn rebalance(cfg: &Cluster, dry_run: bool, move_primaries: bool) -> Result<String, String> {
    block_on(async {
        let keys = Keys::new(&cfg.name);
        let mut client = connect(cfg).await?;
        let meta = client.get(keys.meta(), None).await.map_err(err("meta"))?;
        let buckets = match meta.kvs().first() {
            Some(kv) => {
                serde_json::from_slice::<Meta>(kv.value())
                    .map_err(|e| format!("etcd meta: {e}"))?
                    .buckets
            }
            None => return Err(format!("no node has joined cluster {:?} yet", cfg.name)),
        };
        if move_primaries && !dry_run {
            return move_primaries_staged(&mut client, &keys, buckets).await;
        }
        replan(&mut client, &keys, buckets, move_primaries, dry_run).await
    })
}

/// Plan a map from the live members and the current map, and write it if
/// it differs (unless `dry_run`): the shared step of `rebalance` and of
/// the automatic failover.
async fn replan(
    client: &mut Client,
    keys: &Keys,
    buckets: u32,
    move_primaries: bool,
    dry_run: bool,
) -> Result<String, String> {
    for _ in 0..5 {
        let view = load(client, keys).await?;
        let live = view.placeable();
        let current = view.placement.as_ref().map(|(p, _)| p);
        let next = placement::plan(current, &live, buckets, move_primaries)?;
        let moved = |f: fn(&Placement, u32) -> Option<&str>| {
            (0..buckets)
                .filter(|&b| current.and_then(|c| f(c, b)) != f(&next, b))
                .count()
        };
        let (mp, mr) = (moved(Placement::primary_of), moved(Placement::replica_of));
        if current == Some(&next) {
            return Ok(format!("placement unchanged ({} live nodes)\n", live.len()));
        }
        let summary = format!(
            "{} live nodes; {mp} primaries and {mr} replicas change",
            live.len()
        );
        if dry_run {
            return Ok(format!("{summary} (dry run, nothing written)\n"));
        }
        let was = view.placement.as_ref().map(|(_, v)| *v);
        if let Some(version) = write_map(client, keys, &next, was).await? {
            return Ok(format!("{summary}; placement version={version}\n"));
        }
        // Someone else changed the map meanwhile: plan again from theirs.
    }
    Err("the placement kept changing; try again".into())
}

/// Write `map` if the map's version is still `was` (None: no map yet);
/// its new version, or None when someone changed it meanwhile.
async fn write_map(
    client: &mut Client,
    keys: &Keys,
    map: &Placement,
    was: Option<i64>,
) -> Result<Option<i64>, String> {
    let key = keys.placement();
    let guard = match was {
        Some(version) => Compare::mod_revision(key.clone(), CompareOp::Equal, version),
        None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
    };
    let txn = Txn::new()
        .when([guard])
        .and_then([TxnOp::put(key, map.to_json(), None)]);
    let r = client.txn(txn).await.map_err(err("placement"))?;
    Ok(r.succeeded()
        .then(|| r.header().map(|h| h.revision()).unwrap_or_default()))
}

/// How long `rebalance --move-primaries` waits for the new primaries to
/// copy their buckets.
const COPY_WAIT: Duration = Duration::from_secs(600);

/// `rebalance --move-primaries` in two steps, so that no account is
/// served by a node that does not hold its mail yet: first a map where
/// each moving bucket keeps its primary and takes its new primary as
/// replica (`placement::staging`: the new primary copies the bucket and
/// receives every delivery meanwhile), then, once every node that gained
/// buckets published that it copied them (`NodeRecord::copied`), the
/// balanced map. A map that changes in between (a failover) stops it.
async fn move_primaries_staged(
    client: &mut Client,
    keys: &Keys,
    buckets: u32,
) -> Result<String, String> {
    let view = load(client, keys).await?;
    let Some((current, version)) = view.placement.clone() else {
        // No map yet: nothing is stored anywhere to copy.
        return replan(client, keys, buckets, true, false).await;
    };
    let live = view.placeable();
    let next = placement::plan(Some(&current), &live, buckets, true)?;
    if next == current {
        return Ok(format!("placement unchanged ({} live nodes)\n", live.len()));
    }
    let holds =
        |p: &Placement, b: u32, n: &str| p.primary_of(b) == Some(n) || p.replica_of(b) == Some(n);
    // Every node that will be a bucket's primary without being it now
    // (already its replica or not) must have copied it first.
    let mut gainers: Vec<String> = (0..buckets)
        .filter(|&b| next.primary_of(b) != current.primary_of(b))
        .filter_map(|b| next.primary_of(b).map(str::to_string))
        .collect();
    let mid = placement::staging(&current, &next);
    let staged = if mid != current && mid != next {
        gainers.extend(
            mid.nodes
                .iter()
                .filter(|n| (0..buckets).any(|b| holds(&mid, b, n) && !holds(&current, b, n)))
                .cloned(),
        );
        match write_map(client, keys, &mid, Some(version)).await? {
            Some(v) => v,
            None => return Err("the placement changed meanwhile; try again".into()),
        }
    } else {
        version
    };
    gainers.sort();
    gainers.dedup();
    let deadline = tokio::time::Instant::now() + COPY_WAIT;
    loop {
        let view = load(client, keys).await?;
        if view.placement.as_ref().map(|(_, v)| *v) != Some(staged) {
            return Err(format!(
                "the placement changed while the new primaries copied their buckets (map {staged} was written); run rebalance again"
            ));
        }
        let waiting: Vec<&str> = gainers
            .iter()
            .filter(|g| view.members.get(*g).is_none_or(|r| r.copied < staged))
            .map(String::as_str)
            .collect();
        if waiting.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{} did not finish copying within {COPY_WAIT:?} (map {staged} was written; run rebalance --move-primaries again)",
                waiting.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match write_map(client, keys, &next, Some(staged)).await? {
        Some(v) => Ok(format!(
            "{} live nodes; primaries moved after {} copied their buckets (map {staged}); placement version={v}\n",
            live.len(),
            gainers.join(", ")
        )),
        None => Err("the placement changed meanwhile; run rebalance again".into()),
    }
}

/// Failover: does the map name a node that is no longer a member, and is
/// this node the one to act (the live member with the smallest id)? Every
/// node sees the same members, so one acts; if two did, the map's version
/// lets only one transaction through.
fn should_fail_over(view: &View, me: &str) -> bool {
    let Some((map, _)) = &view.placement else {
        return false;
    };
    let gone = map.nodes.iter().any(|n| {
        (!view.members.contains_key(n) || view.drained.contains(n))
            && (0..map.buckets).any(|b| {
                map.primary_of(b) == Some(n.as_str()) || map.replica_of(b) == Some(n.as_str())
            })
    });
    gone && view.members.keys().next().map(String::as_str) == Some(me)
}

/// `ringmail cluster drain NODE`: give the node no buckets (its primaries
/// go to their replicas, which hold every acknowledged delivery; it holds
/// no replicas), for maintenance or removal; `undo` lets it take buckets
/// again at the next `rebalance`. The mark stays in etcd across restarts.
pub fn drain(cfg: &Cluster, node: &str, undo: bool) -> Result<String, String> {
    block_on(async {
        let keys = Keys::new(&cfg.name);
        let mut client = connect(cfg).await?;
        let key = format!("{}{node}", keys.drained());
        if undo {
            client.delete(key, None).await.map_err(err("drain"))?;
            return Ok(format!(
                "{node} may take buckets again (run `ringmail cluster rebalance`)\n"
            ));
        }
        let view = load(&mut client, &keys).await?;
        let Some((map, _)) = &view.placement else {
            return Err("no placement yet".into());
        };
        if view.placeable().iter().all(|n| n == node) {
            return Err(format!("{node} is the last node buckets can be placed on"));
        }
        let buckets = map.buckets;
        client
            .put(key, b"".to_vec(), None)
            .await
            .map_err(err("drain"))?;
        let what = replan(&mut client, &keys, buckets, false, false).await?;
        Ok(format!("{node} drained: {what}"))
    })
}

/// `ringmail cluster locate`: each account's bucket, its primary and
/// replica, from one read of the map.
pub fn locate(cfg: &Cluster, accounts: &[String]) -> Result<String, String> {
    block_on(async {
        let keys = Keys::new(&cfg.name);
        let mut client = connect(cfg).await?;
        let view = load(&mut client, &keys).await?;
        let Some((map, version)) = &view.placement else {
            return Err("no placement yet (run `ringmail cluster rebalance`)".into());
        };
        let node = |id: Option<&str>| match id {
            None => "none".to_string(),
            Some(id) => match view.members.get(id) {
                Some(m) => format!("{id} internal={} imap={}", m.internal, m.imap.join(",")),
                None => format!("{id} (gone)"),
            },
        };
        let mut out = String::new();
        for account in accounts {
            let bucket = crate::storage::bucket_of(account, map.buckets);
            out.push_str(&format!(
                "account {account} bucket={bucket} version={version}\nprimary {}\nreplica {}\n",
                node(map.primary_of(bucket)),
                node(map.replica_of(bucket)),
            ));
        }
        Ok(out)
    })
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    crate::util::side_runtime()
        .map_err(|e| format!("runtime: {e}"))?
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, copied: i64) -> NodeRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "internal": "127.0.0.1:1", "smtp": [], "imap": [], "pop3": [],
            "cores": 1, "buckets": 4, "copied": copied,
        }))
        .unwrap()
    }

    /// `cluster status` names what each node has copied, and marks a node
    /// still copying buckets of the current map.
    #[test]
    fn status_marks_a_node_still_copying() {
        let nodes = ["a".to_string(), "b".to_string()];
        let placement = crate::cluster::placement::plan(None, &nodes, 4, true).unwrap();
        let mut view = View {
            members: std::collections::BTreeMap::new(),
            placement: Some((placement, 9)),
            lease_until: None,
            drained: Default::default(),
        };
        view.members.insert("a".into(), record("a", 9));
        view.members.insert("b".into(), record("b", 7));
        // Holds no bucket: nothing to copy, whatever its figure.
        view.members.insert("c".into(), record("c", 0));
        let text = describe("t", &view);
        let line = |id: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("node {id} ")))
                .unwrap()
                .to_string()
        };
        assert!(line("a").ends_with("copied=9"), "{text}");
        assert!(line("b").ends_with("copied=7 copying"), "{text}");
        assert!(
            line("c").ends_with("primary=0 replica=0 copied=0"),
            "{text}"
        );
    }
}
