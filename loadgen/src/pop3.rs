//! POP3 reader (RFC 1939): per session USER/PASS, STAT, LIST, UIDL, RETR
//! each message (up to --max-retr), DELE if asked, QUIT.
//!
//! Ops: `connect`, `tls_handshake` (--tls; --starttls: STLS sent until the
//! handshake is done), `greeting`, `login` (USER+PASS), `stat`, `list`, `uidl`,
//! `retr` (each), `dele` (each), `quit`, `session` (connect to QUIT reply;
//! with --rate, from the session's intended start), `schedule_lag` (--rate
//! only: how late a session started). Failed commands are counted as
//! `-ERR <COMMAND>`.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::Pop3Opts;
use crate::conn::{io_error_key, keyed, protocol_error, Conn};
use crate::env::{Accounts, Env};
use crate::sched::{latency_from, Pacer, Schedule};
use crate::stats::{Live, SharedHists, Stats};
use crate::tls::TlsCtx;

pub struct Pop3Client {
    pub conn: Conn,
}

/// `+OK` -> true, `-ERR` -> false, anything else is a protocol error.
pub fn parse_status(line: &[u8]) -> io::Result<bool> {
    if line.starts_with(b"+OK") {
        Ok(true)
    } else if line.starts_with(b"-ERR") {
        Ok(false)
    } else {
        Err(protocol_error(format!(
            "bad POP3 status: {:?}",
            String::from_utf8_lossy(&line[..line.len().min(80)])
        )))
    }
}

/// Parse a `n size` / `n uid` scan line.
pub fn parse_scan_line(line: &[u8]) -> Option<(u64, &[u8])> {
    let s = std::str::from_utf8(line).ok()?;
    let mut it = s.split_ascii_whitespace();
    let n = it.next()?.parse().ok()?;
    let rest = it.next()?;
    Some((n, rest.as_bytes()))
}

impl Pop3Client {
    pub async fn connect(
        addr: &str,
        timeout: Duration,
        tls: Option<&Arc<TlsCtx>>,
        st: &mut Stats,
    ) -> io::Result<Pop3Client> {
        let conn = Conn::open(addr, timeout, 0, tls, st).await?;
        let t1 = Instant::now();
        let mut c = Pop3Client { conn };
        if !c.status().await? {
            return Err(protocol_error("greeting was -ERR"));
        }
        st.record("greeting", t1, Instant::now());
        if c.conn.wants_starttls() {
            let t = Instant::now();
            if !c.cmd("STLS").await? {
                return Err(keyed(
                    io::ErrorKind::InvalidData,
                    "-ERR STLS",
                    "STLS refused",
                ));
            }
            c.conn.upgrade(st, t).await?;
        }
        Ok(c)
    }

    pub async fn status(&mut self) -> io::Result<bool> {
        let l = self.conn.read_line().await?;
        parse_status(l)
    }

    /// Send a command line (without CRLF) and read the status.
    pub async fn cmd(&mut self, line: &str) -> io::Result<bool> {
        let mut b = Vec::with_capacity(line.len() + 2);
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.conn.write_all(&b).await?;
        self.status().await
    }

    /// STAT: (message count, octets).
    pub async fn stat(&mut self) -> io::Result<Option<(u64, u64)>> {
        self.conn.write_all(b"STAT\r\n").await?;
        let l = self.conn.read_line().await?;
        if !parse_status(l)? {
            return Ok(None);
        }
        let s = std::str::from_utf8(l).unwrap_or("");
        let mut it = s.split_ascii_whitespace().skip(1);
        let n = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let o = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        Ok(Some((n, o)))
    }

    /// Multi-line scan listing (LIST or UIDL): message numbers.
    pub async fn listing(&mut self, cmd: &[u8]) -> io::Result<Option<Vec<u64>>> {
        self.conn.write_all(cmd).await?;
        if !self.status().await? {
            return Ok(None);
        }
        let mut v = Vec::new();
        for _ in 0..10_000_000 {
            let l = self.conn.read_line().await?;
            if l == b"." {
                return Ok(Some(v));
            }
            if let Some((n, _)) = parse_scan_line(l) {
                v.push(n);
            }
        }
        Err(protocol_error("listing too long"))
    }

