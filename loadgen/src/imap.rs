//! IMAP client (RFC 3501 subset) for the `imap`, `imap-idle` and `mixed`
//! modes and for `smtp --verify-imap`.
//!
//! Parsing handles exactly what a load generator needs: tagged completions
//! (`a12 OK/NO/BAD`), untagged lines (`* ...`), continuation requests (`+`)
//! and literals (`{n}` or `{n+}` at the end of a line, followed by n bytes and
//! the rest of the line).
//!
//! Ops of `imap` mode: `connect`, `tls_handshake` (--tls; --starttls:
//! STARTTLS sent until the handshake is done), `greeting`, `login`, `select`,
//! `fetch_headers`, `fetch_body`, `store`, `search`, `idle` (IDLE until the
//! `+` continuation), `idle_done` (DONE until the tagged OK), `logout`.
//! Failed commands are counted as `NO <OP>` / `BAD <OP>`.

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cli::{ImapArgs, ImapIdleArgs, ImapOpts};
use crate::conn::{io_error_key, keyed, protocol_error, Conn};
use crate::env::{Accounts, Env};
use crate::stats::{Live, Report, ReportMeta, SharedHists, Stats};
use crate::tls::TlsCtx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
        }
    }
}

/// Length of the literal announced at the end of `line` (`{n}` or `{n+}`).
pub fn literal_len(line: &[u8]) -> Option<usize> {
    if line.last() != Some(&b'}') {
        return None;
    }
    let open = memchr::memrchr(b'{', line)?;
    let mut inner = &line[open + 1..line.len() - 1];
    if inner.last() == Some(&b'+') {
        inner = &inner[..inner.len() - 1];
    }
    if inner.is_empty() || inner.len() > 10 || !inner.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// Status of a tagged completion line for `tag`, if it is one.
pub fn tagged_status(line: &[u8], tag: &[u8]) -> Option<Status> {
    let rest = line.strip_prefix(tag)?.strip_prefix(b" ")?;
    let word_end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    let w = &rest[..word_end];
    if w.eq_ignore_ascii_case(b"OK") {
        Some(Status::Ok)
    } else if w.eq_ignore_ascii_case(b"NO") {
        Some(Status::No)
    } else if w.eq_ignore_ascii_case(b"BAD") {
        Some(Status::Bad)
    } else {
        None
    }
}

/// IMAP quoted string.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Number following `key` in `line` (e.g. `UIDNEXT ` or `UID `).
pub fn number_after(line: &[u8], key: &[u8]) -> Option<u64> {
    let mut from = 0;
    while let Some(p) = memchr::memmem::find(&line[from..], key) {
        let at = from + p;
        // key must start a token
        if at == 0 || matches!(line[at - 1], b' ' | b'(' | b'[') {
            let digits = &line[at + key.len()..];
            let end = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            if end > 0 {
                return std::str::from_utf8(&digits[..end]).ok()?.parse().ok();
            }
        }
        from = at + 1;
    }
    None
}

/// `* <n> <word>` (EXISTS, EXPUNGE, ...) -> n.
pub fn untagged_count(line: &[u8], word: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"* ")?;
    let sp = memchr::memchr(b' ', rest)?;
    let (n, w) = (&rest[..sp], &rest[sp + 1..]);
    if !w.eq_ignore_ascii_case(word) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

pub struct ImapClient {
    pub conn: Conn,
    tagn: u64,
    tag: Vec<u8>,
    /// Current response line, literals removed.
    pub line: Vec<u8>,
    /// Literals of the current response (when kept).
    pub lits: Vec<Vec<u8>>,
    pub lit_bytes: u64,
}

impl ImapClient {
    pub async fn connect(
        addr: &str,
        timeout: Duration,
        buf: usize,
        tls: Option<&Arc<TlsCtx>>,
        st: &mut Stats,
    ) -> io::Result<ImapClient> {
        let conn = Conn::open(addr, timeout, buf, tls, st).await?;
        let t1 = Instant::now();
        let mut c = ImapClient {
            conn,
            tagn: 0,
            tag: Vec::new(),
            line: Vec::new(),
            lits: Vec::new(),
            lit_bytes: 0,
        };
        c.read_response(false).await?;
        if !(c.line.starts_with(b"* OK") || c.line.starts_with(b"* PREAUTH")) {
            return Err(protocol_error(format!(
                "bad IMAP greeting: {}",
                String::from_utf8_lossy(&c.line)
            )));
        }
        st.record("greeting", t1, Instant::now());
        if c.conn.wants_starttls() {
            let t = Instant::now();
            let s = c.command("STARTTLS", false, |_, _| {}).await?;
            if s != Status::Ok {
                return Err(keyed(
                    io::ErrorKind::InvalidData,
                    format!("{} STARTTLS", s.word()),
                    "STARTTLS refused",
                ));
            }
            c.conn.upgrade(st, t).await?;
        }
        Ok(c)
    }

    /// Read one response line including any literals.
    pub async fn read_response(&mut self, keep_lits: bool) -> io::Result<()> {
        self.line.clear();
        self.lits.clear();
        for _ in 0..100_000 {
            let l = self.conn.read_line().await?;
            self.line.extend_from_slice(l);
            let Some(n) = literal_len(&self.line) else {
                return Ok(());
            };
            if keep_lits {
                let mut v = Vec::with_capacity(n);
                self.conn.read_exact_into(n, Some(&mut v)).await?;
                self.lits.push(v);
            } else {
                self.conn.read_exact_into(n, None).await?;
            }
            self.lit_bytes += n as u64;
        }
        Err(protocol_error("response with too many literals"))
    }

    fn next_tag(&mut self) {
        self.tagn += 1;
        self.tag.clear();
        self.tag.push(b'a');
        self.tag.extend_from_slice(self.tagn.to_string().as_bytes());
    }

    /// Run one command; `on_untagged` sees every untagged line (and its
    /// literals when `keep_lits`).
    pub async fn command(
        &mut self,
        cmd: &str,
        keep_lits: bool,
        mut on_untagged: impl FnMut(&[u8], &[Vec<u8>]),
    ) -> io::Result<Status> {
        self.next_tag();
        let mut w = Vec::with_capacity(self.tag.len() + cmd.len() + 3);
        w.extend_from_slice(&self.tag);
        w.push(b' ');
        w.extend_from_slice(cmd.as_bytes());
        w.extend_from_slice(b"\r\n");
        self.conn.write_all(&w).await?;
        self.finish_command(keep_lits, &mut on_untagged).await
    }

    async fn finish_command(
        &mut self,
        keep_lits: bool,
        on_untagged: &mut impl FnMut(&[u8], &[Vec<u8>]),
    ) -> io::Result<Status> {
        for _ in 0..100_000_000u64 {
            self.read_response(keep_lits).await?;
            if self.line.starts_with(b"* ") {
                on_untagged(&self.line, &self.lits);
            } else if let Some(s) = tagged_status(&self.line, &self.tag) {
                return Ok(s);
            } else {
                return Err(protocol_error(format!(
                    "unexpected IMAP response: {}",
                    String::from_utf8_lossy(&self.line)
                )));
            }
        }
        Err(protocol_error("command never completed"))
    }

    pub async fn login(&mut self, user: &str, pass: &str) -> io::Result<Status> {
        self.command(
            &format!("LOGIN {} {}", quote(user), quote(pass)),
            false,
            |_, _| {},
        )
        .await
    }

    /// SELECT: (status, EXISTS, UIDNEXT or 0).
    pub async fn select(&mut self, mailbox: &str) -> io::Result<(Status, u64, u64)> {
        let (mut exists, mut uidnext) = (0, 0);
        let s = self
            .command(&format!("SELECT {}", quote(mailbox)), false, |l, _| {
                if let Some(n) = untagged_count(l, b"EXISTS") {
                    exists = n;
                } else if let Some(n) = number_after(l, b"UIDNEXT ") {
                    uidnext = n;
                }
            })
            .await?;
        Ok((s, exists, uidnext))
    }

    /// IDLE: returns once the server sent the `+` continuation
    /// (Ok(None)), or the tagged status if it refused IDLE.
    pub async fn idle_start(
        &mut self,
        mut on_untagged: impl FnMut(&[u8]),
    ) -> io::Result<Option<Status>> {
        self.next_tag();
        let mut w = self.tag.clone();
        w.extend_from_slice(b" IDLE\r\n");
        self.conn.write_all(&w).await?;
        for _ in 0..1_000_000 {
            self.read_response(false).await?;
            if self.line.starts_with(b"+") {
                return Ok(None);
            } else if self.line.starts_with(b"* ") {
                on_untagged(&self.line);
            } else if let Some(s) = tagged_status(&self.line, &self.tag) {
                return Ok(Some(s));
            } else {
                return Err(protocol_error("unexpected response to IDLE"));
            }
        }
        Err(protocol_error("IDLE never continued"))
    }

    /// Send DONE and wait for the IDLE command's completion.
    pub async fn idle_done(&mut self, mut on_untagged: impl FnMut(&[u8])) -> io::Result<Status> {
        self.conn.write_all(b"DONE\r\n").await?;
        self.finish_command(false, &mut |l: &[u8], _: &[Vec<u8>]| on_untagged(l))
            .await
    }

    pub async fn logout(&mut self) -> io::Result<Status> {
        let s = self.command("LOGOUT", false, |_, _| {}).await;
        match s {
            // some servers close right after the tagged OK, others before
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Status::Ok),
            other => other,
        }
    }
}

