//! The relay worker: one task per shard drains that shard's queue accounts
//! (`relay::queue`) into the world.
//!
//! Each round: collect the recipients that are due (next attempt reached, or
//! a `queue flush`), skip those already being delivered, group them by
//! destination domain, resolve every domain of the round in one trip to the
//! shared DNS thread, then start delivery tasks: per domain at most
//! `connections_per_domain` at once, each carrying up to
//! `messages_per_connection` messages (all their due recipients of that
//! domain) over one SMTP connection (`relay::client::deliver`: PIPELINING,
//! RSET between messages). Hosts are tried in MX order until one gives a
//! session. When a task ends, its outcomes become `QueueState` records (after
//! any DSN they cause has been handed over, so a crash can duplicate a
//! notification but never lose one), finished messages are expunged, and the
//! worker is woken for the next round. Between rounds it sleeps until the
//! earliest next attempt, an enqueue, a flush or shutdown.
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::channel::oneshot;

use crate::accounts::Lookup;
use crate::config::Config;
use crate::config::RelayTls;
use crate::relay::client::{self, ClientParams, ConnectError, OutboundMessage, RcptOutcome, Reply};
use crate::relay::dns::{DnsConfig, DnsResolver, MxResult};
use crate::relay::dsn::{self, DsnAction, DsnParams, DsnRecipient};
use crate::relay::mta_sts::{self, MtaSts, MtaStsConfig};
use crate::relay::queue::{self, Attempt, QueueId, Schedule, Update};
use crate::storage::index::{queue_flag, queue_state, INBOX};
use crate::storage::record::Op;
use crate::storage::{Body, StorageError};

use super::control::{ControlReceiver, ControlRequest};
use super::shard::{unix_now, Shard};

/// Longest sleep between rounds (also bounds how late a stop is noticed).
const IDLE_ROUND: Duration = Duration::from_secs(30);

/// What every shard shares for relaying (part of `Shared`).
pub struct RelayShared {
    /// The one DNS side thread; `None` if it could not start (every lookup
    /// is then a temporary failure).
    pub dns: Option<DnsResolver>,
    /// The MTA-STS side thread (`[relay] mta_sts`); `None` when off or it
    /// could not start (no domain then has a policy).
    pub mta_sts: Option<MtaSts>,
    /// Each shard takes its control-socket receiver once, at start.
    pub control: std::sync::Mutex<Vec<Option<ControlReceiver>>>,
    /// STARTTLS client configurations (shared: rustls' session cache lets
    /// any shard resume a session with an MX).
    pub tls: Arc<crate::tls::ClientTls>,
}

impl RelayShared {
    /// Start the DNS thread (blocking, at start-up) and make one control
    /// channel per shard; returns the senders for the control thread.
    pub fn start(
        config: &Config,
        cores: usize,
        tls: Arc<crate::tls::ClientTls>,
    ) -> (RelayShared, Vec<super::control::ControlSender>) {
        let dns_config = DnsConfig {
            nameservers: config.relay.nameservers.clone(),
            timeout: Duration::from_secs(config.relay.dns_timeout_secs.max(1)),
            ..DnsConfig::default()
        };
        let mta_sts = if config.relay.mta_sts {
            match MtaSts::start(MtaStsConfig {
                dns: dns_config.clone(),
                https: tls.https.clone(),
                port: config.relay.mta_sts_port,
            }) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(error = %e, "MTA-STS thread not started: no destination policy will be applied");
                    None
                }
            }
        } else {
            None
        };
        let dns = match DnsResolver::start(dns_config) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "DNS resolver not started: relayed mail will wait");
                None
            }
        };
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..cores)
            .map(|_| futures::channel::mpsc::unbounded())
            .map(|(tx, rx)| (tx, Some(rx)))
            .unzip();
        (
            RelayShared {
                dns,
                mta_sts,
                control: std::sync::Mutex::new(receivers),
                tls,
            },
            senders,
        )
    }
}

/// The retry policy of `[relay]` (read per round, so a reload applies to
/// the next one).
fn schedule(r: &crate::config::Relay) -> Schedule {
    let secs = |s: u64| s.min(i64::MAX as u64) as i64;
    Schedule {
        retry_first: secs(r.retry_first_secs),
        retry_max: secs(r.retry_max_secs),
        give_up: secs(r.give_up_secs),
        delay_warning: secs(r.delay_warning_secs),
    }
}

/// A shard's relay state (part of `Shard`).
pub struct Relay {
    /// The queue account this shard enqueues into.
    pub account: String,
    /// Queue accounts this shard drains: its own and any left in its buckets
    /// by a run with another core count.
    accounts: RefCell<Vec<String>>,
    doorbell: RefCell<Option<oneshot::Sender<()>>>,
    rung: Cell<bool>,
    /// (queue account, uid, recipient index) being delivered now.
    in_flight: RefCell<HashSet<(String, u32, u32)>>,
    /// Connections open per destination domain.
    active: RefCell<HashMap<String, usize>>,
    /// `queue flush` requests not yet served: `None` = everything.
    flush: RefCell<Vec<Option<String>>>,
}

