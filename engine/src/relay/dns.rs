//! Batched, cached MX resolution for the relay.
//!
//! The executors never talk DNS themselves. [`DnsResolver::start`] spawns one
//! side thread (`ringmail-dns`) running one tokio current-thread runtime with
//! one hickory resolver, and every executor shares that thread through cheap
//! [`DnsResolver`] handles. A glommio task sends its domains over a channel and
//! awaits a `futures::channel::oneshot` reply, so nothing on an executor blocks.
//!
//! On the side thread:
//! - **Batching**: each wake-up drains every request already queued and starts
//!   all of their domains at once; lookups run concurrently (up to
//!   [`DnsConfig::max_concurrent_queries`]). There is no artificial delay: a
//!   request arriving while a batch is in flight starts at once too, and joins
//!   the lookups already in flight instead of repeating them.
//! - **Coalescing**: one in-flight resolution per domain and one in-flight query
//!   per (name, type); a second asker waits for the first answer. Exchangers
//!   shared by many domains (one provider hosting many domains) are looked up
//!   once.
//! - **Caching**: answers are cached per (name, type) until their TTL expires
//!   (capped by [`DnsConfig::positive_ttl_max`]); negative answers (NXDOMAIN,
//!   no records) for the SOA minimum, capped by [`DnsConfig::negative_ttl_max`].
//!   Temporary failures (timeouts, SERVFAIL) are not cached: the queue's retry
//!   schedule already spaces them out, and coalescing keeps a burst of messages
//!   to a broken domain down to one query. hickory's own cache is disabled so
//!   that the counters in [`DnsStats`] are the queries actually sent.
//!
//! Resolution of a domain (RFC 5321 section 5.1, RFC 7505):
//! 1. an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) bypasses DNS;
//! 2. MX lookup. NXDOMAIN is permanent; SERVFAIL/timeouts are temporary;
//! 3. a single MX `.` is a null MX: the domain accepts no mail (permanent);
//! 4. MX records: exchangers sorted by preference, randomized among equal
//!    preferences, each exchanger's A and AAAA looked up concurrently;
//! 5. no MX records: the implicit MX, the domain itself with preference 0,
//!    through its A/AAAA records; no address either is permanent.
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{self, Either, FutureExt, Shared};
use futures::stream::{FuturesUnordered, StreamExt};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use rand::seq::SliceRandom;

/// Exchangers kept per domain (the lowest preferences); bounds the A/AAAA
/// lookups one domain can cause.
pub const MAX_MX_HOSTS: usize = 16;
/// Addresses kept per exchanger.
pub const MAX_ADDRS_PER_HOST: usize = 16;
/// Requests drained from the channel in one wake-up of the side thread.
pub const MAX_REQUESTS_PER_BATCH: usize = 1024;

/// Settings of the resolver side thread.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Recursive resolvers to ask (UDP, with TCP when an answer is truncated).
    /// Empty: the system configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Timeout of one query attempt.
    pub timeout: Duration,
    /// Attempts per query before it fails as temporary.
    pub attempts: usize,
    /// Bound of the (name, type) answer cache; 0 disables caching.
    pub cache_max_entries: usize,
    /// Longest time a negative answer (NXDOMAIN, no records) is cached.
    pub negative_ttl_max: Duration,
    /// Longest time a positive answer is cached, whatever its TTL.
    pub positive_ttl_max: Duration,
    /// Queries in flight at once; more wait their turn on the side thread.
    pub max_concurrent_queries: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            cache_max_entries: 65_536,
            negative_ttl_max: Duration::from_secs(300),
            positive_ttl_max: Duration::from_secs(86_400),
            max_concurrent_queries: 256,
        }
    }
}

/// One exchanger of a domain, with its addresses (IPv4 first, then IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    /// ASCII host name without the trailing dot (or the literal, for `[...]`).
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

/// Where mail for a domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxResult {
    /// Hosts to try in order: by preference, randomized among equal ones.
    /// Never empty; every host has at least one address.
    Ok(Vec<MxHost>),
    /// RFC 7505 null MX: the domain accepts no mail. Permanent.
    NullMx,
    /// The domain cannot receive mail (NXDOMAIN, no MX and no address,
    /// invalid name). Bounce.
    Permanent(String),
    /// Try again later (timeout, SERVFAIL, resolver unavailable).
    Temporary(String),
}

