//! Cluster mode: SMTP sessions from this node to another member's internal
//! listener, and a pool of them per shard.
//!
//! A session is set up once (TCP, greeting, EHLO, STARTTLS with the
//! member's published fingerprints pinned and this node's certificate
//! presented, EHLO again) and then carries many hand-overs, one
//! transaction each: MAIL, RCPT and the message in one BDAT chunk (RFC
//! 3030, its octets exactly as stored) pipelined (RFC 2920) in one write
//! when there is one recipient; with several, MAIL and RCPT are answered
//! before the message is sent ([`Peer::send`]). Setting
//! up a mutual-TLS session per message cost about twenty times a local
//! delivery. Sessions go back to their shard's [`Pool`] after a transaction
//! that ended in 250 and are dropped after any failure. A pooled session
//! the other node has closed meanwhile (its command timeout, a restart)
//! fails before anything was accepted, and the hand-over is tried again
//! once on a new session.
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::shard::Shard;
use crate::transport::{Conn, ReadOutcome};

/// Waits for one step (a reply, a piece of a stream).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one line and on a whole reply.
const LINE_MAX: usize = 8 * 1024;
const REPLY_MAX: usize = 64 * 1024;
/// Idle sessions kept per other node and shard, and for how long: well
/// under the other node's SMTP command timeout.
const POOL_PER_PEER: usize = 32;
const POOL_IDLE_MAX: Duration = Duration::from_secs(20);
/// The body is written in pieces of this size.
const GATHER_MAX: usize = 64 * 1024;

/// An SMTP session with another member, past STARTTLS and EHLO.
pub struct Peer {
    pub conn: Conn,
    idle_since: Instant,
}

/// A message to hand over.
pub struct Outgoing<'a> {
    pub reverse_path: &'a str,
    pub body: &'a [u8],
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// The bucket map this node routed with (`XMAP=`).
    pub map_version: Option<i64>,
    /// Filed under Junk (`XJUNK`).
    pub junk: bool,
    /// An IMAP APPEND's copy for the replica (`XMAILBOX=`...).
    pub append: Option<&'a crate::protocol::smtp::command::AppendTo>,
    /// The body is a primary's changes for the replica (`XCHANGES`).
    pub changes: bool,
}

/// How a hand-over failed.
pub enum Failed {
    /// The session ended (or answered 421) before any answer to the
    /// transaction: on a pooled session, the other node had closed it,
    /// and a new session tries again. Pipelined (one recipient), the other
    /// node answers MAIL and RCPT only with the chunk's reply, so a node
    /// that died between its commit and its answer looks the same; the
    /// retry then stores a second copy unless the duplicate window knows
    /// the message (as the client's own retry after a 451 would).
    Broken(String),
    /// MAIL or a RCPT was refused (the other node's reply).
    Refused(String),
    /// Once the message was sent: the other node's answer, or none.
    After(String),
}

impl Failed {
    pub fn into_reason(self) -> String {
        match self {
            Failed::Broken(s) | Failed::Refused(s) | Failed::After(s) => s,
        }
    }
}

async fn fill(conn: &mut Conn) -> Result<(), String> {
    match conn.fill(STEP_TIMEOUT).await {
        ReadOutcome::Data => Ok(()),
        ReadOutcome::Eof => Err("the other node closed the connection".into()),
        ReadOutcome::TimedOut => Err("the other node went silent".into()),
        ReadOutcome::Failed(e) => Err(e.to_string()),
    }
}

/// One line, without its line end (at most `LINE_MAX` bytes).
pub async fn line(conn: &mut Conn) -> Result<String, String> {
    loop {
        if let Some(i) = memchr::memchr(b'\n', conn.pending()) {
            if i > LINE_MAX {
                return Err("line too long".into());
            }
            let text = String::from_utf8_lossy(&conn.pending()[..i])
                .trim_end_matches('\r')
                .to_string();
            conn.consume(i + 1);
            return Ok(text);
        }
        if conn.pending().len() > LINE_MAX {
            return Err("line too long".into());
        }
        fill(conn).await?;
    }
}