impl Relay {
    pub fn new(shard: usize, cores: usize, buckets: u32) -> Relay {
        Relay {
            account: queue::queue_account_for(shard, cores, buckets),
            accounts: RefCell::default(),
            doorbell: RefCell::default(),
            rung: Cell::new(false),
            in_flight: RefCell::default(),
            active: RefCell::default(),
            flush: RefCell::default(),
        }
    }

    /// Messages in the queue accounts this shard drains.
    pub fn queued_messages(&self, store: &crate::storage::Store) -> usize {
        let mut names = self.accounts.borrow().clone();
        if !names.contains(&self.account) {
            names.push(self.account.clone());
        }
        names
            .iter()
            .filter_map(|a| {
                store.with_account(a, |acc| {
                    acc.mailbox(crate::storage::index::INBOX)
                        .map_or(0, |m| m.messages.len())
                })
            })
            .sum()
    }

    /// Wake the worker for a new round.
    pub fn wake(&self) {
        self.rung.set(true);
        if let Some(tx) = self.doorbell.borrow_mut().take() {
            let _ = tx.send(());
        }
    }
}

/// Enqueue a message for relay on this shard (durable on return) and wake
/// the worker.
pub async fn enqueue(
    shard: &Shard,
    reverse_path: &str,
    recipients: &[String],
    body: &[u8],
    smtputf8: bool,
    body_8bit: bool,
) -> Result<QueueId, StorageError> {
    let relay = &shard.relay;
    let rcpts: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let flags = queue::flags(smtputf8, body_8bit);
    let uid = queue::enqueue(
        &shard.store,
        &relay.account,
        body,
        unix_now(),
        flags,
        reverse_path,
        &rcpts,
    )
    .await?;
    relay.wake();
    Ok(QueueId {
        queue: queue::queue_number(&relay.account).unwrap_or(0),
        uid,
    })
}

/// Start the worker and the control-request handler of this shard.
pub fn start(shard: &Rc<Shard>) {
    let mut accounts = shard.store.accounts_with_prefix(queue::QUEUE_PREFIX);
    if !accounts.contains(&shard.relay.account) {
        accounts.push(shard.relay.account.clone());
    }
    *shard.relay.accounts.borrow_mut() = accounts;
    glommio::spawn_local(worker(shard.clone())).detach();
    let rx = shard
        .shared
        .relay
        .control
        .lock()
        .ok()
        .and_then(|mut v| v.get_mut(shard.id).and_then(Option::take));
    if let Some(mut rx) = rx {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            use futures::StreamExt;
            while let Some(req) = rx.next().await {
                glommio::spawn_local(control(shard.clone(), req)).detach();
            }
        })
        .detach();
    }
}

/// A recipient due now.
struct Due {
    account: String,
    uid: u32,
    rcpt: u32,
    address: String,
}

/// One message of a delivery task, with the recipients it carries.
struct Job {
    account: String,
    uid: u32,
    rcpts: Vec<(u32, String)>,
}

async fn worker(shard: Rc<Shard>) {
    let relay = &shard.relay;
    // Leftovers of a crash: bodies without envelope (never acknowledged) and
    // messages whose every recipient was final before their expunge.
    let accounts = relay.accounts.borrow().clone();
    for account in &accounts {
        let (orphans, finished) = shard
            .store
            .with_account(account, |a| (queue::orphans(a), queue::finished(a)))
            .unwrap_or_default();
        let uids: Vec<u32> = orphans.into_iter().chain(finished).collect();
        if !uids.is_empty() {
            if let Err(e) = shard.store.expunge(account, INBOX, uids).await {
                tracing::warn!(error = %e, "queue clean-up failed");
            }
        }
    }
    loop {
        if shard.stopping() {
            return;
        }
        relay.rung.set(false);
        let now = unix_now();
        let (due, next) = collect(&shard, now);
        // Recipients held back by the per-domain connection limit start
        // when a task ends and wakes us.
        if !due.is_empty() && dispatch(&shard, due).await {
            continue;
        }
        if relay.rung.get() {
            continue;
        }
        let wait = next.map_or(IDLE_ROUND, |t| {
            Duration::from_secs((t - now).clamp(0, IDLE_ROUND.as_secs() as i64) as u64)
        });
        let (tx, rx) = oneshot::channel();
        *relay.doorbell.borrow_mut() = Some(tx);
        let stop = shard.on_stop();
        let sleep = glommio::timer::sleep(wait.max(Duration::from_millis(10)));
        futures::pin_mut!(sleep);
        let wake = futures::future::select(rx, stop);
        let _ = futures::future::select(wake, sleep).await;
    }
}