impl MxResult {
    /// The hosts, when resolution succeeded.
    pub fn hosts(&self) -> Option<&[MxHost]> {
        match self {
            MxResult::Ok(h) => Some(h),
            _ => None,
        }
    }

    /// True for [`MxResult::NullMx`] and [`MxResult::Permanent`].
    pub fn is_permanent(&self) -> bool {
        matches!(self, MxResult::NullMx | MxResult::Permanent(_))
    }

    /// Text for a DSN's diagnostic or a log line.
    pub fn reason(&self) -> String {
        match self {
            MxResult::Ok(_) => "ok".into(),
            MxResult::NullMx => "domain does not accept mail (null MX, RFC 7505)".into(),
            MxResult::Permanent(r) | MxResult::Temporary(r) => r.clone(),
        }
    }
}

/// A snapshot of the resolver's counters (monotonic since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// MX queries handed to the network.
    pub mx_queries: u64,
    /// A queries handed to the network.
    pub a_queries: u64,
    /// AAAA queries handed to the network.
    pub aaaa_queries: u64,
    /// (name, type) lookups answered from the cache.
    pub cache_hits: u64,
    /// (name, type) lookups or domain resolutions that joined one in flight.
    pub coalesced: u64,
    /// Wake-ups of the side thread that started new work.
    pub batches: u64,
    /// Domains asked for through the channel (literals and invalid names excluded).
    pub domains_requested: u64,
}

impl DnsStats {
    /// All queries sent, of every type.
    pub fn queries(&self) -> u64 {
        self.mx_queries + self.a_queries + self.aaaa_queries
    }
}

#[derive(Default)]
struct Counters {
    mx: AtomicU64,
    a: AtomicU64,
    aaaa: AtomicU64,
    hits: AtomicU64,
    coalesced: AtomicU64,
    batches: AtomicU64,
    domains: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Failure to start the side thread.
#[derive(Debug, thiserror::Error)]
pub enum DnsStartError {
    #[error("resolver configuration: {0}")]
    Config(String),
    #[error("resolver thread: {0}")]
    Io(#[from] std::io::Error),
}

/// One request from an executor: domains (already normalized) and the reply.
struct Request {
    domains: Vec<(String, Name)>,
    reply: oneshot::Sender<Vec<MxResult>>,
}

struct Handle {
    tx: tokio::sync::mpsc::UnboundedSender<Request>,
    counters: Arc<Counters>,
    /// The side thread's runtime, for other DNS work that shares the thread
    /// (inbound mail authentication, `auth::Verifier`).
    runtime: tokio::runtime::Handle,
    config: DnsConfig,
}

/// Handle to the resolver thread. Cheap to clone; `Send + Sync`, so one can be
/// given to every executor. The thread stops when the last handle is dropped
/// (requests still in flight then resolve as [`MxResult::Temporary`]).
#[derive(Clone)]
pub struct DnsResolver {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver")
            .field("stats", &self.stats())
            .finish()
    }
}

impl DnsResolver {
    /// Start the side thread and its resolver. Fails if the system
    /// configuration cannot be read (when `nameservers` is empty) or the thread
    /// cannot be spawned. It waits (briefly, on a std channel) for the thread
    /// to come up, so call it at startup, not from an executor task; then
    /// clone the handle into each executor.
    pub fn start(config: DnsConfig) -> Result<DnsResolver, DnsStartError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_counters = counters.clone();
        let kept = config.clone();
        std::thread::Builder::new()
            .name("ringmail-dns".into())
            .spawn(move || {
                let rt = match crate::util::side_runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(DnsStartError::Io(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let resolver = match build_resolver(&config) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(tokio::runtime::Handle::current()));
                    serve(resolver, config, rx, thread_counters).await;
                });
            })?;
        match ready_rx.recv() {
            Ok(Ok(runtime)) => Ok(DnsResolver {
                inner: Arc::new(Handle {
                    tx,
                    counters,
                    runtime,
                    config: kept,
                }),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DnsStartError::Config(
                "resolver thread exited during start".into(),
            )),
        }
    }

    /// Resolve one domain. See [`DnsResolver::resolve_many`].
    pub async fn resolve(&self, domain: &str) -> MxResult {
        self.resolve_many(vec![domain.to_string()])
            .await
            .pop()
            .map(|(_, r)| r)
            .unwrap_or_else(|| MxResult::Temporary("resolver returned nothing".into()))
    }

