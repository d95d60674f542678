//! Latency histograms, counters, error counts, and the reports built from
//! them (human summary, JSON, hdrhistogram interval log).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Histogram range: 1 us .. 60 s, 3 significant figures. Larger values are
/// clamped to the maximum (and counted in `clamped`).
pub const HIST_MAX_US: u64 = 60_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("histogram bounds")
}

/// Histograms shared by many workers (one set per run part).
pub type SharedHists = Arc<Mutex<BTreeMap<&'static str, Histogram<u64>>>>;

/// Samples buffered by a worker before they are added to the shared
/// histograms under the lock.
const FLUSH_EVERY: usize = 512;

/// Per-worker statistics. Counters and errors are merged at the end; latency
/// samples are buffered and added to a shared set of histograms in batches,
/// so the hot path takes no locks and memory does not grow with the number
/// of connections (one histogram set is ~140 KB per op).
pub struct Stats {
    pub hists: BTreeMap<&'static str, Histogram<u64>>,
    pub errors: BTreeMap<String, u64>,
    pub counters: BTreeMap<&'static str, u64>,
    /// Operations completing before this instant (warm-up) are not recorded.
    pub measure_from: Instant,
    pub clamped: u64,
    /// Negotiated TLS version and cipher suite of the first handshake.
    pub tls_version: Option<&'static str>,
    pub tls_cipher: Option<&'static str>,
    pending: Vec<(&'static str, u64)>,
    sink: Option<SharedHists>,
}

impl Stats {
    pub fn new(measure_from: Instant) -> Stats {
        Stats {
            hists: BTreeMap::new(),
            errors: BTreeMap::new(),
            counters: BTreeMap::new(),
            measure_from,
            clamped: 0,
            tls_version: None,
            tls_cipher: None,
            pending: Vec::new(),
            sink: None,
        }
    }

    /// Stats whose latency samples go to `sink` (call [`Stats::flush`] at the end).
    pub fn with_sink(measure_from: Instant, sink: SharedHists) -> Stats {
        let mut s = Stats::new(measure_from);
        s.sink = Some(sink);
        s
    }

    /// Move buffered samples into the shared histograms.
    pub fn flush(&mut self) {
        let Some(sink) = &self.sink else { return };
        if self.pending.is_empty() {
            return;
        }
        let mut g = sink.lock().unwrap_or_else(|e| e.into_inner());
        for (op, us) in self.pending.drain(..) {
            g.entry(op).or_insert_with(new_hist).saturating_record(us);
        }
    }

    /// Take all histograms out of `sink` into this Stats.
    pub fn absorb(&mut self, sink: &SharedHists) {
        let mut g = sink.lock().unwrap_or_else(|e| e.into_inner());
        for (op, h) in std::mem::take(&mut *g) {
            self.hists
                .entry(op)
                .or_insert_with(new_hist)
                .add(&h)
                .expect("same bounds");
        }
    }

    pub fn measuring(&self, end: Instant) -> bool {
        end >= self.measure_from
    }

    /// Record `op` that started at `start` and ended at `end`.
    pub fn record(&mut self, op: &'static str, start: Instant, end: Instant) {
        self.record_dur(op, end, end.saturating_duration_since(start));
    }

    /// Record a latency for an op that ended at `end`.
    pub fn record_dur(&mut self, op: &'static str, end: Instant, d: Duration) {
        if end < self.measure_from {
            return;
        }
        let mut us = d.as_micros().min(u64::MAX as u128) as u64;
        if us > HIST_MAX_US {
            us = HIST_MAX_US;
            self.clamped += 1;
        }
        if self.sink.is_some() {
            self.pending.push((op, us.max(1)));
            if self.pending.len() >= FLUSH_EVERY {
                self.flush();
            }
        } else {
            self.hists
                .entry(op)
                .or_insert_with(new_hist)
                .saturating_record(us.max(1));
        }
    }

    /// Count an error (reply code, `-ERR CMD`, `NO CMD`, or I/O kind).
    /// Errors are counted during warm-up too.
    pub fn error(&mut self, key: impl Into<String>) {
        *self.errors.entry(key.into()).or_insert(0) += 1;
    }

