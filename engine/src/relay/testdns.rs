//! A tiny authoritative-looking DNS responder for tests (UDP only, loopback;
//! it never sets the truncation bit, so the resolver never needs TCP).
//!
//! It answers from a table ([`TestZone`]) and counts the queries it receives,
//! so tests can check what the resolver actually sent. It runs on a std thread
//! with a std `UdpSocket` and stops when the [`TestDns`] handle is dropped.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringmail::relay::testdns::{QType, TestDns, TestZone};
//! use ringmail::relay::dns::{DnsConfig, DnsResolver};
//!
//! let mut zone = TestZone::new();
//! zone.mx("example.test", &[(10, "mx.example.test")]);
//! zone.a("mx.example.test", &["127.0.0.1".parse().unwrap()]);
//! let (addr, dns) = TestDns::start(zone);
//! let resolver = DnsResolver::start(DnsConfig {
//!     nameservers: vec![addr],
//!     timeout: Duration::from_millis(500),
//!     attempts: 1,
//!     ..DnsConfig::default()
//! })
//! .unwrap();
//! // ... resolve, then:
//! assert!(dns.count("example.test", QType::Mx) <= 1);
//! ```
//!
//! Name lookup rules, for a query (name, type):
//! 1. a name marked [`TestZone::servfail`] answers SERVFAIL; [`TestZone::silent`]
//!    never answers; [`TestZone::nxdomain`] answers NXDOMAIN;
//!    [`TestZone::empty`] answers NODATA;
//! 2. records of that type: answered with the zone's TTL (after the name's
//!    [`TestZone::delay`], if any);
//! 3. records of another type only: NOERROR with no answer (NODATA);
//! 4. anything else: NXDOMAIN.
//!
//! Negative answers carry an SOA whose minimum is [`TestZone::negative_ttl`].
//! The zone can be changed while the server runs ([`TestDns::update`]).
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR, SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// Query types the responder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QType {
    Mx,
    A,
    Aaaa,
    Txt,
    Ptr,
    /// Any other type, by number (answered NODATA or NXDOMAIN).
    Other(u16),
}

impl From<RecordType> for QType {
    fn from(t: RecordType) -> QType {
        match t {
            RecordType::MX => QType::Mx,
            RecordType::A => QType::A,
            RecordType::AAAA => QType::Aaaa,
            RecordType::TXT => QType::Txt,
            RecordType::PTR => QType::Ptr,
            other => QType::Other(u16::from(other)),
        }
    }
}

#[derive(Debug, Clone)]
enum Data {
    Mx(Vec<(u16, String)>),
    A(Vec<Ipv4Addr>),
    Aaaa(Vec<Ipv6Addr>),
    /// One entry per TXT record; each is cut into 255-octet strings on the wire.
    Txt(Vec<String>),
    Ptr(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Empty,
    NxDomain,
    ServFail,
    Silent,
}

/// The table the responder answers from.
#[derive(Debug, Clone)]
pub struct TestZone {
    records: HashMap<(String, QType), Data>,
    modes: HashMap<String, Mode>,
    delays: HashMap<String, Duration>,
    /// TTL of positive answers, seconds (default 300).
    pub ttl: u32,
    /// SOA minimum of negative answers, seconds (default 60).
    pub negative_ttl: u32,
}

impl Default for TestZone {
    fn default() -> Self {
        TestZone {
            records: HashMap::new(),
            modes: HashMap::new(),
            delays: HashMap::new(),
            ttl: 300,
            negative_ttl: 60,
        }
    }
}

fn norm(name: &str) -> String {
    let mut n = name.trim_end_matches('.').to_string();
    n.make_ascii_lowercase();
    n
}

impl TestZone {
    pub fn new() -> TestZone {
        TestZone::default()
    }

    /// MX records of `name`: (preference, exchange). Exchange `"."` is a null MX.
    pub fn mx(&mut self, name: &str, hosts: &[(u16, &str)]) -> &mut Self {
        let v = hosts.iter().map(|(p, h)| (*p, h.to_string())).collect();
        self.records.insert((norm(name), QType::Mx), Data::Mx(v));
        self
    }

