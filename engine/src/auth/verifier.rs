//! The verifier: SPF, DKIM, DMARC and ARC of one inbound message, run on the
//! DNS side thread (`relay::dns`), never on a shard's executor.
//!
//! [`Verifier::start`] builds, within the DNS thread's tokio runtime, a
//! hickory resolver with the same nameservers, timeout and attempts as the
//! MX resolver plus hickory's bounded TTL record cache (so negative answers
//! such as "no DMARC record" are cached too), wraps it in a
//! `mail_auth::MessageAuthenticator`, and keeps mail-auth's parsed-record
//! caches ([`TtlCache`], bounded, TTL-respecting). A shard calls
//! [`Verifier::verify`] with the message in an `Arc`: the work is spawned
//! onto the DNS thread's runtime and the shard awaits its `JoinHandle` (a
//! foreign waker, like the MX resolver's oneshot replies), so the shard keeps
//! serving its other sessions meanwhile. Requests arriving together run
//! concurrently on that one thread; their lookups share the caches.
//!
//! Per message, in two stages, all within one deadline of
//! `mail_auth.timeout_secs` that starts before the wait for a permit:
//! 1. SPF of the HELO and MAIL FROM identities (RFC 7208: at most 10
//!    DNS-querying terms and 2 void lookups, mail-auth enforces it), every
//!    DKIM signature up to `dkim_signatures_max` (RFC 6376, RFC 8463), and
//!    the ARC chain (RFC 8617), concurrently;
//! 2. DMARC for the From: domain (RFC 7489) from those results, and for a
//!    failing message under a policy, the record's `pct`.
//!
//! What does not finish in time is a `temperror`. The CPU work (body hashes,
//! RSA/ed25519 checks) runs on the DNS thread too; docs/BENCHMARKS.md has
//! what it costs.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use mail_auth::arc::ArcError;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, MessageAuthenticator, Parameters, RecordSet, SpfOutput, SpfResult, Txt, MX,
};
use rand::Rng;

use super::cache::TtlCache;
use super::header;
use super::policy::{Dmarc, Facts, Requested, Spf};
use crate::config::MailAuth;
use crate::limits;
use crate::relay::dns::{build_resolver_cached, DnsResolver, DnsStartError};

/// The SMTP envelope of the message being verified.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO/EHLO argument.
    pub helo: String,
    /// The reverse path ("" for the null sender).
    pub mail_from: String,
}

/// What verification found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `Authentication-Results: ...` with its CRLF, to prepend.
    pub header: String,
    /// For the policy decision (`auth::policy::decide`).
    pub facts: Facts,
    /// The From: domain DMARC was evaluated for ("" if none).
    pub from_domain: String,
}

/// Counters since start (for logs and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyStats {
    pub messages: u64,
    /// Stages that ran out of time.
    pub timeouts: u64,
    /// Messages with more DKIM signatures than verified.
    pub signatures_skipped: u64,
}

type Caches = (
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
);

struct Inner {
    auth: MessageAuthenticator,
    caches: Caches,
    settings: MailAuth,
    /// The authserv-id (our hostname); a configuration reload may change it.
    hostname: arc_swap::ArcSwap<String>,
    permits: tokio::sync::Semaphore,
    messages: AtomicU64,
    timeouts: AtomicU64,
    skipped: AtomicU64,
}

/// Handle to the verifier on the DNS thread. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Verifier {
    runtime: tokio::runtime::Handle,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("stats", &self.stats())
            .finish()
    }
}

type P<'x, T> = Parameters<
    'x,
    T,
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
>;

impl Verifier {
    /// Set up the verifier on the DNS thread of `dns`.
    pub fn start(
        dns: &DnsResolver,
        settings: &MailAuth,
        hostname: &str,
    ) -> Result<Verifier, DnsStartError> {
        let runtime = dns.runtime().clone();
        let resolver = {
            let _in = runtime.enter();
            build_resolver_cached(dns.config(), settings.cache_max_entries)?
        };
        let n = settings.cache_max_entries;
        let ttl = dns.config().positive_ttl_max;
        Ok(Verifier {
            runtime,
            inner: Arc::new(Inner {
                auth: MessageAuthenticator(resolver),
                caches: (
                    TtlCache::new(n, ttl),
                    TtlCache::new(n, ttl),
                    TtlCache::new(n, ttl),
                    TtlCache::new(n, ttl),
                    TtlCache::new(n, ttl),
                ),
                settings: settings.clone(),
                hostname: arc_swap::ArcSwap::from_pointee(
                    hostname.trim_end_matches('.').to_string(),
                ),
                permits: tokio::sync::Semaphore::new(limits::AUTH_VERIFICATIONS_MAX),
                messages: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
            }),
        })
    }

