//! Cluster mode on a shard: which node holds an account's bucket (from the
//! published `cluster::View`, never a call to etcd), and handing a message
//! over to that node's internal listener.
use std::net::{IpAddr, SocketAddr};

use std::rc::Rc;
use std::sync::Arc;

use super::shard::{Shard, ShardMsg};
use super::transfer;
use crate::cluster::{Placement, View};
use crate::protocol::smtp::command::AppendTo;
use crate::session::smtp::Transaction;
use crate::storage::StorageError;

/// Recipients split by the node that stores them.
pub struct Routes {
    /// This node is the bucket's primary (or there is no cluster, or no map yet).
    pub here: Vec<String>,
    /// Per other node: where to hand its recipients' mail over.
    pub away: Vec<Away>,
}

/// Another node's share of a message.
pub struct Away {
    pub node: String,
    /// Its internal listener.
    pub to: SocketAddr,
    /// Its certificates' fingerprints (the hand-over runs over TLS).
    pub pins: Vec<String>,
    pub recipients: Vec<String>,
}

/// The cluster as this node sees it, when a bucket map exists.
pub struct Mapped<'a> {
    pub view: arc_swap::Guard<std::sync::Arc<View>>,
    /// This node's id.
    pub me: &'a str,
}

impl Mapped<'_> {
    pub fn map(&self) -> &Placement {
        &self.view.placement.as_ref().expect("Mapped has a map").0
    }
}

/// A shard's operations in flight by the map version they routed with,
/// published as the oldest to [`crate::cluster::InFlight`].
pub struct Routings {
    shard: usize,
    counts: std::cell::RefCell<std::collections::BTreeMap<i64, usize>>,
    /// Tickets given (`InFlight::mark`) and those still in flight.
    issued: std::cell::Cell<u64>,
    tickets: std::cell::RefCell<std::collections::BTreeSet<u64>>,
    published: Arc<crate::cluster::InFlight>,
}

impl Routings {
    pub fn new(shard: usize, published: Arc<crate::cluster::InFlight>) -> Routings {
        Routings {
            shard,
            counts: Default::default(),
            issued: Default::default(),
            tickets: Default::default(),
            published,
        }
    }

    /// A new ticket (`up`) or one ended.
    fn ticket(&self, ended: Option<u64>) -> u64 {
        let mut tickets = self.tickets.borrow_mut();
        let t = match ended {
            Some(t) => {
                tickets.remove(&t);
                t
            }
            None => {
                let t = self.issued.get();
                self.issued.set(t + 1);
                tickets.insert(t);
                t
            }
        };
        let oldest = tickets.first().copied().unwrap_or(u64::MAX);
        self.published
            .set_tickets(self.shard, self.issued.get(), oldest);
        t
    }

    fn change(&self, version: i64, up: bool) {
        let mut counts = self.counts.borrow_mut();
        let n = counts.entry(version).or_insert(0);
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&version);
            }
        }
        let oldest = counts.keys().next().copied().unwrap_or(i64::MAX);
        self.published.set(self.shard, oldest);
    }
}

/// An operation in flight with the map it routed with; dropped once its
/// local commit is done (or it gave up).
pub struct Routing(Option<(Rc<Routings>, i64, u64)>);

impl Drop for Routing {
    fn drop(&mut self) {
        if let Some((r, v, t)) = self.0.take() {
            r.change(v, false);
            r.ticket(Some(t));
        }
    }
}

impl Shard {
    /// Cluster mode: register an operation that is about to choose where
    /// its copies go, with the map version seen now (before it routes, so
    /// the version is never newer than the map it acts on); hold it until
    /// the local commit. Nothing outside a cluster.
    pub fn routing(&self) -> Routing {
        self.routing_from(None)
    }