/// Due recipients not in flight, and the earliest future attempt time.
fn collect(shard: &Shard, now: i64) -> (Vec<Due>, Option<i64>) {
    let relay = &shard.relay;
    let flush = std::mem::take(&mut *relay.flush.borrow_mut());
    let in_flight = relay.in_flight.borrow();
    let mut due = Vec::new();
    let mut next: Option<i64> = None;
    for account in relay.accounts.borrow().iter() {
        shard.store.with_account(account, |a| {
            for q in &a.queue {
                for (i, r) in q.recipients.iter().enumerate() {
                    if queue_state::is_final(r.state) {
                        continue;
                    }
                    let key = (account.clone(), q.uid, i as u32);
                    if in_flight.contains(&key) {
                        continue;
                    }
                    let flushed = flush.iter().any(|f| {
                        f.as_ref()
                            .is_none_or(|d| *d == queue::domain_of(&r.address))
                    });
                    if r.next_attempt <= now || flushed {
                        due.push(Due {
                            account: account.clone(),
                            uid: q.uid,
                            rcpt: i as u32,
                            address: r.address.clone(),
                        });
                    } else {
                        next = Some(next.map_or(r.next_attempt, |n: i64| n.min(r.next_attempt)));
                    }
                }
            }
        });
    }
    (due, next)
}

/// Resolve the round's domains in one batch and start delivery tasks.
/// False when nothing could start (every domain at its connection limit).
async fn dispatch(shard: &Rc<Shard>, due: Vec<Due>) -> bool {
    let relay = &shard.relay;
    let config = shard.config();
    let limit = config.relay.connections_per_domain.max(1);
    let per_conn = config.relay.messages_per_connection.max(1);
    // domain -> messages (in queue order) -> recipients
    let mut by_domain: HashMap<String, Vec<Job>> = HashMap::new();
    for d in due {
        let jobs = by_domain.entry(queue::domain_of(&d.address)).or_default();
        match jobs.last_mut() {
            Some(j) if j.account == d.account && j.uid == d.uid => {
                j.rcpts.push((d.rcpt, d.address))
            }
            _ => jobs.push(Job {
                account: d.account,
                uid: d.uid,
                rcpts: vec![(d.rcpt, d.address)],
            }),
        }
    }
    // Keep only what may start now; mark it in flight.
    let mut batches: Vec<(String, Vec<Job>)> = Vec::new();
    for (domain, jobs) in by_domain {
        let open = relay.active.borrow().get(&domain).copied().unwrap_or(0);
        let mut jobs = jobs.into_iter();
        for _ in open..limit {
            let batch: Vec<Job> = jobs.by_ref().take(per_conn).collect();
            if batch.is_empty() {
                break;
            }
            let mut in_flight = relay.in_flight.borrow_mut();
            for j in &batch {
                for (i, _) in &j.rcpts {
                    in_flight.insert((j.account.clone(), j.uid, *i));
                }
            }
            *relay.active.borrow_mut().entry(domain.clone()).or_default() += 1;
            batches.push((domain.clone(), batch));
        }
    }
    if batches.is_empty() {
        return false;
    }
    let mut domains: Vec<String> = batches.iter().map(|(d, _)| d.clone()).collect();
    domains.sort();
    domains.dedup();
    let answers: HashMap<String, MxResult> = match &shard.shared.relay.dns {
        Some(dns) => dns.resolve_many(domains).await.into_iter().collect(),
        None => domains
            .into_iter()
            .map(|d| (d, MxResult::Temporary("no DNS resolver".into())))
            .collect(),
    };
    for (domain, batch) in batches {
        let mx = answers
            .get(&domain)
            .cloned()
            .unwrap_or_else(|| MxResult::Temporary("not resolved".into()));
        glommio::spawn_local(deliver_batch(shard.clone(), domain, mx, batch)).detach();
    }
    true
}

/// A queued body as the client's message body (no copy).
struct BodyRef(Body);

