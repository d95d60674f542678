//! One shard: an executor pinned to a core, its store, its listeners, and its
//! end of the channel mesh. Shard state is `Rc`/`RefCell`: nothing here is
//! shared with another thread except through mesh messages and the
//! read-only [`Shared`] block.
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::net::TcpListener;

use crate::accounts::{self, Directory};
use crate::config::Config;
use crate::session::pop3::Pop3Session;
use crate::storage::{self, Folder, Meta, SegmentUsage, StorageError, Store, StoreConfig};

use super::limiter::{Limiter, Permit};
use super::spool::{Budget, MessageBody};
use super::throttle;
use crate::transport::{Conn, Detached};

/// What every shard shares, read-only (the directory swaps atomically).
pub struct Shared {
    /// Cluster mode: the membership thread's published view (`[cluster]`).
    pub cluster: Option<crate::cluster::Shared>,
    /// Cluster mode: how far each shard copied the buckets it gained.
    pub copied: Arc<crate::cluster::Progress>,
    /// Cluster mode: the oldest map each shard's operations in flight
    /// routed with (`Shard::routing`).
    pub in_flight: Arc<crate::cluster::InFlight>,
    /// Cluster mode: the nodes that went silent, for every shard's
    /// hand-overs (`peer::Silence`).
    pub silence: Arc<super::peer::Silence>,
    /// Cluster mode: bucket copies this node sends now
    /// (`catchup::SENDS_MAX`).
    pub bucket_sends: std::sync::atomic::AtomicUsize,
    /// Cluster mode: per shard, the buckets it is copying here or whose
    /// copy waits (`catchup`): this node may lack older mail of those, so
    /// a copy it sends of them must not make the receiver drop what this
    /// node lacks.
    pub copies_open: std::sync::Mutex<HashMap<usize, HashSet<u32>>>,
    /// The configuration the server started with: what a reload cannot
    /// change (listeners, cores, data directory, storage, memory) is read
    /// here. Everything else is read through [`Shard::config`].
    pub config: Config,
    /// The configuration in force, replaced by a reload (`runtime::reload`).
    pub live: Arc<ArcSwap<Config>>,
    /// Bumped after each `live` store; shards compare it to refresh their copy.
    pub config_epoch: std::sync::atomic::AtomicU64,
    pub cores: usize,
    pub meta: Meta,
    pub directory: Arc<ArcSwap<Directory>>,
    pub limiter: Arc<Limiter>,
    /// Storage use per account, kept by the owner shards (quota checks).
    pub usage: Arc<crate::storage::UsageTable>,
    pub shutdown: AtomicBool,
    pub smtp: Vec<SocketAddr>,
    pub pop3: Vec<SocketAddr>,
    pub imap: Vec<SocketAddr>,
    /// Each shard reports once: its id and the CPU it is pinned to, or why it failed.
    pub ready: std::sync::mpsc::SyncSender<Result<(usize, Option<usize>), String>>,
    // --- relay (runtime/relay.rs) ---
    pub submission: Vec<SocketAddr>,
    pub relay: super::relay::RelayShared,
    pub listeners: super::listen::Listeners,
    // --- implicit TLS listeners, and the TLS set-up of every listener ---
    pub submissions: Vec<SocketAddr>,
    pub imaps: Vec<SocketAddr>,
    pub pop3s: Vec<SocketAddr>,
    pub tls: Arc<crate::tls::Tls>,
    // --- message data in flight (runtime/spool.rs) ---
    pub spool_dir: std::path::PathBuf,
    pub session_ram_max: u64,
    pub spool_max: u64,
    /// DKIM signing keys (`DATA/dkim/`).
    pub dkim: Arc<crate::dkim::Keys>,
    // --- metrics (metrics.rs): each shard's latest snapshot ---
    pub published: Arc<crate::metrics::Published>,
    /// Every shard is serving (set after the ready line; `/healthz`).
    pub serving: AtomicBool,
    /// Inbound mail authentication on the DNS thread (`auth/`); `None` when
    /// `[mail_auth] verify` is off or the DNS thread did not start.
    pub verifier: Option<crate::auth::Verifier>,
}

