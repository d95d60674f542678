//! Benchmarks live in benches/; this is what several of them share.
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringmail::storage::{index, Meta, Store, StoreConfig};

/// A one-shard store in `dir` with its syncer running (call inside an
/// executor). `sync_inline_max_us` as in `[storage]` (0: every fdatasync
/// through io_uring).
pub fn open_store(dir: &Path, sync_inline_max_us: u64) -> Rc<Store> {
    let meta = Meta::start_run(dir, 256).unwrap();
    let store = Store::open(StoreConfig {
        data_dir: dir.into(),
        shard: 0,
        shards: 1,
        meta,
        segment_size: 64 << 20,
        checkpoint_every_records: 1 << 40,
        zero_segments: false,
        append_through_map: false,
        sync_inline_max_us,
    })
    .unwrap();
    glommio::spawn_local(store.clone().run_syncer()).detach();
    store
}

/// Run `f` to completion on a fresh glommio executor.
pub fn executor<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .io_memory(256 << 10)
        .make()
        .unwrap()
        .run(f)
}

/// The time `iters` durable deliveries of `body` take when `appenders`
/// tasks deliver at once into 1,000 accounts (the first segment is created
/// before timing). Checks that every delivery reached the index, so a fast
/// wrong answer fails instead of looking good.
pub async fn timed_appends(
    store: Rc<Store>,
    body: Vec<u8>,
    appenders: usize,
    iters: u64,
) -> Duration {
    store
        .deliver(&["warmup@bench.test".to_string()], b"", &body, 0)
        .await
        .unwrap();
    let per = (iters as usize).div_ceil(appenders);
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|t| {
            let store = store.clone();
            let body = body.clone();
            glommio::spawn_local(async move {
                for i in 0..per {
                    let account = format!("u{}@bench.test", (t * 7919 + i) % 1000);
                    store.deliver(&[account], b"", &body, 0).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    let elapsed = start.elapsed();
    let total: usize = (0..1000)
        .filter_map(|a| {
            store.with_account(&format!("u{a}@bench.test"), |acc| {
                acc.mailbox(index::INBOX).unwrap().messages.len()
            })
        })
        .sum();
    assert_eq!(total, per * appenders);
    elapsed.mul_f64(iters as f64 / (per * appenders) as f64)
}
