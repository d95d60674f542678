//! Probe group commit: N concurrent appenders, report syncs and sync time.
use ringmail::storage::{Meta, Store, StoreConfig};
use std::time::Instant;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let total: usize = 20000;
    let dir = tempfile::tempdir_in(".").unwrap();
    let path = dir.path().to_path_buf();
    glommio::LocalExecutorBuilder::default().io_memory(256 << 10).make().unwrap().run(async move {
        let meta = Meta::start_run(&path, 256).unwrap();
        let store = Store::open(StoreConfig { data_dir: path.clone(), shard: 0, shards: 1, meta, segment_size: 64 << 20, checkpoint_every_records: 1 << 40, zero_segments: std::env::var("ZERO").is_ok(), append_through_map: std::env::var("MAP").is_ok(), sync_inline_max_us: if std::env::var("INLINE").is_ok() { 2000 } else { 0 } }).unwrap();
        glommio::spawn_local(store.clone().run_syncer()).detach();
        let body = vec![b'x'; 4096];
        let t = Instant::now();
        let tasks: Vec<_> = (0..n).map(|k| { let s = store.clone(); let b = body.clone(); glommio::spawn_local(async move {
            for i in 0..total / n { s.deliver(&[format!("u{}@x", (k * 31 + i) % 1000)], b"", &b, 0).await.unwrap(); }
        })}).collect();
        for t in tasks { t.await; }
        let el = t.elapsed();
        let syncs = store.stats.syncs.get();
        println!("appenders={n} msgs={} elapsed={:?} msgs/s={:.0} syncs={syncs} per-round={:.1} avg_sync={:?} sync_share={:.0}%",
            total, el, total as f64 / el.as_secs_f64(), total as f64 / syncs as f64,
            std::time::Duration::from_nanos(store.stats.sync_nanos.get() / syncs.max(1)),
            100.0 * store.stats.sync_nanos.get() as f64 / el.as_nanos() as f64);
    });
}
