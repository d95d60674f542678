//! MTA-STS (RFC 8461): a destination domain's published TLS policy for the
//! relay.
//!
//! A domain that has MTA-STS publishes a TXT record at `_mta-sts.DOMAIN`
//! (`v=STSv1; id=...`, section 3.1) and a policy file at
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (section 3.2): its
//! `mode` (`enforce`, `testing`, `none`), the `mx` host patterns its mail may
//! go to, and a `max_age` for caching. The relay asks [`MtaSts::policies`]
//! for the domains of a round, next to its MX lookups; what it does with
//! the answer is in `runtime/relay.rs`.
//!
//! Like the MX resolver (`dns.rs`), the work runs on one side thread
//! (`ringmail-mta-sts`) with a tokio current-thread runtime, its own hickory
//! resolver (same name servers) and a cache; executors only send requests
//! over a channel and await a oneshot. Per domain (section 5.1):
//! 1. the TXT record is looked up (its answer trusted for its TTL, at most
//!    [`limits::MTA_STS_TXT_TTL_MAX`]);
//! 2. a cached policy with the same id, not past its `max_age`, is used;
//! 3. otherwise the policy is fetched (section 3.3: HTTPS with a certificate
//!    valid for `mta-sts.DOMAIN`, status 200, no redirects followed, media
//!    type `text/plain`, at most [`limits::MTA_STS_POLICY_BYTES_MAX`] octets,
//!    within [`limits::MTA_STS_FETCH_TIMEOUT`]) and cached for `max_age`;
//! 4. when discovery or the fetch fails, a cached unexpired policy is still
//!    used; with none, the domain is treated as having no policy.
//!
//! Concurrent asks for one domain share one resolution; fetches in flight
//! are bounded by [`limits::MTA_STS_FETCHES_MAX`], the cache by
//! [`limits::MTA_STS_CACHE_ENTRIES_MAX`] domains.
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use mail_auth::common::parse::TxtRecordParser;

use crate::limits;
use crate::relay::dns::{self, DnsConfig, DnsStartError};

/// What a policy asks of senders (RFC 8461 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to matching MX hosts over verified TLS, else defer.
    Enforce,
    /// Deliver as usual; report (here: log) what enforce would refuse.
    Testing,
    /// The domain withdrew its policy.
    None,
}

/// A parsed policy file (RFC 8461 section 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Host patterns, lower case without a trailing dot; `*.` + one label
    /// matches exactly one label (section 4.1).
    pub mx: Vec<String>,
    /// Seconds the policy may be cached.
    pub max_age: u64,
}

impl Policy {
    /// Whether MX host `host` is one the policy names (section 4.1).
    pub fn allows(&self, host: &str) -> bool {
        self.mx.iter().any(|p| mx_matches(p, host))
    }
}

/// Why a policy file is refused (the fetch then counts as failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy has no \"version: STSv1\"")]
    Version,
    #[error("policy mode missing or unknown")]
    Mode,
    #[error("policy max_age missing or invalid")]
    MaxAge,
    #[error("policy in mode {0:?} names no mx")]
    NoMx(Mode),
    #[error("policy has more than {} mx patterns", limits::MTA_STS_MX_PATTERNS_MAX)]
    TooManyMx,
    #[error("policy mx pattern {0:?} is not a host name")]
    BadMx(String),
    #[error("policy field {0:?} appears twice")]
    Repeated(&'static str),
}

