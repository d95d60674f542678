//! Configuration: the embedded default, a TOML file, and command-line overrides.
//!
//! `ringmail serve` with no arguments runs on [`Config::default`]: loopback,
//! unprivileged ports, data in `./ringmail-data`, local domain `example.test`
//! and two demo accounts. A file given with `--config` replaces the defaults
//! key by key; unknown keys are errors, reported with file, line and column.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits;

/// Demo accounts of the embedded default configuration, with their passwords.
/// Documented in README.md; only used when no `--config` file is given.
pub const DEMO_ACCOUNTS: [(&str, &str); 2] = [
    ("alice@example.test", "alice-secret"),
    ("bob@example.test", "bob-secret"),
];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Our host name: SMTP banner, EHLO reply, Received headers.
    pub hostname: String,
    /// Where segments, checkpoints and the account file live.
    pub data_dir: PathBuf,
    /// Executors (one per core). 0 means every online CPU.
    pub cores: usize,
    /// Pin each executor to its own CPU.
    pub pin_cores: bool,
    /// Run executors under SCHED_BATCH: a waking executor does not preempt
    /// the task running on its CPU, so it wakes less often and handles more
    /// events per wake-up (see docs/TUNING.md).
    pub batch_scheduling: bool,
    /// With pinned executors, hand each new connection to the executor on
    /// the CPU that received it (a BPF program on the listening sockets).
    pub cpu_steering: bool,
    /// Started as root: bind the listeners, then run as this user
    /// (runtime/privileges.rs).
    pub user: Option<String>,
    /// Group to run as with `user` (default: the user's primary group).
    pub group: Option<String>,
    /// Stay root without `user` even with listeners off loopback.
    pub allow_root: bool,
    /// Log lines as text, or one JSON object per line.
    pub log_format: LogFormat,
    /// Domains whose mail is delivered into local mailboxes.
    pub local_domains: Vec<String>,
    /// Aliases: `"alias@domain" = "account@domain"`; `"@domain" = "account@domain"` is a catch-all.
    pub aliases: std::collections::BTreeMap<String, String>,
    pub listen: Listen,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub storage: Storage,
    pub memory: Memory,
    pub relay: Relay,
    pub tls: Tls,
    pub auth_throttle: AuthThrottle,
    pub senders: Senders,
    /// Inbound mail authentication: SPF, DKIM, DMARC, ARC (`auth/`).
    pub mail_auth: MailAuth,
    /// Accounts created at start-up when missing (the default configuration's
    /// demo accounts live here). Passwords are hashed before they are stored.
    /// A configuration file has none unless it lists them: the demo
    /// passwords are public, so they never come with a file by default.
    #[serde(default)]
    pub demo_accounts: Vec<DemoAccount>,
    /// Cluster mode (ARCHITECTURE.md, "Cluster mode"); absent: a single node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

/// `[cluster]`: this node's place in a cluster coordinated through etcd.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The cluster's name: its keys live under `/ringmail/<name>/` in etcd.
    pub name: String,
    /// This node's id, unique in the cluster.
    pub node: String,
    /// etcd client URLs (`http://host:port`).
    pub etcd: Vec<String>,
    /// host:port other nodes reach this node at.
    pub internal: String,
    /// Lifetime of the node's etcd lease: a node that has not renewed it
    /// for this long is taken for gone, and stops acknowledging mail itself.
    #[serde(default = "cluster_lease_ttl_default")]
    pub lease_ttl_secs: u64,
    /// How long a node remembers what it stored, so that a client's second
    /// attempt after a failure in the cluster (the first attempt was made
    /// durable somewhere but never acknowledged) is stored once; 0: never
    /// (`cluster::duplicates`).
    #[serde(default = "cluster_duplicate_window_default")]
    pub duplicate_window_secs: u64,
    /// A bucket copy pauses this long before each account it stores,
    /// so that copying to a node that gained buckets takes less of the
    /// machine from the mail it serves meanwhile; 0: no pause.
    #[serde(default)]
    pub copy_pause_ms: u64,
    /// How long a hand-over to another node (a message, a replica copy, a
    /// change) may take, from connecting to its last answer. A node that
    /// runs out of it is not tried again for a while (`runtime::peer`):
    /// its buckets answer 451 / `NO [UNAVAILABLE]` at once instead of
    /// each waiting this long.
    #[serde(default = "cluster_peer_timeout_default")]
    pub peer_timeout_ms: u64,
    /// etcd authentication: the user, and a file holding its password (read
    /// at each connection, so it can be rotated). Off loopback only over
    /// `https://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) that sign etcd's server certificate: required
    /// for `https://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate and key for etcd (`--client-cert-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_key: Option<PathBuf>,
}

fn cluster_lease_ttl_default() -> u64 {
    5
}

fn cluster_duplicate_window_default() -> u64 {
    3600
}

fn cluster_peer_timeout_default() -> u64 {
    30_000
}

impl Cluster {
    fn validate(&self) -> Result<(), String> {
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !id_ok(&self.name) || !id_ok(&self.node) {
            return Err(
                "cluster.name and cluster.node: 1 to 64 letters, digits, '.', '_' or '-'".into(),
            );
        }
        if self.etcd.is_empty() {
            return Err("cluster.etcd: name at least one etcd endpoint".into());
        }
        let mut clear_off_loopback = false;
        for e in &self.etcd {
            let (tls, rest) = match (e.strip_prefix("https://"), e.strip_prefix("http://")) {
                (Some(r), _) => (true, r),
                (None, Some(r)) => (false, r),
                _ => {
                    return Err(format!(
                        "cluster.etcd: {e:?} must start with http:// or https://"
                    ))
                }
            };
            if tls && self.etcd_ca.is_none() {
                return Err(format!(
                    "cluster.etcd: {e:?} is https://: name the CA that signs etcd's certificate in cluster.etcd_ca"
                ));
            }
            // The etcd client takes TLS options for every endpoint or none.
            if !tls && self.etcd_ca.is_some() {
                return Err(format!(
                    "cluster.etcd: {e:?} is http:// while cluster.etcd_ca is set: use https:// for every endpoint"
                ));
            }
            let authority = rest.split('/').next().unwrap_or_default();
            let host = match authority.strip_prefix('[') {
                // [v6] or [v6]:port
                Some(v6) => v6.split(']').next().unwrap_or_default(),
                None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
            };
            if host.is_empty() {
                return Err(format!("cluster.etcd: {e:?} names no host"));
            }
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            clear_off_loopback |= !tls && !loopback;
        }
        match (&self.etcd_user, &self.etcd_password_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "cluster.etcd_user and cluster.etcd_password_file go together".into(),
                )
            }
            (Some(_), Some(_)) if clear_off_loopback => {
                return Err("cluster.etcd_user: the etcd password would cross the network in the clear; use https:// endpoints (with cluster.etcd_ca)".into())
            }
            _ => {}
        }
        if self.etcd_cert.is_some() != self.etcd_key.is_some() {
            return Err("cluster.etcd_cert and cluster.etcd_key go together".into());
        }
        if self.etcd_cert.is_some() && self.etcd_ca.is_none() {
            return Err("cluster.etcd_cert: a client certificate needs TLS (https:// endpoints and cluster.etcd_ca)".into());
        }
        match self.internal.parse::<std::net::SocketAddr>() {
            Err(_) => {
                return Err(format!(
                    "cluster.internal: {:?} is not an address:port",
                    self.internal
                ))
            }
            // The other nodes connect to it: it must name this node.
            Ok(a) if a.ip().is_unspecified() || a.port() == 0 => {
                return Err(format!(
                    "cluster.internal: {:?} must be this node's own address and port, not 0.0.0.0, [::] or port 0",
                    self.internal
                ))
            }
            Ok(_) => {}
        }
        if !(2..=60).contains(&self.lease_ttl_secs) {
            return Err("cluster.lease_ttl_secs must be between 2 and 60".into());
        }
        if self.duplicate_window_secs > 7 * 86_400 {
            return Err("cluster.duplicate_window_secs: at most 604800 (7 days)".into());
        }
        if self.copy_pause_ms > 10_000 {
            return Err("cluster.copy_pause_ms: at most 10000".into());
        }
        // A node receiving a hand-over may wait 2 s for the sender's map
        // before its own onward copies, which get half of this: it must
        // still answer its sender in time.
        if !(10_000..=60_000).contains(&self.peer_timeout_ms) {
            return Err("cluster.peer_timeout_ms must be between 10000 and 60000".into());
        }
        Ok(())
    }
}