/// Messages between shards.
pub enum ShardMsg {
    /// Deliveries for accounts the receiver owns, collected by the sender
    /// during one turn of its executor; each is answered once durable.
    Deliver(Vec<Delivery>),
    /// A POP3 connection whose user logged in and whose account this shard
    /// owns: continue the session here.
    AdoptPop3 {
        conn: Detached,
        session: Box<Pop3Session>,
        account: String,
        permit: Permit,
    },
    /// An IMAP connection whose user logged in and whose account this shard
    /// owns: answer the login command (`tag`) and continue here.
    AdoptImap {
        conn: Detached,
        account: String,
        tag: Vec<u8>,
        permit: Permit,
    },
    /// Compaction, step 1: report segment usage.
    CompactStats {
        reply: oneshot::Sender<Vec<SegmentUsage>>,
    },
    /// Compaction, step 2: move live bodies out of these segments and checkpoint.
    Evacuate {
        victims: Vec<u64>,
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
    /// Sending rate: charge one message to `recipients` recipients to
    /// `account`, which this shard owns; answers whether it was within the
    /// hour's limits (nothing is charged otherwise).
    SendQuota {
        account: String,
        recipients: u32,
        reply: oneshot::Sender<bool>,
    },
    /// Cluster catch-up: the accounts of these buckets (this shard's) that
    /// have stored state here.
    BucketAccounts {
        buckets: Vec<u32>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Cluster mode: an IMAP APPEND's copy for an account this shard owns
    /// (`cluster::store_appended`).
    Append {
        account: String,
        to: crate::protocol::smtp::command::AppendTo,
        body: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Cluster mode: a primary's changes to an account this shard owns
    /// (`runtime::changes`).
    Changes {
        account: String,
        id: Option<crate::cluster::changes::TextId>,
        changes: Vec<crate::cluster::changes::Change>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Cluster catch-up: copy these buckets (this shard's), as the bucket's
    /// primary asked after it took older mail it lacked (`catchup::serve`).
    Pull(Vec<crate::cluster::catchup::Pull>),
    /// Cluster catch-up: stream an account this shard owns in the export
    /// format.
    Export {
        account: String,
        out: futures::channel::mpsc::Sender<super::transfer::Piece>,
    },
    /// Login throttling: apply `op` to `key`, which this shard owns.
    Throttle {
        key: throttle::Key,
        op: throttle::Op,
        reply: oneshot::Sender<throttle::Status>,
    },
}

/// What a password check found.
enum Verify {
    Ok(String),
    Wrong,
    Busy,
}

/// How a login attempt ended ([`Shard::login`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The password is right: the canonical account.
    Ok(String),
    /// Wrong name or password; the failure delay has already passed.
    Failed,
    /// The client address is banned (or the account refuses this address
    /// after too many failures): refused before any password check.
    Banned,
    /// Too many password checks queued on this core: try again later.
    Busy,
}

/// One message for some accounts of another shard.
pub struct Delivery {
    accounts: Vec<String>,
    folder: Folder,
    prefix: Arc<Vec<u8>>,
    body: Arc<MessageBody>,
    internal_date: i64,
    once: Option<Once>,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

/// Cluster mode: store a message once per account across a client's
/// attempts (`cluster::duplicates`).
#[derive(Clone, Copy)]
pub struct Once {
    pub identity: [u8; 32],
    /// `[cluster] duplicate_window_secs`.
    pub window: i64,
}

pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub store: Rc<Store>,
    pub senders: Senders<ShardMsg>,
    /// IMAP \\Recent bookkeeping: (account, mailbox) -> highest UID some
    /// session has already seen as recent (RFC 3501 2.3.2).
    pub imap_recent: RefCell<HashMap<(String, u32), u32>>,
    /// Octets IMAP APPEND and COPY on this shard (the account's owner) have
    /// passed the quota check for and not made durable yet: checks count
    /// them, so parallel commands cannot all pass against the same usage.
    pub quota_reserved: RefCell<HashMap<String, u64>>,
    /// POP3 maildrop locks (RFC 1939 section 8: exclusive access).
    pub pop3_locks: RefCell<HashSet<String>>,
    /// Successful password checks: account -> (keyed digest of the password, hash it matched).
    auth_cache: RefCell<HashMap<String, (u64, String)>>,
    auth_key: std::collections::hash_map::RandomState,
    /// Places for argon2 checks running at once (`limits::ARGON2_VERIFY_PER_SHARD`).
    argon2_slots: glommio::sync::Semaphore,
    /// Connections waiting for a client command, interrupted at shutdown.
    idle: RefCell<HashSet<i32>>,
    /// Cluster mode: the account of each idle IMAP/POP3 session that is
    /// logged in here, and the map version last checked against them
    /// (`Shard::end_moved_sessions`).
    idle_accounts: RefCell<HashMap<i32, String>>,
    checked_map: Cell<Option<i64>>,
    /// Cluster mode: the buckets this shard copies from other nodes.
    pub catchup: super::catchup::State,
    /// Cluster mode: idle sessions with the other nodes (hand-overs).
    pub peers: super::peer::Pool,
    /// Cluster mode: content digests of stored bodies (`runtime::changes`).
    pub digests: super::changes::DigestCache,
    /// Cluster mode: per account, the order changes go to the replica in.
    pub change_order: super::changes::Order,
    /// Cluster mode: changes kept until a bucket copy is done.
    pub deferred_changes: super::changes::Deferred,
    /// Cluster mode: identities of the change texts this shard sends, and
    /// the last one each account took from each sender.
    pub change_ids: super::changes::Ids,
    /// Cluster mode: this shard's operations in flight by the map version
    /// they routed with (`Shard::routing`).
    pub routings: Rc<super::cluster::Routings>,
    pub connections: Cell<usize>,
    stopping: Cell<bool>,
    stop_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    next_session: Cell<u64>,
    /// The relay queue of this shard (runtime/relay.rs).
    pub relay: super::relay::Relay,
    /// Deliveries waiting to go to each other shard, and whether a task has
    /// already promised to send them (see `Shard::deliver`).
    outbox: RefCell<Vec<Vec<Delivery>>>,
    flushing: RefCell<Vec<bool>>,
    /// TLS handshakes running on this shard (bounded by `tls.handshakes_max`).
    handshakes: Cell<usize>,
    /// Message data in flight on this shard: RAM and spool budgets.
    pub budget: Rc<Budget>,
    /// Failed-login counts for the keys this shard owns.
    pub throttle: RefCell<throttle::Table>,
    /// This shard's copy of the configuration in force, and the
    /// `Shared::config_epoch` it was copied at: reading it costs one
    /// acquire load of a line written only by a reload, and no atomic
    /// reference count is shared between cores.
    config: RefCell<(u64, Rc<Config>)>,
    /// Password checks waiting for an argon2 place.
    argon2_waiting: Cell<usize>,
    /// Messages and recipients sent this hour by the authenticated accounts
    /// this shard owns: account -> (hour, messages, recipients).
    sent: RefCell<HashMap<String, (i64, u32, u32)>>,
    /// What this shard counts (published once a second by `publish_metrics`).
    pub metrics: crate::metrics::ShardMetrics,
    /// Cluster mode: what this shard stored lately, by message identity.
    recent: Rc<RefCell<crate::cluster::duplicates::Recent>>,
    /// Per kind of refused connection (rate, address, server): the second
    /// of the last log line and the refusals not logged since.
    refusals_logged: [Cell<(i64, u32)>; 3],
}

/// One of the shard's handshake places, held while a handshake runs.
pub struct HandshakeSlot<'a>(&'a Shard);

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        self.0.handshakes.set(self.0.handshakes.get() - 1);
    }
}

/// Clears a shard's "flushing" mark if the task that set it is dropped
/// before it sent the outbox, so later deliveries flush it instead.
struct FlushMark<'a> {
    shard: &'a Shard,
    to: usize,
}

impl Drop for FlushMark<'_> {
    fn drop(&mut self) {
        self.shard.flushing.borrow_mut()[self.to] = false;
    }
}

pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Store a message for `accounts` of this shard, skipping, with `once`, the
/// accounts it was already stored for within the window (a client's second
/// attempt after a cluster failure; `cluster::duplicates`).
#[allow(clippy::too_many_arguments)]
async fn store_once(
    store: &Store,
    recent: &RefCell<crate::cluster::duplicates::Recent>,
    mut accounts: Vec<String>,
    folder: Folder,
    prefix: &[u8],
    body: &[u8],
    now: i64,
    once: Option<Once>,
) -> Result<(), StorageError> {
    if let Some(o) = once {
        let before = accounts.len();
        accounts.retain(|a| !recent.borrow_mut().seen(a, &o.identity, now, o.window));
        if accounts.len() < before {
            tracing::info!(
                event = "duplicate_suppressed",
                accounts = before - accounts.len(),
                "message already stored for the account within the duplicate window; stored once"
            );
        }
        if accounts.is_empty() {
            return Ok(());
        }
    }
    store
        .deliver_to(&accounts, folder, prefix, body, now)
        .await?;
    if let Some(o) = once {
        let mut r = recent.borrow_mut();
        for a in &accounts {
            r.stored(a, &o.identity, now, o.window);
        }
    }
    Ok(())
}