    /// Verify `message[skip..]` (skip: the trace field we added in front).
    /// The DNS thread drops its reference to `message` before the answer is
    /// ready, so the caller can take the body back with `Arc::try_unwrap`.
    /// `None` when the DNS thread is gone or the task panicked: the caller
    /// must not deliver the message as if it had been verified.
    pub async fn verify<B>(
        &self,
        message: Arc<B>,
        skip: usize,
        envelope: Envelope,
    ) -> Option<Outcome>
    where
        B: Deref<Target = [u8]> + Send + Sync + 'static,
    {
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move {
            // One deadline covers the wait for a permit and every stage
            // (`mail_auth.timeout_secs`, RFC 7208 section 4.6.4's 20 seconds
            // for the whole check). A message still waiting when it passes
            // is not verified at all: every result is a temperror.
            let limit = Duration::from_secs(inner.settings.timeout_secs.max(1));
            let deadline = tokio::time::Instant::now() + limit;
            let _permit = tokio::time::timeout_at(deadline, inner.permits.acquire())
                .await
                .ok()
                .and_then(Result::ok);
            let bytes: &[u8] = &message;
            let out = inner
                .run(bytes.get(skip..).unwrap_or_default(), &envelope, deadline)
                .await;
            drop(message);
            out
        });
        match task.await {
            Ok(out) => Some(out),
            Err(e) => {
                tracing::error!(error = %e, "mail authentication task failed");
                None
            }
        }
    }

    /// A new hostname (configuration reload): the authserv-id of the
    /// Authentication-Results fields written from now on.
    pub fn set_hostname(&self, hostname: &str) {
        self.inner
            .hostname
            .store(Arc::new(hostname.trim_end_matches('.').to_string()));
    }

    pub fn stats(&self) -> VerifyStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VerifyStats {
            messages: l(&self.inner.messages),
            timeouts: l(&self.inner.timeouts),
            signatures_skipped: l(&self.inner.skipped),
        }
    }
}

/// The message as it will be verified: with DKIM signatures beyond the
/// bound, overlong signature fields and a too-long ARC chain taken out (in a
/// copy, only when there is something to take out).
struct Prepared<'a> {
    bytes: std::borrow::Cow<'a, [u8]>,
    skipped: usize,
    arc_too_long: bool,
    header_too_large: bool,
}

fn prepare(message: &[u8], dkim_max: usize) -> Prepared<'_> {
    let header_too_large = header::header_len(message) > limits::AUTH_HEADER_MAX;
    if header_too_large {
        return Prepared {
            bytes: message.into(),
            skipped: 0,
            arc_too_long: false,
            header_too_large,
        };
    }
    let mut cut = Vec::new();
    let mut dkim = 0;
    let mut skipped = 0;
    let mut ams = 0;
    let mut arc_fields = Vec::new();
    for (name, range) in header::fields(message) {
        let is_dkim = name.eq_ignore_ascii_case(b"DKIM-Signature");
        let is_arc = name.len() > 4 && name[..4].eq_ignore_ascii_case(b"ARC-");
        if is_dkim {
            if dkim >= dkim_max || range.len() > limits::AUTH_SIGNATURE_FIELD_MAX {
                skipped += 1;
                cut.push(range);
            } else {
                dkim += 1;
            }
        } else if is_arc {
            if name.eq_ignore_ascii_case(b"ARC-Message-Signature") {
                ams += 1;
            }
            if range.len() > limits::AUTH_SIGNATURE_FIELD_MAX {
                ams = usize::MAX;
            }
            arc_fields.push(range);
        }
    }
    let arc_too_long = ams > limits::ARC_SETS_MAX;
    if arc_too_long {
        cut.extend(arc_fields);
        cut.sort_by_key(|r| r.start);
    }
    Prepared {
        bytes: if cut.is_empty() {
            message.into()
        } else {
            header::without_ranges(message, &cut).into()
        },
        skipped,
        arc_too_long,
        header_too_large,
    }
}