/// `log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DemoAccount {
    pub address: String,
    pub password: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub smtp: Vec<SocketAddr>,
    pub pop3: Vec<SocketAddr>,
    pub imap: Vec<SocketAddr>,
    /// Message submission (RFC 6409): AUTH required before MAIL.
    pub submission: Vec<SocketAddr>,
    /// Submission over implicit TLS (RFC 8314, port 465).
    pub submissions: Vec<SocketAddr>,
    /// IMAP over implicit TLS (RFC 8314, port 993).
    pub imaps: Vec<SocketAddr>,
    /// POP3 over implicit TLS (RFC 8314, port 995).
    pub pop3s: Vec<SocketAddr>,
    /// HTTP: `/metrics` (Prometheus) and `/healthz` (runtime/http.rs).
    pub http: Vec<SocketAddr>,
}

/// TLS for every listener (STARTTLS and implicit) with rustls.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain (leaf first). With neither `cert` nor `key`,
    /// a self-signed certificate for `hostname` is generated into DATA/tls/.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// More certificates, each served to clients asking for one of its
    /// names (SNI).
    pub certificates: Vec<CertPair>,
    /// A TLS handshake (implicit or after STARTTLS) that takes longer is
    /// abandoned and the connection closed.
    pub handshake_timeout_secs: u64,
    /// Handshakes one shard runs at once; beyond, STARTTLS gets a temporary
    /// failure and an implicit-TLS connection is closed.
    pub handshakes_max: usize,
    /// Loopback clients may log in without TLS (off-loopback clients only
    /// with `relay.auth_without_tls`). false: passwords only under TLS,
    /// loopback included.
    pub loopback_auth_without_tls: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: None,
            key: None,
            certificates: Vec::new(),
            handshake_timeout_secs: limits::TLS_HANDSHAKE_TIMEOUT.as_secs(),
            handshakes_max: limits::TLS_HANDSHAKES_MAX,
            loopback_auth_without_tls: true,
        }
    }
}

/// Outbound mail: who may relay, and how the queue delivers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Recursive DNS resolvers (`"127.0.0.1:53"`); empty: /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// TCP port of the receiving MX hosts (25; tests point it elsewhere).
    pub port: u16,
    /// First retry after a temporary failure; the delay doubles each time...
    pub retry_first_secs: u64,
    /// ...up to this.
    pub retry_max_secs: u64,
    /// Bounce what is still undelivered this long after it arrived.
    pub give_up_secs: u64,
    /// Warn the sender once when a message is still deferred after this (0: never).
    pub delay_warning_secs: u64,
    /// Connections one shard opens to one destination domain at once.
    pub connections_per_domain: usize,
    /// Messages sent over one connection before it is closed.
    pub messages_per_connection: usize,
    /// Clients in these networks may relay without authenticating.
    pub relay_networks: Vec<Cidr>,
    /// Offer SMTP AUTH over plain text connections from any address (not
    /// only loopback). There is no TLS yet.
    pub auth_without_tls: bool,
    /// Timeout of one DNS query attempt.
    pub dns_timeout_secs: u64,
    /// TLS towards destinations not named in `tls`.
    pub tls_default: RelayTls,
    /// Per destination domain (lowercase), the TLS policy (`[relay.tls]`).
    pub tls: BTreeMap<String, RelayTls>,
    /// CA certificates (PEM) that verify MX certificates for
    /// `require-verified`; unset: the system's bundle
    /// ([`SYSTEM_CA_FILE`]).
    pub tls_ca_file: Option<PathBuf>,
    /// Look up and apply the MTA-STS policies (RFC 8461) of destination
    /// domains that have no entry in `tls`.
    pub mta_sts: bool,
    /// TCP port of the MTA-STS policy hosts. 443 (RFC 8461 section 3.3);
    /// only tests, which cannot listen on 443, set another.
    pub mta_sts_port: u16,
}

/// The system's CA bundle on Debian and derivatives.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How the relay uses TLS towards one destination (RFC 3207, RFC 7435).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RelayTls {
    /// Never STARTTLS (a destination whose TLS is known to be broken).
    None,
    /// STARTTLS when offered, any certificate; plaintext when the MX does
    /// not offer it or the handshake fails (RFC 7435 opportunistic security).
    #[default]
    Opportunistic,
    /// Never in the clear: STARTTLS or defer; any certificate.
    Require,
    /// Never in the clear, and the MX's certificate must chain to a trusted
    /// CA and name the MX host: otherwise defer.
    RequireVerified,
}

impl Relay {
    /// The policy for mail to `domain`.
    pub fn tls_for(&self, domain: &str) -> RelayTls {
        if self.tls.is_empty() {
            return self.tls_default;
        }
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.tls.get(&d).copied().unwrap_or(self.tls_default)
    }
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            nameservers: Vec::new(),
            port: 25,
            retry_first_secs: 300,
            retry_max_secs: 4 * 3600,
            give_up_secs: 5 * 86_400,
            delay_warning_secs: 4 * 3600,
            connections_per_domain: 4,
            messages_per_connection: 100,
            relay_networks: Vec::new(),
            auth_without_tls: false,
            dns_timeout_secs: 5,
            tls_default: RelayTls::Opportunistic,
            tls: BTreeMap::new(),
            tls_ca_file: None,
            mta_sts: true,
            mta_sts_port: 443,
        }
    }
}