    /// A records of `name`.
    pub fn a(&mut self, name: &str, addrs: &[Ipv4Addr]) -> &mut Self {
        self.records
            .insert((norm(name), QType::A), Data::A(addrs.to_vec()));
        self
    }

    /// AAAA records of `name`.
    pub fn aaaa(&mut self, name: &str, addrs: &[Ipv6Addr]) -> &mut Self {
        self.records
            .insert((norm(name), QType::Aaaa), Data::Aaaa(addrs.to_vec()));
        self
    }

    /// TXT records of `name`, one per entry (SPF, DKIM keys, DMARC, MTA-STS).
    /// An entry longer than 255 octets goes out as several character-strings
    /// of one record, as zone files split long DKIM keys (RFC 7208 3.3).
    pub fn txt(&mut self, name: &str, records: &[&str]) -> &mut Self {
        let v = records.iter().map(|r| r.to_string()).collect();
        self.records.insert((norm(name), QType::Txt), Data::Txt(v));
        self
    }

    /// PTR records of a reverse name (`1.0.0.127.in-addr.arpa`).
    pub fn ptr(&mut self, name: &str, hosts: &[&str]) -> &mut Self {
        let v = hosts.iter().map(|h| h.to_string()).collect();
        self.records.insert((norm(name), QType::Ptr), Data::Ptr(v));
        self
    }

    /// Every query for `name` answers NXDOMAIN.
    pub fn nxdomain(&mut self, name: &str) -> &mut Self {
        self.modes.insert(norm(name), Mode::NxDomain);
        self
    }

    /// `name` exists but has no records: every query answers NODATA.
    pub fn empty(&mut self, name: &str) -> &mut Self {
        self.modes.insert(norm(name), Mode::Empty);
        self
    }

    /// Every query for `name` answers SERVFAIL.
    pub fn servfail(&mut self, name: &str) -> &mut Self {
        self.modes.insert(norm(name), Mode::ServFail);
        self
    }

    /// Queries for `name` are counted but never answered (a timeout).
    pub fn silent(&mut self, name: &str) -> &mut Self {
        self.modes.insert(norm(name), Mode::Silent);
        self
    }

    /// Answers for `name` are sent after `delay`.
    pub fn delay(&mut self, name: &str, delay: Duration) -> &mut Self {
        self.delays.insert(norm(name), delay);
        self
    }

    /// Forget everything about `name`.
    pub fn remove(&mut self, name: &str) -> &mut Self {
        let n = norm(name);
        self.records.retain(|(k, _), _| *k != n);
        self.modes.remove(&n);
        self.delays.remove(&n);
        self
    }