/// `fut`'s output if it finishes before `deadline`; `None` when the
/// deadline passes first, without starting `fut` when it already has.
async fn before<F: std::future::Future>(deadline: Instant, fut: F) -> Option<F::Output> {
    if Instant::now() >= deadline {
        return None;
    }
    tokio::time::timeout_at(deadline, fut).await.ok()
}

/// A domain name as compared: lowercase, without the final dot.
fn domain_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// How many different domains the From: addresses name, counted up to 2
/// (compared as [`domain_name`] does); addresses without a domain do not
/// count. Linear in the number of addresses.
fn distinct_domains(from: &[String]) -> usize {
    let mut first: Option<String> = None;
    for address in from {
        if let Some((_, d)) = address.rsplit_once('@') {
            let d = domain_name(d);
            match &first {
                None => first = Some(d),
                Some(f) if *f != d => return 2,
                Some(_) => {}
            }
        }
    }
    usize::from(first.is_some())
}

fn timed_out() -> mail_auth::Error {
    mail_auth::Error::Dns(mail_auth::DnsError::Resolver(
        "verification timed out".into(),
    ))
}

impl Inner {
    fn params<T>(&self, p: T) -> P<'_, T> {
        let (txt, mx, v4, v6, ptr) = &self.caches;
        Parameters::new(p)
            .with_txt_cache(txt)
            .with_mx_cache(mx)
            .with_ipv4_cache(v4)
            .with_ipv6_cache(v6)
            .with_ptr_cache(ptr)
    }

    async fn run(&self, message: &[u8], env: &Envelope, deadline: Instant) -> Outcome {
        self.messages.fetch_add(1, Ordering::Relaxed);
        let host = self.hostname.load_full();
        let host = host.as_str();
        // Domain names compare without case and without a final dot (RFC
        // 1035 section 2.3.3, RFC 7489 section 3.1): `MAIL FROM:<b@Example.COM>`
        // aligns with `From: x@example.com`. mail-auth compares the names
        // as given and lowercases only the From: addresses, so the
        // envelope identities are normalized here, before SPF and DMARC.
        let helo = domain_name(&env.helo);
        let helo = helo.as_str();
        let mail_from = match env.mail_from.rsplit_once('@') {
            Some((local, domain)) => format!("{local}@{}", domain_name(domain)),
            None => env.mail_from.clone(),
        };
        let mail_from = mail_from.as_str();
        let mail_domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);

        let prepared = prepare(message, self.settings.dkim_signatures_max);
        if prepared.skipped > 0 {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        let parsed = if prepared.header_too_large {
            None
        } else {
            AuthenticatedMessage::parse(&prepared.bytes)
        };
        // A header section over AUTH_HEADER_MAX is not DKIM/ARC-verified,
        // but its From: domain's policy still applies: otherwise padding
        // the header would be a way around p=reject. RFC 7489 section 6.6.2
        // evaluates DMARC from whatever authenticated identifiers there are;
        // with no DKIM result only an aligned SPF pass can pass, which is
        // the conservative outcome. So the From: fields alone (a linear
        // scan of the header, which the message size bounds) are parsed
        // and DMARC runs on them with no DKIM results.
        let from_only = prepared
            .header_too_large
            .then(|| header::only_fields(message, b"From"));
        let from_parsed = from_only.as_deref().and_then(AuthenticatedMessage::parse);
        let author = parsed.as_ref().or(from_parsed.as_ref());
        let from = author
            .and_then(|m| m.from.first().cloned())
            .unwrap_or_default();
        // RFC 7489 section 6.6.1: a message whose From: names several
        // domains may be rejected; mail-auth exempts it from DMARC, which
        // would let a spoof of a p=reject domain in with a second address.
        let from_domains = author.map_or(0, |m| distinct_domains(&m.from));

        // Stage 1: SPF (both identities), DKIM, ARC, concurrently.
        let spf_helo = async {
            before(
                deadline,
                self.auth
                    .verify_spf(self.params(SpfParameters::verify_ehlo(env.ip, helo, host))),
            )
            .await
            .unwrap_or_else(|| {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                SpfOutput::new(helo.to_string()).with_result(SpfResult::TempError)
            })
        };
        let spf_mail = async {
            if mail_from.is_empty() {
                return None;
            }
            Some(
                before(
                    deadline,
                    self.auth
                        .verify_spf(self.params(SpfParameters::verify_mail_from(
                            env.ip, helo, host, mail_from,
                        ))),
                )
                .await
                .unwrap_or_else(|| {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                    SpfOutput::new(mail_domain.to_string()).with_result(SpfResult::TempError)
                }),
            )
        };
        let dkim = async {
            let Some(m) = &parsed else {
                return Vec::new();
            };
            before(deadline, self.auth.verify_dkim(self.params(m)))
                .await
                .unwrap_or_else(|| {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                    vec![DkimOutput::temp_err(timed_out())]
                })
        };
        let arc = async {
            if prepared.arc_too_long {
                return ArcOutput::default().with_result(DkimResult::Fail(mail_auth::Error::Arc(
                    ArcError::ChainTooLong,
                )));
            }
            let Some(m) = &parsed else {
                return ArcOutput::default();
            };
            before(deadline, self.auth.verify_arc(self.params(m)))
                .await
                .unwrap_or_else(|| {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                    ArcOutput::default().with_result(DkimResult::TempError(timed_out()))
                })
        };
        let (spf_helo, spf_mail, dkim, arc) = futures::join!(spf_helo, spf_mail, dkim, arc);
        let dkim = match &parsed {
            Some(m) => body_hash_mismatch_fails(m, dkim),
            None => dkim,
        };

        // Stage 2: DMARC. The SPF identity that counts is MAIL FROM, or HELO
        // for the null reverse path (RFC 7489 section 3.1.1, RFC 7208 2.4).
        let spf_counted = spf_mail.as_ref().unwrap_or(&spf_helo);
        let dmarc = match author {
            Some(m) if from_domains <= 1 => Some(
                before(
                    deadline,
                    self.auth.verify_dmarc(self.params(DmarcParameters::new(
                        m,
                        &dkim,
                        mail_domain,
                        spf_counted,
                    ))),
                )
                .await
                .unwrap_or_else(|| {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                    let domain = from.rsplit_once('@').map_or("", |(_, d)| d);
                    DmarcOutput::new(domain.to_string())
                        .with_spf_result(DmarcResult::TempError(timed_out()))
                        .with_dkim_result(DmarcResult::TempError(timed_out()))
                }),
            ),
            _ => None,
        };
        let (dmarc_verdict, requested) = if from_domains > 1 {
            (Dmarc::SeveralDomains, Requested::None)
        } else {
            dmarc
                .as_ref()
                .map_or((Dmarc::None, Requested::None), dmarc_facts)
        };
        let from_domain = dmarc
            .as_ref()
            .map(|d| d.domain().to_string())
            .unwrap_or_default();
        // RFC 7489 section 6.6.4: the policy applies to pct percent of the
        // failing messages.
        let sampled = if dmarc_verdict == Dmarc::Fail && requested != Requested::None {
            let pct = before(deadline, self.pct(&from_domain))
                .await
                .unwrap_or(100);
            pct >= 100 || rand::thread_rng().gen_range(0..100u8) < pct
        } else {
            true
        };

        // The Authentication-Results field (RFC 8601), within its bound:
        // DKIM results are dropped from the end if it would be too long.
        let mut shown = dkim.len();
        let header = loop {
            let mut ar = AuthenticationResults::new(host);
            ar = match &spf_mail {
                Some(s) => ar.with_spf_mailfrom_result(s, env.ip, mail_from, helo),
                None => ar,
            };
            ar = ar.with_spf_ehlo_result(&spf_helo, env.ip, helo);
            ar = ar.with_dkim_results(&dkim[..shown], &from);
            if parsed.is_some() || prepared.arc_too_long {
                ar = ar.with_arc_result(&arc, env.ip);
            }
            if let Some(d) = &dmarc {
                ar = ar.with_dmarc_result(d);
            }
            let mut text = ar.to_header();
            let mut extra = String::new();
            if dkim.is_empty() {
                extra.push_str(if prepared.header_too_large {
                    ";\r\n\tdkim=permerror (header too large to verify)"
                } else {
                    ";\r\n\tdkim=none"
                });
            }
            if prepared.skipped > 0 || shown < dkim.len() {
                extra.push_str(&format!(
                    " ({} more signatures not checked)",
                    prepared.skipped + dkim.len() - shown
                ));
            }
            if !extra.is_empty() {
                let end = text.trim_end_matches("\r\n").len();
                text.truncate(end);
                text.push_str(&extra);
                text.push_str("\r\n");
            }
            if text.len() <= limits::AUTH_RESULTS_MAX || shown == 0 {
                break text;
            }
            shown -= 1;
        };

        let spf = spf_verdict(spf_counted.result());
        Outcome {
            header,
            facts: Facts {
                spf,
                dmarc: dmarc_verdict,
                requested,
                sampled,
            },
            from_domain,
        }
    }

    /// The `pct` of the DMARC record that applies to `domain`: the same
    /// names mail-auth's policy discovery read (at most 8, answered from the
    /// resolver's cache, which that discovery just filled), and the same
    /// choice among the records found (`header::dmarc_selected`); 100 when
    /// none says otherwise.
    async fn pct(&self, domain: &str) -> u8 {
        let mut found: Vec<(&str, String)> = Vec::new();
        for name in header::dmarc_walk(domain) {
            let Ok(lookup) = self.auth.0.txt_lookup(format!("_dmarc.{name}.")).await else {
                continue;
            };
            let record = lookup.answers().iter().find_map(|record| {
                let hickory_resolver::proto::rr::RData::TXT(txt) = &record.data else {
                    return None;
                };
                let text: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                let text = String::from_utf8_lossy(&text).into_owned();
                text.trim_start().starts_with("v=DMARC1").then_some(text)
            });
            if let Some(text) = record {
                // The discovery stops at a record that says where the
                // public suffix is (RFC 9989 section 4.10.1).
                let stop = text
                    .split(';')
                    .filter_map(|t| t.split_once('='))
                    .any(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("psd")
                            && matches!(v.trim(), "y" | "n" | "Y" | "N")
                    });
                found.push((name, text));
                if stop {
                    break;
                }
            }
        }
        header::dmarc_selected(domain, &found).map_or(100, header::dmarc_pct)
    }
}

