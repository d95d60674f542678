//! SMTP sender: EHLO once per connection, then per message MAIL/RCPT/DATA
//! (pipelined per RFC 2920 when advertised) or BDAT (RFC 3030).
//!
//! Ops recorded (microseconds):
//! - `connect`: TCP handshake; `tls_handshake` (--tls: the handshake;
//!   --starttls: STARTTLS sent until the handshake is done); `greeting`:
//!   wait for the 220 banner; `ehlo` (twice with --starttls).
//! - pipelined: `envelope` = one write of MAIL+RCPT..+DATA until the 354
//!   (with BDAT: one write of MAIL+RCPT.. until the last RCPT reply; the
//!   chunk follows in its own write).
//! - not pipelined: `mail`, `rcpt` (each), `data_cmd` (DATA until 354).
//! - `data`: body sent after 354 until the final reply; `bdat`: BDAT chunk
//!   until its reply.
//! - `message`: whole transaction (open loop: from the intended start).
//! - `schedule_lag` (open loop only): how late a message started against its
//!   schedule; large values mean too few connections for the rate.
//! - `quit`.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{RcptOrder, SmtpOpts};
use crate::conn::{io_error_key, Conn};
use crate::env::{Accounts, Env};
use crate::msggen::{build_message, content_hash, dot_stuff, splitmix64, Filler, MsgSpec};
use crate::reply::{is_positive, read_reply, Caps};
use crate::sched::{latency_from, Pacer, Schedule};
use crate::stats::{Live, SharedHists, Stats};
use crate::verify::Expected;

pub struct SmtpCfg {
    pub target: String,
    pub connections: u32,
    pub opts: SmtpOpts,
}

struct Shared {
    target: String,
    opts: SmtpOpts,
    accounts: Arc<Accounts>,
    env: Env,
    next: AtomicU64,
    total: u64,
    deadline: Instant,
    schedule: Option<Schedule>,
    pacer: Option<Pacer>,
    live: Arc<Live>,
    filler: Filler,
    /// `--message-file`: the fixed message sent every time.
    fixed: Option<Vec<u8>>,
    date: String,
    measure_from: Instant,
    hists: SharedHists,
    pipelining_wanted: bool,
}

pub struct SmtpOutcome {
    pub stats: Stats,
    pub measured: Duration,
    pub expected: Option<Expected>,
    /// Set when the run could not proceed at all (e.g. BDAT not supported).
    pub fatal: Option<String>,
}

/// Result of one transaction at the protocol level.
enum Tx {
    /// Accepted for these recipient positions (indexes into the message's recipients).
    Accepted(Vec<usize>),
    Rejected,
}

struct Session {
    conn: Conn,
    caps: Caps,
    /// 421 seen: the server is closing the connection.
    closing: bool,
}

fn note_code(st: &mut Stats, live: &Live, closing: &mut bool, code: u16) {
    st.error(code.to_string());
    live.add_error();
    if code == 421 {
        *closing = true;
    }
}

impl Session {
    async fn open(sh: &Shared, st: &mut Stats) -> Result<Session, String> {
        let mut conn = Conn::open(&sh.target, sh.env.timeout, 0, sh.env.tls.as_ref(), st)
            .await
            .map_err(|e| {
                let k = io_error_key(&e);
                if k.starts_with("tls_") {
                    k
                } else {
                    format!("connect_{k}")
                }
            })?;
        let t1 = Instant::now();
        let code = read_reply(&mut conn, None)
            .await
            .map_err(|e| io_error_key(&e))?;
        st.record("greeting", t1, Instant::now());
        if code != 220 {
            return Err(code.to_string());
        }
        let mut caps = ehlo(&mut conn, &sh.opts.helo, st).await?;
        if conn.wants_starttls() {
            if !caps.starttls {
                return Err(
                    "fatal: server does not advertise STARTTLS (needed by --starttls)".into(),
                );
            }
            let t = Instant::now();
            conn.write_all(b"STARTTLS\r\n")
                .await
                .map_err(|e| io_error_key(&e))?;
            let code = read_reply(&mut conn, None)
                .await
                .map_err(|e| io_error_key(&e))?;
            if code != 220 {
                return Err(code.to_string());
            }
            conn.upgrade(st, t).await.map_err(|e| io_error_key(&e))?;
            caps = ehlo(&mut conn, &sh.opts.helo, st).await?;
        }
        if sh.opts.bdat && !caps.chunking {
            return Err("fatal: server does not advertise CHUNKING (needed by --bdat)".into());
        }
        Ok(Session {
            conn,
            caps,
            closing: false,
        })
    }