impl AsRef<[u8]> for BodyRef {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// An outcome for one recipient: what to persist, and what a DSN says.
struct Outcome {
    attempt: Attempt,
    reply: Reply,
    remote_mta: Option<String>,
    /// TLS version of the session that carried the attempt ("" without TLS
    /// or without a session), for the `relay_attempt` event.
    tls: &'static str,
}

fn outcome(reply: Reply, remote_mta: Option<String>) -> Outcome {
    let text = reply.to_string();
    let attempt = match reply.class() {
        2 => Attempt::Delivered(text),
        5 => Attempt::Permanent(text),
        _ => Attempt::Temporary(text),
    };
    Outcome {
        attempt,
        reply,
        remote_mta,
        tls: "",
    }
}

/// The MTA-STS policy for `domain`, when the operator set no policy of
/// their own for it (`[relay.tls]` takes precedence) and MTA-STS is on.
/// Asked per delivery task, so a slow policy host holds up only its own
/// domain.
async fn sts_policy(shard: &Shard, domain: &str) -> Option<Arc<mta_sts::Policy>> {
    let sts = shard.shared.relay.mta_sts.as_ref()?;
    let key = domain.trim_end_matches('.').to_ascii_lowercase();
    if key.starts_with('[') || shard.config().relay.tls.contains_key(&key) {
        return None;
    }
    sts.policies(vec![key]).await.pop().flatten()
}

async fn deliver_batch(shard: Rc<Shard>, domain: String, mx: MxResult, jobs: Vec<Job>) {
    // Per job, per carried recipient.
    let mut results: Vec<Vec<Outcome>> = Vec::with_capacity(jobs.len());
    let everyone = |reply: Reply, results: &mut Vec<Vec<Outcome>>| {
        for j in &jobs {
            results.push(
                j.rcpts
                    .iter()
                    .map(|_| outcome(reply.clone(), None))
                    .collect(),
            );
        }
    };
    match &mx {
        MxResult::NullMx => everyone(
            Reply::local(556, "5.1.10 Recipient address has null MX"),
            &mut results,
        ),
        MxResult::Permanent(why) => {
            everyone(Reply::local(550, format!("5.1.2 {why}")), &mut results)
        }
        MxResult::Temporary(why) => {
            everyone(Reply::local(451, format!("4.4.3 {why}")), &mut results)
        }
        MxResult::Ok(hosts) => {
            // Messages still in the queue (a `queue remove` may have taken some).
            let mut messages = Vec::new();
            let mut present = Vec::new();
            for j in &jobs {
                let found = shard.store.with_account(&j.account, |a| {
                    let q = a.queued(j.uid)?;
                    let inbox = a.mailbox(INBOX)?;
                    let loc = inbox.messages.get(inbox.position(j.uid)?)?.loc;
                    Some((q.reverse_path.clone(), q.flags, loc))
                });
                match found
                    .flatten()
                    .and_then(|(rp, flags, loc)| Some((rp, flags, shard.store.body(loc)?)))
                {
                    Some((reverse_path, flags, body)) => {
                        let is_8bit = flags & queue_flag::EIGHT_BIT != 0
                            || body.bytes().iter().any(|b| *b >= 0x80);
                        messages.push(OutboundMessage {
                            reverse_path,
                            recipients: j.rcpts.iter().map(|(_, a)| a.clone()).collect(),
                            body: BodyRef(body),
                            needs_smtputf8: flags & queue_flag::SMTPUTF8 != 0,
                            is_8bit,
                        });
                        present.push(true);
                    }
                    None => present.push(false),
                }
            }
            let port = shard.config().relay.port;
            let configured = shard.config().relay.tls_for(&domain);
            let base = ClientParams::new(shard.config().hostname.clone());
            let mut sent: Option<(Vec<client::MessageOutcome>, String, &'static str)> = None;
            let mut last_error = Reply::local(451, "4.4.1 no MX host answered");
            // RFC 8461 section 5: under an MTA-STS policy in mode enforce,
            // only the MX hosts it names (4.1), each over TLS verified for
            // the MX name (4.2), else defer; in mode testing, the same
            // checks only log what enforce would have refused.
            let sts = sts_policy(&shard, &domain).await;
            let mode = sts.as_ref().map_or(mta_sts::Mode::None, |p| p.mode);
            let mut hosts: Vec<&crate::relay::dns::MxHost> = hosts.iter().collect();
            if let Some(p) = sts.as_ref().filter(|_| mode != mta_sts::Mode::None) {
                let (named, other): (Vec<_>, Vec<_>) =
                    hosts.iter().copied().partition(|h| p.allows(&h.name));
                for h in &other {
                    tracing::warn!(domain, mx = h.name, mode = ?mode, "MTA-STS: MX host not named by the policy");
                }
                if mode == mta_sts::Mode::Enforce {
                    if named.is_empty() {
                        last_error = Reply::local(
                            451,
                            format!(
                                "4.7.5 MTA-STS policy of {domain}: no MX host matches the policy"
                            ),
                        );
                    }
                    hosts = named;
                }
            }
            'hosts: for host in hosts {
                for ip in &host.addrs {
                    let target = SocketAddr::new(*ip, port);
                    let mut params = base.clone();
                    let mut policy = match mode {
                        mta_sts::Mode::Enforce | mta_sts::Mode::Testing => {
                            RelayTls::RequireVerified
                        }
                        mta_sts::Mode::None => configured,
                    };
                    let mut tls = session_tls(&shard, policy, &host.name, *ip);
                    if let (Err(e), mta_sts::Mode::Testing) = (&tls, mode) {
                        tracing::warn!(domain, mx = host.name, %target, error = %e, "MTA-STS testing: enforce would defer this MX; delivering as usual");
                        policy = configured;
                        tls = session_tls(&shard, policy, &host.name, *ip);
                    }
                    match tls {
                        Ok(tls) => params.tls = tls,
                        Err(e) => {
                            tracing::warn!(domain, mx = host.name, %target, error = %e, "MX host unusable");
                            last_error = e.reply();
                            continue;
                        }
                    }
                    let mut result = client::deliver(target, params.clone(), &messages).await;
                    if mode == mta_sts::Mode::Testing
                        && policy == RelayTls::RequireVerified
                        && configured != RelayTls::RequireVerified
                    {
                        if let Err(e @ (ConnectError::Tls(_) | ConnectError::TlsUnavailable(_))) =
                            &result
                        {
                            // Testing mode: report, then deliver under the
                            // configured policy as if there were none.
                            tracing::warn!(domain, mx = host.name, %target, error = %e, "MTA-STS testing: enforce would defer this MX (no verified TLS); delivering as usual");
                            policy = configured;
                            params.tls =
                                session_tls(&shard, policy, &host.name, *ip).unwrap_or(None);
                            result = client::deliver(target, params.clone(), &messages).await;
                        }
                    }
                    if let Err(ConnectError::Tls(why)) = &result {
                        if policy == RelayTls::Opportunistic {
                            // RFC 7435 opportunistic security: a failed
                            // handshake is no reason to keep the mail back.
                            tracing::warn!(domain, mx = host.name, %target, error = %why, "TLS handshake failed; delivering in plaintext");
                            params.tls = None;
                            result = client::deliver(target, params, &messages).await;
                        }
                    }
                    match result {
                        Ok(d) => {
                            match &d.tls {
                                Some(t) => {
                                    tracing::info!(domain, mx = host.name, %target, tls = t.version, cipher = t.cipher, verified = policy == RelayTls::RequireVerified, mta_sts = ?mode, "relay session over TLS")
                                }
                                None => {
                                    tracing::info!(domain, mx = host.name, %target, tls = "none", "relay session in plaintext")
                                }
                            }
                            let tls = d.tls.as_ref().map_or("", |t| t.version);
                            sent = Some((d.outcomes, host.name.clone(), tls));
                            break 'hosts;
                        }
                        Err(e) => {
                            tracing::debug!(domain, %target, error = %e, "MX host unusable");
                            last_error = e.reply();
                        }
                    }
                }
            }
            let mut outcomes = sent.as_ref().map(|(o, _, _)| o.iter());
            for (j, ok) in jobs.iter().zip(&present) {
                if !*ok {
                    results.push(Vec::new());
                    continue;
                }
                match outcomes.as_mut().and_then(|o| o.next()) {
                    Some(m) => {
                        let mta = sent.as_ref().map(|(_, h, _)| h.clone());
                        let tls = sent.as_ref().map_or("", |(_, _, t)| *t);
                        results.push(
                            m.recipients
                                .iter()
                                .map(|r| {
                                    let reply = r.reply().clone();
                                    let text = reply.to_string();
                                    let attempt = match r {
                                        RcptOutcome::Delivered { .. } => Attempt::Delivered(text),
                                        RcptOutcome::Temporary { .. } => Attempt::Temporary(text),
                                        RcptOutcome::Permanent { .. } => Attempt::Permanent(text),
                                    };
                                    Outcome {
                                        attempt,
                                        reply,
                                        remote_mta: mta.clone(),
                                        tls,
                                    }
                                })
                                .collect(),
                        );
                    }
                    None => results.push(
                        j.rcpts
                            .iter()
                            .map(|_| outcome(last_error.clone(), None))
                            .collect(),
                    ),
                }
            }
        }
    }
    if let Err(e) = record(&shard, &jobs, results).await {
        tracing::warn!(domain, error = %e, "recording delivery outcomes failed");
    }
    let relay = &shard.relay;
    {
        let mut in_flight = relay.in_flight.borrow_mut();
        for j in &jobs {
            for (i, _) in &j.rcpts {
                in_flight.remove(&(j.account.clone(), j.uid, *i));
            }
        }
    }
    if let Some(n) = relay.active.borrow_mut().get_mut(&domain) {
        *n = n.saturating_sub(1);
    }
    relay.active.borrow_mut().retain(|_, n| *n > 0);
    relay.wake();
}

/// The STARTTLS set-up of one session to MX `host` at `ip` under `policy`:
/// which client configuration (verifying for `require-verified`), the name
/// to send as SNI and to verify, and whether plaintext is allowed. `Err`
/// when a verified session cannot even be attempted.
fn session_tls(
    shard: &Shard,
    policy: RelayTls,
    host: &str,
    ip: std::net::IpAddr,
) -> Result<Option<client::SessionTls>, ConnectError> {
    use rustls_pki_types::ServerName;
    let tls = &shard.shared.relay.tls;
    let name = ServerName::try_from(host.trim_end_matches('.').to_ascii_lowercase()).ok();
    Ok(Some(match policy {
        RelayTls::None => return Ok(None),
        RelayTls::Opportunistic | RelayTls::Require => client::SessionTls {
            config: tls.unverified.clone(),
            name: name.unwrap_or(ServerName::IpAddress(ip.into())),
            required: policy == RelayTls::Require,
        },
        RelayTls::RequireVerified => {
            let Some(config) = tls.verified.clone() else {
                return Err(ConnectError::Tls(format!(
                    "no trusted CA certificate loaded from {}",
                    tls.ca_file.display()
                )));
            };
            let Some(name) = name.filter(|n| matches!(n, ServerName::DnsName(_))) else {
                return Err(ConnectError::Tls(format!(
                    "MX name {host:?} cannot be verified"
                )));
            };
            client::SessionTls {
                config,
                name,
                required: true,
            }
        }
    }))
}

/// Persist a task's outcomes: DSNs first, then the states, then expunge what
/// is finished.
async fn record(
    shard: &Shard,
    jobs: &[Job],
    results: Vec<Vec<Outcome>>,
) -> Result<(), StorageError> {
    let now = unix_now();
    let schedule = schedule(&shard.config().relay);
    let mut updates: Vec<(String, u32, u32, Update)> = Vec::new();
    for (j, outcomes) in jobs.iter().zip(results) {
        if outcomes.is_empty() {
            continue;
        }
        let Some(q) = shard
            .store
            .with_account(&j.account, |a| a.queued(j.uid).cloned())
            .flatten()
        else {
            continue;
        };
        let mut failed = Vec::new();
        let mut delayed = Vec::new();
        for ((i, address), o) in j.rcpts.iter().zip(outcomes) {
            let Some(r) = q.recipients.get(*i as usize) else {
                continue;
            };
            let delivered = matches!(o.attempt, queue::Attempt::Delivered(_));
            let mut u =
                queue::after_attempt(&schedule, r.state, r.attempts, q.arrival, now, o.attempt);
            // ringmail_relay_attempts_total: delivered, deferred, bounced.
            let result = if delivered {
                0
            } else if u.bounce {
                2
            } else {
                1
            };
            shard.metrics.relay_attempt(result);
            // One event per recipient and attempt (stable field names).
            tracing::info!(
                event = "relay_attempt",
                id = %QueueId { queue: queue::queue_number(&j.account).unwrap_or(0), uid: j.uid },
                recipient = address.as_str(),
                domain = address.rsplit_once('@').map_or("", |(_, d)| d),
                mx = o.remote_mta.as_deref().unwrap_or(""),
                tls = o.tls,
                result = ["delivered", "deferred", "bounced"][result],
                reply = %o.reply,
                attempts = u.attempts,
                next_retry = if delivered || u.bounce { 0 } else { u.next_attempt },
                "relay attempt"
            );
            let dsn_rcpt = |action, will_retry_until| DsnRecipient {
                final_recipient: address.clone(),
                original_recipient: None,
                action,
                reply: o.reply.clone(),
                remote_mta: o.remote_mta.clone(),
                last_attempt: SystemTime::now(),
                will_retry_until,
            };
            if u.bounce {
                failed.push(dsn_rcpt(DsnAction::Failed, None));
            } else if queue::wants_delay_warning(&schedule, u.state, q.arrival, now) {
                delayed.push(dsn_rcpt(
                    DsnAction::Delayed,
                    Some(unix_time(q.arrival.saturating_add(schedule.give_up))),
                ));
                u.state |= queue_state::WARNED;
            }
            updates.push((j.account.clone(), j.uid, *i, u));
        }
        let body = shard
            .store
            .with_account(&j.account, |a| {
                let inbox = a.mailbox(INBOX)?;
                Some(inbox.messages.get(inbox.position(j.uid)?)?.loc)
            })
            .flatten()
            .and_then(|loc| shard.store.body(loc));
        let original: &[u8] = body.as_ref().map_or(&[], |b| b.bytes());
        for (rcpts, what) in [(failed, "failed"), (delayed, "delayed")] {
            if rcpts.is_empty() || !dsn::should_notify(&q.reverse_path) {
                continue;
            }
            let dsn = dsn::build_dsn(DsnParams {
                hostname: shard.config().hostname.clone(),
                original_sender: q.reverse_path.clone(),
                original_envelope_id: None,
                arrival_date: unix_time(q.arrival),
                date: SystemTime::now(),
                recipients: rcpts,
                original,
                max_header_bytes: dsn::MAX_HEADER_BYTES,
                message_id: None,
            });
            tracing::info!(id = %QueueId { queue: queue::queue_number(&j.account).unwrap_or(0), uid: j.uid }, sender = q.reverse_path, what, "delivery status notification");
            send_dsn(shard, &q.reverse_path, dsn).await?;
        }
    }
    if !updates.is_empty() {
        let ops: Vec<Op<'_>> = updates
            .iter()
            .map(|(account, uid, rcpt, u)| Op::QueueState {
                account,
                uid: *uid,
                rcpt: *rcpt,
                state: u.state,
                attempts: u.attempts,
                next_attempt: u.next_attempt,
                last_reply: &u.last_reply,
            })
            .collect();
        shard.store.commit(&ops).await?;
    }
    // Messages whose recipients are all final now (other tasks may have
    // finished their other domains meanwhile): out of the queue.
    let mut finished: HashMap<&str, Vec<u32>> = HashMap::new();
    for j in jobs {
        let done = shard
            .store
            .with_account(&j.account, |a| {
                a.queued(j.uid)
                    .is_some_and(|q| q.recipients.iter().all(|r| queue_state::is_final(r.state)))
            })
            .unwrap_or(false);
        if done {
            finished.entry(&j.account).or_default().push(j.uid);
        }
    }
    for (account, uids) in finished {
        shard.store.expunge(account, INBOX, uids).await?;
    }
    Ok(())
}

fn unix_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// DKIM-sign a notification for the domain of its From: address
/// (`MAILER-DAEMON@<hostname>`, see `dsn::build_dsn`) when that domain has
/// a key, on a blocking thread like the relay's own signing. The signature
/// is made once: the signed bytes are what is delivered or queued, so
/// retries resend them unchanged. Unsigned (with a warning) if signing fails.
async fn sign_dsn(shard: &Shard, dsn: Vec<u8>) -> Vec<u8> {
    let keys = shard.shared.dkim.clone();
    let Some(domain) = dsn_signing_domain(&shard.config().hostname, &keys) else {
        return dsn;
    };
    glommio::executor()
        .spawn_blocking(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                keys.sign(&domain, &dsn)
            }));
            match r {
                Ok(Ok(headers)) => {
                    let mut v = Vec::with_capacity(headers.len() + dsn.len());
                    v.extend_from_slice(&headers);
                    v.extend_from_slice(&dsn);
                    v
                }
                Ok(Err(e)) => {
                    tracing::warn!(domain, error = %e, "DKIM signing of a notification failed; sending it unsigned");
                    dsn
                }
                Err(_) => dsn,
            }
        })
        .await
}