/// RFC 6376 section 6.1.3: a body hash that does not match is a PERMFAIL
/// of the signature, which RFC 8601 section 2.7.1 reports as `dkim=fail`;
/// mail-auth reports it as neutral, so it is turned into a failure here
/// (the signature stays attached for header.d/header.s).
fn body_hash_mismatch_fails<'x>(
    message: &'x AuthenticatedMessage<'x>,
    outputs: Vec<DkimOutput<'x>>,
) -> Vec<DkimOutput<'x>> {
    use mail_auth::dkim::DkimError;
    outputs
        .into_iter()
        .map(|o| match (o.result(), o.signature()) {
            (
                DkimResult::Neutral(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)),
                Some(sig),
            ) => {
                match message
                    .dkim_headers
                    .iter()
                    .find(|h| std::ptr::eq(&h.header, sig))
                {
                    Some(h) => {
                        DkimOutput::fail(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch))
                            .with_signature(&h.header)
                    }
                    None => o,
                }
            }
            _ => o,
        })
        .collect()
}

fn spf_verdict(r: SpfResult) -> Spf {
    match r {
        SpfResult::Pass => Spf::Pass,
        SpfResult::Fail => Spf::Fail,
        SpfResult::SoftFail => Spf::SoftFail,
        SpfResult::Neutral => Spf::Neutral,
        SpfResult::TempError => Spf::TempError,
        SpfResult::PermError => Spf::PermError,
        SpfResult::None => Spf::None,
    }
}