/// Inbound mail authentication of mail from the Internet: SPF (RFC 7208),
/// DKIM (RFC 6376, RFC 8463), DMARC (RFC 7489), ARC (RFC 8617), recorded in
/// an Authentication-Results field (RFC 8601), and what to do with failures.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailAuth {
    /// Verify mail from clients that did not authenticate and are neither in
    /// `relay.relay_networks` nor in `trusted_networks`.
    pub verify: bool,
    /// Clients whose mail is not verified and keeps the Authentication-Results
    /// fields it brings (local submitters, content filters).
    pub trusted_networks: Vec<Cidr>,
    /// A message failing DMARC whose domain publishes p=reject is refused at
    /// the end of data with 550 5.7.1 (RFC 7489 section 6.6.3). false: it is
    /// handled as p=quarantine.
    pub dmarc_reject: bool,
    /// A message failing DMARC under p=quarantine.
    pub dmarc_quarantine: Quarantine,
    /// An SPF `fail` of the MAIL FROM (or HELO) domain when the From: domain
    /// has no DMARC policy.
    pub spf_fail: SpfFail,
    /// An SPF `temperror` (DNS trouble) when DMARC does not pass: "defer"
    /// answers 451 4.7.24 so the sender retries (RFC 7208 section 8.6, RFC
    /// 7372 section 3.2); "accept" stores the message with the temperror
    /// recorded. Other DNS failures never defer.
    pub spf_temperror: SpfTempError,
    /// DKIM signatures verified per message (the topmost ones).
    pub dkim_signatures_max: usize,
    /// Time for the whole verification of one message.
    pub timeout_secs: u64,
    /// Entries of each of the verifier's DNS caches.
    pub cache_max_entries: usize,
}

/// What happens to a message that fails DMARC under p=quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quarantine {
    /// Delivered into the account's \Junk folder (RFC 6154).
    Junk,
    /// Delivered into the INBOX; only the Authentication-Results field says so.
    Tag,
}

/// What happens to a message whose SPF result is `fail` and whose From:
/// domain has no DMARC policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpfFail {
    /// Stored; the Authentication-Results field says spf=fail.
    Tag,
    /// Refused with 550 5.7.23 (RFC 7372 section 3.2).
    Reject,
}

/// What happens when SPF could not be evaluated for a DNS failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpfTempError {
    /// 451 4.7.24: the sender tries again later.
    Defer,
    /// Stored with spf=temperror recorded.
    Accept,
}

impl Default for MailAuth {
    fn default() -> Self {
        MailAuth {
            verify: true,
            trusted_networks: vec![
                "127.0.0.0/8".parse().expect("valid network"),
                "::1".parse().expect("valid network"),
            ],
            dmarc_reject: true,
            dmarc_quarantine: Quarantine::Junk,
            spf_fail: SpfFail::Tag,
            spf_temperror: SpfTempError::Defer,
            dkim_signatures_max: limits::DKIM_SIGNATURES_MAX,
            timeout_secs: limits::AUTH_VERIFY_TIMEOUT.as_secs(),
            cache_max_entries: limits::AUTH_CACHE_ENTRIES,
        }
    }
}

impl MailAuth {
    /// Whether mail from `ip` (a client that did not authenticate and is not
    /// in relay_networks) is verified.
    pub fn verifies(&self, ip: IpAddr) -> bool {
        self.verify && !self.trusted(ip)
    }

    /// Whether `ip` is in `trusted_networks` (its mail is neither verified
    /// nor stripped of Authentication-Results).
    pub fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_networks.iter().any(|n| n.contains(ip))
    }
}

/// An IP network, `address/prefix` (`192.0.2.0/24`, `2001:db8::/32`; a bare
/// address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        format!("{}/{}", c.addr, c.prefix)
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub message_size_max: usize,
    pub recipients_max: usize,
    pub connections_max: usize,
    pub connections_per_address_max: usize,
    pub smtp_errors_max: usize,
    pub auth_failures_max: usize,
    /// New connections one client address may open per minute, over all
    /// listeners and cores (0: no limit).
    pub connections_per_address_per_minute: u32,
    /// SMTP commands the sessions of one client address may send per
    /// minute (0: no limit).
    pub smtp_commands_per_address_per_minute: u32,
    /// Loopback clients and `relay_networks` are exempt from the per-minute
    /// rates (as Postfix exempts mynetworks).
    pub rate_limits_exempt_trusted: bool,
    /// Storage each account may use, in octets (RFC 9208 STORAGE; 0: no
    /// limit). `ringmail account quota` sets an account's own. Over it,
    /// RCPT gets 452 4.2.2 and APPEND/COPY/MOVE NO [OVERQUOTA].
    pub quota_octets: u64,
    /// Mailboxes one account may have; beyond, IMAP CREATE gets NO [LIMIT].
    pub mailboxes_max: usize,
    /// Subscriptions one account may keep; beyond, SUBSCRIBE gets NO [LIMIT].
    pub subscriptions_max: usize,
    /// Messages one account may have for IMAP APPEND and COPY to add more
    /// (delivery is not refused); beyond, NO [LIMIT].
    pub messages_max: usize,
}

/// Who an authenticated client may send as.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Senders {
    /// An authenticated session's MAIL FROM and From: header addresses must
    /// belong to its account (the account itself, a `+detail` of it, or an
    /// alias that leads to it); otherwise 553 5.7.1.
    pub check_ownership: bool,
    /// Accounts exempt from the check (they may send as anyone).
    pub send_as_anyone: Vec<String>,
    /// Messages one authenticated account may send per hour, over every
    /// core (0: no limit); beyond, 452 4.7.0.
    pub messages_per_hour: u32,
    /// Recipients (summed over its messages) one authenticated account may
    /// send to per hour (0: no limit).
    pub recipients_per_hour: u32,
}

impl Default for Senders {
    fn default() -> Self {
        Senders {
            check_ownership: true,
            send_as_anyone: Vec::new(),
            messages_per_hour: 1000,
            recipients_per_hour: 5000,
        }
    }
}

/// Login throttling, shared by every core and protocol (see
/// `runtime::throttle`): failed logins per client address (IPv6 by /64) and
/// per account.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthThrottle {
    /// Delay before answering an address's first failed login; it doubles
    /// with each further failure. 0: no delay.
    pub failure_delay_ms: u64,
    /// The longest delay.
    pub failure_delay_max_ms: u64,
    /// Failures of one address (within `window_secs`) that ban it. 0: never.
    pub ban_after_failures: u32,
    /// How long a ban lasts: logins from the address are refused before any
    /// password check.
    pub ban_secs: u64,
    /// How long failures are remembered, from the first one counted.
    pub window_secs: u64,
    /// Failures of one account (within `window_secs`, from any address)
    /// after which it refuses logins from addresses that have failed too;
    /// an address without failures can always log in. 0: never.
    pub account_lock_after_failures: u32,
    /// Password checks (argon2) one core queues at most; beyond, a login
    /// gets a temporary failure.
    pub password_checks_queued_max: usize,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            failure_delay_ms: 500,
            failure_delay_max_ms: 15_000,
            ban_after_failures: 10,
            ban_secs: 900,
            window_secs: 3600,
            account_lock_after_failures: 100,
            password_checks_queued_max: 64,
        }
    }
}

impl AuthThrottle {
    pub fn policy(&self) -> crate::runtime::throttle::Policy {
        use std::time::Duration;
        crate::runtime::throttle::Policy {
            delay_base: Duration::from_millis(self.failure_delay_ms),
            delay_max: Duration::from_millis(self.failure_delay_max_ms.max(self.failure_delay_ms)),
            ban_after: if self.ban_after_failures == 0 {
                u32::MAX
            } else {
                self.ban_after_failures
            },
            ban: Duration::from_secs(self.ban_secs),
            window: Duration::from_secs(self.window_secs.max(1)),
            account_lock_after: if self.account_lock_after_failures == 0 {
                u32::MAX
            } else {
                self.account_lock_after_failures
            },
        }
    }
}