    /// Resolve several domains in one trip to the side thread; the answers come
    /// back in the order asked, each paired with its domain as given. Domains
    /// are compared case-insensitively and without a trailing dot;
    /// internationalized names are converted to A-labels.
    pub async fn resolve_many(&self, domains: Vec<String>) -> Vec<(String, MxResult)> {
        let mut results: Vec<Option<MxResult>> = vec![None; domains.len()];
        let mut asked = Vec::new();
        let mut slots = Vec::new();
        for (i, d) in domains.iter().enumerate() {
            match classify(d) {
                Classified::Done(r) => results[i] = Some(r),
                Classified::Lookup(key, name) => {
                    asked.push((key, name));
                    slots.push(i);
                }
            }
        }
        if !asked.is_empty() {
            let (reply, answer) = oneshot::channel();
            let n = asked.len();
            let answers = match self.inner.tx.send(Request {
                domains: asked,
                reply,
            }) {
                Ok(()) => answer.await.ok(),
                Err(_) => None,
            };
            let answers = answers.filter(|a| a.len() == n).unwrap_or_else(|| {
                vec![MxResult::Temporary("DNS resolver thread is not running".into()); n]
            });
            for (slot, r) in slots.into_iter().zip(answers) {
                results[slot] = Some(r);
            }
        }
        domains
            .into_iter()
            .zip(results)
            .map(|(d, r)| (d, r.expect("every slot filled")))
            .collect()
    }

    /// The side thread's tokio runtime: tasks spawned on it run on the DNS
    /// thread (while the thread lives; see [`DnsResolver`]).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    /// The configuration the thread was started with.
    pub fn config(&self) -> &DnsConfig {
        &self.inner.config
    }

    /// Counters since start.
    pub fn stats(&self) -> DnsStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DnsStats {
            mx_queries: l(&c.mx),
            a_queries: l(&c.a),
            aaaa_queries: l(&c.aaaa),
            cache_hits: l(&c.hits),
            coalesced: l(&c.coalesced),
            batches: l(&c.batches),
            domains_requested: l(&c.domains),
        }
    }
}

enum Classified {
    Done(MxResult),
    Lookup(String, Name),
}

/// Literals and invalid names are answered on the caller's side; the rest get
/// a cache key (lower-case ASCII, no trailing dot) and a fully qualified name.
fn classify(domain: &str) -> Classified {
    let d = domain.trim();
    if let Some(inner) = d.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Classified::Done(MxResult::Permanent(format!(
                "malformed address literal {d}"
            )));
        };
        let ip: Option<IpAddr> = if inner.len() > 5 && inner[..5].eq_ignore_ascii_case("IPv6:") {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        };
        return Classified::Done(match ip {
            Some(ip) => MxResult::Ok(vec![MxHost {
                preference: 0,
                name: d.to_string(),
                addrs: vec![ip],
            }]),
            None => MxResult::Permanent(format!("unsupported address literal {d}")),
        });
    }
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() || d.contains("..") {
        return Classified::Done(MxResult::Permanent(format!("invalid domain {domain:?}")));
    }
    match Name::from_utf8(d) {
        Ok(mut name) => {
            name.set_fqdn(true);
            let mut key = name.to_ascii();
            key.make_ascii_lowercase();
            if key.ends_with('.') {
                key.pop();
            }
            if key.is_empty() {
                return Classified::Done(MxResult::Permanent(format!("invalid domain {domain:?}")));
            }
            Classified::Lookup(key, name)
        }
        Err(e) => Classified::Done(MxResult::Permanent(format!(
            "invalid domain {domain:?}: {e}"
        ))),
    }
}

pub(crate) fn build_resolver(config: &DnsConfig) -> Result<TokioResolver, DnsStartError> {
    build_resolver_cached(config, 0)
}