    async fn rset(&mut self, st: &mut Stats, live: &Live) -> std::io::Result<()> {
        self.conn.write_all(b"RSET\r\n").await?;
        let code = read_reply(&mut self.conn, None).await?;
        if !is_positive(code) {
            note_code(st, live, &mut self.closing, code);
        }
        Ok(())
    }

    async fn quit(mut self, st: &mut Stats) {
        let t = Instant::now();
        if self.conn.write_all(b"QUIT\r\n").await.is_ok()
            && read_reply(&mut self.conn, None).await.is_ok()
        {
            st.record("quit", t, Instant::now());
        }
    }

    fn mail_cmd(&self, buf: &mut Vec<u8>, from: &str, size: usize, rcpts: &[&str]) {
        if self.caps.size {
            let _ = write!(buf, "MAIL FROM:<{from}> SIZE={size}\r\n");
        } else {
            let _ = write!(buf, "MAIL FROM:<{from}>\r\n");
        }
        for r in rcpts {
            let _ = write!(buf, "RCPT TO:<{r}>\r\n");
        }
    }

    /// One message transaction. Reply codes that are not positive are
    /// counted in `st` by code.
    async fn send(
        &mut self,
        sh: &Shared,
        st: &mut Stats,
        rcpts: &[&str],
        msg: &[u8],
        cmd: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> std::io::Result<Tx> {
        let live = &*sh.live;
        let pipelined = sh.pipelining_wanted && self.caps.pipelining;
        cmd.clear();
        let mut accepted = Vec::with_capacity(rcpts.len());
        let t0 = Instant::now();
        if pipelined {
            self.mail_cmd(cmd, &sh.opts.from, msg.len(), rcpts);
            // With BDAT the chunk is not part of the pipelined group: a server
            // that flushes the MAIL/RCPT replies before reading the chunk and
            // runs with Nagle on (Postfix smtpd does) would otherwise hold
            // its final reply until our delayed ACK, adding ~40 ms that is
            // neither server work nor queueing. Writing the chunk after the
            // envelope replies carries that ACK.
            if !sh.opts.bdat {
                cmd.extend_from_slice(b"DATA\r\n");
            }
            self.conn.write_all(cmd).await?;
            let mail = read_reply(&mut self.conn, None).await?;
            if !is_positive(mail) {
                note_code(st, live, &mut self.closing, mail);
            }
            for i in 0..rcpts.len() {
                let c = read_reply(&mut self.conn, None).await?;
                if is_positive(c) {
                    accepted.push(i);
                } else {
                    note_code(st, live, &mut self.closing, c);
                }
            }
            if !is_positive(mail) {
                accepted.clear();
            }
            if sh.opts.bdat {
                let t1 = Instant::now();
                st.record("envelope", t0, t1);
                if accepted.is_empty() {
                    if !self.closing {
                        self.rset(st, live).await?;
                    }
                    return Ok(Tx::Rejected);
                }
                cmd.clear();
                let _ = write!(cmd, "BDAT {} LAST\r\n", msg.len());
                cmd.extend_from_slice(msg);
                self.conn.write_all(cmd).await?;
                let c = read_reply(&mut self.conn, None).await?;
                st.record("bdat", t1, Instant::now());
                if is_positive(c) {
                    return Ok(Tx::Accepted(accepted));
                }
                note_code(st, live, &mut self.closing, c);
                return Ok(Tx::Rejected);
            }
            let data = read_reply(&mut self.conn, None).await?;
            let t1 = Instant::now();
            st.record("envelope", t0, t1);
            if data != 354 {
                note_code(st, live, &mut self.closing, data);
                if !self.closing {
                    self.rset(st, live).await?;
                }
                return Ok(Tx::Rejected);
            }
            if accepted.is_empty() {
                // the server should have refused DATA; end the empty transaction
                self.conn.write_all(b".\r\n").await?;
                let c = read_reply(&mut self.conn, None).await?;
                if !is_positive(c) {
                    note_code(st, live, &mut self.closing, c);
                }
                return Ok(Tx::Rejected);
            }
            return self.send_body(st, live, msg, wire, accepted, t1).await;
        }

        // One command per round trip.
        self.mail_cmd(cmd, &sh.opts.from, msg.len(), &[]);
        self.conn.write_all(cmd).await?;
        let c = read_reply(&mut self.conn, None).await?;
        let mut t = Instant::now();
        st.record("mail", t0, t);
        if !is_positive(c) {
            note_code(st, live, &mut self.closing, c);
            if !self.closing {
                self.rset(st, live).await?;
            }
            return Ok(Tx::Rejected);
        }
        for (i, r) in rcpts.iter().enumerate() {
            cmd.clear();
            let _ = write!(cmd, "RCPT TO:<{r}>\r\n");
            self.conn.write_all(cmd).await?;
            let c = read_reply(&mut self.conn, None).await?;
            let t2 = Instant::now();
            st.record("rcpt", t, t2);
            t = t2;
            if is_positive(c) {
                accepted.push(i);
            } else {
                note_code(st, live, &mut self.closing, c);
                if self.closing {
                    return Ok(Tx::Rejected);
                }
            }
        }
        if accepted.is_empty() {
            self.rset(st, live).await?;
            return Ok(Tx::Rejected);
        }
        if sh.opts.bdat {
            cmd.clear();
            let _ = write!(cmd, "BDAT {} LAST\r\n", msg.len());
            cmd.extend_from_slice(msg);
            self.conn.write_all(cmd).await?;
            let c = read_reply(&mut self.conn, None).await?;
            st.record("bdat", t, Instant::now());
            if is_positive(c) {
                return Ok(Tx::Accepted(accepted));
            }
            note_code(st, live, &mut self.closing, c);
            return Ok(Tx::Rejected);
        }
        self.conn.write_all(b"DATA\r\n").await?;
        let c = read_reply(&mut self.conn, None).await?;
        let t2 = Instant::now();
        st.record("data_cmd", t, t2);
        if c != 354 {
            note_code(st, live, &mut self.closing, c);
            if !self.closing {
                self.rset(st, live).await?;
            }
            return Ok(Tx::Rejected);
        }
        self.send_body(st, live, msg, wire, accepted, t2).await
    }

    async fn send_body(
        &mut self,
        st: &mut Stats,
        live: &Live,
        msg: &[u8],
        wire: &mut Vec<u8>,
        accepted: Vec<usize>,
        t: Instant,
    ) -> std::io::Result<Tx> {
        wire.clear();
        dot_stuff(msg, wire);
        self.conn.write_all(wire).await?;
        let c = read_reply(&mut self.conn, None).await?;
        st.record("data", t, Instant::now());
        if is_positive(c) {
            Ok(Tx::Accepted(accepted))
        } else {
            note_code(st, live, &mut self.closing, c);
            Ok(Tx::Rejected)
        }
    }
}

/// EHLO and its capabilities (op `ehlo`; with --starttls once before and
/// once after the handshake).
async fn ehlo(conn: &mut Conn, helo: &str, st: &mut Stats) -> Result<Caps, String> {
    let t = Instant::now();
    let mut cmd = Vec::with_capacity(64);
    let _ = write!(cmd, "EHLO {helo}\r\n");
    conn.write_all(&cmd).await.map_err(|e| io_error_key(&e))?;
    let mut lines = Vec::new();
    let code = read_reply(conn, Some(&mut lines))
        .await
        .map_err(|e| io_error_key(&e))?;
    st.record("ehlo", t, Instant::now());
    if code != 250 {
        return Err(code.to_string());
    }
    Ok(Caps::from_ehlo(&lines))
}

/// Accounts (indexes) receiving message `n`.
pub fn pick_recipients(
    order: RcptOrder,
    per_msg: u32,
    accounts: u32,
    seed: u64,
    n: u64,
    out: &mut Vec<u32>,
) {
    out.clear();
    let k = per_msg.min(accounts) as u64;
    let a = accounts as u64;
    let base = match order {
        RcptOrder::RoundRobin => n.wrapping_mul(k) % a,
        RcptOrder::Random => splitmix64(seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D)) % a,
    };
    for j in 0..k {
        out.push(((base + j) % a) as u32);
    }
}