/// Memory (and spool disk) a shard lets sessions hold for message data in
/// flight: SMTP DATA/BDAT and IMAP APPEND literals. A message stays in RAM up
/// to `spool_threshold`, then goes on into an unnamed spool file (O_TMPFILE in
/// DATA/spool/, gone when closed or after a crash); budgets are per shard.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Memory {
    /// RAM one shard's sessions may hold in message data; beyond it messages
    /// spool from their first bytes. 0: an eighth of the machine's memory,
    /// divided among the shards (at least 64 MiB each, at most 1 GiB).
    pub session_ram_max: u64,
    /// Message bytes kept in RAM before the message moves to a spool file.
    pub spool_threshold: usize,
    /// Spool disk one shard may use. 0: a quarter of the data directory's
    /// free space at start-up, divided among the shards (at most 16 GiB each).
    /// A message that would pass it is read to its end and refused with a
    /// temporary failure (SMTP 451 4.3.1, IMAP NO [UNAVAILABLE]).
    pub spool_max: u64,
    /// Spool bytes the unauthenticated sessions of one client address may
    /// hold at once, per shard (port 25 and not in relay_networks); clients
    /// that authenticated or relay for us are bound by `spool_max` only.
    pub spool_per_address_max: u64,
    /// After sessions on a shard freed this much memory, return free heap
    /// pages to the system (malloc_trim). 0: never trim.
    pub trim_after_bytes: u64,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            session_ram_max: 0,
            spool_threshold: limits::SPOOL_THRESHOLD,
            spool_max: 0,
            spool_per_address_max: limits::SPOOL_PER_ADDRESS_MAX,
            trim_after_bytes: limits::TRIM_AFTER_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub smtp_command_secs: u64,
    pub smtp_data_secs: u64,
    pub pop3_idle_secs: u64,
    /// On SIGTERM/SIGINT: how long in-flight sessions may take to finish.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Checkpoint a bucket's index after this many records were logged for it.
    pub checkpoint_every_records: u64,
    /// Compact a sealed segment when less than this percentage of it is live.
    pub compact_live_percent: u32,
    /// How often shard 0 looks for segments to compact, in seconds (0: never).
    pub compact_interval_secs: u64,
    /// Memory glommio locks per executor for io_uring buffers, in KiB. We use
    /// buffered files and mappings, not DMA, so little is needed.
    pub io_memory_kib: usize,
    /// Busy-poll this long before an idle executor sleeps, in microseconds:
    /// cheaper cross-core wake-ups for CPU burned while idle.
    pub spin_before_park_us: u64,
    /// Keep the active segment zero-filled a few MiB ahead of its write
    /// position. The first write into a preallocated (unwritten) extent
    /// makes fdatasync also write the extent change (inode or journal);
    /// zero-filling ahead moves that cost off the commit path.
    pub zero_segments: bool,
    /// Append records by copying into the segment mapping instead of with
    /// pwritev (both end up in the same page cache; see docs/TUNING.md).
    pub append_through_map: bool,
    /// A group commit calls fdatasync on the executor thread while the
    /// moving average of recent syncs is at most this many microseconds;
    /// slower, it goes through io_uring's worker threads (0: always
    /// through io_uring).
    pub sync_inline_max_us: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "mail.example.test".into(),
            data_dir: PathBuf::from("./ringmail-data"),
            cores: 0,
            pin_cores: true,
            batch_scheduling: true,
            cpu_steering: false,
            user: None,
            group: None,
            allow_root: false,
            log_format: LogFormat::Text,
            local_domains: vec!["example.test".into()],
            // RFC 5321 4.5.1: every domain needs a postmaster.
            aliases: [(
                "postmaster@example.test".to_string(),
                "alice@example.test".to_string(),
            )]
            .into(),
            listen: Listen::default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            storage: Storage::default(),
            memory: Memory::default(),
            relay: Relay::default(),
            tls: Tls::default(),
            auth_throttle: AuthThrottle::default(),
            senders: Senders::default(),
            mail_auth: MailAuth::default(),
            demo_accounts: DEMO_ACCOUNTS
                .iter()
                .map(|(a, p)| DemoAccount {
                    address: (*a).into(),
                    password: (*p).into(),
                })
                .collect(),
            cluster: None,
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            smtp: vec!["127.0.0.1:2525".parse().unwrap()],
            pop3: vec!["127.0.0.1:1100".parse().unwrap()],
            imap: vec!["127.0.0.1:1430".parse().unwrap()],
            submission: vec!["127.0.0.1:5870".parse().unwrap()],
            submissions: vec!["127.0.0.1:4650".parse().unwrap()],
            imaps: vec!["127.0.0.1:9930".parse().unwrap()],
            pop3s: vec!["127.0.0.1:9950".parse().unwrap()],
            http: vec!["127.0.0.1:9180".parse().unwrap()],
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_size_max: limits::MESSAGE_SIZE_MAX,
            recipients_max: limits::RECIPIENTS_MAX,
            connections_max: limits::CONNECTIONS_MAX,
            connections_per_address_max: limits::CONNECTIONS_PER_ADDRESS_MAX,
            smtp_errors_max: limits::SMTP_ERRORS_MAX,
            auth_failures_max: limits::AUTH_FAILURES_MAX,
            connections_per_address_per_minute: 600,
            smtp_commands_per_address_per_minute: 6000,
            rate_limits_exempt_trusted: true,
            quota_octets: 0,
            mailboxes_max: limits::IMAP_MAILBOXES_MAX,
            subscriptions_max: limits::IMAP_SUBSCRIPTIONS_MAX,
            messages_max: limits::IMAP_MESSAGES_MAX,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            smtp_command_secs: limits::SMTP_COMMAND_TIMEOUT.as_secs(),
            smtp_data_secs: limits::SMTP_DATA_TIMEOUT.as_secs(),
            pop3_idle_secs: limits::POP3_IDLE_TIMEOUT.as_secs(),
            shutdown_grace_secs: 10,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            checkpoint_every_records: 4096,
            compact_live_percent: 50,
            compact_interval_secs: 60,
            io_memory_kib: 512,
            spin_before_park_us: 0,
            zero_segments: true,
            append_through_map: false,
            sync_inline_max_us: 2000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {}{message}", key_prefix(.key))]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        /// The dotted key at the error (`limits.recipients_max`), when the
        /// error is on a `key = value` line.
        key: Option<String>,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Read and validate a TOML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse configuration text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((0, 0));
            ConfigError::Parse {
                path: path.into(),
                line,
                column,
                key: e.span().and_then(|s| key_at(text, s.start)),
                message: e.message().to_string(),
            }
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })?;
        Ok(config)
    }

    /// Check relations serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.hostname.is_empty() {
            return Err("hostname must not be empty".into());
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        for domain in self.relay.tls.keys() {
            if domain.is_empty() || domain.ends_with('.') || *domain != domain.to_ascii_lowercase()
            {
                return Err(format!(
                    "relay.tls: write the domain {domain:?} in lowercase, without a trailing dot"
                ));
            }
        }
        if self.limits.message_size_max == 0
            || self.limits.message_size_max > limits::MESSAGE_SIZE_MAX
        {
            return Err(format!(
                "limits.message_size_max must be between 1 and {}",
                limits::MESSAGE_SIZE_MAX
            ));
        }
        if self.limits.recipients_max == 0 {
            return Err("limits.recipients_max must be at least 1".into());
        }
        if self.cores > 256 {
            return Err("cores must be at most 256".into());
        }
        if self.mail_auth.timeout_secs == 0 || self.mail_auth.timeout_secs > 300 {
            return Err("mail_auth.timeout_secs must be between 1 and 300".into());
        }
        if self.mail_auth.dkim_signatures_max > 100 {
            return Err("mail_auth.dkim_signatures_max must be at most 100".into());
        }
        if self.relay.connections_per_domain == 0 || self.relay.messages_per_connection == 0 {
            return Err(
                "relay.connections_per_domain and relay.messages_per_connection must be at least 1"
                    .into(),
            );
        }
        if self.relay.retry_first_secs == 0
            || self.relay.retry_max_secs < self.relay.retry_first_secs
        {
            return Err(
                "relay.retry_first_secs must be at least 1 and at most relay.retry_max_secs".into(),
            );
        }
        for d in &self.local_domains {
            if d.is_empty() || d.contains('@') {
                return Err(format!("local_domains: {d:?} is not a domain"));
            }
        }
        // One address, one protocol: two lists naming the same address would
        // share one SO_REUSEPORT group, and the kernel would hand each
        // connection to either protocol. (Port 0 picks a fresh port each.)
        let mut seen: std::collections::HashMap<SocketAddr, &str> =
            std::collections::HashMap::new();
        let l = &self.listen;
        for (proto, addrs) in [
            ("smtp", &l.smtp),
            ("pop3", &l.pop3),
            ("imap", &l.imap),
            ("submission", &l.submission),
            ("submissions", &l.submissions),
            ("imaps", &l.imaps),
            ("pop3s", &l.pop3s),
            ("http", &l.http),
        ] {
            for a in addrs.iter().filter(|a| a.port() != 0) {
                if let Some(first) = seen.insert(*a, proto) {
                    return Err(format!("listen: {a} is given for both {first} and {proto}"));
                }
            }
        }
        if self.memory.spool_threshold == 0
            || self.memory.spool_threshold > limits::MESSAGE_SIZE_MAX
        {
            return Err(format!(
                "memory.spool_threshold must be between 1 and {}",
                limits::MESSAGE_SIZE_MAX
            ));
        }
        if self.memory.spool_per_address_max == 0 {
            return Err("memory.spool_per_address_max must be at least 1".into());
        }
        if self.tls.handshake_timeout_secs == 0 || self.tls.handshakes_max == 0 {
            return Err(
                "tls.handshake_timeout_secs and tls.handshakes_max must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// Is this client exempt from the per-minute rates (loopback or
    /// relay_networks, with `limits.rate_limits_exempt_trusted`)?
    pub fn rate_exempt(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.limits.rate_limits_exempt_trusted
            && (peer.is_loopback() || self.relay.relay_networks.iter().any(|n| n.contains(peer)))
    }

    /// May this client send a password without TLS?
    pub fn auth_without_tls_for(&self, peer: IpAddr) -> bool {
        self.relay.auth_without_tls
            || (self.tls.loopback_auth_without_tls && peer.to_canonical().is_loopback())
    }

    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls.handshake_timeout_secs)
    }

    /// Number of executors to start.
    pub fn effective_cores(&self) -> usize {
        if self.cores > 0 {
            self.cores
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    pub fn smtp_command_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.smtp_command_secs)
    }
    pub fn smtp_data_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.smtp_data_secs)
    }
    pub fn pop3_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.pop3_idle_secs)
    }

    /// True when `domain` (any case) is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// The embedded default configuration as an annotated TOML file
