//! Storage benchmarks: durable append with group commit, and start-up from a
//! checkpoint of 100,000 messages. Each checks its result, so a fast wrong
//! answer fails instead of looking good.
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringmail_bench::{executor, open_store, timed_appends};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmail::storage::{index, Store};

fn open(dir: &std::path::Path) -> Rc<Store> {
    open_store(dir, 0)
}

/// `appenders` concurrent deliveries of 4 KiB messages; every round of the
/// syncer makes all of them durable with one fdatasync.
fn append_group_commit(c: &mut Criterion) {
    let body = vec![b'x'; 4096];
    let mut g = c.benchmark_group("append_4k_durable");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for appenders in [1usize, 16, 64] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::from_parameter(appenders),
            &appenders,
            |b, &appenders| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().to_path_buf();
                    let body = body.clone();
                    executor(
                        async move { timed_appends(open(&path), body, appenders, iters).await },
                    )
                })
            },
        );
    }
    g.finish();
}

/// Start-up (recovery) of a store whose checkpoint holds 100,000 messages.
fn checkpoint_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let p2 = path.clone();
    executor(async move {
        let store = open(&p2);
        let accounts: Vec<String> = (0..1000).map(|a| format!("u{a}@bench.test")).collect();
        for i in 0..100 {
            // 1000 accounts x 100 messages; one commit per 1000 copies.
            store
                .deliver(&accounts, b"", format!("m{i}\r\n").as_bytes(), i)
                .await
                .unwrap();
        }
        store.checkpoint_all().await.unwrap();
    });
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.bench_function("open_100k_messages_checkpointed", |b| {
        b.iter(|| {
            let p = path.clone();
            executor(async move {
                let store = open(&p);
                let n: usize = (0..1000)
                    .filter_map(|a| {
                        store.with_account(&format!("u{a}@bench.test"), |acc| {
                            acc.mailbox(index::INBOX).unwrap().messages.len()
                        })
                    })
                    .sum();
                assert_eq!(n, 100_000);
            })
        })
    });
    g.finish();
}

/// The walks `publish_metrics` makes every ten seconds on each shard (live
/// bytes per segment, message count) over 100,000 messages in one account,
/// and the same over 1,000 accounts of 100: each runs on the executor, so
/// its time is a stall every session of the shard sees.
fn metrics_walks(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_walk_100k_messages");
    g.sample_size(10);
    for (label, accounts) in [("1_account", 1usize), ("1000_accounts", 1000)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let names: Vec<String> = (0..accounts).map(|a| format!("u{a}@bench.test")).collect();
        let per = 100_000 / accounts;
        g.bench_function(label, |b| {
            let p = path.clone();
            let names = names.clone();
            b.iter_custom(move |iters| {
                let p = p.clone();
                let names = names.clone();
                executor(async move {
                    let store = open(&p);
                    if store.message_count() == 0 {
                        for i in 0..per {
                            store
                                .deliver(&names, b"", format!("m{i}\r\n").as_bytes(), i as i64)
                                .await
                                .unwrap();
                        }
                    }
                    let start = Instant::now();
                    for _ in 0..iters {
                        let live: u64 = store.segment_usage().iter().map(|s| s.live).sum();
                        let n = store.message_count();
                        assert_eq!(n, 100_000);
                        assert!(live > 0);
                    }
                    let t = start.elapsed();
                    store.checkpoint_all().await.unwrap();
                    t
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, append_group_commit, checkpoint_load, metrics_walks);
criterion_main!(benches);