impl Shard {
    /// The configuration in force. A session that keeps the returned handle
    /// keeps the settings it started with; a reload applies to what starts
    /// after it.
    pub fn config(&self) -> Rc<Config> {
        let epoch = self
            .shared
            .config_epoch
            .load(std::sync::atomic::Ordering::Acquire);
        let mut c = self.config.borrow_mut();
        if c.0 != epoch {
            *c = (epoch, Rc::new(Config::clone(&self.shared.live.load())));
        }
        c.1.clone()
    }

    /// Outside cluster mode always; in it, while this node holds its
    /// lease (`cluster::View::may_acknowledge`).
    pub fn may_acknowledge(&self) -> bool {
        self.shared
            .cluster
            .as_ref()
            .is_none_or(|c| c.load().may_acknowledge(std::time::Instant::now()))
    }

    pub fn owner_of(&self, account: &str) -> usize {
        storage::shard_of_bucket(
            storage::bucket_of(account, self.shared.meta.buckets),
            self.shared.cores,
        )
    }

    pub fn directory(&self) -> arc_swap::Guard<Arc<Directory>> {
        self.shared.directory.load()
    }

    /// The account's storage limit (its own, else `[limits] quota_octets`).
    pub fn quota(&self, account: &str) -> Option<u64> {
        let default = self.config().limits.quota_octets;
        self.directory().quota(account, default)
    }

    /// Would `adding` more octets take the account past its limit? With 0,
    /// is it at or past it already (the RCPT check)? Any shard may ask: the
    /// use is the one the owner published.
    pub fn over_quota(&self, account: &str, adding: u64) -> bool {
        let Some(limit) = self.quota(account) else {
            return false;
        };
        let used = self.shared.usage.get(account);
        if adding == 0 {
            used >= limit
        } else {
            used.saturating_add(adding) > limit
        }
    }

    pub fn session_id(&self) -> u64 {
        let n = self.next_session.get() + 1;
        self.next_session.set(n);
        ((self.id as u64) << 56) | (u64::from(self.shared.meta.run) << 32) | n
    }

    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Resolves when the shard starts shutting down.
    pub fn on_stop(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.stopping.get() {
            let _ = tx.send(());
        } else {
            self.stop_waiters.borrow_mut().push(tx);
        }
        rx
    }

    pub fn set_idle(&self, fd: i32, idle: bool) {
        if idle {
            self.idle.borrow_mut().insert(fd);
        } else {
            self.idle.borrow_mut().remove(&fd);
            if self.shared.cluster.is_some() {
                self.idle_accounts.borrow_mut().remove(&fd);
            }
        }
    }

    /// [`Shard::set_idle`] for a session logged in to `account` here: in
    /// cluster mode, its wait ends when the account's bucket moves away.
    pub fn set_idle_as(&self, fd: i32, account: Option<&str>) {
        if let (Some(a), Some(_)) = (account, &self.shared.cluster) {
            self.idle_accounts.borrow_mut().insert(fd, a.to_string());
        }
        self.set_idle(fd, true);
    }