/// Parse a policy body (section 3.2): `key: value` lines ended by CRLF or
/// LF, `version`, `mode` and `max_age` once each, `mx` repeated (required
/// unless the mode is `none`); unknown keys are ignored.
pub fn parse_policy(text: &str) -> Result<Policy, PolicyError> {
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let once = |slot: &mut Option<String>, name| {
            if slot.is_some() {
                return Err(PolicyError::Repeated(name));
            }
            *slot = Some(value.to_string());
            Ok(())
        };
        match key.trim() {
            "version" => once(&mut version, "version")?,
            "mode" => once(&mut mode, "mode")?,
            "max_age" => once(&mut max_age, "max_age")?,
            "mx" => {
                if mx.len() == limits::MTA_STS_MX_PATTERNS_MAX {
                    return Err(PolicyError::TooManyMx);
                }
                let p = value.trim_end_matches('.').to_ascii_lowercase();
                let host = p.strip_prefix("*.").unwrap_or(&p);
                let valid = !host.is_empty()
                    && host.len() <= 253
                    && host.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(PolicyError::BadMx(value.to_string()));
                }
                mx.push(p);
            }
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err(PolicyError::Version);
    }
    let mode = match mode.as_deref() {
        Some("enforce") => Mode::Enforce,
        Some("testing") => Mode::Testing,
        Some("none") => Mode::None,
        _ => return Err(PolicyError::Mode),
    };
    // "max_age": 1*10DIGIT, at most 31557600.
    let max_age = max_age
        .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v <= limits::MTA_STS_MAX_AGE_MAX)
        .ok_or(PolicyError::MaxAge)?;
    if mx.is_empty() && mode != Mode::None {
        return Err(PolicyError::NoMx(mode));
    }
    Ok(Policy { mode, mx, max_age })
}

/// Section 4.1: an MX host matches a pattern when they are equal (case
/// insensitive, trailing dots ignored), or the pattern is `*.rest` and the
/// host is one label followed by `.rest` (the wildcard covers exactly one
/// label: `*.example.com` matches `mx.example.com`, neither `example.com`
/// nor `a.b.example.com`).
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail.eq_ignore_ascii_case(rest)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The `_mta-sts` TXT records of a domain, judged per section 3.1: records
/// not starting with `v=STSv1` are discarded; exactly one must remain and
/// parse, else the domain has no policy. `Some(id)` for a valid record.
pub fn txt_id<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut sts = records.into_iter().filter(|r| {
        let r = r.trim_ascii_start();
        r.len() >= 7 && r[..7].eq_ignore_ascii_case(b"v=STSv1")
    });
    let one = sts.next()?;
    if sts.next().is_some() {
        return None;
    }
    let id = mail_auth::mta_sts::MtaSts::parse(one).ok()?.id;
    // id: 1*32(ALPHA / DIGIT).
    (!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(id)
}

/// Settings of the side thread.
#[derive(Clone)]
pub struct MtaStsConfig {
    /// Name servers and timeouts, as for MX lookups.
    pub dns: DnsConfig,
    /// The verifying client configuration for the policy host (trust
    /// anchors of the relay, ALPN `http/1.1`); `None`: no anchors, every
    /// fetch fails (so no domain has a policy).
    pub https: Option<Arc<rustls::ClientConfig>>,
    /// TCP port of the policy host: 443 (RFC 8461 section 3.3); tests only
    /// point it elsewhere.
    pub port: u16,
}

/// Counters since start (for tests and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MtaStsStats {
    pub txt_queries: u64,
    pub fetches: u64,
    pub fetch_failures: u64,
}

#[derive(Default)]
struct Counters {
    txt: AtomicU64,
    fetches: AtomicU64,
    failures: AtomicU64,
}

type Answer = Option<Arc<Policy>>;

struct Request {
    domains: Vec<String>,
    reply: oneshot::Sender<Vec<Answer>>,
}

struct Handle {
    tx: tokio::sync::mpsc::UnboundedSender<Request>,
    counters: Arc<Counters>,
}

/// Handle to the MTA-STS thread; cheap to clone, shared by every executor.
#[derive(Clone)]
pub struct MtaSts {
    inner: Arc<Handle>,
}

