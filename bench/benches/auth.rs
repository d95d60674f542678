//! Costs of sender authentication work: DKIM signing of a 4 KiB and a
//! 1 MiB message with ed25519-sha256 and rsa-sha256 (2048 bits), and the
//! login throttle's table operations. Each benchmark checks its result (a
//! signature header for the right domain and selector; the counts the
//! throttle reports), so a fast wrong answer fails.
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmail::dkim::{generate, Algorithm, Keys};
use ringmail::runtime::throttle::{Key, Op, Policy, Table};

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: alice@example.org\r\nTo: bob@far.test\r\nSubject: bench\r\nDate: Fri, 4 Dec 2026 12:00:00 +0000\r\nMessage-ID: <b@example.org>\r\n\r\n".to_vec();
    while m.len() < size {
        m.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n",
        );
    }
    m
}

fn dkim_signing(c: &mut Criterion) {
    let mut g = c.benchmark_group("dkim_sign");
    for (alg, selector) in [(Algorithm::Ed25519, "ed"), (Algorithm::Rsa, "rsa")] {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), "example.org", selector, alg).unwrap();
        let keys = Keys::load(dir.path()).unwrap();
        for size in [4096usize, 1 << 20] {
            let m = message(size);
            let h = String::from_utf8(keys.sign("example.org", &m).unwrap()).unwrap();
            assert!(
                h.starts_with("DKIM-Signature: ")
                    && h.contains("d=example.org")
                    && h.contains(&format!("s={selector}")),
                "{h}"
            );
            g.throughput(Throughput::Bytes(m.len() as u64));
            g.bench_with_input(BenchmarkId::new(selector, size), &m, |b, m| {
                b.iter(|| black_box(keys.sign("example.org", black_box(m)).unwrap()))
            });
        }
    }
    g.finish();
}

fn throttle(c: &mut Criterion) {
    let policy = Policy {
        delay_base: Duration::from_millis(500),
        delay_max: Duration::from_secs(15),
        ban_after: 10,
        ban: Duration::from_secs(900),
        window: Duration::from_secs(3600),
        account_lock_after: 100,
    };
    let mut table = Table::default();
    // A table with 10,000 addresses that failed once.
    for i in 0..10_000u32 {
        table.apply(
            &Key::addr(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()),
            Op::Fail,
            1000,
            &policy,
        );
    }
    let known = Key::addr("10.0.0.7".parse().unwrap());
    let unknown = Key::addr("192.0.2.1".parse().unwrap());
    assert_eq!(table.apply(&known, Op::Peek, 1000, &policy).failures, 1);
    assert_eq!(table.apply(&unknown, Op::Peek, 1000, &policy).failures, 0);
    c.bench_function("throttle_peek_known", |b| {
        b.iter(|| black_box(table.apply(black_box(&known), Op::Peek, 1000, &policy)))
    });
    c.bench_function("throttle_peek_unknown", |b| {
        b.iter(|| black_box(table.apply(black_box(&unknown), Op::Peek, 1000, &policy)))
    });
    c.bench_function("throttle_key_of_ipv6", |b| {
        b.iter(|| black_box(Key::addr(black_box("2001:db8:1:2::99".parse().unwrap()))))
    });
}

criterion_group!(benches, dkim_signing, throttle);
criterion_main!(benches);