    /// Cluster mode, after the bucket map changed: wake the idle sessions
    /// of accounts this node no longer serves (their read ends; they see
    /// `Shard::serves` false, say BYE and close, and the client's next
    /// connection reaches the new primary). Sessions busy with a command
    /// check before their next wait.
    pub fn end_moved_sessions(&self) {
        let version = self.map_version();
        if version == self.checked_map.get() {
            return;
        }
        self.checked_map.set(version);
        let moved: Vec<i32> = self
            .idle_accounts
            .borrow()
            .iter()
            .filter(|(_, a)| !self.serves(a))
            .map(|(fd, _)| *fd)
            .collect();
        if !moved.is_empty() {
            tracing::info!(
                sessions = moved.len(),
                "cluster: accounts moved to another node; ending their sessions here"
            );
        }
        for fd in moved {
            // SAFETY: fds in `idle_accounts` are open sockets owned by live
            // connection tasks of this shard (removed before they close).
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    }

    fn begin_stop(&self) {
        self.stopping.set(true);
        for tx in self.stop_waiters.borrow_mut().drain(..) {
            let _ = tx.send(());
        }
        // Wake connections blocked reading a command: their read returns end
        // of file, they see `stopping()` and say goodbye (421 / -ERR).
        for fd in self.idle.borrow_mut().drain() {
            // SAFETY: fds in `idle` are open sockets owned by live connection
            // tasks of this shard (removed before they are closed).
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    }

    /// A place for one more TLS handshake, unless `tls.handshakes_max` run.
    pub fn handshake_slot(&self) -> Option<HandshakeSlot<'_>> {
        let n = self.handshakes.get();
        if n >= self.config().tls.handshakes_max {
            return None;
        }
        self.handshakes.set(n + 1);
        Some(HandshakeSlot(self))
    }

    /// Start TLS on `conn` and run the handshake (bounded by the configured
    /// timeout). Unconsumed plaintext is dropped first (see
    /// [`Conn::start_tls`]). None: the handshake failed and the connection
    /// is to be closed; the reason is logged.
    pub async fn tls_handshake(
        &self,
        slot: HandshakeSlot<'_>,
        conn: &mut Conn,
        peer: SocketAddr,
        proto: &str,
    ) -> Option<crate::session::TlsInfo> {
        let config = self.shared.tls.server_config();
        self.tls_handshake_with(slot, conn, peer, proto, config)
            .await
    }

    /// [`Shard::tls_handshake`] with another server configuration (the
    /// cluster's internal listener).
    pub async fn tls_handshake_with(
        &self,
        _slot: HandshakeSlot<'_>,
        conn: &mut Conn,
        peer: SocketAddr,
        proto: &str,
        config: Arc<rustls::ServerConfig>,
    ) -> Option<crate::session::TlsInfo> {
        match conn.start_tls(config) {
            Ok(0) => {}
            Ok(dropped) => {
                tracing::warn!(%peer, proto, bytes = dropped, "discarded plaintext pipelined before the TLS handshake")
            }
            Err(e) => {
                tracing::warn!(%peer, proto, error = %e, "TLS set-up failed");
                return None;
            }
        }
        match conn.handshake(self.config().tls_handshake_timeout()).await {
            Ok(()) => {
                let info = conn.tls_info();
                if let Some(i) = &info {
                    tracing::debug!(%peer, proto, version = i.version, cipher = i.cipher, "TLS established");
                    self.metrics.tls_handshake(Ok(i.version));
                }
                info
            }
            Err(e) => {
                tracing::info!(%peer, proto, error = %e, "TLS handshake failed");
                let timeout = matches!(e, crate::transport::HandshakeError::TimedOut);
                self.metrics.tls_handshake(Err(if timeout { 2 } else { 1 }));
                None
            }
        }
    }

    /// Implicit TLS (RFC 8314): the handshake comes before the greeting. A
    /// full shard closes the connection at once.
    pub async fn accept_tls(
        &self,
        conn: &mut Conn,
        peer: SocketAddr,
        proto: &str,
    ) -> Option<crate::session::TlsInfo> {
        let Some(slot) = self.handshake_slot() else {
            tracing::warn!(%peer, proto, "too many TLS handshakes in progress; connection closed");
            return None;
        };
        self.tls_handshake(slot, conn, peer, proto).await
    }

    /// Map a user name given at login to an account: a bare local part gets
    /// the local domain when there is exactly one.
    pub fn login_account(&self, user: &str) -> Option<String> {
        let user = user.trim();
        let full = if user.contains('@') {
            user.to_string()
        } else if self.config().local_domains.len() == 1 {
            format!("{user}@{}", self.config().local_domains[0])
        } else {
            return None;
        };
        accounts::canonical(&full).ok()
    }

    /// Check a password. argon2 runs on a blocking thread, at most
    /// `limits::ARGON2_VERIFY_PER_SHARD` at once per shard; a success is
    /// remembered (keyed digest, per shard) so a client that logs in often
    /// pays the hash once, like Dovecot's auth cache. A name that is no
    /// account is checked against `accounts::dummy_hash`, so it takes as
    /// long as a wrong password for a real account.
    async fn verify(&self, user: &str, password: &str) -> Verify {
        let account = self.login_account(user);
        let hash = account
            .as_deref()
            .and_then(|a| self.directory().password_hash(a).map(str::to_string));
        let digest = {
            let mut h = self.auth_key.build_hasher();
            h.write(password.as_bytes());
            h.finish()
        };
        if let (Some(account), Some(hash)) = (&account, &hash) {
            if let Some((d, cached_hash)) = self.auth_cache.borrow().get(account) {
                if *d == digest && cached_hash == hash {
                    return Verify::Ok(account.clone());
                }
            }
        }
        let pw = password.to_string();
        let h2 = hash.clone();
        // The semaphore is never closed, so acquire cannot fail; were it to,
        // the check runs without a place rather than refusing the login.
        if self.argon2_waiting.get()
            >= self
                .config()
                .auth_throttle
                .password_checks_queued_max
                .max(1)
        {
            return Verify::Busy;
        }
        self.argon2_waiting.set(self.argon2_waiting.get() + 1);
        let slot = self.argon2_slots.acquire_permit(1).await.ok();
        self.argon2_waiting.set(self.argon2_waiting.get() - 1);
        let _slot = slot;
        let ok = glommio::executor()
            .spawn_blocking(move || {
                // glommio hangs the caller if a blocking closure panics: never let it.
                std::panic::catch_unwind(|| accounts::verify_or_dummy(h2.as_deref(), &pw))
                    .unwrap_or(false)
            })
            .await;
        match (ok, account, hash) {
            (true, Some(account), Some(hash)) => {
                self.auth_cache
                    .borrow_mut()
                    .insert(account.clone(), (digest, hash));
                Verify::Ok(account)
            }
            _ => Verify::Wrong,
        }
    }

    /// Deliver one message to accounts on any shards; Ok once every copy is durable.
    pub async fn deliver(
        &self,
        accounts: &[String],
        prefix: Vec<u8>,
        body: MessageBody,
        now: i64,
    ) -> (Result<(), StorageError>, Option<MessageBody>) {
        self.deliver_to(accounts, Folder::Inbox, prefix, body, now, None)
            .await
    }

    /// [`Shard::deliver`] into `folder` of every account (`Store::deliver_to`).
    pub async fn deliver_to(
        &self,
        accounts: &[String],
        folder: Folder,
        prefix: Vec<u8>,
        body: MessageBody,
        now: i64,
        once: Option<Once>,
    ) -> (Result<(), StorageError>, Option<MessageBody>) {
        let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); self.shared.cores];
        for a in accounts {
            let s = self.owner_of(a);
            if !by_shard[s].contains(a) {
                by_shard[s].push(a.clone());
            }
        }
        let prefix = Arc::new(prefix);
        let body = Arc::new(body);
        let mut futs: Vec<LocalFuture<Result<(), StorageError>>> = Vec::new();
        for (s, accs) in by_shard.into_iter().enumerate() {
            if accs.is_empty() {
                continue;
            }
            if s == self.id {
                let (store, recent) = (self.store.clone(), self.recent.clone());
                let (p, b) = (prefix.clone(), body.clone());
                futs.push(Box::pin(async move {
                    store_once(&store, &recent, accs, folder, &p, &b, now, once).await
                }));
            } else {
                // Batch per owner shard: every session of this executor turn
                // that delivers to shard `s` joins one mesh message, so the
                // owner is woken once for all of them (one wake-up each way
                // instead of one per message). The first to queue sends it,
                // after yielding once so the others can join.
                let (tx, rx) = oneshot::channel();
                self.outbox.borrow_mut()[s].push(Delivery {
                    accounts: accs,
                    folder,
                    prefix: prefix.clone(),
                    body: body.clone(),
                    internal_date: now,
                    once,
                    reply: tx,
                });
                let flusher = !std::mem::replace(&mut self.flushing.borrow_mut()[s], true);
                if flusher {
                    let mark = FlushMark { shard: self, to: s };
                    futures_lite::future::yield_now().await;
                    let batch = std::mem::take(&mut self.outbox.borrow_mut()[s]);
                    drop(mark);
                    // On failure the batch is dropped: every waiter sees its
                    // reply channel closed and answers 452.
                    let _ = self.senders.send_to(s, ShardMsg::Deliver(batch)).await;
                }
                futs.push(Box::pin(async move {
                    rx.await
                        .unwrap_or_else(|_| Err(StorageError::Io("owner shard unavailable".into())))
                }));
            }
        }
        let results = futures::future::join_all(futs).await;
        let result = results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()));
        (result, Arc::try_unwrap(body).ok())
    }

    pub(super) async fn handle(self: Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver(batch) => {
                // All of them in the same group commit.
                for d in batch {
                    let (store, recent) = (self.store.clone(), self.recent.clone());
                    glommio::spawn_local(async move {
                        let r = store_once(
                            &store,
                            &recent,
                            d.accounts,
                            d.folder,
                            &d.prefix,
                            &d.body,
                            d.internal_date,
                            d.once,
                        )
                        .await;
                        let _ = d.reply.send(r);
                    })
                    .detach();
                }
            }
            ShardMsg::AdoptPop3 {
                conn,
                session,
                account,
                permit,
            } => {
                let conn = adopt(conn);
                self.metrics.accepted_handoff(Proto::Pop3.index());
                let _open = SessionGauge(self.clone(), Proto::Pop3.index());
                super::pop3::adopted(self, conn, *session, account, permit).await;
            }
            ShardMsg::AdoptImap {
                conn,
                account,
                tag,
                permit,
            } => {
                let conn = adopt(conn);
                self.metrics.accepted_handoff(Proto::Imap.index());
                let _open = SessionGauge(self.clone(), Proto::Imap.index());
                super::imap::adopted(self, conn, account, tag, permit).await;
            }
            ShardMsg::CompactStats { reply } => {
                let _ = reply.send(self.store.segment_usage());
            }
            ShardMsg::Evacuate { victims, reply } => {
                let set = victims.into_iter().collect();
                let _ = reply.send(self.store.evacuate(&set).await);
            }
            ShardMsg::Pull(jobs) => super::catchup::requested(&self, jobs),
            ShardMsg::BucketAccounts { buckets, reply } => {
                let _ = reply.send(self.store.accounts_in_buckets(&buckets));
            }
            ShardMsg::Append {
                account,
                to,
                body,
                reply,
            } => {
                let r = super::cluster::append_here(&self, &account, to, body).await;
                let _ = reply.send(r);
            }
            ShardMsg::Changes {
                account,
                id,
                changes,
                reply,
            } => {
                let r = super::changes::apply_here(&self, &account, id, changes).await;
                let _ = reply.send(r);
            }
            ShardMsg::Export { account, out } => {
                super::transfer::export(&self, &account, out).await;
            }
            ShardMsg::Throttle { key, op, reply } => {
                let _ = reply.send(self.throttle_local(&key, op));
            }
            ShardMsg::SendQuota {
                account,
                recipients,
                reply,
            } => {
                let _ = reply.send(self.charge_sending_local(&account, recipients));
            }
        }
    }

    fn charge_sending_local(&self, account: &str, recipients: u32) -> bool {
        let senders = &self.config().senders;
        let hour = unix_now() / 3600;
        let mut sent = self.sent.borrow_mut();
        if sent.len() > 4 * self.directory().len().max(1024) {
            sent.retain(|_, e| e.0 == hour);
        }
        let e = sent
            .entry(account.to_ascii_lowercase())
            .or_insert((hour, 0, 0));
        if e.0 != hour {
            *e = (hour, 0, 0);
        }
        let over = |limit: u32, n: u32| limit > 0 && n > limit;
        if over(senders.messages_per_hour, e.1 + 1)
            || over(senders.recipients_per_hour, e.2.saturating_add(recipients))
        {
            return false;
        }
        e.1 += 1;
        e.2 = e.2.saturating_add(recipients);
        true
    }

    /// Charge one message to `recipients` recipients to the authenticated
    /// `account`'s hourly sending limits, on the shard that owns it.
    pub async fn charge_sending(&self, account: &str, recipients: u32) -> bool {
        let owner = self.owner_of(account);
        if owner == self.id {
            return self.charge_sending_local(account, recipients);
        }
        let (reply, rx) = oneshot::channel();
        let msg = ShardMsg::SendQuota {
            account: account.to_string(),
            recipients,
            reply,
        };
        if self.senders.send_to(owner, msg).await.is_err() {
            return true;
        }
        rx.await.unwrap_or(true)
    }

    fn throttle_local(&self, key: &throttle::Key, op: throttle::Op) -> throttle::Status {
        self.throttle.borrow_mut().apply(
            key,
            op,
            unix_now().max(0) as u64,
            &self.config().auth_throttle.policy(),
        )
    }

    /// Apply `op` to `key` on the shard that owns it.
    async fn throttle_op(&self, key: throttle::Key, op: throttle::Op) -> throttle::Status {
        let owner = match &key {
            throttle::Key::Account(a) => self.owner_of(a),
            addr => addr.addr_owner(self.shared.cores),
        };
        if owner == self.id {
            return self.throttle_local(&key, op);
        }
        let (reply, rx) = oneshot::channel();
        if self
            .senders
            .send_to(owner, ShardMsg::Throttle { key, op, reply })
            .await
            .is_err()
        {
            return throttle::Status::default();
        }
        rx.await.unwrap_or_default()
    }

    /// A login attempt from `peer` over `proto`, throttled across every
    /// shard and protocol (see `runtime::throttle`): a banned address is
    /// refused before the password is checked; a failure is counted for
    /// the address and the account and answered after the failure delay;
    /// a success forgets the address's failures. Every decision is logged.
    pub async fn login(
        &self,
        peer: std::net::IpAddr,
        proto: &'static str,
        tls: &'static str,
        user: &str,
        password: &str,
    ) -> Login {
        let out = self.login_throttled(peer, proto, user, password).await;
        let result = match out {
            Login::Ok(_) => 0,
            Login::Failed => 1,
            Login::Banned | Login::Busy => 2,
        };
        let p = crate::metrics::LOGIN_PROTOS
            .iter()
            .position(|p| *p == proto)
            .unwrap_or(0);
        self.metrics.login(p, result);
        // One event per login (never the password).
        tracing::info!(
            event = "login",
            proto,
            user = user.trim(),
            client = %peer,
            tls,
            result = crate::metrics::LOGIN_RESULTS[result],
            "login {}",
            crate::metrics::LOGIN_RESULTS[result]
        );
        out
    }

    async fn login_throttled(
        &self,
        peer: std::net::IpAddr,
        proto: &'static str,
        user: &str,
        password: &str,
    ) -> Login {
        let addr = throttle::Key::addr(peer);
        let account = throttle::Key::account(
            &self
                .login_account(user)
                .unwrap_or_else(|| user.trim().to_string()),
        );
        // Another node of the cluster relays its clients' logins, after
        // checking them (and throttling them by the client's own address)
        // itself: its address is never counted or banned, or one attacker
        // there would lock out every user it relays. An account that keeps
        // failing through it is still locked (what fails here passed the
        // relaying node's check: the password differs between the nodes,
        // or someone on a member's host is guessing).
        let member = self.is_cluster_peer(peer);
        let seen = if member {
            throttle::Status::default()
        } else {
            self.throttle_op(addr.clone(), throttle::Op::Peek).await
        };
        if let Some(until) = seen.banned_until {
            tracing::warn!(event = "throttle", decision = "refuse_banned_address", %peer, proto, user, until, "login refused: address banned after failed logins");
            return Login::Banned;
        }
        if seen.failures > 0 || member {
            let acct = self.throttle_op(account.clone(), throttle::Op::Peek).await;
            if acct.failures >= self.config().auth_throttle.policy().account_lock_after {
                tracing::warn!(event = "throttle", decision = "refuse_locked_account", %peer, proto, user, failures = acct.failures, "login refused: account locked for addresses that failed");
                return Login::Banned;
            }
        }
        match self.verify(user, password).await {
            Verify::Ok(name) => {
                if seen.failures > 0 {
                    self.throttle_op(addr, throttle::Op::Clear).await;
                    tracing::info!(%peer, proto, account = name, "login after failures; the address's count is cleared");
                }
                Login::Ok(name)
            }
            Verify::Busy => {
                tracing::warn!(event = "throttle", decision = "refuse_busy", %peer, proto, user, "login refused for now: too many password checks queued");
                Login::Busy
            }
            Verify::Wrong => {
                let a = if member {
                    throttle::Status::default()
                } else {
                    self.throttle_op(addr, throttle::Op::Fail).await
                };
                let c = self.throttle_op(account, throttle::Op::Fail).await;
                let policy = self.config().auth_throttle.policy();
                let delay = policy.delay(a.failures.max(c.failures));
                // The address was not banned when this login began (a banned
                // one is refused above), so a ban now is this failure's.
                match a.banned_until {
                    Some(until) => {
                        tracing::warn!(event = "throttle", decision = "ban_address", %peer, proto, user, failures = a.failures, until, "address banned after failed logins")
                    }
                    _ => {
                        tracing::info!(%peer, proto, user, address_failures = a.failures, account_failures = c.failures, delay_ms = delay.as_millis() as u64, "login failed")
                    }
                }
                glommio::timer::sleep(delay).await;
                Login::Failed
            }
        }
    }

    /// One compaction pass, run by shard 0: gather usage from every shard,
    /// pick victims, have every shard evacuate them, then delete the files.
    /// A failure anywhere leaves the files in place (they are only garbage).
    /// `only_writer`: reclaim only segments written by that shard
    /// (`ringmail compact --shard N`).
    pub async fn compact(&self, only_writer: Option<usize>) -> Result<usize, StorageError> {
        // Not while a backup copies segments (runtime::transfer::backup).
        let Some(_guard) = super::transfer::CompactionGuard::enter() else {
            return Ok(0);
        };
        let mut reports = vec![self.store.segment_usage()];
        for s in (0..self.shared.cores).filter(|s| *s != self.id) {
            let (tx, rx) = oneshot::channel();
            if self
                .senders
                .send_to(s, ShardMsg::CompactStats { reply: tx })
                .await
                .is_err()
            {
                return Err(StorageError::Io("shard unavailable".into()));
            }
            reports.push(
                rx.await
                    .map_err(|_| StorageError::Io("shard dropped request".into()))?,
            );
        }
        let mut victims =
            storage::compaction_victims(&reports, self.shared.config.storage.compact_live_percent);
        if let Some(w) = only_writer {
            // Segment ids are `run << 40 | writer << 32 | seq` (storage::segment).
            victims.retain(|id| ((id >> 32) & 0xffff) as usize == w);
        }
        if victims.is_empty() {
            return Ok(0);
        }
        let set = victims.iter().copied().collect();
        self.store.evacuate(&set).await?;
        for s in (0..self.shared.cores).filter(|s| *s != self.id) {
            let (tx, rx) = oneshot::channel();
            if self
                .senders
                .send_to(
                    s,
                    ShardMsg::Evacuate {
                        victims: victims.clone(),
                        reply: tx,
                    },
                )
                .await
                .is_err()
            {
                return Err(StorageError::Io("shard unavailable".into()));
            }
            rx.await
                .map_err(|_| StorageError::Io("shard dropped request".into()))??;
        }
        let dir = self.shared.config.data_dir.join("segments");
        for v in &victims {
            let path = dir.join(storage::segment::file_name(*v));
            glommio::io::remove(&path)
                .await
                .map_err(|e| StorageError::Io(e.to_string()))?;
        }
        glommio::io::Directory::open(&dir)
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?
            .sync()
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?;
        tracing::info!(segments = victims.len(), "compacted");
        let c = &self.store.stats.compacted_segments;
        c.set(c.get() + victims.len() as u64);
        Ok(victims.len())
    }
}