impl MtaSts {
    /// Start the side thread (at start-up, not on an executor: it waits
    /// briefly for the thread's resolver).
    pub fn start(config: MtaStsConfig) -> Result<MtaSts, DnsStartError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("ringmail-mta-sts".into())
            .spawn(move || {
                let rt = match crate::util::side_runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(DnsStartError::Io(e)));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let resolver = match dns::build_resolver(&config.dns) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    serve(resolver, config, rx, thread_counters).await;
                });
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(MtaSts {
                inner: Arc::new(Handle { tx, counters }),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DnsStartError::Config(
                "MTA-STS thread exited during start".into(),
            )),
        }
    }

    /// The policy in force for each domain (in the order asked; `None`: no
    /// policy). Domains are compared case-insensitively without a trailing
    /// dot; address literals never have one.
    pub async fn policies(&self, domains: Vec<String>) -> Vec<Answer> {
        let n = domains.len();
        let keys: Vec<String> = domains
            .iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        let (reply, answer) = oneshot::channel();
        let answers = match self.inner.tx.send(Request {
            domains: keys,
            reply,
        }) {
            Ok(()) => answer.await.ok(),
            Err(_) => None,
        };
        answers
            .filter(|a| a.len() == n)
            .unwrap_or_else(|| vec![None; n])
    }

    pub fn stats(&self) -> MtaStsStats {
        let c = &self.inner.counters;
        MtaStsStats {
            txt_queries: c.txt.load(Ordering::Relaxed),
            fetches: c.fetches.load(Ordering::Relaxed),
            fetch_failures: c.failures.load(Ordering::Relaxed),
        }
    }
}

/// A policy in the cache, with the TXT id it was fetched under.
#[derive(Debug, Clone)]
struct Cached {
    id: String,
    policy: Arc<Policy>,
    expires: Instant,
}

/// What is known about one domain.
#[derive(Debug, Default)]
struct Entry {
    /// The last good policy (kept past failures until it expires).
    policy: Option<Cached>,
    /// The TXT answer (`None` inside: no valid record) and until when it
    /// is trusted.
    txt: Option<(Instant, Option<String>)>,
    /// A policy id whose fetch failed, and when it may be tried again.
    failed: Option<(String, Instant)>,
}

/// The result of a `_mta-sts` TXT lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Txt {
    /// A valid record with this id, trusted until then.
    Found(String, Instant),
    /// No valid record (none, several, or unparsable), until then.
    Absent(Instant),
    /// Timeout, SERVFAIL: nothing learnt.
    Temporary,
}

/// What to do next for a domain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Done(Answer),
    LookUpTxt,
    Fetch(String),
}

/// Per-domain state, bounded; pure (the clock is passed in), so the rules of
/// section 5.1 are unit-tested without I/O.
pub(crate) struct Cache {
    map: HashMap<String, Entry>,
    max: usize,
}