    /// [`Shard::routing`] for what another node routed with map `sent`
    /// (`XMAP=`): registered under the older of the two, since the
    /// sender chose the copies' nodes with its map.
    pub fn routing_from(&self, sent: Option<u64>) -> Routing {
        match self.map_version() {
            None => Routing(None),
            Some(v) => {
                let sent = sent.map_or(v, |s| i64::try_from(s).unwrap_or(i64::MAX));
                let v = v.min(sent);
                self.routings.change(v, true);
                let t = self.routings.ticket(None);
                Routing(Some((self.routings.clone(), v, t)))
            }
        }
    }

    /// Wait (at most `limit`) until every operation registered on any
    /// shard of this node before now has ended (`InFlight::mark`).
    pub async fn quiesced(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mark = self.shared.in_flight.mark();
        while !self.shared.in_flight.passed(&mark) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// Wait (at most `limit`) until no operation on any shard of this
    /// node is still in flight with a map older than `version`.
    pub async fn settled(&self, version: i64, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.shared.in_flight.oldest() < version {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// The cluster view, if this node is in a cluster that has a bucket map
    /// (before the first `rebalance` every node keeps what it receives).
    pub fn mapped(&self) -> Option<Mapped<'_>> {
        let (Some(c), Some(cfg)) = (&self.shared.cluster, &self.shared.config.cluster) else {
            return None;
        };
        let view = c.load();
        view.placement.is_some().then_some(Mapped {
            view,
            me: &cfg.node,
        })
    }

    /// Is this node where `account`'s mailboxes are served: its bucket's
    /// primary (or no cluster, or no map yet)? A session whose account
    /// moved away is ended, so that its client connects again and reaches
    /// the new primary (`Shard::end_moved_sessions`).
    pub fn serves(&self, account: &str) -> bool {
        self.mapped()
            .is_none_or(|m| m.map().primary_of(self.bucket(account)) == Some(m.me))
    }

    /// Is this node the replica of `account`'s bucket in the map it sees?
    pub fn is_replica_of(&self, account: &str) -> bool {
        self.mapped()
            .is_some_and(|m| m.map().replica_of(self.bucket(account)) == Some(m.me))
    }

    /// The map's version, if there is one.
    pub fn map_version(&self) -> Option<i64> {
        self.mapped()
            .and_then(|m| m.view.placement.as_ref().map(|(_, v)| *v))
    }

    /// Wait (at most `limit`) until this node has seen a bucket map at
    /// least as new as `version`, which another node acted on; false if it
    /// has not by then. Versions are etcd revisions: they only grow.
    pub async fn map_at_least(&self, version: i64, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.map_version().unwrap_or(0) < version {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        }
        true
    }

    /// The storage bucket of an account.
    pub fn bucket(&self, account: &str) -> u32 {
        crate::storage::bucket_of(account, self.shared.meta.buckets)
    }

    /// Cluster mode with `duplicate_window_secs`: how to store `message`
    /// once across its sender's attempts (`cluster::duplicates`); None
    /// outside a cluster, with the window off, or without a Message-ID.
    pub fn once_for(&self, reverse_path: &str, message: &[u8]) -> Option<super::shard::Once> {
        let window = self.shared.config.cluster.as_ref()?.duplicate_window_secs;
        if window == 0 {
            return None;
        }
        Some(super::shard::Once {
            identity: crate::cluster::duplicates::identity(reverse_path, message)?,
            window: window as i64,
        })
    }

    /// Is `sha256` (`AB:CD:...`) the fingerprint of a certificate a live
    /// member of our cluster published?
    pub fn is_member_certificate(&self, sha256: &str) -> bool {
        let Some(c) = &self.shared.cluster else {
            return false;
        };
        c.load()
            .members
            .values()
            .any(|m| m.tls_sha256.iter().any(|p| p.eq_ignore_ascii_case(sha256)))
    }

    /// Is `ip` the internal address of a live member of our cluster?
    pub fn is_cluster_peer(&self, ip: IpAddr) -> bool {
        let Some(c) = &self.shared.cluster else {
            return false;
        };
        c.load().members.values().any(|m| {
            m.internal_addr()
                .is_some_and(|a| a.ip().to_canonical() == ip.to_canonical())
        })
    }

    /// Where each account's bucket lives. `internal`: the message came from
    /// another node, so every account must be ours (a map that moved in
    /// between is answered with a temporary failure, never forwarded on:
    /// no loops). Err: some recipient's node cannot take mail now.
    pub fn route(&self, accounts: &[String], internal: bool) -> Result<Routes, String> {
        let Some(m) = self.mapped() else {
            return Ok(Routes {
                here: accounts.to_vec(),
                away: Vec::new(),
            });
        };
        let map = m.map();
        let mut routes = Routes {
            here: Vec::new(),
            away: Vec::new(),
        };
        for a in accounts {
            let bucket = self.bucket(a);
            let owner = map
                .primary_of(bucket)
                .ok_or_else(|| format!("bucket {bucket} has no primary"))?;
            // An internal session also takes the copies of the buckets
            // this node is replica for (the primary sends them).
            let replica_here = internal && map.replica_of(bucket) == Some(m.me);
            if owner == m.me || replica_here {
                routes.here.push(a.clone());
                continue;
            }
            if internal {
                return Err(format!(
                    "bucket {bucket} of {a} belongs to {owner}, not to this node"
                ));
            }
            push_away(&mut routes.away, &m.view, self, owner, bucket, a)?;
        }
        Ok(routes)
    }

    /// The copies a delivery owes: of `accounts` (stored here), those whose
    /// bucket this node is primary for, by their replica node. Err: a
    /// replica is not live, so the delivery cannot be acknowledged.
    pub fn replicas(&self, accounts: &[String]) -> Result<Vec<Away>, String> {
        let Some(m) = self.mapped() else {
            return Ok(Vec::new());
        };
        let map = m.map();
        let mut copies = Vec::new();
        for a in accounts {
            let bucket = self.bucket(a);
            if map.primary_of(bucket) != Some(m.me) {
                continue;
            }
            match map.replica_of(bucket) {
                Some(r) if r != m.me => push_away(&mut copies, &m.view, self, r, bucket, a)?,
                _ => {}
            }
        }
        Ok(copies)
    }

    /// Is the replica the map names for `account`'s bucket marked silent
    /// (`peer::Silence`)?
    pub fn replica_silent(&self, account: &str) -> bool {
        let Some(m) = self.mapped() else {
            return false;
        };
        m.map()
            .replica_of(self.bucket(account))
            .and_then(|r| m.view.members.get(r))
            .and_then(|member| member.internal_addr())
            .is_some_and(|to| self.peers.is_silent(to))
    }
}

/// Add `account` to the share of `node` (a live member, not gone silent:
/// [`super::peer::Pool::is_silent`]) in `list`.
fn push_away(
    list: &mut Vec<Away>,
    view: &View,
    shard: &Shard,
    node: &str,
    bucket: u32,
    account: &str,
) -> Result<(), String> {
    let member = view
        .members
        .get(node)
        .ok_or_else(|| format!("node {node} of bucket {bucket} is not live"))?;
    let to = member
        .internal_addr()
        .ok_or_else(|| format!("node {node}: bad internal address {:?}", member.internal))?;
    if shard.peers.is_silent(to) {
        shard.metrics.refused_silent();
        return Err(format!(
            "node {node} of bucket {bucket} did not answer a hand-over in time"
        ));
    }
    match list.iter_mut().find(|w| w.to == to) {
        Some(w) => w.recipients.push(account.to_string()),
        None => list.push(Away {
            node: node.to_string(),
            to,
            pins: member.tls_sha256.clone(),
            recipients: vec![account.to_string()],
        }),
    }
    Ok(())
}

/// How long an internal session waits for the map its sender acted on.
const MAP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// An internal session's wait (up to [`MAP_WAIT`]) for the bucket map the
/// sending node acted on (`XMAP=`), before it routes or stores anything.
async fn sender_map_seen(shard: &Shard, map_version: Option<u64>) -> Result<(), String> {
    let Some(v) = map_version else {
        return Ok(());
    };
    let v = i64::try_from(v).unwrap_or(i64::MAX);
    if shard.map_at_least(v, MAP_WAIT).await {
        Ok(())
    } else {
        Err(format!(
            "the sending node acted on bucket map {v}, which this node has not seen"
        ))
    }
}

/// Cluster mode at the end of data, first half: where the message goes.
/// `here`: the accounts whose bucket this node is primary for (stored
/// here); `away`: the shares of the buckets other nodes are primary for,
/// and the copies of `here` for each bucket's replica. Err (451) when a
/// bucket's node or replica is not live, before anything is stored
/// anywhere. `internal`: the message came from another node (see
/// [`Shard::route`]); it routes with a map at least as new as the one the
/// sender routed with (`XMAP=`), so a node that has not yet seen a bucket
/// leave it does not store it.
pub async fn plan_delivery(
    shard: &Shard,
    accounts: &[String],
    internal: bool,
    tx: &Transaction,
) -> Result<Routes, String> {
    if internal {
        sender_map_seen(shard, tx.map_version).await?;
    }
    let routes = shard.route(accounts, internal)?;
    let mut away = routes.away;
    away.extend(shard.replicas(&routes.here)?);
    Ok(Routes {
        here: routes.here,
        away,
    })
}

/// Second half: hand the message to every node of `away` at once; Ok once
/// each answered 250 (durable there), else the first failure. The caller
/// commits `here` after it (so a message is visible here only once its
/// replica holds it). `nested`: this node is itself serving another
/// node's hand-over, whose sender waits on this one
/// ([`super::peer::hand_over`]). The other node adds its Received: and
/// Return-Path:; our Authentication-Results and `junk` (the edge's
/// verdict: `XJUNK`) go with the message.
pub async fn send_copies(
    shard: &Shard,
    away: &[Away],
    tx: &Transaction,
    results_field: Option<&str>,
    body: &[u8],
    junk: bool,
    nested: bool,
) -> Result<(), String> {
    if away.is_empty() {
        return Ok(());
    }
    let joined;
    let bytes: &[u8] = match results_field {
        Some(f) => {
            joined = [f.as_bytes(), body].concat();
            &joined
        }
        None => body,
    };
    let message = super::peer::Outgoing {
        reverse_path: &tx.reverse_path,
        body: bytes,
        smtputf8: tx.smtputf8,
        eight_bit: tx.body_8bit,
        map_version: shard.map_version(),
        junk,
        append: None,
        changes: false,
    };
    // Every node at once; the first failure is the answer.
    let sends = away.iter().map(|away| async {
        super::peer::hand_over(
            shard,
            away.to,
            &away.pins,
            &away.recipients,
            &message,
            nested,
        )
        .await
        .map_err(|e| format!("{} at {}: {e}", away.node, away.to))?;
        tracing::debug!(
            node = away.node,
            recipients = away.recipients.len(),
            "handed over to the bucket's node"
        );
        Ok::<(), String>(())
    });
    for r in futures::future::join_all(sends).await {
        r?;
    }
    Ok(())
}

/// The primary's half of replicating an IMAP APPEND: before the message
/// is stored here, it goes to the replica of the account's bucket, into
/// the mailbox of the same name with its flags, keywords and internal
/// date, and the APPEND waits for the replica's 250. Err when the replica
/// did not take it: the APPEND answers NO and stores nothing.
pub async fn replicate_append(
    shard: &Shard,
    account: &str,
    to: &AppendTo,
    body: &[u8],
) -> Result<(), StorageError> {
    if shard.mapped().is_none() {
        return Ok(());
    }
    let away = shard
        .replicas(&[account.to_string()])
        .map_err(StorageError::Unavailable)?;
    let message = super::peer::Outgoing {
        reverse_path: "",
        body,
        smtputf8: false,
        eight_bit: true,
        map_version: shard.map_version(),
        junk: false,
        append: Some(to),
        changes: false,
    };
    for a in &away {
        super::peer::hand_over(shard, a.to, &a.pins, &a.recipients, &message, false)
            .await
            .map_err(|e| {
                StorageError::Io(format!("replica {} did not take the APPEND: {e}", a.node))
            })?;
    }
    Ok(())
}

/// The replica's half: store an APPEND's copy for `accounts` (each must be
/// of a bucket this node holds) as the primary stored it.
pub async fn store_appended(
    shard: &Rc<Shard>,
    accounts: &[String],
    to: &AppendTo,
    body: &[u8],
    map_version: Option<u64>,
) -> Result<(), StorageError> {
    on_owners(shard, accounts, map_version, |account, reply| {
        ShardMsg::Append {
            account,
            to: to.clone(),
            body: body.to_vec(),
            reply,
        }
    })
    .await
}

/// An internal session's work for `accounts`: once this node has seen the
/// map the sending node acted on, each account this node holds gets
/// `work` on its owner shard (this one included), in turn; the first
/// failure is the answer.
pub(super) async fn on_owners(
    shard: &Rc<Shard>,
    accounts: &[String],
    map_version: Option<u64>,
    work: impl Fn(String, futures::channel::oneshot::Sender<Result<(), String>>) -> ShardMsg,
) -> Result<(), StorageError> {
    sender_map_seen(shard, map_version)
        .await
        .map_err(StorageError::Io)?;
    let routes = shard.route(accounts, true).map_err(StorageError::Io)?;
    for account in routes.here {
        let owner = shard.owner_of(&account);
        let (reply, rx) = futures::channel::oneshot::channel();
        let msg = work(account, reply);
        if owner == shard.id {
            shard.clone().handle(msg).await;
        } else {
            shard
                .senders
                .send_to(owner, msg)
                .await
                .map_err(|_| StorageError::Io("a shard is gone".into()))?;
        }
        rx.await
            .unwrap_or_else(|_| Err("a shard did not answer".into()))
            .map_err(StorageError::Io)?;
    }
    Ok(())
}

/// [`store_appended`] for one account this shard owns.
pub async fn append_here(
    shard: &Rc<Shard>,
    account: &str,
    to: AppendTo,
    body: Vec<u8>,
) -> Result<(), String> {
    let opened = transfer::open(
        shard,
        account,
        &to.mailbox,
        0,
        crate::storage::index::special::NONE,
        transfer::Digests::Skip,
    )
    .await?;
    let message = transfer::Incoming {
        uid: 0,
        flags: to.flags,
        keywords: to.keywords,
        internal_date: to.internal_date,
        body,
    };
    transfer::append(shard, account, opened.id, false, vec![message])
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_map_in_flight_is_published_until_its_last_operation_ends() {
        let published = Arc::new(crate::cluster::InFlight::new(2));
        let shard1 = Rc::new(Routings::new(1, published.clone()));
        assert_eq!(published.oldest(), i64::MAX);
        let hold = |v: i64| {
            shard1.change(v, true);
            let t = shard1.ticket(None);
            Routing(Some((shard1.clone(), v, t)))
        };
        let a = hold(7);
        let b = hold(7);
        // What is in flight now must end before the mark passes, whatever
        // its map; what comes after does not count.
        let mark = published.mark();
        assert!(!published.passed(&mark));
        let c = hold(9);
        assert_eq!(published.oldest(), 7);
        drop(a);
        assert_eq!(published.oldest(), 7);
        assert!(!published.passed(&mark));
        drop(b);
        assert!(published.passed(&mark), "c came after the mark");
        assert!(!published.passed(&published.mark()));
        assert_eq!(published.oldest(), 9);
        published.set(0, 8);
        assert_eq!(published.oldest(), 8);
        published.set(0, i64::MAX);
        drop(c);
        assert_eq!(published.oldest(), i64::MAX);
        assert!(published.passed(&published.mark()));
        drop(Routing(None));
    }
}