/// An SMTP reply: its code and text (the lines joined).
pub async fn reply(conn: &mut Conn) -> Result<(u16, String), String> {
    let mut text = String::new();
    loop {
        let l = line(conn).await?;
        let code: u16 = l
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an SMTP reply: {l:?}"))?;
        text.push_str(&l);
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
        if text.len() > REPLY_MAX {
            return Err("reply too long".into());
        }
        text.push('\n');
    }
}

/// Expect a reply with code `want`; Err with the reply's text otherwise.
pub async fn expect(conn: &mut Conn, want: u16) -> Result<(), String> {
    match reply(conn).await? {
        (code, _) if code == want => Ok(()),
        (_, text) => Err(text),
    }
}

/// Send a command line and expect `want`.
pub async fn command(conn: &mut Conn, line: &str, want: u16) -> Result<(), String> {
    conn.write_all(line.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    expect(conn, want).await
}

/// `len` bytes of the input.
pub async fn bytes(conn: &mut Conn, len: usize) -> Result<Vec<u8>, String> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        if conn.pending().is_empty() {
            fill(conn).await?;
        }
        let n = (len - v.len()).min(conn.pending().len());
        v.extend_from_slice(&conn.pending()[..n]);
        conn.consume(n);
    }
    Ok(v)
}

/// A new session with the member at `to` whose certificates are `pins`.
pub async fn connect(shard: &Shard, to: SocketAddr, pins: Vec<String>) -> Result<Peer, String> {
    let stream = glommio::net::TcpStream::connect_timeout(to, CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("{to}: {e}"))?;
    let _ = stream.set_write_timeout(Some(STEP_TIMEOUT));
    let mut conn = Conn::new(stream, Vec::new());
    let hostname = shard.config().hostname.clone();
    expect(&mut conn, 220).await?;
    command(&mut conn, &format!("EHLO {hostname}\r\n"), 250).await?;
    command(&mut conn, "STARTTLS\r\n", 220).await?;
    let config = crate::tls::pinned_client_config(pins, Some(shard.shared.tls.client_identity()))
        .map_err(|e| e.to_string())?;
    conn.start_tls_client(
        config,
        rustls_pki_types::ServerName::IpAddress(to.ip().into()),
    )
    .map_err(|e| e.to_string())?;
    conn.handshake(STEP_TIMEOUT)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    command(&mut conn, &format!("EHLO {hostname}\r\n"), 250).await?;
    tracing::info!(event = "peer_session", %to, "cluster: new session with a member");
    Ok(Peer {
        conn,
        idle_since: Instant::now(),
    })
}