/// Read every message of one mailbox (for --verify-imap).
pub async fn fetch_all(
    addr: &str,
    user: &str,
    pass: &str,
    mailbox: &str,
    timeout: Duration,
    tls: Option<&Arc<TlsCtx>>,
    mut each: impl FnMut(&[u8]),
) -> Result<u64, String> {
    let mut st = Stats::new(Instant::now());
    let mut c = ImapClient::connect(addr, timeout, 64 * 1024, tls, &mut st)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if c.login(user, pass).await.map_err(|e| e.to_string())? != Status::Ok {
        return Err(format!("LOGIN as {user} failed"));
    }
    let (s, exists, _) = c.select(mailbox).await.map_err(|e| e.to_string())?;
    if s != Status::Ok {
        return Err(format!("SELECT {mailbox} failed"));
    }
    let mut n = 0u64;
    if exists > 0 {
        let s = c
            .command("UID FETCH 1:* (BODY.PEEK[])", true, |_, lits| {
                if let Some(m) = lits.first() {
                    each(m);
                    n += 1;
                }
            })
            .await
            .map_err(|e| e.to_string())?;
        if s != Status::Ok {
            return Err("UID FETCH failed".into());
        }
    }
    let _ = c.logout().await;
    Ok(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Login,
    Select,
    FetchHeaders,
    FetchBody,
    Store,
    Search,
    Idle,
    Logout,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Select => "select",
            Op::FetchHeaders => "fetch_headers",
            Op::FetchBody => "fetch_body",
            Op::Store => "store",
            Op::Search => "search",
            Op::Idle => "idle",
            Op::Logout => "logout",
        }
    }
    const ALL: [Op; 8] = [
        Op::Login,
        Op::Select,
        Op::FetchHeaders,
        Op::FetchBody,
        Op::Store,
        Op::Search,
        Op::Idle,
        Op::Logout,
    ];
}