/// Put the calling thread (an executor) under SCHED_BATCH. Under CFS/EEVDF a
/// normal thread that wakes up preempts the task running on its CPU at once;
/// an executor sharing its CPU with a busy client then wakes for every single
/// packet, handles one event and parks again (two context switches per
/// event). A batch thread waits for the running task to block or use up its
/// slice, and then finds a batch of events. Nice level and CPU share are
/// unchanged. The io_uring workers the executor creates inherit the policy.
fn set_batch_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread with a valid parameter block.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "SCHED_BATCH refused; executors keep the normal policy");
    }
}

/// How long a shard may spend filling its duplicate table at start; the
/// newest messages come first, so a fill cut short misses only the oldest
/// part of the window (the least likely to be retried).
const FILL_TIME_MAX: Duration = Duration::from_secs(5);

/// Fill the shard's duplicate table (`cluster::duplicates`) with the
/// messages it stored in the last `window` seconds, newest first, each's
/// identity computed again from its stored octets (the envelope sender
/// from its `Return-Path:`), for at most [`FILL_TIME_MAX`]. Runs before the
/// shard takes connections or other shards' deliveries.
fn fill_recent(shard: &Shard, window: i64) {
    use crate::cluster::duplicates;
    let started = std::time::Instant::now();
    // Deliveries are dated when stored; an APPEND may carry any date, and
    // one far in the future must not crowd the window's deliveries out.
    let now = crate::util::unix_now();
    let (names, list) =
        shard
            .store
            .messages_between(now - window, now + 60, duplicates::ENTRIES_MAX);
    let mut filled = 0usize;
    let mut oldest = now;
    let mut cut_short = false;
    for (i, (account, at, loc)) in list.iter().enumerate() {
        if i % 256 == 255 && started.elapsed() > FILL_TIME_MAX {
            cut_short = true;
            break;
        }
        oldest = *at;
        let Some(body) = shard.store.body(*loc) else {
            continue;
        };
        let bytes = body.bytes();
        let Some(id) =
            duplicates::reverse_path_of(bytes).and_then(|rp| duplicates::identity(rp, bytes))
        else {
            continue;
        };
        if shard
            .recent
            .borrow_mut()
            .remember_older(&names[*account as usize], &id, *at)
        {
            filled += 1;
        }
    }
    tracing::info!(
        event = "duplicates_filled",
        shard = shard.id,
        messages = list.len(),
        entries = filled,
        back_secs = now - oldest,
        cut_short,
        ms = started.elapsed().as_millis() as u64,
        "cluster: duplicate table filled from the messages stored within its window"
    );
}