impl Cache {
    pub(crate) fn new(max: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            max: max.max(1),
        }
    }

    fn live_policy(&self, domain: &str, now: Instant) -> Answer {
        self.map
            .get(domain)?
            .policy
            .as_ref()
            .filter(|c| c.expires > now)
            .map(|c| c.policy.clone())
    }

    pub(crate) fn step(&self, domain: &str, now: Instant) -> Step {
        let Some(e) = self.map.get(domain) else {
            return Step::LookUpTxt;
        };
        match e.txt.as_ref().filter(|(until, _)| *until > now) {
            None => Step::LookUpTxt,
            // Section 5.1: no live record, but a cached unexpired policy
            // still applies.
            Some((_, None)) => Step::Done(self.live_policy(domain, now)),
            Some((_, Some(id))) => {
                if let Some(c) = e.policy.as_ref().filter(|c| c.id == *id && c.expires > now) {
                    return Step::Done(Some(c.policy.clone()));
                }
                if e.failed
                    .as_ref()
                    .is_some_and(|(f, until)| f == id && *until > now)
                {
                    return Step::Done(self.live_policy(domain, now));
                }
                Step::Fetch(id.clone())
            }
        }
    }

    /// Record a TXT answer; the next step follows (never `LookUpTxt` again
    /// for an answer that was learnt).
    pub(crate) fn txt(&mut self, domain: &str, answer: Txt, now: Instant) -> Step {
        let (until, id) = match answer {
            Txt::Temporary => return Step::Done(self.live_policy(domain, now)),
            Txt::Found(id, until) => (until, Some(id)),
            Txt::Absent(until) => (until, None),
        };
        let until = until.max(now + Duration::from_secs(1));
        self.entry(domain, now).txt = Some((until, id));
        self.step(domain, now)
    }

    /// Record the outcome of fetching the policy published under `id`.
    pub(crate) fn fetched(
        &mut self,
        domain: &str,
        id: String,
        result: Result<Policy, String>,
        now: Instant,
    ) -> Answer {
        match result {
            Ok(policy) => {
                let policy = Arc::new(policy);
                let e = self.entry(domain, now);
                e.failed = None;
                e.policy = Some(Cached {
                    id,
                    expires: now + Duration::from_secs(policy.max_age),
                    policy: policy.clone(),
                });
                Some(policy)
            }
            Err(_) => {
                self.entry(domain, now).failed = Some((id, now + limits::MTA_STS_FETCH_RETRY));
                self.live_policy(domain, now)
            }
        }
    }

    fn entry(&mut self, domain: &str, now: Instant) -> &mut Entry {
        if self.map.len() >= self.max && !self.map.contains_key(domain) {
            // Forget what has nothing left to say, then, if still full, the
            // eighth of the domains whose policies expire soonest.
            self.map.retain(|_, e| {
                e.policy.as_ref().is_some_and(|c| c.expires > now)
                    || e.txt.as_ref().is_some_and(|(u, _)| *u > now)
            });
            if self.map.len() >= self.max {
                let expiry = |e: &Entry| e.policy.as_ref().map_or(now, |c| c.expires);
                let mut all: Vec<Instant> = self.map.values().map(expiry).collect();
                let cut = (self.max / 8).max(1).min(all.len() - 1);
                let (_, nth, _) = all.select_nth_unstable(cut);
                let nth = *nth;
                self.map.retain(|_, e| expiry(e) > nth);
            }
        }
        self.map.entry(domain.to_string()).or_default()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

type SharedAnswer = Shared<Pin<Box<dyn Future<Output = Answer>>>>;

struct Ctx {
    resolver: TokioResolver,
    config: MtaStsConfig,
    counters: Arc<Counters>,
    cache: RefCell<Cache>,
    in_flight: RefCell<HashMap<String, SharedAnswer>>,
    fetches: tokio::sync::Semaphore,
}

async fn serve(
    resolver: TokioResolver,
    config: MtaStsConfig,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Request>,
    counters: Arc<Counters>,
) {
    let ctx = Rc::new(Ctx {
        resolver,
        config,
        counters,
        cache: RefCell::new(Cache::new(limits::MTA_STS_CACHE_ENTRIES_MAX)),
        in_flight: RefCell::default(),
        fetches: tokio::sync::Semaphore::new(limits::MTA_STS_FETCHES_MAX),
    });
    while let Some(req) = rx.recv().await {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            let answers =
                futures::future::join_all(req.domains.into_iter().map(|d| policy_of(&ctx, d)))
                    .await;
            let _ = req.reply.send(answers);
        });
    }
    ctx.in_flight.borrow_mut().clear();
}

/// The policy for one domain: from the cache, from a resolution in flight,
/// or by a new one.
async fn policy_of(ctx: &Rc<Ctx>, domain: String) -> Answer {
    if domain.is_empty() || domain.starts_with('[') || domain.contains("..") {
        return None;
    }
    // Internationalized names as A-labels: the TXT name, the policy host's
    // name and its certificate's names are all in ASCII.
    let domain = match hickory_resolver::proto::rr::Name::from_utf8(&domain) {
        Ok(name) => {
            let mut d = name.to_ascii();
            d.make_ascii_lowercase();
            d.trim_end_matches('.').to_string()
        }
        Err(_) => return None,
    };
    if let Step::Done(a) = ctx.cache.borrow().step(&domain, Instant::now()) {
        return a;
    }
    let existing = ctx.in_flight.borrow().get(&domain).cloned();
    let fut = match existing {
        Some(f) => f,
        None => {
            let fut: Pin<Box<dyn Future<Output = Answer>>> =
                Box::pin(discover(ctx.clone(), domain.clone()));
            let fut = fut.shared();
            ctx.in_flight.borrow_mut().insert(domain, fut.clone());
            fut
        }
    };
    fut.await
}