    /// Add to a counter if `end` is inside the measured window.
    pub fn count(&mut self, name: &'static str, end: Instant, v: u64) {
        if end >= self.measure_from {
            *self.counters.entry(name).or_insert(0) += v;
        }
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Stats) {
        debug_assert!(other.pending.is_empty(), "flush() before merge()");
        for (k, h) in &other.hists {
            self.hists
                .entry(k)
                .or_insert_with(new_hist)
                .add(h)
                .expect("same bounds");
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &other.counters {
            *self.counters.entry(k).or_insert(0) += v;
        }
        self.clamped += other.clamped;
        self.tls_version = self.tls_version.or(other.tls_version);
        self.tls_cipher = self.tls_cipher.or(other.tls_cipher);
    }

    /// Remember the negotiated version and suite (the first one seen).
    pub fn note_tls(
        &mut self,
        version: Option<rustls::ProtocolVersion>,
        suite: Option<rustls::SupportedCipherSuite>,
    ) {
        if self.tls_version.is_none() {
            self.tls_version = version.map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                other => other.as_str().unwrap_or("unknown"),
            });
        }
        if self.tls_cipher.is_none() {
            self.tls_cipher = suite.map(|s| s.suite().as_str().unwrap_or("unknown"));
        }
    }
}

/// Live counters for the progress line (updated with relaxed atomics).
#[derive(Default)]
pub struct Live {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
}

impl Live {
    pub fn add_ok(&self, bytes: u64) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn add_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Spawn the once-a-second progress printer (stderr) if enabled.
pub fn spawn_progress(
    label: String,
    unit: &'static str,
    live: Arc<Live>,
    enabled: bool,
    t0: Instant,
) {
    if !enabled {
        return;
    }
    tokio::spawn(async move {
        let mut last_ok = 0u64;
        let mut last_t = t0;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::from_std(t0 + Duration::from_secs(1)),
            Duration::from_secs(1),
        );
        // bounded: the run ends by --max-time at the latest
        while !live.stop.load(Ordering::Relaxed) {
            tick.tick().await;
            if live.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            let ok = live.ok.load(Ordering::Relaxed);
            let rate = (ok - last_ok) as f64 / now.duration_since(last_t).as_secs_f64().max(1e-9);
            eprintln!(
                "[{:7.1}s] {label}: {rate:9.1} {unit}/s  ok {ok}  failed {}  errors {}  {:.1} MB",
                now.duration_since(t0).as_secs_f64(),
                live.failed.load(Ordering::Relaxed),
                live.errors.load(Ordering::Relaxed),
                live.bytes.load(Ordering::Relaxed) as f64 / 1e6,
            );
            last_ok = ok;
            last_t = now;
        }
    });
}

pub fn progress_enabled(flag: bool) -> bool {
    flag || std::io::stderr().is_terminal()
}