/// A resolver with the settings of `config` (nameservers, timeout,
/// attempts) and hickory's own record cache of `cache_size` entries (0: none;
/// it keeps answers for their TTL, negative ones for the SOA minimum).
/// Call it within the side thread's runtime ([`DnsResolver::runtime`]).
pub(crate) fn build_resolver_cached(
    config: &DnsConfig,
    cache_size: usize,
) -> Result<TokioResolver, DnsStartError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| DnsStartError::Config(e.to_string()))?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|sa| {
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Names are always sent fully qualified: no search list.
    opts.ndots = 0;
    opts.timeout = config.timeout;
    opts.attempts = config.attempts.max(1);
    // Our own cache sits in front; see the module documentation.
    opts.cache_size = cache_size as u64;
    if cache_size > 0 {
        opts.positive_max_ttl = Some(config.positive_ttl_max);
        opts.negative_max_ttl = Some(config.negative_ttl_max);
    }
    opts.use_hosts_file = ResolveHosts::Never;
    // TTL caps are applied by our cache (hickory rounds them to seconds).
    opts.max_active_requests = opts.max_active_requests.max(config.max_concurrent_queries);
    builder
        .build()
        .map_err(|e| DnsStartError::Config(e.to_string()))
}

/// The answer to one (name, type) query, as cached.
#[derive(Clone, Debug)]
enum Answer {
    Mx(Rc<[(u16, Name)]>),
    Addrs(Rc<[IpAddr]>),
    /// The name exists but has no record of that type.
    NoData,
    NxDomain,
    /// Timeout, SERVFAIL, refused, network error. Not cached.
    Temporary(String),
}

type Key = (String, RecordType);

struct Cache {
    map: HashMap<Key, (Instant, Answer)>,
    max: usize,
}

