//! Server CPU of one TLS handshake, in memory (no sockets, no kernel):
//! ringmail's rustls server configuration (`tls::Tls`, the generated ECDSA
//! P-256 certificate, AES-128-GCM preferred, one TLS 1.3 ticket) against the
//! same certificate with ring's default order (AES-256-GCM-SHA384 first) and
//! rustls' default two tickets, which is what the server ran before.
//!
//! Only the server's calls are timed (`iter_custom`): reading the client's
//! flight, processing it, writing the answer and the tickets. The client is a
//! rustls client with ring's default suites, as loadgen and most rustls
//! clients are, verifying the chain; "resumed" reuses its ticket store, so
//! every connection after the first resumes. Each run checks that the
//! handshake finished with the suite the configuration should pick.
//!
//! Run: `cargo bench -p ringmail-bench --bench tls`.
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ringmail::config::Config;
use ringmail::tls::Tls;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

fn client(cert: &Path, resume: bool) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut c =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    if !resume {
        c.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(c)
}

/// One handshake; returns the server's share of the time, the suite, and
/// whether the session was resumed.
fn handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> (Duration, rustls::CipherSuite, bool) {
    let name = ServerName::try_from("bench.test").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut server_time = Duration::ZERO;
    let t = Instant::now();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    server_time += t.elapsed();
    let mut wire = Vec::with_capacity(8192);
    for _ in 0..8 {
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        let t = Instant::now();
        s.read_tls(&mut &wire[..]).unwrap();
        s.process_new_packets().unwrap();
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        server_time += t.elapsed();
        c.read_tls(&mut &wire[..]).unwrap();
        c.process_new_packets().unwrap();
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            break;
        }
    }
    assert!(!s.is_handshaking() && !c.is_handshaking());
    let resumed = matches!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    (
        server_time,
        s.negotiated_cipher_suite().unwrap().suite(),
        resumed,
    )
}

/// The configuration the server ran before: ring's default suite order and
/// rustls' default ticket count, the same certificate resolver.
fn before(ours: &ServerConfig) -> Arc<ServerConfig> {
    let mut s =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(ours.cert_resolver.clone());
    s.ignore_client_order = true;
    s.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    Arc::new(s)
}

fn handshakes(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        hostname: "bench.test".into(),
        ..Config::default()
    };
    let tls = Tls::load(&config).unwrap();
    let cert = tls.certificates()[0].cert_path.clone();
    let ours = tls.server_config();
    let old = before(&ours);
    let mut g = c.benchmark_group("tls_handshake_server");
    for (label, server, suite) in [
        (
            "ringmail",
            &ours,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            "before",
            &old,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
    ] {
        for resume in [false, true] {
            let cl = client(&cert, resume);
            // Warm the ticket store and check the outcome once.
            handshake(server, &cl);
            let (_, got, resumed) = handshake(server, &cl);
            assert_eq!(got, suite, "{label}");
            assert_eq!(resumed, resume, "{label}");
            let id = format!("{label}/{}", if resume { "resumed" } else { "full" });
            g.bench_function(id, |b| {
                b.iter_custom(|n| {
                    let mut total = Duration::ZERO;
                    for _ in 0..n {
                        total += black_box(handshake(server, &cl)).0;
                    }
                    total
                })
            });
        }
    }
    g.finish();
    paired(&ours, &old, &cert);
}

/// On a shared, noisy machine the absolute figures above drift between
/// benchmarks; this alternates the two configurations in short rounds and
/// prints the median per-round ratio (ringmail / before) of server time.
fn paired(ours: &Arc<ServerConfig>, old: &Arc<ServerConfig>, cert: &Path) {
    for resume in [false, true] {
        let cl = client(cert, resume);
        let mut ratios = Vec::new();
        let (mut a_all, mut b_all) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..30 {
            let mut a = Duration::ZERO;
            let mut b = Duration::ZERO;
            for _ in 0..100 {
                a += handshake(ours, &cl).0;
                b += handshake(old, &cl).0;
            }
            a_all += a;
            b_all += b;
            ratios.push(a.as_secs_f64() / b.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "paired {}: ringmail {:.1} µs, before {:.1} µs per handshake (server side); median round ratio {:.3}",
            if resume { "resumed" } else { "full" },
            a_all.as_secs_f64() * 1e6 / 3000.0,
            b_all.as_secs_f64() * 1e6 / 3000.0,
            ratios[ratios.len() / 2]
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = handshakes
}
criterion_main!(benches);