/// (`ringmail default-config`). A test checks it equals [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = r#"# ringmail configuration. Every key is optional; missing keys take these defaults.

# Our host name: SMTP banner, EHLO reply, Received headers.
hostname = "mail.example.test"
# Segments, checkpoints, the account file and the meta file live here.
data_dir = "./ringmail-data"
# Executors, one per core; 0 = every online CPU. Accounts are spread over them.
cores = 0
# Pin each executor to its own CPU (ignored when cores > online CPUs).
pin_cores = true
# Run executors under the SCHED_BATCH policy: a waking executor does not
# preempt whatever runs on its CPU, and handles more work per wake-up.
batch_scheduling = true
# With pinned executors, give each new connection to the executor on the CPU
# that received it (network interrupt, or a local client's CPU); connections
# from other CPUs are spread by the kernel's hash. Off: the kernel's hash.
cpu_steering = false
# Started as root, the server binds its listeners, then runs as this user
# (and group; default: the user's primary group) before it opens the data
# directory. Root without `user` is refused when any listener is off
# loopback, unless allow_root = true.
# user = "ringmail"
# group = "ringmail"
allow_root = false
# Logs on stderr: "text", or "json" (one object per line, stable field names).
# RINGMAIL_LOG filters them (default "info").
log_format = "text"
# Mail for these domains is delivered into local mailboxes.
local_domains = ["example.test"]

# Accounts are managed with `ringmail account add ADDRESS` (password on
# stdin). Without a file, ringmail runs with two demo accounts whose
# passwords are public; a file has them only if it lists them, like this
# (never on a server others can reach):
# [[demo_accounts]]
# address = "alice@example.test"
# password = "alice-secret"

# "alias@domain" = "account@domain"; "@domain" = "account@domain" is a catch-all.
# local+detail@domain is delivered to local@domain when no exact match exists.
[aliases]
"postmaster@example.test" = "alice@example.test"

[listen]
smtp = ["127.0.0.1:2525"]
pop3 = ["127.0.0.1:1100"]
imap = ["127.0.0.1:1430"]
# Message submission (RFC 6409; 587 in production): SMTP AUTH is required
# before MAIL, and authenticated senders may relay to any domain.
submission = ["127.0.0.1:5870"]
# The same services over implicit TLS (RFC 8314; 465, 993, 995 in production).
submissions = ["127.0.0.1:4650"]
imaps = ["127.0.0.1:9930"]
pop3s = ["127.0.0.1:9950"]
# Metrics (/metrics, Prometheus text format) and health (/healthz) over HTTP.
# Keep it on loopback or a private network: it has no authentication.
http = ["127.0.0.1:9180"]

[tls]
# PEM certificate chain and key. Without them a self-signed ECDSA certificate
# for `hostname` is generated into DATA/tls/ on first start and reused; its
# SHA-256 fingerprint is printed after the ready line. Reloaded on SIGHUP and
# when the files change.
# cert = "/etc/ringmail/fullchain.pem"
# key = "/etc/ringmail/privkey.pem"
# More certificates, chosen by the name a client asks for (SNI):
# [[tls.certificates]]
# cert = "/etc/ringmail/other.pem"
# key = "/etc/ringmail/other.key"
# A handshake that takes longer is abandoned (connection closed).
handshake_timeout_secs = 10
# Handshakes one core runs at once; beyond, STARTTLS answers "try later".
handshakes_max = 512
# Loopback clients may log in without TLS; false: only under TLS, even there.
loopback_auth_without_tls = true