    /// RETR n; the unstuffed message is appended to `out` when given.
    /// Returns the message size, or None on -ERR.
    pub async fn retr(&mut self, n: u64, out: Option<&mut Vec<u8>>) -> io::Result<Option<u64>> {
        let cmd = format!("RETR {n}\r\n");
        self.conn.write_all(cmd.as_bytes()).await?;
        if !self.status().await? {
            return Ok(None);
        }
        self.conn.read_dot_block(out).await.map(Some)
    }

    pub async fn login(&mut self, user: &str, pass: &str) -> io::Result<Result<(), &'static str>> {
        if !self.cmd(&format!("USER {user}")).await? {
            return Ok(Err("-ERR USER"));
        }
        if !self.cmd(&format!("PASS {pass}")).await? {
            return Ok(Err("-ERR PASS"));
        }
        Ok(Ok(()))
    }
}

struct Shared {
    target: String,
    opts: Pop3Opts,
    accounts: Arc<Accounts>,
    env: Env,
    next: AtomicU64,
    total: u64,
    deadline: Instant,
    /// --rate: when each session is due, and the thread that releases them.
    schedule: Option<Schedule>,
    pacer: Option<Pacer>,
    live: Arc<Live>,
    measure_from: Instant,
    hists: SharedHists,
}

/// One session; `intended`: when it was due (its start, in a closed loop).
async fn session(
    sh: &Shared,
    st: &mut Stats,
    account: usize,
    intended: Instant,
) -> io::Result<bool> {
    let t0 = Instant::now();
    let mut c = Pop3Client::connect(&sh.target, sh.env.timeout, sh.env.tls.as_ref(), st).await?;
    let t = Instant::now();
    match c
        .login(&sh.accounts.logins[account], &sh.accounts.password)
        .await?
    {
        Ok(()) => st.record("login", t, Instant::now()),
        Err(k) => {
            st.error(k);
            sh.live.add_error();
            let _ = c.cmd("QUIT").await;
            return Ok(false);
        }
    }
    let t = Instant::now();
    match c.stat().await? {
        Some(_) => st.record("stat", t, Instant::now()),
        None => st.error("-ERR STAT"),
    }
    let t = Instant::now();
    let nums = match c.listing(b"LIST\r\n").await? {
        Some(v) => {
            st.record("list", t, Instant::now());
            v
        }
        None => {
            st.error("-ERR LIST");
            Vec::new()
        }
    };
    let t = Instant::now();
    match c.listing(b"UIDL\r\n").await? {
        Some(_) => st.record("uidl", t, Instant::now()),
        None => st.error("-ERR UIDL"),
    }
    let limit = sh.opts.max_retr.unwrap_or(u64::MAX) as usize;
    for &n in nums.iter().take(limit) {
        let t = Instant::now();
        match c.retr(n, None).await? {
            Some(size) => {
                let end = Instant::now();
                st.record("retr", t, end);
                st.count("messages_ok", end, 1);
                st.count("bytes", end, size);
                sh.live.add_ok(size);
            }
            None => {
                st.error("-ERR RETR");
                sh.live.add_error();
                st.count("messages_failed", Instant::now(), 1);
                sh.live.add_failed();
            }
        }
        if sh.opts.delete {
            let t = Instant::now();
            if c.cmd(&format!("DELE {n}")).await? {
                st.record("dele", t, Instant::now());
                st.count("deleted", Instant::now(), 1);
            } else {
                st.error("-ERR DELE");
                sh.live.add_error();
            }
        }
    }
    let t = Instant::now();
    let ok = c.cmd("QUIT").await?;
    let end = Instant::now();
    st.record("quit", t, end);
    if !ok {
        st.error("-ERR QUIT");
        return Ok(false);
    }
    st.record_dur("session", end, latency_from(intended, t0, end));
    Ok(true)
}