async fn discover(ctx: Rc<Ctx>, domain: String) -> Answer {
    let mut step = ctx.cache.borrow().step(&domain, Instant::now());
    if step == Step::LookUpTxt {
        let answer = look_up_txt(&ctx, &domain).await;
        step = ctx.cache.borrow_mut().txt(&domain, answer, Instant::now());
    }
    let answer = match step {
        Step::Done(a) => a,
        Step::LookUpTxt => None,
        Step::Fetch(id) => {
            // The wait for a fetch place counts against the same time limit:
            // slow (or tarpitting) policy hosts holding every place must not
            // hold up other domains' deliveries for longer than one fetch.
            let bounded = async {
                let _permit = ctx.fetches.acquire().await.expect("never closed");
                ctx.counters.fetches.fetch_add(1, Ordering::Relaxed);
                fetch(&ctx, &domain).await
            };
            let result = match tokio::time::timeout(limits::MTA_STS_FETCH_TIMEOUT, bounded).await {
                Ok(r) => r,
                Err(_) => Err("timed out (fetch or wait for a fetch place)".into()),
            };
            match &result {
                Ok(p) => {
                    tracing::info!(domain, id, mode = ?p.mode, mx = ?p.mx, max_age = p.max_age, "MTA-STS policy fetched")
                }
                Err(e) => {
                    ctx.counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(domain, id, error = %e, "MTA-STS policy fetch failed");
                }
            }
            ctx.cache
                .borrow_mut()
                .fetched(&domain, id, result, Instant::now())
        }
    };
    ctx.in_flight.borrow_mut().remove(&domain);
    answer
}

/// `_mta-sts.DOMAIN` TXT (section 3.1).
async fn look_up_txt(ctx: &Ctx, domain: &str) -> Txt {
    let Ok(mut name) = hickory_resolver::proto::rr::Name::from_utf8(format!("_mta-sts.{domain}"))
    else {
        return Txt::Absent(Instant::now() + ctx.config.dns.negative_ttl_max);
    };
    name.set_fqdn(true);
    ctx.counters.txt.fetch_add(1, Ordering::Relaxed);
    let result = ctx.resolver.lookup(name, RecordType::TXT).await;
    let now = Instant::now();
    let negative = |ttl: Option<u32>| {
        let cap = ctx
            .config
            .dns
            .negative_ttl_max
            .min(limits::MTA_STS_TXT_TTL_MAX);
        now + ttl.map_or(cap, |s| Duration::from_secs(s.into()).min(cap))
    };
    match result {
        Ok(lookup) => {
            let records: Vec<Vec<u8>> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    // A record's strings form one text (RFC 7208 3.3 style).
                    RData::TXT(t) => {
                        Some(t.txt_data.iter().flat_map(|s| s.iter().copied()).collect())
                    }
                    _ => None,
                })
                .take(16)
                .collect();
            let until = lookup.valid_until().min(now + limits::MTA_STS_TXT_TTL_MAX);
            match txt_id(records.iter().map(Vec::as_slice)) {
                Some(id) => Txt::Found(id, until),
                None => Txt::Absent(until),
            }
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => Txt::Absent(negative(nr.negative_ttl)),
        Err(e) => {
            tracing::debug!(domain, error = %e, "MTA-STS TXT lookup failed");
            Txt::Temporary
        }
    }
}