/// The domain whose keys sign a notification from `MAILER-DAEMON@hostname`:
/// the hostname itself when it has a key, else the nearest parent domain
/// (of two labels or more) that has one, e.g. `example.org` for
/// `mail.example.org`: a signature for a parent domain is still aligned
/// with the From: domain under DMARC's relaxed alignment (RFC 7489 3.1.1).
fn dsn_signing_domain(hostname: &str, keys: &crate::dkim::Keys) -> Option<String> {
    let mut domain = hostname.trim_end_matches('.').to_ascii_lowercase();
    loop {
        if !keys.for_domain(&domain).is_empty() {
            return Some(domain);
        }
        let (_, parent) = domain.split_once('.')?;
        if !parent.contains('.') {
            return None;
        }
        domain = parent.to_string();
    }
}

/// Hand a notification to its recipient (the original sender): into a
/// local mailbox, or into this shard's queue with the null reverse path.
/// It is DKIM-signed first (`sign_dsn`).
async fn send_dsn(shard: &Shard, sender: &str, dsn: Vec<u8>) -> Result<(), StorageError> {
    let dsn = sign_dsn(shard, dsn).await;
    let domain = queue::domain_of(sender);
    let smtputf8 = !dsn.is_ascii();
    if shard.config().is_local_domain(&domain) {
        match shard.directory().resolve(sender) {
            Lookup::Account(account) => {
                let (r, _) = shard
                    .deliver(
                        &[account],
                        b"Return-Path: <>\r\n".to_vec(),
                        super::spool::MessageBody::Heap(dsn),
                        unix_now(),
                    )
                    .await;
                r
            }
            Lookup::Unknown => {
                tracing::warn!(sender, "notification for an unknown local sender dropped");
                Ok(())
            }
        }
    } else {
        enqueue(
            shard,
            dsn::DSN_REVERSE_PATH,
            &[sender.to_string()],
            &dsn,
            smtputf8,
            smtputf8,
        )
        .await
        .map(|_| ())
    }
}