/// Weighted op mix parsed from `name=weight,...`.
#[derive(Debug, Clone)]
pub struct Mix {
    ops: Vec<(Op, u32)>,
    total: u32,
}

impl Mix {
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut ops = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("mix entry {part:?}: expected name=weight"))?;
            let op = Op::ALL
                .into_iter()
                .find(|o| o.name() == name.trim())
                .ok_or_else(|| format!("unknown IMAP op {name:?} (known: login, select, fetch_headers, fetch_body, store, search, idle, logout)"))?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("mix entry {part:?}: bad weight"))?;
            if w > 1_000_000 {
                return Err(format!("mix entry {part:?}: weight too large"));
            }
            if w > 0 {
                ops.push((op, w));
            }
        }
        let total = ops.iter().map(|o| o.1).sum();
        if total == 0 {
            return Err("the IMAP mix has no op with a positive weight".into());
        }
        Ok(Mix { ops, total })
    }

    pub fn pick(&self, r: u32) -> Op {
        let mut x = r % self.total;
        for &(op, w) in &self.ops {
            if x < w {
                return op;
            }
            x -= w;
        }
        self.ops[0].0
    }
}

/// The `fetch_headers` command for a window of `window` messages at a random
/// position: by UID when UIDNEXT is known, by sequence number otherwise.
pub fn header_window(exists: u64, uidnext: u64, window: u64, r: u64) -> String {
    const ITEMS: &str = "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]";
    let window = window.max(1);
    if uidnext > 1 {
        let hi = uidnext - 1;
        let span = window.min(hi);
        let lo = 1 + r % (hi - span + 1);
        format!("UID FETCH {lo}:{} (FLAGS {ITEMS})", lo + span - 1)
    } else {
        let span = window.min(exists.max(1));
        let lo = 1 + r % (exists.max(1) - span + 1);
        format!("FETCH {lo}:{} (UID FLAGS {ITEMS})", lo + span - 1)
    }
}

struct Sess {
    c: ImapClient,
    selected: bool,
    exists: u64,
    uidnext: u64,
    uids: Vec<u64>,
}

fn track(exists: &mut u64, line: &[u8]) {
    if let Some(n) = untagged_count(line, b"EXISTS") {
        *exists = n;
    } else if untagged_count(line, b"EXPUNGE").is_some() {
        *exists = exists.saturating_sub(1);
    }
}

struct Shared {
    target: String,
    opts: ImapOpts,
    mix: Mix,
    accounts: Arc<Accounts>,
    env: Env,
    next_account: AtomicU64,
    deadline: Instant,
    measure_from: Instant,
    live: Arc<Live>,
    hists: SharedHists,
}

/// Record a command's outcome.
fn outcome(st: &mut Stats, live: &Live, op: &'static str, s: Status, t0: Instant) -> bool {
    let end = Instant::now();
    if s == Status::Ok {
        st.record(op, t0, end);
        st.count("commands_ok", end, 1);
        true
    } else {
        st.error(format!("{} {}", s.word(), op.to_ascii_uppercase()));
        st.count("commands_failed", end, 1);
        live.add_error();
        false
    }
}

async fn open(sh: &Shared, st: &mut Stats) -> io::Result<Option<Sess>> {
    let mut c = ImapClient::connect(
        &sh.target,
        sh.env.timeout,
        16 * 1024,
        sh.env.tls.as_ref(),
        st,
    )
    .await?;
    let a = (sh.next_account.fetch_add(1, Ordering::Relaxed) % sh.accounts.len() as u64) as usize;
    let t = Instant::now();
    let s = c
        .login(&sh.accounts.logins[a], &sh.accounts.password)
        .await?;
    if !outcome(st, &sh.live, "login", s, t) {
        let _ = c.logout().await;
        return Ok(None);
    }
    Ok(Some(Sess {
        c,
        selected: false,
        exists: 0,
        uidnext: 0,
        uids: Vec::new(),
    }))
}