[limits]
# SIZE (RFC 1870): advertised in EHLO, checked at MAIL and at end of data. Max 32 MiB.
message_size_max = 33554432
# RFC 5321 4.5.3.1.8 asks for at least 100.
recipients_max = 100
connections_max = 10000
connections_per_address_max = 256
# Failed SMTP commands before the session is closed with 421.
smtp_errors_max = 20
# Failed logins on one POP3/IMAP connection before it is closed.
auth_failures_max = 3
# New connections per client address per minute, all listeners (0: no limit).
connections_per_address_per_minute = 600
# SMTP commands per client address per minute (0: no limit); beyond, 421.
smtp_commands_per_address_per_minute = 6000
# Loopback and relay_networks are exempt from the two rates above.
rate_limits_exempt_trusted = true
# Storage per account in octets (0: no limit); `ringmail account quota`
# sets an account's own. Full: RCPT 452 4.2.2, APPEND NO [OVERQUOTA].
quota_octets = 0
# Mailboxes, subscriptions and messages per account (0: no limit); beyond,
# IMAP CREATE, SUBSCRIBE, APPEND and COPY get NO [LIMIT]. Delivery is not
# refused by messages_max.
mailboxes_max = 10000
subscriptions_max = 10000
messages_max = 1000000

[auth_throttle]
# Failed logins (SMTP AUTH, IMAP, POP3) counted per client address (IPv6 by
# /64) and per account, across connections, protocols and cores. Each failure
# is answered after a delay that doubles with the address's failures.
failure_delay_ms = 500
failure_delay_max_ms = 15000
# This many failures within window_secs ban the address for ban_secs: its
# logins are refused before any password check (0: never ban).
ban_after_failures = 10
ban_secs = 900
window_secs = 3600
# An account with this many failures refuses logins from addresses that have
# failed too, never from one that has not (0: never).
account_lock_after_failures = 100
# Password checks one core queues at most; beyond, "try again later".
password_checks_queued_max = 64

[senders]
# An authenticated client's MAIL FROM and From: header addresses must belong
# to its account (the account, a +detail of it, or an alias leading to it);
# otherwise 553 5.7.1.
check_ownership = true
# Accounts that may send as anyone.
send_as_anyone = []
# Per authenticated account and hour, over all cores (0: no limit); beyond,
# 452 4.7.0 and the message is not taken.
messages_per_hour = 1000
recipients_per_hour = 5000

[timeouts]
# RFC 5321 4.5.3.2: 5 minutes for a command, 10 minutes for data.
smtp_command_secs = 300
smtp_data_secs = 600
# RFC 1939 3: the POP3 autologout timer, at least 10 minutes.
pop3_idle_secs = 600
# On SIGTERM/SIGINT, how long open sessions may take to finish.
shutdown_grace_secs = 10

[storage]
# Checkpoint a bucket's index after this many records were logged for it.
checkpoint_every_records = 4096
# Compact a sealed segment when less than this percentage of it is live.
compact_live_percent = 50
# How often to look for segments to compact, in seconds (0: never).
compact_interval_secs = 60
# Memory each executor locks for io_uring, in KiB (see docs/TUNING.md).
io_memory_kib = 512
# Busy-poll before an idle executor sleeps, in microseconds (0: sleep at once).
spin_before_park_us = 0
# Keep the segment being written zero-filled a few MiB ahead of the log, so
# a commit's fdatasync writes only data, not extent changes. Every segment
# byte is written twice (zeros, then records); see docs/TUNING.md.
zero_segments = true
# Group commits block the executor in fdatasync while the recent average
# sync takes at most this many microseconds (fast disks: cheaper than a
# hand-off to io_uring's worker threads); slower disks, or 0: io_uring.
sync_inline_max_us = 2000

[memory]
# Message data in flight (SMTP DATA/BDAT, IMAP APPEND) stays in RAM up to
# spool_threshold bytes per message, then continues in an unnamed spool file
# under DATA/spool/ (nothing is left behind by a crash).
spool_threshold = 131072
# RAM one core's sessions may hold in message data; beyond it, messages spool
# from their first byte. 0: an eighth of the machine's memory over the cores.
session_ram_max = 0
# Spool disk one core may use; a message that would pass it is refused with a
# temporary failure. 0: a quarter of the data directory's free space at start.
spool_max = 0
# Spool bytes the unauthenticated sessions of one client address may hold on
# one core (port 25 senders outside relay_networks).
spool_per_address_max = 67108864
# Return freed heap memory to the system after this many bytes were released.
trim_after_bytes = 67108864

[relay]
# Who may send mail to other domains: authenticated clients (SMTP AUTH PLAIN
# or LOGIN, on any SMTP listener) and clients in relay_networks. Nobody else,
# loopback included: port 25 never relays for an unauthenticated client.
relay_networks = []
# Off loopback, passwords are taken only under TLS (AUTH is advertised after
# STARTTLS or on the implicit-TLS port; IMAP says LOGINDISABLED, POP3 refuses
# USER before STLS). true accepts them in clear text from any address: only
# for trusted networks.
auth_without_tls = false
# DNS resolvers for MX lookups ("127.0.0.1:5353"); empty: /etc/resolv.conf.
nameservers = []
# Timeout of one DNS query attempt, in seconds.
dns_timeout_secs = 5
# TCP port of the receiving MX hosts.
port = 25
# Retries after a temporary failure (4xx, connection failure): the first after
# retry_first_secs, then doubling up to retry_max_secs; bounce after give_up_secs.
retry_first_secs = 300
retry_max_secs = 14400
give_up_secs = 432000
# Warn the sender once when a message is still deferred after this (0: never).
delay_warning_secs = 14400
# Connections one shard opens to one destination domain at once.
connections_per_domain = 4
# Messages sent over one connection (RSET between them) before it closes.
messages_per_connection = 100
# TLS towards the receiving MX hosts: "opportunistic" uses STARTTLS whenever
# the MX offers it (any certificate; plaintext if it is not offered or the
# handshake fails), "require" never sends in the clear (defers instead),
# "require-verified" also needs a certificate that chains to a CA in
# tls_ca_file (unset: the system's bundle, /etc/ssl/certs) and names the MX
# host, "none" never starts TLS.
tls_default = "opportunistic"
# tls_ca_file = "/etc/ringmail/relay-ca.pem"
# MTA-STS (RFC 8461): fetch each destination's published policy (TXT
# _mta-sts.DOMAIN, then https://mta-sts.DOMAIN/.well-known/mta-sts.txt,
# verified with the CAs above) and, in mode "enforce", deliver only to the MX
# hosts it names, over verified TLS, deferring otherwise. A domain in
# [relay.tls] keeps its own policy.
mta_sts = true
# Port of the policy hosts: 443. Only for tests.
mta_sts_port = 443

# Per destination domain, a policy other than tls_default, e.g.
# "example.org" = "require-verified"
[relay.tls]