/// How often the heartbeat task wakes an executor (see [`run`]).
const HEARTBEAT: Duration = Duration::from_millis(10);

pub async fn run(shared: Arc<Shared>, mesh: MeshBuilder<ShardMsg, Full>) -> Result<(), String> {
    if shared.config.batch_scheduling {
        set_batch_policy();
    }
    // glommio 0.9.0 can park an executor although tasks are runnable: when
    // the preempt flag is already set on entry, run_task_queues reports that
    // nothing ran and the loop parks, waiting for I/O or a timer. Under CPU
    // load this hung a core at start-up (seen in CI). A task that sleeps on a
    // short timer bounds every park, so a stuck executor resumes within
    // HEARTBEAT; it costs one timer wake-up per HEARTBEAT on an idle core.
    glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(HEARTBEAT).await;
        }
    })
    .detach();
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|_| "joining the channel mesh failed".to_string())?;
    let id = senders.peer_id();
    let fail = |e: String| {
        let _ = shared.ready.send(Err(e.clone()));
        e
    };
    let store = Store::open(StoreConfig {
        data_dir: shared.config.data_dir.clone(),
        shard: id,
        shards: shared.cores,
        meta: shared.meta,
        segment_size: crate::limits::SEGMENT_SIZE as usize,
        checkpoint_every_records: shared.config.storage.checkpoint_every_records,
        zero_segments: shared.config.storage.zero_segments,
        append_through_map: shared.config.storage.append_through_map,
        sync_inline_max_us: shared.config.storage.sync_inline_max_us,
    })
    .map_err(|e| fail(format!("shard {id}: opening storage: {e}")))?;
    store.publish_usage(shared.usage.clone());
    glommio::spawn_local(store.clone().run_syncer()).detach();
    tracing::info!(
        shard = id,
        accounts = store.account_count(),
        "storage recovered"
    );

    let shard = Rc::new(Shard {
        id,
        shared: shared.clone(),
        store,
        senders,
        imap_recent: RefCell::default(),
        quota_reserved: RefCell::default(),
        pop3_locks: RefCell::default(),
        auth_cache: RefCell::default(),
        auth_key: Default::default(),
        argon2_slots: glommio::sync::Semaphore::new(crate::limits::ARGON2_VERIFY_PER_SHARD),
        idle: RefCell::default(),
        idle_accounts: RefCell::default(),
        checked_map: Cell::new(None),
        catchup: Default::default(),
        peers: super::peer::Pool::new(shared.silence.clone()),
        digests: Default::default(),
        change_order: Default::default(),
        deferred_changes: Default::default(),
        change_ids: Default::default(),
        routings: Rc::new(super::cluster::Routings::new(id, shared.in_flight.clone())),
        connections: Cell::new(0),
        stopping: Cell::new(false),
        stop_waiters: RefCell::default(),
        next_session: Cell::new(0),
        relay: super::relay::Relay::new(id, shared.cores, shared.meta.buckets),
        recent: Rc::default(),
        outbox: RefCell::new((0..shared.cores).map(|_| Vec::new()).collect()),
        flushing: RefCell::new(vec![false; shared.cores]),
        handshakes: Cell::new(0),
        budget: Rc::new(Budget::new(
            &shared.config.memory,
            shared.spool_dir.clone(),
            shared.session_ram_max,
            shared.spool_max,
        )),
        throttle: RefCell::default(),
        config: RefCell::new((
            shared
                .config_epoch
                .load(std::sync::atomic::Ordering::Acquire),
            Rc::new(Config::clone(&shared.live.load())),
        )),
        argon2_waiting: Cell::new(0),
        sent: RefCell::default(),
        metrics: Default::default(),
        refusals_logged: Default::default(),
    });

    let budget = shard.budget.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            budget.tick();
        }
    })
    .detach();

    // Cluster mode: before anything is accepted here or taken from the
    // other shards (their deliveries wait in the channels), the duplicate
    // table learns what this shard stored within its window (a retry of
    // what a failure left stored is stored once, across a restart too).
    if let Some(window) = shared
        .config
        .cluster
        .as_ref()
        .map(|c| c.duplicate_window_secs)
        .filter(|w| *w > 0)
    {
        fill_recent(&shard, window as i64);
    }

    for (_peer, stream) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = stream.recv().await {
                glommio::spawn_local(shard.clone().handle(msg)).detach();
            }
        })
        .detach();
    }

    let mut accept_tasks = Vec::new();
    for (proto, fd) in shared.listeners.take(id) {
        use std::os::fd::IntoRawFd;
        // SAFETY: a listening TCP socket bound for this shard, handed over once.
        let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
        accept_tasks.push(glommio::spawn_local(accept_loop(
            shard.clone(),
            listener,
            proto,
        )));
    }
    super::relay::start(&shard);
    glommio::spawn_local(publish_metrics(shard.clone())).detach();
    let _ = shared.ready.send(Ok((id, super::listen::pinned_cpu())));
    let interval = shared.config.storage.compact_interval_secs;
    if id == 0 && interval > 0 {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_secs(interval)).await;
                if shard.stopping() {
                    return;
                }
                if let Err(e) = shard.compact(None).await {
                    tracing::warn!(error = %e, "compaction pass failed");
                }
            }
        })
        .detach();
    }

    while !shared.shutdown.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(
        shard = id,
        connections = shard.connections.get(),
        "shutting down"
    );
    shard.begin_stop();
    for t in accept_tasks {
        t.await;
    }
    let deadline = std::time::Instant::now()
        + Duration::from_secs(shard.config().timeouts.shutdown_grace_secs);
    // Wait for every session of the process, not only ours: a session on
    // another shard may still deliver into this shard's store, and its mesh
    // messages are only handled while this executor runs. (Permits are held
    // by every admitted connection, wherever it lives now.)
    while (shard.connections.get() > 0 || shared.limiter.total() > 0)
        && std::time::Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // Other shards may still be delivering to us; give their last mesh
    // messages a moment, then make everything durable and checkpoint.
    glommio::timer::sleep(Duration::from_millis(100)).await;
    if let Err(e) = shard.store.checkpoint_all().await {
        tracing::error!(shard = id, error = %e, "final checkpoint failed");
    }
    let st = &shard.store.stats;
    let syncs = st.syncs.get().max(1);
    tracing::info!(
        shard = id,
        records = st.records.get(),
        syncs = st.syncs.get(),
        records_per_sync = format!("{:.1}", st.records.get() as f64 / syncs as f64),
        mean_sync_us = st.sync_nanos.get() / syncs / 1000,
        inline_syncs = st.inline_syncs.get(),
        checkpoints = st.checkpoints.get(),
        "commit statistics"
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Smtp,
    Pop3,
    Imap,
    /// SMTP submission: AUTH before MAIL.
    Submission,
    /// Submission over implicit TLS (RFC 8314).
    Submissions,
    /// IMAP over implicit TLS.
    Imaps,
    /// POP3 over implicit TLS.
    Pop3s,
    /// Cluster mode: SMTP from the other nodes (`[cluster] internal`).
    Internal,
}