async fn select(sh: &Shared, st: &mut Stats, s: &mut Sess) -> io::Result<bool> {
    let t = Instant::now();
    let (status, exists, uidnext) = s.c.select(&sh.opts.mailbox).await?;
    if outcome(st, &sh.live, "select", status, t) {
        s.selected = true;
        s.exists = exists;
        s.uidnext = uidnext;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Run one op on an open session. Returns false when the session ended.
async fn run_op(
    sh: &Shared,
    st: &mut Stats,
    s: &mut Sess,
    op: Op,
    rng: &mut StdRng,
) -> io::Result<bool> {
    let live = &*sh.live;
    match op {
        Op::Login => unreachable!("handled by the caller"),
        Op::Logout => {
            let t = Instant::now();
            let status = s.c.logout().await?;
            let ok = outcome(st, live, "logout", status, t);
            let end = Instant::now();
            st.count(if ok { "sessions_ok" } else { "sessions_failed" }, end, 1);
            return Ok(false);
        }
        Op::Select => {
            select(sh, st, s).await?;
            return Ok(true);
        }
        _ => {}
    }
    if !s.selected && !select(sh, st, s).await? {
        return Ok(true);
    }
    let needs_messages = matches!(op, Op::FetchHeaders | Op::FetchBody | Op::Store);
    if needs_messages && s.exists == 0 {
        st.count("skipped_empty_mailbox", Instant::now(), 1);
        return Ok(true);
    }
    let pick_uid = |s: &Sess, rng: &mut StdRng| -> u64 {
        if !s.uids.is_empty() {
            s.uids[rng.gen_range(0..s.uids.len())]
        } else if s.uidnext > 1 {
            rng.gen_range(1..s.uidnext)
        } else {
            1
        }
    };
    let t = Instant::now();
    match op {
        Op::FetchHeaders => {
            let exists = &mut s.exists;
            let cmd = header_window(*exists, s.uidnext, sh.opts.window as u64, rng.gen());
            let mut uids = Vec::new();
            let before = s.c.lit_bytes;
            let status =
                s.c.command(&cmd, false, |l, _| {
                    if let Some(u) = number_after(l, b"UID ") {
                        uids.push(u);
                    } else {
                        track(exists, l);
                    }
                })
                .await?;
            if outcome(st, live, "fetch_headers", status, t) {
                st.count("headers_fetched", Instant::now(), uids.len() as u64);
                st.count("bytes", Instant::now(), s.c.lit_bytes - before);
                live.bytes
                    .fetch_add(s.c.lit_bytes - before, Ordering::Relaxed);
                if !uids.is_empty() {
                    s.uids = uids;
                }
            }
        }
        Op::FetchBody => {
            let uid = pick_uid(s, rng);
            let mut bodies = 0u64;
            let before = s.c.lit_bytes;
            let exists = &mut s.exists;
            let status =
                s.c.command(&format!("UID FETCH {uid} (BODY.PEEK[])"), false, |l, _| {
                    if number_after(l, b"UID ").is_some() || l.windows(5).any(|w| w == b"BODY[") {
                        bodies += 1;
                    } else {
                        track(exists, l);
                    }
                })
                .await?;
            if outcome(st, live, "fetch_body", status, t) {
                let end = Instant::now();
                let n = s.c.lit_bytes - before;
                st.count("messages_ok", end, bodies);
                st.count("bytes", end, n);
                live.add_ok(n);
            }
        }
        Op::Store => {
            let uid = pick_uid(s, rng);
            let exists = &mut s.exists;
            let status =
                s.c.command(
                    &format!("UID STORE {uid} +FLAGS (\\Seen)"),
                    false,
                    |l, _| track(exists, l),
                )
                .await?;
            outcome(st, live, "store", status, t);
        }
        Op::Search => {
            let exists = &mut s.exists;
            let status =
                s.c.command(&format!("UID SEARCH {}", sh.opts.search), false, |l, _| {
                    track(exists, l)
                })
                .await?;
            outcome(st, live, "search", status, t);
        }
        Op::Idle => {
            let exists = &mut s.exists;
            match s.c.idle_start(|l| track(exists, l)).await? {
                Some(status) => {
                    outcome(st, live, "idle", status, t);
                    return Ok(true);
                }
                None => {
                    let t1 = Instant::now();
                    st.record("idle", t, t1);
                    let until =
                        (t1 + Duration::from_millis(sh.opts.idle_ms)).min(sh.deadline.max(t1));
                    // bounded by `until`
                    loop {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() || !s.c.conn.wait_data(left).await? {
                            break;
                        }
                        s.c.read_response(false).await?;
                        if s.c.line.starts_with(b"* ") {
                            track(&mut s.exists, &s.c.line);
                            st.count("idle_updates", Instant::now(), 1);
                        }
                    }
                    let t2 = Instant::now();
                    let exists = &mut s.exists;
                    let status = s.c.idle_done(|l| track(exists, l)).await?;
                    outcome(st, live, "idle_done", status, t2);
                }
            }
        }
        Op::Login | Op::Logout | Op::Select => unreachable!(),
    }
    Ok(true)
}

async fn worker(sh: Arc<Shared>, wid: u32) -> Stats {
    let mut st = Stats::with_sink(sh.measure_from, sh.hists.clone());
    let mut rng = StdRng::seed_from_u64(sh.env.seed ^ ((wid as u64 + 1) << 32));
    let mut sess: Option<Sess> = None;
    // bounded by the deadline: every iteration does I/O with a timeout or sleeps
    while Instant::now() < sh.deadline && !sh.live.stop.load(Ordering::Relaxed) {
        let op = sh.mix.pick(rng.gen());
        let fresh = sess.is_none();
        if op == Op::Login && !fresh {
            if let Some(mut s) = sess.take() {
                let t = Instant::now();
                match s.c.logout().await {
                    Ok(status) => {
                        let ok = outcome(&mut st, &sh.live, "logout", status, t);
                        st.count(
                            if ok { "sessions_ok" } else { "sessions_failed" },
                            Instant::now(),
                            1,
                        );
                    }
                    Err(e) => {
                        st.error(io_error_key(&e));
                        st.count("sessions_failed", Instant::now(), 1);
                    }
                }
            }
        }
        if sess.is_none() {
            match open(&sh, &mut st).await {
                Ok(Some(s)) => sess = Some(s),
                Ok(None) => {
                    st.count("sessions_failed", Instant::now(), 1);
                    let wake = (Instant::now() + Duration::from_millis(20)).min(sh.deadline);
                    tokio::time::sleep_until(wake.into()).await;
                    continue;
                }
                Err(e) => {
                    st.error(io_error_key(&e));
                    sh.live.add_error();
                    st.count("sessions_failed", Instant::now(), 1);
                    let wake = (Instant::now() + Duration::from_millis(20)).min(sh.deadline);
                    tokio::time::sleep_until(wake.into()).await;
                    continue;
                }
            }
            if op == Op::Login {
                continue;
            }
        }
        let s = sess.as_mut().expect("session");
        match run_op(&sh, &mut st, s, op, &mut rng).await {
            Ok(true) => {}
            Ok(false) => sess = None,
            Err(e) => {
                st.error(io_error_key(&e));
                sh.live.add_error();
                st.count("sessions_failed", Instant::now(), 1);
                sess = None;
            }
        }
    }
    if let Some(mut s) = sess.take() {
        let t = Instant::now();
        if let Ok(status) = s.c.logout().await {
            let ok = outcome(&mut st, &sh.live, "logout", status, t);
            st.count(
                if ok { "sessions_ok" } else { "sessions_failed" },
                Instant::now(),
                1,
            );
        }
    }
    st.flush();
    st
}

pub async fn run(
    target: String,
    connections: u32,
    opts: ImapOpts,
    accounts: Arc<Accounts>,
    env: Env,
    live: Arc<Live>,
) -> Result<(Stats, Duration), String> {
    let mix = Mix::parse(&opts.mix)?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(opts.duration).min(env.max_time);
    let measure_from = t0 + Duration::from_secs_f64(opts.warmup);
    let sh = Arc::new(Shared {
        target,
        opts,
        mix,
        accounts,
        env,
        next_account: AtomicU64::new(0),
        deadline,
        measure_from,
        live,
        hists: SharedHists::default(),
    });
    let hs: Vec<_> = (0..connections)
        .map(|w| tokio::spawn(worker(sh.clone(), w)))
        .collect();
    let mut stats = Stats::new(measure_from);
    for h in hs {
        match h.await {
            Ok(s) => stats.merge(&s),
            Err(e) => {
                stats.error("worker_panic");
                eprintln!("loadgen: imap worker failed: {e}");
            }
        }
    }
    stats.absorb(&sh.hists);
    Ok((
        stats,
        Instant::now().saturating_duration_since(measure_from),
    ))
}

pub async fn cmd_imap(a: ImapArgs, env: Env) -> Result<ExitCode, String> {
    if a.connections == 0 || a.connections > 100_000 {
        return Err("--connections must be 1 .. 100000".into());
    }
    crate::env::secs("--duration", a.opts.duration)?;
    crate::env::secs("--warmup", a.opts.warmup)?;
    Mix::parse(&a.opts.mix)?;
    crate::env::raise_nofile();
    let accounts = Arc::new(Accounts::from_args(&a.accounts)?);
    let started = SystemTime::now();
    let live = Arc::new(Live::default());
    crate::stats::spawn_progress(
        format!("imap {}", a.target),
        "body",
        live.clone(),
        env.progress,
        Instant::now(),
    );
    let (st, measured) = run(
        a.target.clone(),
        a.connections,
        a.opts.clone(),
        accounts,
        env.clone(),
        live.clone(),
    )
    .await?;
    live.stop.store(true, Ordering::Relaxed);
    let meta = ReportMeta {
        mode: "imap",
        target: a.target.clone(),
        run_id: env.run_id.clone(),
        started,
        connections: a.connections as u64,
        threads: env.threads as u64,
        warmup: Duration::from_secs_f64(a.opts.warmup),
        rate: None,
        tls: env.tls_mode(),
    };
    let report = Report::build(meta, &st, measured);
    let json = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    crate::finish(
        &a.common,
        json,
        report.human(),
        &[("", &st)],
        started,
        measured,
        &format!("loadgen imap {}", a.target),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Counters of the imap-idle ramp and hold.
#[derive(Default)]
struct IdleCounts {
    finished_ramp: AtomicU64,
    logged_in: AtomicU64,
    idling: AtomicU64,
    dropped: AtomicU64,
    held: AtomicU64,
    closed_ok: AtomicU64,
}

/// What every imap-idle session shares.
struct IdleCtx {
    a: ImapIdleArgs,
    accounts: Arc<Accounts>,
    env: Env,
    sem: Arc<tokio::sync::Semaphore>,
    counts: IdleCounts,
    sink: SharedHists,
    t0: Instant,
}

async fn idle_session(
    i: u32,
    ctx: Arc<IdleCtx>,
    mut release: tokio::sync::watch::Receiver<bool>,
) -> Stats {
    let IdleCtx {
        a,
        accounts,
        env,
        sem,
        counts,
        sink,
        t0,
    } = &*ctx;
    let mut st = Stats::with_sink(*t0, sink.clone());
    let permit = sem.clone().acquire_owned().await;
    let ramp = async {
        let mut c =
            ImapClient::connect(&a.target, env.timeout, 2048, env.tls.as_ref(), &mut st).await?;
        let acct = i as usize % accounts.addrs.len();
        let t = Instant::now();
        let s = c.login(&accounts.logins[acct], &accounts.password).await?;
        if s != Status::Ok {
            st.error(format!("{} LOGIN", s.word()));
            return Ok(None);
        }
        st.record("login", t, Instant::now());
        counts.logged_in.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let (s, _, _) = c.select(&a.mailbox).await?;
        if s != Status::Ok {
            st.error(format!("{} SELECT", s.word()));
            return Ok(None);
        }
        st.record("select", t, Instant::now());
        let t = Instant::now();
        if let Some(s) = c.idle_start(|_| {}).await? {
            st.error(format!("{} IDLE", s.word()));
            return Ok(None);
        }
        st.record("idle", t, Instant::now());
        counts.idling.fetch_add(1, Ordering::Relaxed);
        io::Result::Ok(Some(c))
    }
    .await;
    drop(permit);
    counts.finished_ramp.fetch_add(1, Ordering::Relaxed);
    let mut c = match ramp {
        Ok(Some(c)) => c,
        Ok(None) => {
            st.flush();
            return st;
        }
        Err(e) => {
            st.error(io_error_key(&e));
            st.flush();
            return st;
        }
    };
    st.flush();
    // Hold until released; the server may send untagged updates meanwhile.
    let hold_limit = env.max_time;
    let mut alive = true;
    let mut updates = 0u64;
    loop {
        if *release.borrow() {
            break;
        }
        tokio::select! {
            r = c.conn.wait_data(hold_limit) => {
                match r {
                    Ok(true) => match c.read_response(false).await {
                        Ok(()) if c.line.starts_with(b"* BYE") => { alive = false; st.error("BYE during IDLE"); break; }
                        Ok(()) => updates += 1,
                        Err(e) => { alive = false; st.error(io_error_key(&e)); break; }
                    },
                    Ok(false) => { alive = false; st.error("hold_timeout"); break; }
                    Err(e) => { alive = false; st.error(format!("idle_{}", io_error_key(&e))); break; }
                }
            }
            r = release.changed() => { if r.is_err() { break; } }
        }
    }
    st.count("idle_updates", Instant::now(), updates);
    if !alive {
        counts.dropped.fetch_add(1, Ordering::Relaxed);
        st.flush();
        return st;
    }
    counts.held.fetch_add(1, Ordering::Relaxed);
    let t = Instant::now();
    match c.idle_done(|_| {}).await {
        Ok(Status::Ok) => st.record("idle_done", t, Instant::now()),
        Ok(s) => st.error(format!("{} DONE", s.word())),
        Err(e) => st.error(io_error_key(&e)),
    }
    let t = Instant::now();
    if let Ok(Status::Ok) = c.logout().await {
        st.record("logout", t, Instant::now());
        counts.closed_ok.fetch_add(1, Ordering::Relaxed);
    }
    st.flush();
    st
}

pub async fn cmd_imap_idle(a: ImapIdleArgs, env: Env) -> Result<ExitCode, String> {
    if a.sessions == 0 || a.sessions > 1_000_000 {
        return Err("--sessions must be 1 .. 1000000".into());
    }
    if a.login_concurrency == 0 {
        return Err("--login-concurrency must be at least 1".into());
    }
    let hold = crate::env::secs("--hold", a.hold)?;
    let nofile = crate::env::raise_nofile();
    if nofile < a.sessions as u64 + 64 {
        eprintln!(
            "loadgen: warning: RLIMIT_NOFILE is {nofile}, below --sessions {} + 64; expect connect errors (raise it with ulimit -n)",
            a.sessions
        );
    }
    let accounts = Arc::new(Accounts::from_args(&a.accounts)?);
    let started = SystemTime::now();
    let t0 = Instant::now();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(IdleCtx {
        sem: Arc::new(tokio::sync::Semaphore::new(a.login_concurrency as usize)),
        a,
        accounts,
        env: env.clone(),
        counts: IdleCounts::default(),
        sink: SharedHists::default(),
        t0,
    });
    let handles: Vec<_> = (0..ctx.a.sessions)
        .map(|i| tokio::spawn(idle_session(i, ctx.clone(), release_rx.clone())))
        .collect();
    let (a, counts, sink) = (&ctx.a, &ctx.counts, &ctx.sink);
    // Ramp: wait for every session to reach IDLE or fail (bounded by max_time).
    let limit = t0 + env.max_time;
    let mut last_print = t0;
    while counts.finished_ramp.load(Ordering::Relaxed) < a.sessions as u64 && Instant::now() < limit
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if env.progress && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "[{:7.1}s] imap-idle ramp: logged in {}, idling {} of {}",
                t0.elapsed().as_secs_f64(),
                counts.logged_in.load(Ordering::Relaxed),
                counts.idling.load(Ordering::Relaxed),
                a.sessions
            );
        }
    }
    let ramp = t0.elapsed();
    let logged_in = counts.logged_in.load(Ordering::Relaxed);
    let idling = counts.idling.load(Ordering::Relaxed);
    // Hold.
    let hold_end = (Instant::now() + hold).min(limit);
    while Instant::now() < hold_end {
        let left = hold_end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if env.progress {
            eprintln!(
                "[{:7.1}s] imap-idle hold: idling {}, dropped {}",
                t0.elapsed().as_secs_f64(),
                idling - counts.dropped.load(Ordering::Relaxed).min(idling),
                counts.dropped.load(Ordering::Relaxed)
            );
        }
    }
    let held_at_end = idling.saturating_sub(counts.dropped.load(Ordering::Relaxed));
    let _ = release_tx.send(true);
    let mut stats = Stats::new(t0);
    for h in handles {
        match h.await {
            Ok(s) => stats.merge(&s),
            Err(_) => stats.error("worker_panic"),
        }
    }
    stats.absorb(sink);
    let end = Instant::now();
    for (k, v) in [
        ("sessions_requested", a.sessions as u64),
        ("logged_in", logged_in),
        ("idling", idling),
        ("held", held_at_end),
        (
            "dropped_during_hold",
            counts.dropped.load(Ordering::Relaxed),
        ),
        ("ramp_ms", ramp.as_millis() as u64),
        (
            "login_rate_per_s",
            (logged_in as f64 / ramp.as_secs_f64().max(1e-9)).round() as u64,
        ),
        ("hold_ms", hold.as_millis() as u64),
        ("nofile_limit", nofile),
        ("sessions_ok", counts.closed_ok.load(Ordering::Relaxed)),
        (
            "sessions_failed",
            a.sessions as u64 - counts.closed_ok.load(Ordering::Relaxed),
        ),
    ] {
        stats.counters.insert(k, v);
    }
    let meta = ReportMeta {
        mode: "imap-idle",
        target: a.target.clone(),
        run_id: env.run_id.clone(),
        started,
        connections: a.sessions as u64,
        threads: env.threads as u64,
        warmup: Duration::ZERO,
        rate: None,
        tls: env.tls_mode(),
    };
    let measured = end.duration_since(t0);
    let report = Report::build(meta, &stats, measured);
    let json = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    crate::finish(
        &a.common,
        json,
        report.human(),
        &[("", &stats)],
        started,
        measured,
        &format!("loadgen imap-idle {}", a.target),
    )?;
    Ok(if held_at_end == a.sessions as u64 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(literal_len(b"* 1 FETCH (UID 5 BODY[] {1234}"), Some(1234));
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {0}"), Some(0));
        assert_eq!(literal_len(b"a1 LOGIN {5+}"), Some(5));
        assert_eq!(literal_len(b"* OK [ALERT] {x}"), None);
        assert_eq!(literal_len(b"* OK done"), None);
        assert_eq!(literal_len(b"* OK {}"), None);
        assert_eq!(literal_len(b"}"), None);
    }

    #[test]
    fn tagged_and_untagged() {
        assert_eq!(
            tagged_status(b"a12 OK FETCH completed", b"a12"),
            Some(Status::Ok)
        );
        assert_eq!(
            tagged_status(b"a12 no [AUTHENTICATIONFAILED] bad", b"a12"),
            Some(Status::No)
        );
        assert_eq!(tagged_status(b"a12 BAD", b"a12"), Some(Status::Bad));
        assert_eq!(tagged_status(b"a123 OK", b"a12"), None);
        assert_eq!(tagged_status(b"* OK", b"a12"), None);
        assert_eq!(untagged_count(b"* 42 EXISTS", b"EXISTS"), Some(42));
        assert_eq!(untagged_count(b"* 3 exists", b"EXISTS"), Some(3));
        assert_eq!(untagged_count(b"* 3 RECENT", b"EXISTS"), None);
        assert_eq!(
            number_after(b"* OK [UIDNEXT 4392] Predicted next UID", b"UIDNEXT "),
            Some(4392)
        );
        assert_eq!(
            number_after(b"* 7 FETCH (FLAGS (\\Seen) UID 77 BODY[] {3}", b"UID "),
            Some(77)
        );
        assert_eq!(number_after(b"* OK [UIDNEXT 5]", b"UID "), None);
        assert_eq!(quote(r#"pa"ss\x"#), r#""pa\"ss\\x""#);
    }

    #[test]
    fn mix_parsing_and_weights() {
        let m = Mix::parse(crate::cli::DEFAULT_IMAP_MIX).unwrap();
        assert_eq!(m.total, 31);
        let mut counts = std::collections::HashMap::new();
        for r in 0..31 * 100 {
            *counts.entry(m.pick(r)).or_insert(0) += 1;
        }
        assert_eq!(counts[&Op::FetchHeaders], 1000);
        assert_eq!(counts[&Op::Login], 100);
        assert!(Mix::parse("select=1,bogus=2").is_err());
        assert!(Mix::parse("select=0").is_err());
        assert!(Mix::parse("select").is_err());
        assert_eq!(Mix::parse(" search = 2 ").unwrap().pick(7), Op::Search);
    }

    #[test]
    fn windows() {
        assert_eq!(
            header_window(100, 101, 50, 0),
            "UID FETCH 1:50 (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"
        );
        assert_eq!(
            header_window(100, 101, 50, 50),
            "UID FETCH 51:100 (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"
        );
        assert!(header_window(10, 11, 50, 7).starts_with("UID FETCH 1:10 "));
        assert!(header_window(10, 0, 5, 0).starts_with("FETCH 1:5 (UID FLAGS"));
    }

    /// The client against a scripted server: literals inside untagged
    /// responses, untagged lines before the tagged completion, IDLE.
    #[test]
    fn client_parses_literals_and_completions() {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let srv = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"* OK IMAP4rev1 ready\r\n").unwrap();
            let mut line = String::new();
            for _ in 0..10 {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                let tag = line.split(' ').next().unwrap().to_string();
                if line.contains("LOGIN") {
                    write!(w, "{tag} OK logged in\r\n").unwrap();
                } else if line.contains("SELECT") {
                    write!(
                        w,
                        "* 2 EXISTS\r\n* OK [UIDNEXT 9] next\r\n{tag} OK [READ-WRITE] done\r\n"
                    )
                    .unwrap();
                } else if line.contains("FETCH") {
                    // literal containing CRLF and a fake tagged line
                    let body = format!("Subject: x\r\n{tag} OK not really\r\n");
                    write!(
                        w,
                        "* 1 FETCH (UID 7 BODY[] {{{}}}\r\n{body})\r\n",
                        body.len()
                    )
                    .unwrap();
                    write!(
                        w,
                        "* 2 FETCH (UID 8 BODY[] {{3}}\r\nabc FLAGS (\\Seen))\r\n{tag} OK done\r\n"
                    )
                    .unwrap();
                } else if line.contains("IDLE") {
                    w.write_all(b"+ idling\r\n* 3 EXISTS\r\n").unwrap();
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    assert_eq!(line, "DONE\r\n");
                    write!(w, "{tag} OK IDLE terminated\r\n").unwrap();
                } else if line.contains("LOGOUT") {
                    write!(w, "* BYE\r\n{tag} OK bye\r\n").unwrap();
                    break;
                }
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut st = Stats::new(Instant::now());
            let mut c = ImapClient::connect(&addr, Duration::from_secs(5), 256, None, &mut st)
                .await
                .unwrap();
            assert_eq!(c.login("u", "p").await.unwrap(), Status::Ok);
            assert_eq!(c.select("INBOX").await.unwrap(), (Status::Ok, 2, 9));
            let mut got = Vec::new();
            let s = c
                .command("UID FETCH 1:* (BODY.PEEK[])", true, |l, lits| {
                    got.push((number_after(l, b"UID "), lits.to_vec()));
                })
                .await
                .unwrap();
            assert_eq!(s, Status::Ok);
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].0, Some(7));
            assert!(got[0].1[0].starts_with(b"Subject: x\r\na3 OK not really"));
            assert_eq!(got[1], (Some(8), vec![b"abc".to_vec()]));
            assert_eq!(c.idle_start(|_| {}).await.unwrap(), None);
            assert!(c.conn.wait_data(Duration::from_secs(2)).await.unwrap());
            c.read_response(false).await.unwrap();
            assert_eq!(c.line, b"* 3 EXISTS");
            assert!(!c.conn.wait_data(Duration::from_millis(30)).await.unwrap());
            assert_eq!(c.idle_done(|_| {}).await.unwrap(), Status::Ok);
            assert_eq!(c.logout().await.unwrap(), Status::Ok);
        });
        srv.join().unwrap();
    }
}
