//! The per-message hot path, without sockets and without a disk, so a
//! regression in either half shows in one command
//! (`cargo bench -p ringmail-bench --bench hotpath`):
//! - `smtp_session_transaction`: the SMTP session (parser, state machine,
//!   DATA receiver, Received: header, replies) for one whole 4 KiB
//!   transaction from a byte buffer: a new session per message (banner,
//!   EHLO ... QUIT, what smtp-source does by default) and one message of a
//!   reused session (MAIL ... end of data, `smtp-source -d`);
//! - `store_append_commit_tmpfs`: `Store::deliver` (UID, record, append,
//!   group commit, index update) on a tmpfs, where fdatasync costs next to
//!   nothing: the CPU side of a durable delivery.
//!
//! Each checks its result, so a fast wrong answer fails instead of looking
//! good.
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmail::session::smtp::{
    DeliveryOutcome, RcptVerdict, SmtpContext, SmtpEvent, SmtpParams, SmtpSession,
};
use ringmail_bench::{executor, open_store, timed_appends};

struct Ctx;

impl SmtpContext for Ctx {
    fn recipient(&self, address: &str) -> RcptVerdict {
        RcptVerdict::Local {
            account: address.to_ascii_lowercase(),
        }
    }
    fn now_unix(&self) -> i64 {
        1_800_000_000
    }
}

fn params(session_id: u64) -> SmtpParams {
    SmtpParams {
        require_tls: false,
        hostname: "mx.bench.test".into(),
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        message_size_max: 10 << 20,
        recipients_max: 100,
        errors_max: 10,
        session_id,
        auth: false,
        starttls: true,
        tls: None,
        submission: false,
        relay_client: false,
        auth_failures_max: 3,
    }
}

/// The DATA payload smtp-source sends for `-l 4096`: header lines, then
/// text lines up to the size, dot-terminated.
fn message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: <bench@example.test>\r\nTo: <u@example.test>\r\nSubject: bench\r\n\r\n".to_vec();
    while m.len() < size {
        m.extend_from_slice(b"La de da de da 1. La de da de da 2. La de da de da 3. La de da\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

/// Feed `input` to the session until it needs more bytes; the body length
/// of a delivered message, if one was.
fn run(s: &mut SmtpSession, mut input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut delivered = None;
    loop {
        let (used, ev) = s.advance(input, &Ctx, out);
        input = &input[used..];
        match ev {
            SmtpEvent::Deliver(tx) => {
                delivered = Some(tx.body.len());
                s.delivered(DeliveryOutcome::Stored, out);
            }
            SmtpEvent::NeedInput | SmtpEvent::Close => return delivered,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn smtp_session(c: &mut Criterion) {
    let msg = message(4096);
    let mut g = c.benchmark_group("smtp_session_transaction");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(4096);
    let envelope = b"MAIL FROM:<bench@example.test>\r\nRCPT TO:<u1@example.test>\r\nDATA\r\n";
    g.bench_function("new_session_4k", |b| {
        let mut id = 0;
        b.iter(|| {
            id += 1;
            out.clear();
            let mut s = SmtpSession::new(params(id));
            s.greeting(&mut out);
            run(&mut s, b"EHLO client.bench.test\r\n", &mut out);
            run(&mut s, envelope, &mut out);
            let len = run(&mut s, &msg, &mut out).expect("a delivery");
            run(&mut s, b"QUIT\r\n", &mut out);
            assert!(len > 4096 && out.ends_with(b"\r\n"));
            len
        })
    });
    let mut s = SmtpSession::new(params(1));
    s.greeting(&mut out);
    run(&mut s, b"EHLO client.bench.test\r\n", &mut out);
    g.bench_function("reused_session_4k", |b| {
        b.iter(|| {
            out.clear();
            run(&mut s, envelope, &mut out);
            let len = run(&mut s, &msg, &mut out).expect("a delivery");
            assert!(out.starts_with(b"250"));
            len
        })
    });
    g.finish();
}

fn store_tmpfs(c: &mut Criterion) {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("store_append_commit_tmpfs: no /dev/shm, skipped");
        return;
    }
    let body = message(4096);
    let mut g = c.benchmark_group("store_append_commit_tmpfs");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for appenders in [1usize, 32] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::from_parameter(appenders),
            &appenders,
            |b, &appenders| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir_in(shm).unwrap();
                    let path = dir.path().to_path_buf();
                    let body = body.clone();
                    executor(async move {
                        // fdatasync on the executor, as the server does on a fast disk.
                        timed_appends(open_store(&path, 2000), body, appenders, iters).await
                    })
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, smtp_session, store_tmpfs);
criterion_main!(benches);