/// mail-auth's DMARC output as a verdict and the requested policy, the
/// same way its Authentication-Results text reads it.
fn dmarc_facts(d: &DmarcOutput) -> (Dmarc, Requested) {
    let requested = match d.policy() {
        Policy::Reject => Requested::Reject,
        Policy::Quarantine => Requested::Quarantine,
        Policy::None | Policy::Unspecified => Requested::None,
    };
    let (spf, dkim) = (d.spf_result(), d.dkim_result());
    let verdict = if *spf == DmarcResult::Pass || *dkim == DmarcResult::Pass {
        Dmarc::Pass
    } else if matches!(spf, DmarcResult::TempError(_)) || matches!(dkim, DmarcResult::TempError(_))
    {
        Dmarc::TempError
    } else if matches!(spf, DmarcResult::PermError(_)) || matches!(dkim, DmarcResult::PermError(_))
    {
        Dmarc::PermError
    } else if d.dmarc_record().is_none() {
        Dmarc::None
    } else {
        Dmarc::Fail
    };
    (verdict, requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_names_and_from_domains() {
        assert_eq!(domain_name("Example.COM."), "example.com");
        assert_eq!(domain_name("[127.0.0.1]"), "[127.0.0.1]");
        let v = |a: &[&str]| distinct_domains(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(v(&[]), 0);
        assert_eq!(v(&["nodomain"]), 0);
        assert_eq!(v(&["a@x.test", "b@X.test.", "c"]), 1);
        assert_eq!(v(&["a@x.test", "b@y.test", "c@z.test"]), 2);
    }

    #[test]
    fn from_fields_of_a_large_header() {
        let mut m = b"Received: x\r\nfrom: a@x.test,\r\n b@y.test\r\n".to_vec();
        while m.len() <= limits::AUTH_HEADER_MAX {
            m.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        m.extend_from_slice(b"From: c@z.test\r\n\r\nFrom: body@w.test\r\n");
        let only = header::only_fields(&m, b"From");
        assert_eq!(
            &only[..],
            b"from: a@x.test,\r\n b@y.test\r\nFrom: c@z.test\r\n\r\n"
        );
        let parsed = AuthenticatedMessage::parse(&only).unwrap();
        assert_eq!(parsed.from, ["a@x.test", "b@y.test", "c@z.test"]);
        assert_eq!(header::only_fields(b"Subject: s\r\n\r\n", b"From"), b"\r\n");
    }

    /// A deadline already passed: the work is not even started.
    #[tokio::test]
    async fn deadline_passed_starts_nothing() {
        let started = std::cell::Cell::new(false);
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(before(past, async { started.set(true) }).await, None);
        assert!(!started.get());
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(before(soon, std::future::pending::<()>()).await, None);
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(before(later, async { 7 }).await, Some(7));
    }

    #[test]
    fn prepare_bounds_signatures() {
        let mut m = Vec::new();
        for i in 0..1000 {
            m.extend_from_slice(format!("DKIM-Signature: v=1; i={i}\r\n").as_bytes());
        }
        m.extend_from_slice(b"From: a@b.test\r\n\r\nbody\r\n");
        let p = prepare(&m, 10);
        assert_eq!(p.skipped, 990);
        assert_eq!(header::count_fields(&p.bytes, b"DKIM-Signature"), 10);
        assert!(p.bytes.ends_with(b"From: a@b.test\r\n\r\nbody\r\n"));
        let mut arc = Vec::new();
        for _ in 0..51 {
            arc.extend_from_slice(b"ARC-Seal: i=1\r\nARC-Message-Signature: i=1\r\n");
        }
        arc.extend_from_slice(b"X: y\r\n\r\n");
        let p = prepare(&arc, 10);
        assert!(p.arc_too_long);
        assert_eq!(&p.bytes[..], b"X: y\r\n\r\n");
        let mut huge = b"DKIM-Signature: v=1\r\n".to_vec();
        while huge.len() <= limits::AUTH_HEADER_MAX {
            huge.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        huge.extend_from_slice(b"\r\nbody\r\n");
        let p = prepare(&huge, 10);
        assert!(p.header_too_large);
        let long_sig = format!("DKIM-Signature: v=1; h={}\r\n\r\n", "from:".repeat(1000));
        let p = prepare(long_sig.as_bytes(), 10);
        assert_eq!((p.skipped, &p.bytes[..]), (1, &b"\r\n"[..]));
        let small = b"From: a@b\r\n\r\n";
        assert!(matches!(
            prepare(small, 10).bytes,
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