/// Aborts a spawned task when dropped (the HTTP connection's driver).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Section 3.3: GET the policy over HTTPS from `mta-sts.DOMAIN`.
async fn fetch(ctx: &Ctx, domain: &str) -> Result<Policy, String> {
    use http_body_util::BodyExt;
    let host = format!("mta-sts.{domain}");
    let config = ctx
        .config
        .https
        .clone()
        .ok_or("no trusted CA certificates to verify the policy host")?;
    let server_name =
        rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
    let ips: Vec<IpAddr> = ctx
        .resolver
        .lookup_ip(format!("{host}."))
        .await
        .map_err(|e| format!("{host}: {e}"))?
        .iter()
        .take(dns::MAX_ADDRS_PER_HOST)
        .collect();
    let mut tcp = None;
    let mut last = format!("{host}: no address");
    for ip in ips {
        match tokio::net::TcpStream::connect(SocketAddr::new(ip, ctx.config.port)).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("{host} ({ip}): {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP with {host}: {e}"))?;
    let _driver = AbortOnDrop(tokio::task::spawn_local(async move {
        let _ = conn.await;
    }));
    let authority = if ctx.config.port == 443 {
        host.clone()
    } else {
        format!("{host}:{}", ctx.config.port)
    };
    let request = hyper::Request::get("/.well-known/mta-sts.txt")
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "ringmail")
        .header(hyper::header::CONNECTION, "close")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP with {host}: {e}"))?;
    // "Senders MUST NOT follow HTTP redirects": anything but 200 fails.
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("{host} answered HTTP {}", response.status()));
    }
    let media_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if media_type.as_deref() != Some("text/plain") {
        return Err(format!(
            "{host} sent the policy as {:?}, not text/plain",
            media_type.unwrap_or_default()
        ));
    }
    let body = http_body_util::Limited::new(response.into_body(), limits::MTA_STS_POLICY_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| format!("policy body from {host}: {e}"))?
        .to_bytes();
    let text =
        std::str::from_utf8(&body).map_err(|_| format!("policy from {host} is not UTF-8"))?;
    parse_policy(text).map_err(|e| format!("{host}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_patterns_match_one_label_with_a_wildcard() {
        assert!(mx_matches("mx.example.com", "MX.Example.com."));
        assert!(mx_matches("*.example.com", "mx1.example.com"));
        assert!(!mx_matches("*.example.com", "example.com"));
        assert!(!mx_matches("*.example.com", "a.b.example.com"));
        assert!(!mx_matches("*.example.com", ".example.com"));
        assert!(!mx_matches("mx.example.com", "mx.example.com.evil"));
        assert!(!mx_matches("*.example.com", "mxexample.com"));
        let p = parse_policy("version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400\n").unwrap();
        assert!(p.allows("mail.example.com") && p.allows("x.example.net"));
        assert!(!p.allows("example.net") && !p.allows("mail.example.org"));
    }

    #[test]
    fn policies_parse_per_rfc_8461_3_2() {
        let p = parse_policy(
            "version: STSv1\r\nmode: testing\r\nmx: MX1.example.com.\r\nmx:*.Example.net\r\nmax_age: 604800\r\nextension: ignored\r\n",
        )
        .unwrap();
        assert_eq!(
            p,
            Policy {
                mode: Mode::Testing,
                mx: vec!["mx1.example.com".into(), "*.example.net".into()],
                max_age: 604800
            }
        );
        let none = parse_policy("version: STSv1\nmode: none\nmax_age: 0").unwrap();
        assert_eq!(none.mode, Mode::None);
        for (bad, why) in [
            ("mode: enforce\nmx: a.b\nmax_age: 1", PolicyError::Version),
            (
                "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1",
                PolicyError::Version,
            ),
            (
                "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1",
                PolicyError::Mode,
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.b",
                PolicyError::MaxAge,
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601",
                PolicyError::MaxAge,
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1",
                PolicyError::MaxAge,
            ),
            (
                "version: STSv1\nmode: enforce\nmax_age: 5",
                PolicyError::NoMx(Mode::Enforce),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a b\nmax_age: 5",
                PolicyError::BadMx("a b".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmode: none\nmx: a.b\nmax_age: 5",
                PolicyError::Repeated("mode"),
            ),
        ] {
            assert_eq!(parse_policy(bad), Err(why), "{bad:?}");
        }
        let many: String = (0..=limits::MTA_STS_MX_PATTERNS_MAX)
            .map(|i| format!("mx: m{i}.example.com\n"))
            .collect();
        assert_eq!(
            parse_policy(&format!(
                "version: STSv1\nmode: enforce\nmax_age: 5\n{many}"
            )),
            Err(PolicyError::TooManyMx)
        );
    }

    #[test]
    fn txt_records_per_rfc_8461_3_1() {
        let one = |r: &[&str]| txt_id(r.iter().map(|s| s.as_bytes()));
        assert_eq!(
            one(&["v=STSv1; id=20160831085700Z;"]),
            Some("20160831085700Z".into())
        );
        assert_eq!(one(&["v=spf1 -all", "v=STSv1; id=abc"]), Some("abc".into()));
        assert_eq!(one(&["v=STSv1; id=abc", "v=STSv1; id=def"]), None);
        assert_eq!(one(&["v=STSv1;"]), None);
        assert_eq!(one(&["v=STSv1; id=not-alnum"]), None);
        assert_eq!(one(&[]), None);
    }

    fn policy(mode: Mode, max_age: u64) -> Policy {
        Policy {
            mode,
            mx: vec!["mx.example.com".into()],
            max_age,
        }
    }

    #[test]
    fn cache_follows_rfc_8461_5_1() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Cache::new(100);
        let d = "example.com";
        assert_eq!(c.step(d, t0), Step::LookUpTxt);
        // A record: fetch; the policy is kept for max_age.
        assert_eq!(
            c.txt(d, Txt::Found("one".into(), t0 + s(60)), t0),
            Step::Fetch("one".into())
        );
        let p = c
            .fetched(d, "one".into(), Ok(policy(Mode::Enforce, 3600)), t0)
            .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(c.step(d, t0 + s(30)), Step::Done(Some(p.clone())));
        // The TXT answer expires: look again; the same id needs no fetch.
        assert_eq!(c.step(d, t0 + s(61)), Step::LookUpTxt);
        assert_eq!(
            c.txt(d, Txt::Found("one".into(), t0 + s(120)), t0 + s(61)),
            Step::Done(Some(p.clone()))
        );
        // A new id is fetched at once; while that fails, the cached policy holds.
        assert_eq!(
            c.txt(d, Txt::Found("two".into(), t0 + s(500)), t0 + s(121)),
            Step::Fetch("two".into())
        );
        assert_eq!(
            c.fetched(d, "two".into(), Err("down".into()), t0 + s(121)),
            Some(p.clone())
        );
        // The failed id is not refetched before the retry delay...
        assert_eq!(c.step(d, t0 + s(122)), Step::Done(Some(p.clone())));
        // ...then it is, and replaces the old policy.
        let later = t0 + s(121) + limits::MTA_STS_FETCH_RETRY;
        assert_eq!(
            c.txt(d, Txt::Found("two".into(), later + s(60)), later),
            Step::Fetch("two".into())
        );
        let q = c
            .fetched(d, "two".into(), Ok(policy(Mode::Testing, 3600)), later)
            .unwrap();
        assert_eq!(c.step(d, later + s(1)), Step::Done(Some(q.clone())));
        // The record disappears or DNS fails: the unexpired policy applies...
        assert_eq!(
            c.txt(d, Txt::Absent(later + s(1000)), later + s(100)),
            Step::Done(Some(q.clone()))
        );
        assert_eq!(
            c.txt(d, Txt::Temporary, later + s(100)),
            Step::Done(Some(q.clone()))
        );
        // ...until max_age is over.
        assert_eq!(c.step(d, later + s(1001)), Step::LookUpTxt);
        assert_eq!(
            c.txt(d, Txt::Absent(later + s(5000)), later + s(3601)),
            Step::Done(None)
        );
        // A fetch failure without any cached policy: no policy.
        let e = "fresh.example";
        assert_eq!(
            c.txt(e, Txt::Found("x".into(), t0 + s(60)), t0),
            Step::Fetch("x".into())
        );
        assert_eq!(c.fetched(e, "x".into(), Err("404".into()), t0), None);
        assert_eq!(c.step(e, t0 + s(1)), Step::Done(None));
        // DNS failure with nothing cached: no policy.
        assert_eq!(c.txt("dark.example", Txt::Temporary, t0), Step::Done(None));
    }

    #[test]
    fn cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::new(64);
        for i in 0..1000 {
            let d = format!("d{i}.example");
            c.txt(&d, Txt::Found("a".into(), t0 + Duration::from_secs(60)), t0);
            c.fetched(&d, "a".into(), Ok(policy(Mode::Enforce, 100 + i)), t0);
            assert!(c.len() <= 64);
        }
        // The latest domain is there; the longest-lived survive eviction.
        assert!(c
            .step("d999.example", t0)
            .eq(&Step::Done(c.live_policy("d999.example", t0))));
        assert!(c.live_policy("d999.example", t0).is_some());
        assert!(c.live_policy("d0.example", t0).is_none());
    }
}