/// Serve one control request on this shard.
async fn control(shard: Rc<Shard>, req: ControlRequest) {
    use super::control::Command;
    let relay = &shard.relay;
    let now = unix_now();
    let answer = match &req.command {
        Command::Transfer(t) => super::transfer::handle(shard.clone(), t.clone()).await,
        Command::List => {
            let mut out = String::new();
            for account in relay.accounts.borrow().iter() {
                let n = queue::queue_number(account).unwrap_or(0);
                shard.store.with_account(account, |a| {
                    let inbox = a.mailbox(INBOX);
                    for q in &a.queue {
                        let size = inbox
                            .and_then(|m| {
                                m.position(q.uid).map(|p| u64::from(m.messages[p].loc.len))
                            })
                            .unwrap_or(0);
                        queue::describe(
                            QueueId {
                                queue: n,
                                uid: q.uid,
                            },
                            q,
                            size,
                            now,
                            &mut out,
                        );
                    }
                });
            }
            out
        }
        Command::Flush(domain) => {
            let domain = domain
                .as_ref()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase());
            let mut n = 0usize;
            for account in relay.accounts.borrow().iter() {
                shard.store.with_account(account, |a| {
                    for q in &a.queue {
                        n += q
                            .recipients
                            .iter()
                            .filter(|r| !queue_state::is_final(r.state))
                            .filter(|r| {
                                domain
                                    .as_ref()
                                    .is_none_or(|d| *d == queue::domain_of(&r.address))
                            })
                            .count();
                    }
                });
            }
            relay.flush.borrow_mut().push(domain);
            relay.wake();
            n.to_string()
        }
        Command::Mailboxes(account) => {
            let account = crate::accounts::canonical(account)
                .unwrap_or_else(|_| account.to_ascii_lowercase());
            shard
                .store
                .with_account(&account, |a| {
                    let mut out = String::new();
                    for m in &a.mailboxes {
                        let unseen = m.messages.iter().filter(|e| e.flags & crate::storage::index::flag::SEEN == 0).count();
                        let bytes: u64 = m.messages.iter().map(|e| u64::from(e.loc.len)).sum();
                        let special = crate::storage::index::special::name(m.special_use);
                        out.push_str(&format!(
                            "{:?} messages={} unseen={unseen} bytes={bytes} uidvalidity={} uidnext={}{}{}\n",
                            m.name,
                            m.messages.len(),
                            m.uidvalidity,
                            m.uidnext,
                            if special.is_empty() { "" } else { " special=" },
                            special
                        ));
                    }
                    out
                })
                .unwrap_or_default()
        }
        Command::Compact(only) => {
            // Shard 0 coordinates a compaction of every shard.
            if shard.id != 0 {
                String::new()
            } else {
                match shard.compact(*only).await {
                    Ok(n) => format!("compacted {n} segments\n"),
                    Err(e) => format!("error: compaction failed: {e}\n"),
                }
            }
        }
        Command::Bans => {
            let mut out = String::new();
            let now = now.max(0) as u64;
            for (key, until) in shard.throttle.borrow().bans(now) {
                out.push_str(&format!("{key} until {until} (in {} s)\n", until - now));
            }
            out
        }
        Command::Unban(ip) => {
            let key = super::throttle::Key::addr(*ip);
            if shard
                .throttle
                .borrow()
                .bans(now.max(0) as u64)
                .iter()
                .any(|(k, _)| *k == key)
            {
                shard.throttle.borrow_mut().apply(
                    &key,
                    super::throttle::Op::Clear,
                    0,
                    &shard.config().auth_throttle.policy(),
                );
                tracing::warn!(address = %key, "ban lifted by the operator");
                format!("unbanned {key}")
            } else {
                String::new()
            }
        }
        Command::Remove(id) => {
            let account = id.account();
            let mine = relay.accounts.borrow().contains(&account)
                && shard
                    .store
                    .with_account(&account, |a| a.queued(id.uid).is_some())
                    .unwrap_or(false);
            if mine {
                match shard.store.expunge(&account, INBOX, vec![id.uid]).await {
                    Ok(()) => format!("removed {id}"),
                    Err(e) => format!("error: {e}"),
                }
            } else {
                String::new()
            }
        }
    };
    let _ = req.reply.send(answer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_signed_for_the_hostname_or_its_nearest_parent_with_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let none = crate::dkim::Keys::load(dir.path()).unwrap();
        assert_eq!(dsn_signing_domain("mx.example.org", &none), None);
        crate::dkim::generate(
            dir.path(),
            "example.org",
            "s",
            crate::dkim::Algorithm::Ed25519,
        )
        .unwrap();
        let parent = crate::dkim::Keys::load(dir.path()).unwrap();
        assert_eq!(
            dsn_signing_domain("mx.mail.Example.org.", &parent).as_deref(),
            Some("example.org")
        );
        // Never a bare top-level domain, never an unrelated domain.
        assert_eq!(dsn_signing_domain("mx.example.net", &parent), None);
        crate::dkim::generate(
            dir.path(),
            "mx.example.org",
            "s",
            crate::dkim::Algorithm::Ed25519,
        )
        .unwrap();
        let own = crate::dkim::Keys::load(dir.path()).unwrap();
        assert_eq!(
            dsn_signing_domain("mx.example.org", &own).as_deref(),
            Some("mx.example.org")
        );
    }
}