    fn answer(&self, query: &Message) -> Option<(Message, Duration)> {
        let q = query.queries.first()?;
        let name = norm(&q.name.to_ascii());
        let qtype = QType::from(q.query_type);
        let mut reply = Message::response(query.metadata.id, OpCode::Query);
        reply.metadata.message_type = MessageType::Response;
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.metadata.authoritative = true;
        reply.add_query(q.clone());
        let delay = self.delays.get(&name).copied().unwrap_or_default();
        let code = match self.modes.get(&name) {
            Some(Mode::Silent) => return None,
            Some(Mode::ServFail) => {
                reply.metadata.response_code = ResponseCode::ServFail;
                return Some((reply, delay));
            }
            Some(Mode::NxDomain) => ResponseCode::NXDomain,
            Some(Mode::Empty) => ResponseCode::NoError,
            None => match self.records.get(&(name.clone(), qtype)) {
                Some(data) => {
                    let owner = q.name.clone();
                    let rdatas: Vec<RData> = match data {
                        Data::Mx(v) => v
                            .iter()
                            .map(|(p, h)| RData::MX(MX::new(*p, fqdn(h))))
                            .collect(),
                        Data::A(v) => v.iter().map(|a| RData::A(A(*a))).collect(),
                        Data::Aaaa(v) => v.iter().map(|a| RData::AAAA(AAAA(*a))).collect(),
                        Data::Txt(v) => v
                            .iter()
                            .map(|t| {
                                let parts = t
                                    .as_bytes()
                                    .chunks(255)
                                    .map(|c| String::from_utf8_lossy(c).into_owned());
                                RData::TXT(TXT::new(parts.collect()))
                            })
                            .collect(),
                        Data::Ptr(v) => v.iter().map(|h| RData::PTR(PTR(fqdn(h)))).collect(),
                    };
                    for rd in rdatas {
                        reply.add_answer(Record::from_rdata(owner.clone(), self.ttl, rd));
                    }
                    return Some((reply, delay));
                }
                None if self.records.keys().any(|(k, _)| *k == name) => ResponseCode::NoError,
                None => ResponseCode::NXDomain,
            },
        };
        reply.metadata.response_code = code;
        let soa = SOA::new(
            fqdn("ns.test"),
            fqdn("hostmaster.test"),
            1,
            3600,
            600,
            86400,
            self.negative_ttl,
        );
        let zone = Name::from_ascii(parent_of(&name)).unwrap_or_else(|_| Name::root());
        reply.add_authority(Record::from_rdata(zone, self.negative_ttl, RData::SOA(soa)));
        Some((reply, delay))
    }
}

fn fqdn(name: &str) -> Name {
    let mut n = Name::from_ascii(name).unwrap_or_else(|_| Name::root());
    n.set_fqdn(true);
    n
}

fn parent_of(name: &str) -> String {
    match name.split_once('.') {
        Some((_, parent)) if !parent.is_empty() => format!("{parent}."),
        _ => ".".into(),
    }
}

struct Shared {
    zone: Mutex<TestZone>,
    counts: Mutex<HashMap<(String, QType), u64>>,
    stop: AtomicBool,
}

/// A running responder. Dropping it stops the thread (within ~50 ms).
pub struct TestDns {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl TestDns {
    /// Start answering from `zone` on `127.0.0.1:<ephemeral port>` (UDP).
    /// Returns the address to put in `DnsConfig::nameservers` and the handle.
    pub fn start(zone: TestZone) -> (SocketAddr, TestDns) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind test DNS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            zone: Mutex::new(zone),
            counts: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || serve(socket, s))
            .expect("spawn test DNS thread");
        (
            addr,
            TestDns {
                addr,
                shared,
                thread: Some(thread),
            },
        )
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Change the table while running.
    pub fn update(&self, f: impl FnOnce(&mut TestZone)) {
        f(&mut self.shared.zone.lock().unwrap());
    }

    /// Queries received for (name, type).
    pub fn count(&self, name: &str, qtype: QType) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap()
            .get(&(norm(name), qtype))
            .copied()
            .unwrap_or(0)
    }

    /// Queries received of one type, all names.
    pub fn count_type(&self, qtype: QType) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, t), _)| *t == qtype)
            .map(|(_, n)| n)
            .sum()
    }

    /// Queries received, all names and types.
    pub fn total(&self) -> u64 {
        self.shared.counts.lock().unwrap().values().sum()
    }

    /// Forget the counts.
    pub fn reset_counts(&self) {
        self.shared.counts.lock().unwrap().clear();
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = [0u8; 4096];
    // Answers may exceed 512 octets (2048-bit DKIM keys); the responder never
    // truncates, and the resolver reads whatever UDP datagram arrives.
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue, // read timeout: check the stop flag
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if let Some(q) = query.queries.first() {
            let key = (norm(&q.name.to_ascii()), QType::from(q.query_type));
            *shared.counts.lock().unwrap().entry(key).or_default() += 1;
        }
        let answer = shared.zone.lock().unwrap().answer(&query);
        let Some((reply, delay)) = answer else {
            continue;
        };
        let Ok(bytes) = reply.to_vec() else { continue };
        if delay.is_zero() {
            let _ = socket.send_to(&bytes, peer);
        } else if let Ok(s) = socket.try_clone() {
            // Bounded: one short-lived thread per delayed answer.
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = s.send_to(&bytes, peer);
            });
        }
    }
}