[mail_auth]
# Mail from the Internet (SMTP clients that did not authenticate, outside
# relay_networks and trusted_networks) is checked before the 250: SPF for the
# MAIL FROM and HELO domains, every DKIM signature, DMARC for the From:
# domain, the ARC chain. The results go into one Authentication-Results field
# naming `hostname`; such fields the message brought for our hostname are
# removed as forgeries.
verify = true
# Clients whose mail is not checked (local scripts, content filters).
trusted_networks = ["127.0.0.0/8", "::1"]
# DMARC failure under p=reject: refuse with 550 5.7.1 (false: as quarantine).
dmarc_reject = true
# DMARC failure under p=quarantine: "junk" delivers into the Junk folder,
# "tag" into the INBOX (the Authentication-Results field says dmarc=fail).
dmarc_quarantine = "junk"
# SPF fail when the From: domain publishes no DMARC policy: "tag" or "reject"
# (550 5.7.23).
spf_fail = "tag"
# SPF could not be checked for DNS trouble and DMARC does not pass: "defer"
# (451 4.7.24, the sender retries) or "accept" (spf=temperror recorded).
# Other DNS trouble (DKIM keys, DMARC records) is recorded, never deferred.
spf_temperror = "defer"
# DKIM signatures checked per message (the topmost); the rest are ignored.
dkim_signatures_max = 10
# Time for all DNS lookups of one message's checks, in seconds.
timeout_secs = 20
# Entries of each DNS cache of the verifier.
cache_max_entries = 16384

# Cluster mode (a binary built with `--features cluster`; ARCHITECTURE.md,
# "Cluster mode"): nodes register in etcd under /ringmail/NAME/ and share
# one bucket map; any node takes mail and sessions for any account, each
# delivery is made durable on the bucket's primary and replica before 250.
# Absent: a single node, no etcd.
# [cluster]
# name = "main"
# node = "node1"
# etcd = ["http://127.0.0.1:2379"]
# internal = "10.0.0.1:7025"
# lease_ttl_secs = 5
# A message sent again within this many seconds (same sender, Message-ID
# and body) is stored once per account: a retry after a failure that left
# the first attempt durable on some node. 0: off.
# duplicate_window_secs = 3600
# A bucket copy (to a node that gained buckets) pauses this many
# milliseconds before each account it stores; 0: as fast as it can.
# copy_pause_ms = 0
# A hand-over to another node (a message, a replica copy, a change) that
# takes longer than this fails (451 / NO [UNAVAILABLE]), and that node is
# not tried again for 10 seconds: its buckets answer at once meanwhile.
# 10000 to 60000, plus a millisecond per 1,000 octets of the message.
# peer_timeout_ms = 30000
# etcd over TLS (https:// endpoints) with the CA that signs its certificate,
# optionally a client certificate, and etcd authentication (the password
# in a file of its own; refused over http:// off loopback).
# etcd_ca = "/etc/ringmail/etcd-ca.pem"
# etcd_cert = "/etc/ringmail/etcd-client.pem"
# etcd_key = "/etc/ringmail/etcd-client.key"
# etcd_user = "ringmail"
# etcd_password_file = "/etc/ringmail/etcd-password"
"#;

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!("key {k}: "))
        .unwrap_or_default()
}

/// The dotted key of the `key = value` line holding `offset`, prefixed with
/// the table header above it (`[limits]` + `recipients_max = "x"` gives
/// `limits.recipients_max`), for error messages.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let (key, _) = text[start..end].split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let table = text[..start].lines().rev().find_map(|l| {
        let l = l.trim();
        let l = l.strip_prefix("[[").or_else(|| l.strip_prefix('['))?;
        let end = l.find(']')?;
        Some(l[..end].trim().to_string())
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// What a configuration reload may change in a running server; everything
/// else needs a restart (new sockets, executors, a different data directory
/// or settings read once at start-up).
impl Config {
    /// `new` with every setting that needs a restart taken from `running`:
    /// the configuration a reload puts in force.
    pub fn reloadable_from(running: &Config, new: &Config) -> Config {
        let mut m = new.clone();
        m.data_dir.clone_from(&running.data_dir);
        m.cores = running.cores;
        m.pin_cores = running.pin_cores;
        m.batch_scheduling = running.batch_scheduling;
        m.cpu_steering = running.cpu_steering;
        m.user.clone_from(&running.user);
        m.group.clone_from(&running.group);
        m.allow_root = running.allow_root;
        m.log_format = running.log_format;
        m.listen = running.listen.clone();
        m.storage = running.storage.clone();
        m.memory = running.memory.clone();
        m.demo_accounts.clone_from(&running.demo_accounts);
        m.cluster.clone_from(&running.cluster);
        // The DNS thread, the MTA-STS fetcher and the relay's CA roots are
        // built once.
        m.relay.nameservers.clone_from(&running.relay.nameservers);
        m.relay.dns_timeout_secs = running.relay.dns_timeout_secs;
        m.relay.mta_sts = running.relay.mta_sts;
        m.relay.mta_sts_port = running.relay.mta_sts_port;
        m.relay.tls_ca_file.clone_from(&running.relay.tls_ca_file);
        // The verifier is started (or not) once, with its caches and limits;
        // the policy and the trusted networks apply per message.
        m.mail_auth.verify = running.mail_auth.verify;
        m.mail_auth.dkim_signatures_max = running.mail_auth.dkim_signatures_max;
        m.mail_auth.timeout_secs = running.mail_auth.timeout_secs;
        m.mail_auth.cache_max_entries = running.mail_auth.cache_max_entries;
        m
    }