/// Latency summary of one operation, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpSummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl OpSummary {
    pub fn from_hist(h: &Histogram<u64>) -> OpSummary {
        OpSummary {
            count: h.len(),
            min_us: h.min(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One JSON report per mode. Field names are stable; see README.md.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub target: String,
    pub run_id: String,
    pub started_unix_s: f64,
    /// Length of the measured window (after warm-up), seconds.
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: u64,
    pub threads: u64,
    pub open_loop: bool,
    pub target_rate: Option<f64>,
    pub messages_ok: u64,
    pub messages_failed: u64,
    pub bytes: u64,
    pub messages_per_s: f64,
    pub mb_per_s: f64,
    pub sessions_ok: u64,
    pub sessions_failed: u64,
    pub sessions_per_s: f64,
    pub errors: BTreeMap<String, u64>,
    pub errors_total: u64,
    pub counters: BTreeMap<String, u64>,
    pub ops: BTreeMap<String, OpSummary>,
    pub latency_clamped: u64,
    pub verify: Option<crate::verify::VerifyReport>,
    /// With `--tls` / `--starttls`; null otherwise.
    pub tls: Option<TlsReport>,
}

/// TLS part of a report. Handshake counts cover the measured window; the
/// version and cipher are those of the first handshake.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TlsReport {
    /// `implicit` or `starttls`.
    pub mode: String,
    pub version: Option<String>,
    pub cipher: Option<String>,
    /// Full handshakes (with or without a HelloRetryRequest).
    pub handshakes_full: u64,
    /// Abbreviated handshakes resuming an earlier session.
    pub handshakes_resumed: u64,
    /// Full handshakes that needed a HelloRetryRequest (included in `handshakes_full`).
    pub hello_retries: u64,
}

pub struct ReportMeta {
    pub mode: &'static str,
    pub target: String,
    pub run_id: String,
    pub started: SystemTime,
    pub connections: u64,
    pub threads: u64,
    pub warmup: Duration,
    pub rate: Option<f64>,
    /// TLS mode name (`implicit`, `starttls`), None without TLS.
    pub tls: Option<&'static str>,
}

impl Report {
    /// Build a report; the counters `messages_ok`, `messages_failed`,
    /// `bytes`, `sessions_ok`, `sessions_failed` are lifted to top-level
    /// fields, the rest stays in `counters`.
    pub fn build(meta: ReportMeta, stats: &Stats, measured: Duration) -> Report {
        let secs = measured.as_secs_f64().max(1e-9);
        let mut counters: BTreeMap<String, u64> = stats
            .counters
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let mut take = |k: &str| counters.remove(k).unwrap_or(0);
        let messages_ok = take("messages_ok");
        let messages_failed = take("messages_failed");
        let bytes = take("bytes");
        let sessions_ok = take("sessions_ok");
        let sessions_failed = take("sessions_failed");
        let tls = meta.tls.map(|mode| TlsReport {
            mode: mode.to_string(),
            version: stats.tls_version.map(str::to_string),
            cipher: stats.tls_cipher.map(str::to_string),
            handshakes_full: take("tls_full"),
            handshakes_resumed: take("tls_resumed"),
            hello_retries: take("tls_hello_retry"),
        });
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        Report {
            mode: meta.mode.to_string(),
            target: meta.target,
            run_id: meta.run_id,
            started_unix_s: r3(meta
                .started
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)),
            duration_s: r3(secs),
            warmup_s: r3(meta.warmup.as_secs_f64()),
            connections: meta.connections,
            threads: meta.threads,
            open_loop: meta.rate.is_some(),
            target_rate: meta.rate,
            messages_ok,
            messages_failed,
            bytes,
            messages_per_s: r3(messages_ok as f64 / secs),
            mb_per_s: r3(bytes as f64 / 1e6 / secs),
            sessions_ok,
            sessions_failed,
            sessions_per_s: r3(sessions_ok as f64 / secs),
            errors_total: stats.errors.values().sum(),
            errors: stats.errors.clone(),
            counters,
            ops: stats
                .hists
                .iter()
                .map(|(k, h)| (k.to_string(), OpSummary::from_hist(h)))
                .collect(),
            latency_clamped: stats.clamped,
            verify: None,
            tls,
        }
    }

    /// Human-readable summary.
    pub fn human(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== {} {} (run {}): {} connections, {} thread(s), {}",
            self.mode,
            self.target,
            self.run_id,
            self.connections,
            self.threads,
            match self.target_rate {
                Some(r) => format!("open loop at {r} /s"),
                None => "closed loop".into(),
            }
        );
        let _ = writeln!(
            s,
            "measured {:.3} s (after {:.1} s warm-up)",
            self.duration_s, self.warmup_s
        );
        if self.messages_ok + self.messages_failed > 0 {
            let _ = writeln!(
                s,
                "messages: {} ok, {} failed; {:.1} msg/s, {:.2} MB/s ({} bytes)",
                self.messages_ok,
                self.messages_failed,
                self.messages_per_s,
                self.mb_per_s,
                self.bytes
            );
        }
        if self.sessions_ok + self.sessions_failed > 0 {
            let _ = writeln!(
                s,
                "sessions: {} ok, {} failed; {:.1} sessions/s",
                self.sessions_ok, self.sessions_failed, self.sessions_per_s
            );
        }
        if let Some(t) = &self.tls {
            let negotiated: Vec<&str> = [t.version.as_deref(), t.cipher.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            let _ = writeln!(
                s,
                "tls: {}, {}; handshakes: {} full, {} resumed{}",
                t.mode,
                if negotiated.is_empty() {
                    "no handshake completed".to_string()
                } else {
                    negotiated.join(" ")
                },
                t.handshakes_full,
                t.handshakes_resumed,
                if t.hello_retries > 0 {
                    format!(" ({} with HelloRetryRequest)", t.hello_retries)
                } else {
                    String::new()
                }
            );
        }
        for (k, v) in &self.counters {
            let _ = writeln!(s, "{k}: {v}");
        }
        let _ = writeln!(
            s,
            "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}   (microseconds)",
            "op", "count", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        for (k, o) in &self.ops {
            let _ = writeln!(
                s,
                "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10.1}",
                k, o.count, o.p50_us, o.p90_us, o.p99_us, o.p999_us, o.max_us, o.mean_us
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors: none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(s, "errors ({}): {}", self.errors_total, list.join(", "));
        }
        if self.latency_clamped > 0 {
            let _ = writeln!(
                s,
                "note: {} latencies above 60 s were clamped to 60 s",
                self.latency_clamped
            );
        }
        if let Some(v) = &self.verify {
            let _ = writeln!(s, "{}", v.human());
        }
        s
    }
}

/// Write all histograms as an hdrhistogram interval log (V2 deflate
/// serialization, base64), one entry per op tagged with `<prefix><op>`.
pub fn write_hdr_log(
    path: &std::path::Path,
    parts: &[(&str, &Stats)],
    started: SystemTime,
    measured: Duration,
) -> std::io::Result<()> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut ser = V2DeflateSerializer::new();
    {
        let mut builder = IntervalLogWriterBuilder::new();
        builder.add_comment("loadgen latency histograms, values in microseconds");
        builder.with_start_time(started).with_base_time(started);
        builder.with_max_value_divisor(1.0);
        let mut w = builder.begin_log_with(&mut f, &mut ser)?;
        for (prefix, stats) in parts {
            for (op, h) in &stats.hists {
                let name = format!("{prefix}{op}");
                let tag = Tag::new(&name);
                w.write_histogram(h, Duration::ZERO, measured, tag)
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            }
        }
    }
    use std::io::Write;
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_stats() -> Stats {
        let t0 = Instant::now();
        let mut s = Stats::new(t0);
        for i in 1..=1000u64 {
            s.record_dur("message", t0, Duration::from_micros(i));
        }
        s.record_dur("connect", t0, Duration::from_micros(50));
        s.error("452");
        s.error("452");
        s.error("timeout");
        s.count("messages_ok", t0, 1000);
        s.count("messages_failed", t0, 2);
        s.count("bytes", t0, 4_096_000);
        s.count("rcpt_rejected", t0, 2);
        s
    }

    #[test]
    fn warmup_is_not_recorded() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0 + Duration::from_secs(10));
        s.record_dur("x", t0, Duration::from_millis(1));
        s.count("messages_ok", t0, 1);
        assert!(s.hists.is_empty());
        assert_eq!(s.counter("messages_ok"), 0);
        s.error("421");
        assert_eq!(s.errors["421"], 1);
    }

    #[test]
    fn shared_sink_collects_all_samples() {
        let t0 = Instant::now();
        let sink = SharedHists::default();
        let mut a = Stats::with_sink(t0, sink.clone());
        let mut b = Stats::with_sink(t0, sink.clone());
        for i in 0..1000u64 {
            a.record_dur("x", t0, Duration::from_micros(i + 1));
            b.record_dur("x", t0, Duration::from_micros(i + 1));
        }
        a.flush();
        b.flush();
        assert!(a.hists.is_empty());
        let mut total = Stats::new(t0);
        total.merge(&a);
        total.merge(&b);
        total.absorb(&sink);
        assert_eq!(total.hists["x"].len(), 2000);
        assert_eq!(total.hists["x"].max(), 1000);
    }

    #[test]
    fn merge_adds_up() {
        let mut a = sample_stats();
        a.merge(&sample_stats());
        assert_eq!(a.hists["message"].len(), 2000);
        assert_eq!(a.errors["452"], 4);
        assert_eq!(a.counter("bytes"), 8_192_000);
    }

    #[test]
    fn json_shape() {
        let stats = sample_stats();
        let meta = ReportMeta {
            mode: "smtp",
            target: "127.0.0.1:2525".into(),
            run_id: "abc".into(),
            started: UNIX_EPOCH,
            connections: 32,
            threads: 1,
            warmup: Duration::ZERO,
            rate: None,
            tls: None,
        };
        let r = Report::build(meta, &stats, Duration::from_secs(2));
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        let obj = v.as_object().unwrap();
        for k in [
            "mode",
            "target",
            "run_id",
            "started_unix_s",
            "duration_s",
            "warmup_s",
            "connections",
            "threads",
            "open_loop",
            "target_rate",
            "messages_ok",
            "messages_failed",
            "bytes",
            "messages_per_s",
            "mb_per_s",
            "sessions_ok",
            "sessions_failed",
            "sessions_per_s",
            "errors",
            "errors_total",
            "counters",
            "ops",
            "latency_clamped",
            "verify",
            "tls",
        ] {
            assert!(obj.contains_key(k), "missing field {k}");
        }
        assert_eq!(
            obj.len(),
            25,
            "unexpected extra fields: {:?}",
            obj.keys().collect::<Vec<_>>()
        );
        assert_eq!(v["messages_ok"], 1000);
        assert_eq!(v["messages_per_s"], 500.0);
        assert_eq!(v["mb_per_s"], 2.048);
        assert_eq!(v["errors"]["452"], 2);
        assert_eq!(v["errors_total"], 3);
        assert_eq!(v["counters"]["rcpt_rejected"], 2);
        assert!(v["counters"].get("messages_ok").is_none());
        assert_eq!(v["open_loop"], false);
        assert!(v["target_rate"].is_null());
        let m = &v["ops"]["message"];
        for k in [
            "count", "min_us", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
        ] {
            assert!(m.get(k).is_some(), "op field {k}");
        }
        assert_eq!(m["count"], 1000);
        assert_eq!(m["p50_us"], 500);
        assert_eq!(m["max_us"], 1000);
        assert!(r.human().contains("errors (3): 452: 2, timeout: 1"));
        assert!(v["tls"].is_null());
        assert!(!r.human().contains("tls:"));
    }

    #[test]
    fn tls_part_of_the_report() {
        let t0 = Instant::now();
        let mut stats = sample_stats();
        let mut other = Stats::new(t0);
        other.record_dur("tls_handshake", t0, Duration::from_micros(900));
        other.count("tls_full", t0, 2);
        other.count("tls_resumed", t0, 8);
        other.note_tls(Some(rustls::ProtocolVersion::TLSv1_3), None);
        other.note_tls(Some(rustls::ProtocolVersion::TLSv1_2), None);
        stats.merge(&other);
        let meta = ReportMeta {
            mode: "pop3",
            target: "127.0.0.1:9950".into(),
            run_id: "abc".into(),
            started: UNIX_EPOCH,
            connections: 1,
            threads: 1,
            warmup: Duration::ZERO,
            rate: None,
            tls: Some("implicit"),
        };
        let r = Report::build(meta, &stats, Duration::from_secs(1));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["tls"]["mode"], "implicit");
        assert_eq!(v["tls"]["version"], "TLSv1.3");
        assert!(v["tls"]["cipher"].is_null());
        assert_eq!(v["tls"]["handshakes_full"], 2);
        assert_eq!(v["tls"]["handshakes_resumed"], 8);
        assert_eq!(v["tls"]["hello_retries"], 0);
        assert!(v["counters"].get("tls_full").is_none());
        assert_eq!(v["ops"]["tls_handshake"]["count"], 1);
        let h = r.human();
        assert!(
            h.contains("tls: implicit, TLSv1.3; handshakes: 2 full, 8 resumed"),
            "{h}"
        );
        assert!(h.contains("tls_handshake"), "{h}");
    }

    #[test]
    fn hdr_log_roundtrip() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        let stats = sample_stats();
        let dir = std::env::temp_dir().join(format!("loadgen-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.hlog");
        write_hdr_log(
            &p,
            &[("smtp.", &stats)],
            SystemTime::now(),
            Duration::from_secs(1),
        )
        .unwrap();
        let data = std::fs::read(&p).unwrap();
        let tags: Vec<String> = IntervalLogIterator::new(&data)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(h) => h.tag().map(|t| t.as_str().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(tags, vec!["smtp.connect", "smtp.message"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