impl Peer {
    /// One transaction: MAIL, every RCPT and the message in one BDAT
    /// chunk (pipelined in one write when there is one recipient). Ok once
    /// the other node answered 250 to it.
    pub async fn send(&mut self, recipients: &[String], m: &Outgoing<'_>) -> Result<(), Failed> {
        let mut head = format!("MAIL FROM:<{}> SIZE={}", m.reverse_path, m.body.len());
        if m.eight_bit {
            head.push_str(" BODY=8BITMIME");
        }
        if m.smtputf8 {
            head.push_str(" SMTPUTF8");
        }
        if let Some(v) = m.map_version {
            head.push_str(&format!(" XMAP={v}"));
        }
        if m.junk {
            head.push_str(" XJUNK");
        }
        if let Some(a) = m.append {
            head.push_str(&a.params());
        }
        if m.changes {
            head.push_str(" XCHANGES");
        }
        head.push_str("\r\n");
        for r in recipients {
            head.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        // One recipient (every replica copy of a one-recipient message, and
        // most hand-overs): the whole transaction goes in one write, BDAT
        // pipelined behind MAIL and RCPT (RFC 2920; RFC 3030 section 4.2).
        // Should MAIL or RCPT be refused, the BDAT fails for want of a
        // recipient: the other node reads its chunk and stores nothing.
        // This saves a round trip, and the message is on its way before
        // this node's executor turns to its own commit. With several
        // recipients, one refused RCPT must stop the message before it
        // is sent (the others would store it, and the hand-over would
        // still fail), so MAIL and RCPT are answered first.
        let pipelined = recipients.len() == 1;
        let mut out = head.into_bytes();
        if pipelined {
            out.extend_from_slice(format!("BDAT {} LAST\r\n", m.body.len()).as_bytes());
            if m.body.len() <= GATHER_MAX {
                out.extend_from_slice(m.body);
            }
        }
        let conn = &mut self.conn;
        let broken = Failed::Broken;
        // A failed write left the chunk incomplete: nothing was stored.
        conn.write_all(&out)
            .await
            .map_err(|e| broken(e.to_string()))?;
        if pipelined && m.body.len() > GATHER_MAX {
            write_body(conn, m.body)
                .await
                .map_err(|e| broken(e.to_string()))?;
        }
        // MAIL's and every RCPT's reply. After a refusal the session is
        // dropped, so what is left unread does not matter. A 421 is the
        // other node closing the session (its idle timeout, a shutdown):
        // nothing was taken. A session that ends before these replies is
        // `Broken` (see there).
        for _ in 0..=recipients.len() {
            match reply(conn).await.map_err(broken)? {
                (250, _) => {}
                (421, text) => return Err(broken(text)),
                (_, text) => return Err(Failed::Refused(text)),
            }
        }
        // The message in one BDAT chunk (RFC 3030): its octets exactly as
        // stored here, where DATA would wrap long lines and make line ends
        // uniform.
        let after = Failed::After;
        if !pipelined {
            let chunk = format!("BDAT {} LAST\r\n", m.body.len());
            conn.write_all(chunk.as_bytes())
                .await
                .map_err(|e| after(e.to_string()))?;
            write_body(conn, m.body)
                .await
                .map_err(|e| after(e.to_string()))?;
        }
        match reply(conn).await.map_err(after)? {
            (250, _) => Ok(()),
            (_, text) => Err(after(text)),
        }
    }
}

/// The message in pieces of [`GATHER_MAX`].
async fn write_body(conn: &mut Conn, body: &[u8]) -> std::io::Result<()> {
    for piece in body.chunks(GATHER_MAX) {
        conn.write_all(piece).await?;
    }
    Ok(())
}

/// How long a node whose hand-over ran out of time is not tried again.
/// Meanwhile its lease either lapses (a failover or a new replica follows)
/// or it answers the next attempt.
pub const SILENT_HOLD: Duration = Duration::from_secs(10);

/// The nodes that went silent, shared by every shard of this node: a node
/// that stalled one shard's hand-over is as stalled for the others, so
/// only the first hand-over to it waits out the timeout, not the first of
/// each shard.
#[derive(Default)]
pub struct Silence {
    /// Until when each silent node is not tried.
    marks: std::sync::Mutex<HashMap<SocketAddr, Instant>>,
    /// Marks exist: the common case (none) costs one atomic load per
    /// hand-over, not a lock shared by the shards.
    any: std::sync::atomic::AtomicBool,
}

impl Silence {
    fn marks(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Instant>> {
        // A shard that panicked with the lock held left a plain map.
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn any(&self) -> bool {
        self.any.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Is `to` a node whose last hand-over ran out of time less than
    /// [`SILENT_HOLD`] ago?
    pub fn is_silent(&self, to: SocketAddr) -> bool {
        if !self.any() {
            return false;
        }
        let mut marks = self.marks();
        // Every ended hold goes, so a node nobody asks about again (it
        // left) does not keep the lock on every hand-over's path.
        let now = Instant::now();
        marks.retain(|_, until| now < *until);
        self.any
            .store(!marks.is_empty(), std::sync::atomic::Ordering::Release);
        marks.contains_key(&to)
    }

    /// How many nodes are silent now.
    pub fn silent_now(&self) -> usize {
        if !self.any() {
            return 0;
        }
        let now = Instant::now();
        self.marks().values().filter(|until| now < **until).count()
    }

    /// `to` answered: a mark set before ends.
    fn answered(&self, to: SocketAddr) {
        if self.any() {
            let mut marks = self.marks();
            marks.remove(&to);
            self.any
                .store(!marks.is_empty(), std::sync::atomic::Ordering::Release);
        }
    }

    fn went_silent(&self, to: SocketAddr) {
        let mut marks = self.marks();
        marks.insert(to, Instant::now() + SILENT_HOLD);
        self.any.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A shard's sessions with the other nodes (the idle ones per node's
/// internal address), and the node's [`Silence`] marks.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Peer>>>,
    silence: std::sync::Arc<Silence>,
}

impl Pool {
    /// A pool whose silence marks are `silence` (the node's, shared by its
    /// shards).
    pub fn new(silence: std::sync::Arc<Silence>) -> Pool {
        Pool {
            idle: RefCell::default(),
            silence,
        }
    }

    /// Is `to` a node whose last hand-over (on any shard) ran out of time
    /// less than [`SILENT_HOLD`] ago? Its buckets fail at once instead of
    /// each waiting out the timeout: a node that is live (its lease
    /// renewed) but wedged (a stuck disk, an overloaded machine) would
    /// otherwise hold every delivery and change of its buckets for that
    /// long.
    pub fn is_silent(&self, to: SocketAddr) -> bool {
        self.silence.is_silent(to)
    }

    fn answered(&self, to: SocketAddr) {
        self.silence.answered(to);
    }

    fn went_silent(&self, to: SocketAddr) {
        self.silence.went_silent(to);
        // This shard's idle sessions are as stuck as the one that ran out.
        // (Other shards find theirs stuck only if they try them, and the
        // mark keeps them from trying.)
        self.idle.borrow_mut().remove(&to);
    }

    /// An idle session with `to`, if one is fresh enough.
    fn take(&self, to: SocketAddr) -> Option<Peer> {
        let mut all = self.idle.borrow_mut();
        let list = all.get_mut(&to)?;
        while let Some(p) = list.pop() {
            if p.idle_since.elapsed() < POOL_IDLE_MAX {
                return Some(p);
            }
        }
        None
    }

    fn give_back(&self, to: SocketAddr, mut p: Peer) {
        let mut all = self.idle.borrow_mut();
        let list = all.entry(to).or_default();
        // The oldest go first: they are the likeliest to be closed.
        list.retain(|q| q.idle_since.elapsed() < POOL_IDLE_MAX);
        if list.len() < POOL_PER_PEER {
            p.idle_since = Instant::now();
            list.push(p);
        }
    }

    /// Idle sessions held now (all nodes).
    pub fn idle(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}

/// Hand one message for `recipients` to the member at `to` on a pooled
/// session (or a new one); a pooled session that turns out closed is
/// replaced once. The whole of it, connecting included, has
/// `[cluster] peer_timeout_ms`; `nested` (this node serves another
/// node's hand-over and owes this one to it: a primary's replica copy)
/// half of that, so that when the replica stalls, this node answers its
/// sender (451) before the sender's own time runs out, and only the node
/// that stalls is taken for silent.
pub async fn hand_over(
    shard: &Shard,
    to: SocketAddr,
    pins: &[String],
    recipients: &[String],
    m: &Outgoing<'_>,
    nested: bool,
) -> Result<(), String> {
    let pool = &shard.peers;
    // What it carries, for the metrics (`metrics::HANDOVER_KINDS`).
    let kind = if m.changes {
        1
    } else if m.append.is_some() {
        2
    } else {
        0
    };
    if pool.is_silent(to) {
        shard.metrics.refused_silent();
        return Err(format!(
            "it did not answer a hand-over in time; not tried for up to {} s",
            SILENT_HOLD.as_secs()
        ));
    }
    let mut limit = shard
        .config()
        .cluster
        .as_ref()
        .map_or(STEP_TIMEOUT, |c| Duration::from_millis(c.peer_timeout_ms));
    if nested {
        limit /= 2;
    }
    // Time to move the message itself, at 1 MB/s at the least: a large
    // one on a slow link is not a node that stopped answering.
    limit += Duration::from_millis(m.body.len() as u64 / 1000);
    // The whole hand-over, connecting included, in `limit`.
    let attempts = async {
        let mut pooled = pool.take(to);
        loop {
            let reused = pooled.is_some();
            let mut peer = match pooled.take() {
                Some(p) => p,
                None => connect(shard, to, pins.to_vec()).await?,
            };
            match peer.send(recipients, m).await {
                Ok(()) => {
                    pool.give_back(to, peer);
                    // It answers: one that started before a silence mark
                    // ends it.
                    pool.answered(to);
                    return Ok(());
                }
                Err(Failed::Broken(why)) if reused => {
                    tracing::debug!(%to, why, "cluster: a pooled session was closed; trying a new one");
                }
                Err(e) => return Err(e.into_reason()),
            }
        }
    };
    let timer = async {
        glommio::timer::sleep(limit).await;
        pool.went_silent(to);
        tracing::warn!(event = "peer_silent", %to, limit_ms = limit.as_millis() as u64, hold_s = SILENT_HOLD.as_secs(), "cluster: a node did not answer a hand-over in time; its buckets fail at once for a while");
        Err(None)
    };
    let started = Instant::now();
    let outcome = futures_lite::future::or(async { attempts.await.map_err(Some) }, timer).await;
    let result = match &outcome {
        Ok(()) => 0,
        Err(Some(_)) => 1,
        Err(None) => 2,
    };
    shard
        .metrics
        .handover(kind, result, started.elapsed().as_secs_f64());
    outcome.map_err(|e| e.unwrap_or_else(|| format!("no answer within {} ms", limit.as_millis())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that ran out of time is skipped until its hold ends or a
    /// hand-over already under way gets its answer; other nodes are not.
    #[test]
    fn a_silent_node_is_skipped_until_its_hold_ends_or_it_answers() {
        let pool = Pool::default();
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:7002".parse().unwrap(),
        );
        assert!(!pool.is_silent(a) && pool.silence.silent_now() == 0);
        pool.went_silent(a);
        assert!(pool.is_silent(a) && !pool.is_silent(b) && pool.silence.silent_now() == 1);
        pool.answered(a);
        assert!(!pool.is_silent(a) && pool.silence.silent_now() == 0);
        pool.went_silent(b);
        // The hold is over: tried again (and the mark goes, as does any
        // other ended one, whoever is asked about).
        *pool.silence.marks().get_mut(&b).unwrap() = Instant::now();
        assert!(!pool.is_silent(a));
        assert!(pool.silence.marks().is_empty() && !pool.silence.any());
        assert!(!pool.is_silent(b));
    }

    /// The marks are the node's: a node one shard found silent is skipped
    /// by the other shards (each on its own thread) too, and an answer on
    /// any shard ends it for all.
    #[test]
    fn every_shard_sees_a_silence_mark() {
        let silence = std::sync::Arc::new(Silence::default());
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let first = Pool::new(silence.clone());
        first.went_silent(a);
        let other = silence.clone();
        let seen = std::thread::spawn(move || {
            let pool = Pool::new(other);
            let silent = pool.is_silent(a);
            pool.answered(a);
            silent
        })
        .join()
        .unwrap();
        assert!(seen, "the other shard skips the node too");
        assert!(!first.is_silent(a), "its answer ended the mark here too");
    }
}