async fn worker(sh: Arc<Shared>) -> (Stats, Vec<(u64, u32, u64, u64)>, Option<String>) {
    let mut st = Stats::with_sink(sh.measure_from, sh.hists.clone());
    let mut acked = Vec::new();
    let mut session: Option<Session> = None;
    let mut on_conn = 0u64;
    let (mut msg, mut wire, mut cmd) = (Vec::new(), Vec::new(), Vec::new());
    let mut rcpt_idx: Vec<u32> = Vec::new();
    let live = sh.live.clone();
    let mut fatal = None;
    let total_budget = sh.total;
    loop {
        if live.stop.load(Ordering::Relaxed) || Instant::now() >= sh.deadline {
            break;
        }
        let i = match &sh.pacer {
            Some(p) => match p.next(|| sh.next.fetch_add(1, Ordering::Relaxed)).await {
                Some(i) => i,
                None => break,
            },
            None => sh.next.fetch_add(1, Ordering::Relaxed),
        };
        if i >= total_budget {
            break;
        }
        let (intended, started) = match &sh.schedule {
            Some(s) => {
                let now = Instant::now();
                let due = s.intended(i);
                st.record_dur("schedule_lag", now, now.saturating_duration_since(due));
                (due, now)
            }
            None => {
                let now = Instant::now();
                (now, now)
            }
        };
        if session.is_none() {
            match Session::open(&sh, &mut st).await {
                Ok(s) => {
                    session = Some(s);
                    on_conn = 0;
                }
                Err(key) => {
                    let end = Instant::now();
                    live.add_failed();
                    live.add_error();
                    st.count("messages_failed", end, 1);
                    if let Some(m) = key.strip_prefix("fatal: ") {
                        fatal = Some(m.to_string());
                        live.stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    st.error(key);
                    // brief back-off so a dead server is not hammered; bounded by the deadline
                    let wake = (end + Duration::from_millis(20)).min(sh.deadline);
                    tokio::time::sleep_until(wake.into()).await;
                    continue;
                }
            }
        }
        let sess = session.as_mut().expect("session");
        pick_recipients(
            sh.opts.recipient_order,
            sh.opts.recipients_per_message,
            sh.accounts.len(),
            sh.env.seed,
            i,
            &mut rcpt_idx,
        );
        let rcpts: Vec<&str> = rcpt_idx
            .iter()
            .map(|&a| sh.accounts.addrs[a as usize].as_str())
            .collect();
        let spec = MsgSpec {
            run_id: &sh.env.run_id,
            n: i,
            from: &sh.opts.from,
            to: &rcpts,
            date: &sh.date,
            size: sh.opts.size.size_for(sh.env.seed, i),
        };
        match &sh.fixed {
            Some(m) => {
                msg.clear();
                msg.extend_from_slice(m);
            }
            None => build_message(&spec, &sh.filler, &mut msg),
        }
        let res = sess
            .send(&sh, &mut st, &rcpts, &msg, &mut cmd, &mut wire)
            .await;
        let end = Instant::now();
        match res {
            Ok(Tx::Accepted(acc)) => {
                live.add_ok(msg.len() as u64);
                st.count("messages_ok", end, 1);
                st.count("bytes", end, msg.len() as u64);
                st.count("recipients_ok", end, acc.len() as u64);
                st.record_dur("message", end, latency_from(intended, started, end));
                if sh.opts.verify {
                    let h = content_hash(&msg);
                    for p in acc {
                        acked.push((i, rcpt_idx[p], h, msg.len() as u64));
                    }
                }
            }
            Ok(Tx::Rejected) => {
                live.add_failed();
                st.count("messages_failed", end, 1);
            }
            Err(e) => {
                live.add_failed();
                live.add_error();
                st.count("messages_failed", end, 1);
                st.error(io_error_key(&e));
                session = None;
                continue;
            }
        }
        on_conn += 1;
        let closing = session.as_ref().is_some_and(|s| s.closing);
        if closing {
            session = None;
        } else if sh.opts.reuse.is_some_and(|r| on_conn >= r) {
            if let Some(s) = session.take() {
                s.quit(&mut st).await;
            }
        }
    }
    if let Some(s) = session.take() {
        s.quit(&mut st).await;
    }
    st.flush();
    (st, acked, fatal)
}

pub async fn run(cfg: SmtpCfg, accounts: Arc<Accounts>, env: Env, live: Arc<Live>) -> SmtpOutcome {
    let o = &cfg.opts;
    let t0 = Instant::now();
    let duration = o.duration.map(Duration::from_secs_f64);
    let mut deadline = t0 + env.max_time;
    if let Some(d) = duration {
        deadline = deadline.min(t0 + d);
    }
    let total = match (o.messages, duration, o.rate) {
        (Some(m), _, _) => m,
        (None, Some(d), Some(r)) => (d.as_secs_f64() * r).ceil() as u64,
        (None, Some(_), None) => u64::MAX,
        (None, None, _) => 1000,
    };
    let measure_from = t0 + Duration::from_secs_f64(o.warmup);
    let (schedule, pacer) =
        crate::sched::open_loop(o.rate, t0, total, deadline, &live, cfg.connections as usize);
    // Checked readable when the options were validated.
    let fixed = o
        .message_file
        .as_ref()
        .map(|path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let sh = Arc::new(Shared {
        target: cfg.target.clone(),
        opts: o.clone(),
        accounts,
        env: env.clone(),
        next: AtomicU64::new(0),
        total,
        deadline,
        schedule,
        pacer,
        live,
        filler: Filler::new(o.size.max()),
        fixed,
        date: crate::msggen::rfc5322_date(std::time::SystemTime::now()),
        measure_from,
        hists: SharedHists::default(),
        pipelining_wanted: !o.no_pipelining,
    });
    let handles: Vec<_> = (0..cfg.connections)
        .map(|_| tokio::spawn(worker(sh.clone())))
        .collect();
    let mut stats = Stats::new(measure_from);
    let mut expected = o.verify.then(Expected::default);
    let mut fatal = None;
    for h in handles {
        match h.await {
            Ok((st, acked, f)) => {
                stats.merge(&st);
                if let Some(e) = expected.as_mut() {
                    for (n, a, hash, len) in acked {
                        e.insert(n, a, hash, len);
                    }
                }
                fatal = fatal.or(f);
            }
            Err(e) => {
                stats.error("worker_panic");
                eprintln!("loadgen: smtp worker failed: {e}");
            }
        }
    }
    stats.absorb(&sh.hists);
    let end = Instant::now();
    SmtpOutcome {
        stats,
        measured: end.saturating_duration_since(measure_from),
        expected,
        fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_spreads_over_accounts() {
        let mut v = Vec::new();
        let mut seen = [0u32; 10];
        for n in 0..100 {
            pick_recipients(RcptOrder::RoundRobin, 1, 10, 1, n, &mut v);
            seen[v[0] as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c == 10));
        pick_recipients(RcptOrder::RoundRobin, 3, 10, 1, 4, &mut v);
        assert_eq!(v, vec![2, 3, 4]);
        // never more recipients than accounts, all distinct
        pick_recipients(RcptOrder::Random, 5, 3, 1, 9, &mut v);
        let mut d = v.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 3);
    }
}