async fn worker(sh: Arc<Shared>) -> Stats {
    let mut st = Stats::with_sink(sh.measure_from, sh.hists.clone());
    loop {
        if sh.live.stop.load(Ordering::Relaxed) || Instant::now() >= sh.deadline {
            break;
        }
        let s = match &sh.pacer {
            Some(p) => match p.next(|| sh.next.fetch_add(1, Ordering::Relaxed)).await {
                Some(s) => s,
                None => break,
            },
            None => sh.next.fetch_add(1, Ordering::Relaxed),
        };
        if s >= sh.total {
            break;
        }
        let now = Instant::now();
        let intended = match &sh.schedule {
            Some(sched) => {
                let due = sched.intended(s);
                st.record_dur("schedule_lag", now, now.saturating_duration_since(due));
                due
            }
            None => now,
        };
        let account = (s % sh.accounts.len() as u64) as usize;
        let r = session(&sh, &mut st, account, intended).await;
        let end = Instant::now();
        match r {
            Ok(true) => st.count("sessions_ok", end, 1),
            Ok(false) => st.count("sessions_failed", end, 1),
            Err(e) => {
                st.count("sessions_failed", end, 1);
                st.error(io_error_key(&e));
                sh.live.add_error();
                let wake = (end + Duration::from_millis(20)).min(sh.deadline);
                tokio::time::sleep_until(wake.into()).await;
            }
        }
    }
    st.flush();
    st
}

pub async fn run(
    target: String,
    connections: u32,
    opts: Pop3Opts,
    accounts: Arc<Accounts>,
    env: Env,
    live: Arc<Live>,
) -> (Stats, Duration) {
    let t0 = Instant::now();
    let mut deadline = t0 + env.max_time;
    if let Some(d) = opts.duration {
        deadline = deadline.min(t0 + Duration::from_secs_f64(d));
    }
    let total = match (opts.sessions, opts.duration, opts.rate) {
        (Some(s), _, _) => s,
        (None, Some(d), Some(r)) => (d * r).ceil() as u64,
        (None, Some(_), None) => u64::MAX,
        (None, None, _) => accounts.len() as u64,
    };
    let measure_from = t0 + Duration::from_secs_f64(opts.warmup);
    let (schedule, pacer) =
        crate::sched::open_loop(opts.rate, t0, total, deadline, &live, connections as usize);
    let sh = Arc::new(Shared {
        target,
        opts,
        accounts,
        env,
        next: AtomicU64::new(0),
        total,
        deadline,
        schedule,
        pacer,
        live,
        measure_from,
        hists: SharedHists::default(),
    });
    let hs: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(sh.clone())))
        .collect();
    let mut stats = Stats::new(measure_from);
    for h in hs {
        match h.await {
            Ok(s) => stats.merge(&s),
            Err(e) => {
                stats.error("worker_panic");
                eprintln!("loadgen: pop3 worker failed: {e}");
            }
        }
    }
    stats.absorb(&sh.hists);
    (
        stats,
        Instant::now().saturating_duration_since(measure_from),
    )
}

/// Read every message of one mailbox (for --verify); `each` gets the
/// unstuffed bytes of every message.
pub async fn fetch_all(
    addr: &str,
    user: &str,
    pass: &str,
    timeout: Duration,
    tls: Option<&Arc<TlsCtx>>,
    mut each: impl FnMut(&[u8]),
) -> Result<u64, String> {
    let mut st = Stats::new(Instant::now());
    let mut c = Pop3Client::connect(addr, timeout, tls, &mut st)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match c.login(user, pass).await.map_err(|e| e.to_string())? {
        Ok(()) => {}
        Err(k) => return Err(format!("login as {user}: {k}")),
    }
    let nums = c
        .listing(b"LIST\r\n")
        .await
        .map_err(|e| e.to_string())?
        .ok_or("LIST failed")?;
    let mut buf = Vec::new();
    for &n in &nums {
        buf.clear();
        c.retr(n, Some(&mut buf))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("RETR {n} failed"))?;
        each(&buf);
    }
    let _ = c.cmd("QUIT").await;
    Ok(nums.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_scan_lines() {
        assert!(parse_status(b"+OK 2 320").unwrap());
        assert!(parse_status(b"+OK").unwrap());
        assert!(!parse_status(b"-ERR no such message").unwrap());
        assert!(parse_status(b"* OK imap").is_err());
        assert_eq!(parse_scan_line(b"3 1200"), Some((3, &b"1200"[..])));
        assert_eq!(
            parse_scan_line(b"12 whqtswO00WBw418f9t5JxYwZ"),
            Some((12, &b"whqtswO00WBw418f9t5JxYwZ"[..]))
        );
        assert_eq!(parse_scan_line(b"x 1"), None);
        assert_eq!(parse_scan_line(b"1"), None);
    }
}