impl Proto {
    /// Index in [`crate::metrics::PROTOS`].
    pub fn index(self) -> usize {
        match self {
            Proto::Smtp => 0,
            Proto::Submission => 1,
            Proto::Submissions => 2,
            Proto::Pop3 => 3,
            Proto::Pop3s => 4,
            Proto::Imap => 5,
            Proto::Imaps => 6,
            Proto::Internal => 7,
        }
    }
}

use super::smtp::Role;

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, proto: Proto) {
    loop {
        let stop = shard.on_stop();
        let accept = listener.accept();
        futures::pin_mut!(accept);
        match futures::future::select(accept, stop).await {
            futures::future::Either::Left((Ok(stream), _)) => {
                let peer = match stream.peer_addr() {
                    Ok(p) => p,
                    Err(_) => continue,
                };
                // The other nodes of a cluster hand over mail and relay
                // their clients' sessions from a few addresses: no
                // per-address rate or cap for them.
                let member = shard.is_cluster_peer(peer.ip());
                let exempt = super::limiter::Exempt {
                    rate: member || shard.config().rate_exempt(peer.ip()),
                    per_address: member,
                };
                let permit = shard.shared.limiter.admit(peer.ip(), exempt);
                if let Err(refusal) = &permit {
                    use super::limiter::Refusal;
                    let (k, decision, why) = match refusal {
                        Refusal::AddressRate => (
                            0,
                            "refuse_connection_rate",
                            "too many new connections from this address this minute",
                        ),
                        Refusal::AddressFull => (
                            1,
                            "refuse_connections_address",
                            "too many connections from this address",
                        ),
                        Refusal::ServerFull => {
                            (2, "refuse_connections_server", "connections_max reached")
                        }
                    };
                    // A flood of refused connections makes at most one line
                    // per kind, shard and second, counting the ones it hides.
                    let now = unix_now();
                    let (last, hidden) = shard.refusals_logged[k].get();
                    if now != last {
                        shard.refusals_logged[k].set((now, 0));
                        tracing::info!(event = "throttle", decision, %peer, proto = crate::metrics::PROTOS[proto.index()], refusals_not_logged = hidden, "connection refused: {why}");
                    } else {
                        shard.refusals_logged[k].set((last, hidden.saturating_add(1)));
                    }
                }
                if permit.is_err() {
                    shard.metrics.refused(proto.index());
                }
                shard.metrics.accepted(proto.index());
                let shard2 = shard.clone();
                glommio::spawn_local(async move {
                    let _open = SessionGauge(shard2.clone(), proto.index());
                    match proto {
                        Proto::Smtp => {
                            super::smtp::serve(shard2, stream, peer, permit, Role::Mx).await
                        }
                        Proto::Submission => {
                            super::smtp::serve(shard2, stream, peer, permit, Role::Submission).await
                        }
                        Proto::Submissions => {
                            super::smtp::serve(shard2, stream, peer, permit, Role::Submissions)
                                .await
                        }
                        Proto::Internal => {
                            super::smtp::serve(shard2, stream, peer, permit, Role::Internal).await
                        }
                        Proto::Pop3 => {
                            super::pop3::serve(shard2, stream, peer, permit, false).await
                        }
                        Proto::Pop3s => {
                            super::pop3::serve(shard2, stream, peer, permit, true).await
                        }
                        Proto::Imap => {
                            super::imap::serve(shard2, stream, peer, permit, false).await
                        }
                        Proto::Imaps => {
                            super::imap::serve(shard2, stream, peer, permit, true).await
                        }
                    }
                })
                .detach();
            }
            futures::future::Either::Left((Err(e), _)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            futures::future::Either::Right(_) => return,
        }
    }
}

/// Counts a session in `ringmail_sessions_open` until its task ends.
struct SessionGauge(Rc<Shard>, usize);

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.metrics.closed(self.1);
    }
}