impl Cache {
    fn get(&mut self, key: &Key, now: Instant) -> Option<Answer> {
        match self.map.get(key) {
            Some((until, a)) if *until > now => Some(a.clone()),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: Key, answer: Answer, until: Instant, now: Instant) {
        if self.max == 0 || until <= now {
            return;
        }
        if self.map.len() >= self.max && !self.map.contains_key(&key) {
            self.map.retain(|_, (u, _)| *u > now);
            if self.map.len() >= self.max {
                // Still full of live entries: drop the eighth that expires soonest,
                // so the O(n) scan is paid once per max/8 inserts.
                let mut expiries: Vec<Instant> = self.map.values().map(|(u, _)| *u).collect();
                let cut = (self.max / 8).max(1).min(expiries.len() - 1);
                let (_, nth, _) = expiries.select_nth_unstable(cut);
                let nth = *nth;
                self.map.retain(|_, (u, _)| *u > nth);
            }
        }
        self.map.insert(key, (until, answer));
    }
}

type SharedAnswer = Shared<Pin<Box<dyn Future<Output = Answer>>>>;

/// State of the side thread; single-threaded, shared by its futures.
struct Ctx {
    resolver: TokioResolver,
    config: DnsConfig,
    counters: Arc<Counters>,
    cache: RefCell<Cache>,
    in_flight: RefCell<HashMap<Key, SharedAnswer>>,
    permits: tokio::sync::Semaphore,
}

/// A request's answers as they complete.
struct Waiting {
    results: Vec<Option<MxResult>>,
    missing: usize,
    reply: Option<oneshot::Sender<Vec<MxResult>>>,
}

type WaitingSlot = (Rc<RefCell<Waiting>>, usize);

/// The side thread's loop: take requests, start resolutions, hand out results.
async fn serve(
    resolver: TokioResolver,
    config: DnsConfig,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Request>,
    counters: Arc<Counters>,
) {
    let ctx = Rc::new(Ctx {
        resolver,
        counters: counters.clone(),
        cache: RefCell::new(Cache {
            map: HashMap::new(),
            max: config.cache_max_entries,
        }),
        in_flight: RefCell::new(HashMap::new()),
        permits: tokio::sync::Semaphore::new(config.max_concurrent_queries.max(1)),
        config,
    });
    // Domain being resolved -> the (request, slot) pairs waiting for it.
    let mut waiters: HashMap<String, Vec<WaitingSlot>> = HashMap::new();
    let mut tasks = FuturesUnordered::new();
    loop {
        let event = if tasks.is_empty() {
            Either::Left(rx.recv().await)
        } else {
            match future::select(pin!(rx.recv()), tasks.next()).await {
                Either::Left((req, _)) => Either::Left(req),
                Either::Right((done, _)) => Either::Right(done),
            }
        };
        match event {
            Either::Left(None) => break,
            Either::Left(Some(first)) => {
                bump(&counters.batches);
                let mut batch = vec![first];
                while batch.len() < MAX_REQUESTS_PER_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                for req in batch {
                    let n = req.domains.len();
                    let w = Rc::new(RefCell::new(Waiting {
                        results: vec![None; n],
                        missing: n,
                        reply: Some(req.reply),
                    }));
                    for (slot, (key, name)) in req.domains.into_iter().enumerate() {
                        bump(&counters.domains);
                        let entry = waiters.entry(key.clone()).or_default();
                        if entry.is_empty() {
                            let ctx = ctx.clone();
                            tasks.push(async move {
                                let r = resolve_domain(&ctx, &key, name).await;
                                (key, r)
                            });
                        } else {
                            bump(&counters.coalesced);
                        }
                        entry.push((w.clone(), slot));
                    }
                }
            }
            Either::Right(Some((key, result))) => {
                for (w, slot) in waiters.remove(&key).unwrap_or_default() {
                    let mut w = w.borrow_mut();
                    w.results[slot] = Some(result.clone());
                    w.missing -= 1;
                    if w.missing == 0 {
                        let results = w.results.drain(..).map(|r| r.expect("filled")).collect();
                        if let Some(reply) = w.reply.take() {
                            let _ = reply.send(results);
                        }
                    }
                }
            }
            Either::Right(None) => {}
        }
    }
    // Queries still in flight hold the context; break the cycle.
    ctx.in_flight.borrow_mut().clear();
}

async fn resolve_domain(ctx: &Rc<Ctx>, key: &str, name: Name) -> MxResult {
    match lookup(ctx, name.clone(), RecordType::MX).await {
        Answer::Temporary(why) => MxResult::Temporary(format!("MX lookup for {key} failed: {why}")),
        Answer::NxDomain => MxResult::Permanent(format!("domain {key} does not exist (NXDOMAIN)")),
        Answer::NoData | Answer::Addrs(_) => match addresses(ctx, name).await {
            Ok(addrs) => MxResult::Ok(vec![MxHost {
                preference: 0,
                name: key.to_string(),
                addrs,
            }]),
            Err(Missing::Temporary(why)) => {
                MxResult::Temporary(format!("no MX for {key}, address lookup failed: {why}"))
            }
            Err(Missing::None) => {
                MxResult::Permanent(format!("domain {key} has no MX and no address"))
            }
        },
        Answer::Mx(records) => {
            let mut records: Vec<(u16, Name)> = records.to_vec();
            if records.iter().any(|(_, n)| n.is_root()) {
                if records.len() == 1 {
                    return MxResult::NullMx;
                }
                // RFC 7505 says a null MX stands alone; with other records
                // present, ignore it and use the rest.
                records.retain(|(_, n)| !n.is_root());
            }
            records.shuffle(&mut rand::thread_rng());
            records.sort_by_key(|(p, _)| *p);
            records.truncate(MAX_MX_HOSTS);
            let found =
                future::join_all(records.iter().map(|(_, n)| addresses(ctx, n.clone()))).await;
            let mut hosts = Vec::with_capacity(records.len());
            let mut temporary = None;
            for ((preference, exchange), addrs) in records.into_iter().zip(found) {
                match addrs {
                    Ok(addrs) => hosts.push(MxHost {
                        preference,
                        name: host_name(&exchange),
                        addrs,
                    }),
                    Err(Missing::Temporary(why)) => {
                        temporary.get_or_insert_with(|| format!("{}: {why}", host_name(&exchange)));
                    }
                    Err(Missing::None) => {}
                }
            }
            if !hosts.is_empty() {
                MxResult::Ok(hosts)
            } else if let Some(why) = temporary {
                MxResult::Temporary(format!("no address for the MX hosts of {key}: {why}"))
            } else {
                MxResult::Permanent(format!("the MX hosts of {key} have no address"))
            }
        }
    }
}

fn host_name(name: &Name) -> String {
    let mut s = name.to_ascii();
    s.make_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

enum Missing {
    Temporary(String),
    None,
}

/// A and AAAA of one name, concurrently. IPv4 first: many receiving MTAs
/// still check the sender's reverse DNS, which is more often set for IPv4.
async fn addresses(ctx: &Rc<Ctx>, name: Name) -> Result<Vec<IpAddr>, Missing> {
    let (v4, v6) = future::join(
        lookup(ctx, name.clone(), RecordType::A),
        lookup(ctx, name, RecordType::AAAA),
    )
    .await;
    let mut addrs = Vec::new();
    let mut temporary = None;
    for answer in [v4, v6] {
        match answer {
            Answer::Addrs(a) => addrs.extend(a.iter().copied().take(MAX_ADDRS_PER_HOST)),
            Answer::Temporary(why) => temporary = Some(why),
            _ => {}
        }
    }
    addrs.truncate(MAX_ADDRS_PER_HOST);
    match (addrs.is_empty(), temporary) {
        (false, _) => Ok(addrs),
        (true, Some(why)) => Err(Missing::Temporary(why)),
        (true, None) => Err(Missing::None),
    }
}

/// One (name, type) answer: from the cache, from the query in flight, or from
/// a new query.
async fn lookup(ctx: &Rc<Ctx>, name: Name, rtype: RecordType) -> Answer {
    let key: Key = (host_name(&name), rtype);
    if let Some(a) = ctx.cache.borrow_mut().get(&key, Instant::now()) {
        bump(&ctx.counters.hits);
        return a;
    }
    let existing = ctx.in_flight.borrow().get(&key).cloned();
    let fut = match existing {
        Some(f) => {
            bump(&ctx.counters.coalesced);
            f
        }
        None => {
            let fut: Pin<Box<dyn Future<Output = Answer>>> =
                Box::pin(query(ctx.clone(), key.clone(), name));
            let fut = fut.shared();
            ctx.in_flight.borrow_mut().insert(key, fut.clone());
            fut
        }
    };
    fut.await
}

/// Send one query; cache the answer and leave the in-flight table.
async fn query(ctx: Rc<Ctx>, key: Key, name: Name) -> Answer {
    let rtype = key.1;
    let (answer, until) = {
        let _permit = ctx.permits.acquire().await.expect("semaphore never closed");
        bump(match rtype {
            RecordType::MX => &ctx.counters.mx,
            RecordType::A => &ctx.counters.a,
            _ => &ctx.counters.aaaa,
        });
        let result = ctx.resolver.lookup(name, rtype).await;
        let now = Instant::now();
        let negative_until = |ttl: Option<u32>| {
            let ttl = ttl
                .map(|s| Duration::from_secs(s as u64))
                .unwrap_or(ctx.config.negative_ttl_max);
            now + ttl.min(ctx.config.negative_ttl_max)
        };
        match result {
            Ok(lookup) => {
                let answer = match rtype {
                    RecordType::MX => {
                        let v: Vec<(u16, Name)> = lookup
                            .answers()
                            .iter()
                            .filter_map(|r| match &r.data {
                                RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
                                _ => None,
                            })
                            .collect();
                        (!v.is_empty()).then(|| Answer::Mx(v.into()))
                    }
                    _ => {
                        let v: Vec<IpAddr> = lookup
                            .answers()
                            .iter()
                            .filter_map(|r| match &r.data {
                                RData::A(a) if rtype == RecordType::A => Some(IpAddr::V4(a.0)),
                                RData::AAAA(a) if rtype == RecordType::AAAA => {
                                    Some(IpAddr::V6(a.0))
                                }
                                _ => None,
                            })
                            .collect();
                        (!v.is_empty()).then(|| Answer::Addrs(v.into()))
                    }
                };
                match answer {
                    Some(a) => (
                        a,
                        lookup.valid_until().min(now + ctx.config.positive_ttl_max),
                    ),
                    None => (Answer::NoData, negative_until(None)),
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => {
                let until = negative_until(nr.negative_ttl);
                if nr.response_code == ResponseCode::NXDomain {
                    (Answer::NxDomain, until)
                } else {
                    (Answer::NoData, until)
                }
            }
            Err(NetError::Dns(DnsError::ResponseCode(code))) => (
                Answer::Temporary(format!("DNS server answered {code}")),
                now,
            ),
            Err(e) => (Answer::Temporary(e.to_string()), now),
        }
    };
    let now = Instant::now();
    ctx.cache
        .borrow_mut()
        .insert(key.clone(), answer.clone(), until, now);
    ctx.in_flight.borrow_mut().remove(&key);
    answer
}

#[cfg(test)]
mod tests;