    /// The dotted keys whose values differ between `a` and `b`
    /// (`limits.recipients_max`, `aliases.x@example.org`, `listen.smtp`).
    pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
        fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
            use serde_json::Value;
            match (a, b) {
                (Value::Object(x), Value::Object(y)) => {
                    let keys: std::collections::BTreeSet<&String> =
                        x.keys().chain(y.keys()).collect();
                    for k in keys {
                        let path = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        match (x.get(k), y.get(k)) {
                            (Some(v), Some(w)) => walk(&path, v, w, out),
                            _ => out.push(path),
                        }
                    }
                }
                _ if a != b => out.push(prefix.to_string()),
                _ => {}
            }
        }
        let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
            return vec!["(configuration)".into()];
        };
        let mut out = Vec::new();
        walk("", &a, &b, &mut out);
        out
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_documented() {
        Config::default().validate().unwrap();
        let mut dup = Config::default();
        dup.listen.submission = dup.listen.smtp.clone();
        let e = dup.validate().unwrap_err();
        assert!(e.contains("both smtp and submission"), "{e}");
        let mut twice = Config::default();
        twice.listen.smtp.push(twice.listen.smtp[0]);
        assert!(twice.validate().is_err());
        let mut zero = Config::default();
        zero.listen.smtp = vec!["127.0.0.1:0".parse().unwrap()];
        zero.listen.pop3 = zero.listen.smtp.clone();
        zero.validate().unwrap();
        // The file is the embedded default, less the demo accounts (a file
        // made from it must not create accounts with public passwords).
        let parsed = Config::parse(DEFAULT_CONFIG_TOML, Path::new("default.toml")).unwrap();
        assert!(parsed.demo_accounts.is_empty());
        let mut expected = Config::default();
        expected.demo_accounts.clear();
        assert_eq!(format!("{parsed:?}"), format!("{expected:?}"));
    }

    #[test]
    fn cluster_section_is_checked() {
        let base = "[cluster]\nname = \"main\"\nnode = \"n1\"\netcd = [\"http://127.0.0.1:2379\"]\ninternal = \"127.0.0.1:7025\"\n";
        let c = Config::parse(base, Path::new("c.toml")).unwrap();
        let cl = c.cluster.unwrap();
        assert_eq!((cl.node.as_str(), cl.lease_ttl_secs), ("n1", 5));
        for (bad, why) in [
            (
                base.replace("\"n1\"", "\"n/1\""),
                "cluster.name and cluster.node",
            ),
            (
                base.replace("[\"http://127.0.0.1:2379\"]", "[]"),
                "cluster.etcd",
            ),
            (
                base.replace("127.0.0.1:7025", "somewhere"),
                "cluster.internal",
            ),
            (format!("{base}lease_ttl_secs = 1\n"), "lease_ttl_secs"),
            (
                base.replace("127.0.0.1:7025", "0.0.0.0:7025"),
                "own address",
            ),
            (
                base.replace("http://127.0.0.1:2379", "127.0.0.1:2379"),
                "must start with http:// or https://",
            ),
            (
                base.replace("http://127.0.0.1", "https://10.0.0.9"),
                "cluster.etcd_ca",
            ),
            (format!("{base}etcd_user = \"rm\"\n"), "go together"),
            (format!("{base}etcd_cert = \"c.pem\"\n"), "go together"),
            (
                format!("{base}etcd_cert = \"c.pem\"\netcd_key = \"c.key\"\n"),
                "needs TLS",
            ),
            (
                format!("{base}etcd_ca = \"ca.pem\"\n"),
                "use https:// for every endpoint",
            ),
            (
                base.replace("http://127.0.0.1:2379", "http://:2379"),
                "names no host",
            ),
            (
                format!("{base}etcd_user = \"rm\"\netcd_password_file = \"pw\"\n")
                    .replace("http://127.0.0.1", "http://10.0.0.9"),
                "in the clear",
            ),
        ] {
            let e = Config::parse(&bad, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
        assert!(Config::parse("[cluster]\nname = \"x\"\n", Path::new("c.toml")).is_err());
        // A password over TLS, or over loopback in the clear, is fine.
        let auth = format!("{base}etcd_user = \"rm\"\netcd_password_file = \"pw\"\n");
        for good in [
            auth.clone(),
            auth.replace("http://127.0.0.1", "http://localhost"),
            auth.replace("http://127.0.0.1", "http://[::1]"),
            auth.replace("http://127.0.0.1:2379", "http://[::1]"),
            auth.replace("http://127.0.0.1:2379", "http://LocalHost/"),
            format!(
                "{}etcd_ca = \"ca.pem\"\n",
                auth.replace("http://127.0.0.1", "https://10.0.0.9")
            ),
        ] {
            Config::parse(&good, Path::new("c.toml")).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn file_overrides_and_reports_position() {
        let c = Config::parse(
            "hostname = \"mx.test\"\ncores = 2\n[listen]\nsmtp = [\"127.0.0.1:0\"]\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.hostname, "mx.test");
        assert_eq!(c.cores, 2);
        assert_eq!(c.listen.pop3, Listen::default().pop3);
        let e = Config::parse("hostname = \"a\"\nbogus = 1\n", Path::new("x.toml")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("x.toml:2:1:"), "{s}");
        assert!(s.contains("bogus"), "{s}");
        let e = Config::parse("[limits]\nmessage_size_max = 0\n", Path::new("y.toml")).unwrap_err();
        assert!(e.to_string().contains("message_size_max"));
    }

    #[test]
    fn a_file_has_no_demo_accounts_unless_it_lists_them() {
        let c = Config::parse("hostname = \"mx.test\"\n", Path::new("d.toml")).unwrap();
        assert!(c.demo_accounts.is_empty());
        assert_eq!(Config::default().demo_accounts.len(), 2);
    }

    #[test]
    fn parse_errors_name_the_key() {
        let e = Config::parse(
            "hostname = \"a\"\n\n[limits]\n# comment\nrecipients_max = \"many\"\n",
            Path::new("k.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("k.toml:5:"), "{e}");
        assert!(e.contains("key limits.recipients_max: "), "{e}");
        let e = Config::parse(
            "[relay.tls]\n\"b.test\" = \"sometimes\"\n",
            Path::new("k.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("key relay.tls.b.test: "), "{e}");
        // Not on a key line: no key, still file, line and column.
        let e = Config::parse("[limits\n", Path::new("k.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("k.toml:1:") && !e.contains("key "), "{e}");
    }

    #[test]
    fn reload_keeps_what_needs_a_restart() {
        let running = Config::default();
        let new = Config::parse(
            "hostname = \"mx2.test\"\ncores = 7\n[listen]\nsmtp = [\"127.0.0.1:2626\"]\n\
             [limits]\nrecipients_max = 3\n[aliases]\n\"x@example.test\" = \"alice@example.test\"\n\
             [relay]\nnameservers = [\"127.0.0.1:5353\"]\nretry_first_secs = 5\n\
             [mail_auth]\nverify = false\nspf_fail = \"reject\"\n[storage]\nzero_segments = false\n",
            Path::new("n.toml"),
        )
        .unwrap();
        let merged = Config::reloadable_from(&running, &new);
        assert_eq!(merged.hostname, "mx2.test");
        assert_eq!(merged.limits.recipients_max, 3);
        assert_eq!(merged.cores, running.cores);
        assert_eq!(merged.listen.smtp, running.listen.smtp);
        assert_eq!(merged.relay.nameservers, running.relay.nameservers);
        assert_eq!(merged.relay.retry_first_secs, 5);
        assert!(merged.mail_auth.verify);
        assert_eq!(merged.mail_auth.spf_fail, SpfFail::Reject);
        let applied = Config::changed_keys(&running, &merged);
        assert_eq!(
            applied,
            [
                "aliases.postmaster@example.test",
                "aliases.x@example.test",
                "hostname",
                "limits.recipients_max",
                "mail_auth.spf_fail",
                "relay.retry_first_secs"
            ]
        );
        let restart = Config::changed_keys(&merged, &new);
        assert_eq!(
            restart,
            [
                "cores",
                "demo_accounts",
                "listen.smtp",
                "mail_auth.verify",
                "relay.nameservers",
                "storage.zero_segments"
            ]
        );
        assert!(Config::changed_keys(&running, &running.clone()).is_empty());
    }

    #[test]
    fn relay_networks() {
        let c = Config::parse(
            "[relay]\nrelay_networks = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n",
            Path::new("r.toml"),
        )
        .unwrap();
        let n = &c.relay.relay_networks;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(n[0].contains(ip("10.200.1.2")));
        assert!(!n[0].contains(ip("11.0.0.1")));
        assert!(n[0].contains(ip("::ffff:10.0.0.1")));
        assert!(n[1].contains(ip("2001:db8:ffff::1")));
        assert!(!n[1].contains(ip("2001:db9::1")));
        assert!(n[2].contains(ip("192.0.2.7")) && !n[2].contains(ip("192.0.2.8")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        let e = Config::parse(
            "[relay]\nrelay_networks = [\"10.0.0.0/33\"]\n",
            Path::new("r.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("prefix"), "{e}");
        assert!(Config::parse(
            "[relay]\nrelay_networks = [\"example\"]\n",
            Path::new("r.toml")
        )
        .is_err());
    }
}