/// Rounds (seconds) over which `publish_metrics` walks every bucket once.
const METRICS_WALK_ROUNDS: usize = 10;

/// Every second, copy this shard's counters into its slot of the shared
/// [`crate::metrics::Published`] (the scrape reads the slots, never the
/// shard). Live bytes and message counts need a walk of every message,
/// which stalls the executor (several ms per 100,000 messages), so each
/// round walks a tenth of the buckets and the figures add up the latest
/// walk of each: at most ten seconds old, and no stall longer than a
/// tenth of the walk.
pub async fn publish_metrics(shard: Rc<Shard>) {
    let mut per_bucket: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut cursor = 0usize;
    loop {
        let ids = shard.store.bucket_ids();
        per_bucket.retain(|b, _| ids.binary_search(b).is_ok());
        let step = ids.len().div_ceil(METRICS_WALK_ROUNDS).max(1);
        for _ in 0..step.min(ids.len()) {
            cursor %= ids.len();
            let b = ids[cursor];
            per_bucket.insert(b, shard.store.bucket_live_and_messages(b));
            cursor += 1;
        }
        let (live, messages) = per_bucket
            .values()
            .fold((0u64, 0u64), |(l, m), (bl, bm)| (l + bl, m + bm));
        let st = &shard.store.stats;
        let storage = crate::metrics::StorageFigures {
            records: st.records.get(),
            syncs: st.syncs.get(),
            checkpoints: st.checkpoints.get(),
            compactions: st.compacted_segments.get(),
            segment_bytes: shard.store.segment_bytes(),
            live_bytes: live,
            accounts: shard.store.account_count() as u64,
            messages,
            queue_messages: shard.relay.queued_messages(&shard.store) as u64,
            sync_seconds: Some(st.sync_seconds.snapshot()),
            commit_batch_records: Some(st.commit_batch.snapshot()),
        };
        shard
            .shared
            .published
            .publish(shard.id, shard.metrics.snapshot(storage));
        shard.end_moved_sessions();
        super::catchup::plan(&shard);
        let stop = shard.on_stop();
        let tick = glommio::timer::sleep(Duration::from_secs(1));
        futures::pin_mut!(tick);
        if let futures::future::Either::Right(_) = futures::future::select(tick, stop).await {
            return;
        }
    }
}

/// Counts a connection on its shard while alive.
pub struct ConnCount(Rc<Shard>);

impl ConnCount {
    pub fn new(shard: &Rc<Shard>) -> ConnCount {
        shard.connections.set(shard.connections.get() + 1);
        ConnCount(shard.clone())
    }
}

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
        // The connection's read buffer and session state go back to the
        // allocator: count them toward the next trim.
        self.0.budget.freed(crate::limits::READ_CHUNK as u64);
    }
}

pub use crate::util::unix_now;

/// Rebuild a connection handed over by another shard ([`Conn::detach`]).
fn adopt(d: Detached) -> Conn {
    use std::os::fd::IntoRawFd;
    // SAFETY: `d.fd` is a connected TCP socket handed over by its previous
    // owner, which closed its own descriptor for it.
    let stream = unsafe { glommio::net::TcpStream::from_raw_fd(d.fd.into_raw_fd()) };
    Conn::with_tls(stream, d.pending, d.tls)
}
