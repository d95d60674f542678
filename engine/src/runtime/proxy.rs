//! Cluster mode: an IMAP or POP3 session whose account's bucket another
//! node is primary for is relayed to that node once the password checked
//! out here, as Dovecot's proxy does. The two nodes speak over implicit
//! TLS to the other node's IMAPS/POP3S listener, accepting only the
//! certificates that node published (pinned fingerprints); this node logs
//! in there with the client's own credentials (AUTHENTICATE PLAIN / AUTH
//! PLAIN), hands the client the answer, and from then on copies bytes both
//! ways (IDLE, COMPRESS and everything else work end to end) until either
//! side closes.
use std::net::SocketAddr;
use std::time::Duration;

use glommio::net::TcpStream;

use super::shard::Shard;
use crate::transport::{Conn, ReadOutcome};

/// The protocol being relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Imap,
    Pop3,
}

/// Where an account's sessions go: the node's TLS listener and its pins.
pub struct Home {
    pub node: String,
    pub addr: SocketAddr,
    pub pins: Vec<String>,
}

/// Connect, TLS handshake, greeting and login: within this in all.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest line accepted from the other node before the relay starts.
const LINE_MAX: usize = 8192;

impl Shard {
    /// The node `account`'s sessions go to, when that is not this one.
    /// Err: the account's node is unknown or not live.
    pub fn remote_home(&self, account: &str, kind: Kind) -> Result<Option<Home>, String> {
        let Some(mapped) = self.mapped() else {
            return Ok(None);
        };
        let bucket = self.bucket(account);
        let owner = mapped
            .map()
            .primary_of(bucket)
            .ok_or_else(|| format!("bucket {bucket} has no primary"))?;
        if owner == mapped.me {
            return Ok(None);
        }
        let m = mapped
            .view
            .members
            .get(owner)
            .ok_or_else(|| format!("node {owner} is not live"))?;
        let list = match kind {
            Kind::Imap => &m.imaps,
            Kind::Pop3 => &m.pop3s,
        };
        let mut addr = list
            .iter()
            .find_map(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| format!("node {owner} has no TLS listener for {kind:?}"))?;
        // A listener on every address (0.0.0.0, [::]) is reached at the
        // node's internal address, never at our own.
        if addr.ip().is_unspecified() {
            let internal = m
                .internal_addr()
                .ok_or_else(|| format!("node {owner}: bad internal address"))?;
            addr.set_ip(internal.ip());
        }
        Ok(Some(Home {
            node: owner.to_string(),
            addr,
            pins: m.tls_sha256.clone(),
        }))
    }
}

/// Open the TLS connection to `home` and read its greeting.
async fn connect(home: &Home) -> Result<Conn, String> {
    let stream = TcpStream::connect_timeout(home.addr, LOGIN_TIMEOUT)
        .await
        .map_err(|e| format!("connect {}: {e}", home.addr))?;
    let mut up = Conn::new(stream, Vec::new());
    up.set_buffer_max(LINE_MAX + crate::limits::READ_CHUNK);
    let config =
        crate::tls::pinned_client_config(home.pins.clone(), None).map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::IpAddress(home.addr.ip().into());
    up.start_tls_client(config, name)
        .map_err(|e| format!("tls: {e}"))?;
    up.handshake(LOGIN_TIMEOUT)
        .await
        .map_err(|e| format!("tls handshake with {}: {e:?}", home.node))?;
    Ok(up)
}

/// One CRLF-terminated line from `up` (without the line end).
async fn line(up: &mut Conn) -> Result<Vec<u8>, String> {
    loop {
        if let Some(i) = memchr::memchr(b'\n', up.pending()) {
            let mut l = up.pending()[..i].to_vec();
            up.consume(i + 1);
            if l.last() == Some(&b'\r') {
                l.pop();
            }
            return Ok(l);
        }
        if up.pending().len() >= LINE_MAX {
            return Err("line too long".into());
        }
        match up.fill(LOGIN_TIMEOUT).await {
            ReadOutcome::Data => {}
            ReadOutcome::Eof => return Err("closed".into()),
            ReadOutcome::TimedOut => return Err("timed out".into()),
            ReadOutcome::Failed(e) => return Err(e.to_string()),
        }
    }
}

/// Log in at `home` as `account`. Ok: the line to give the client for its
/// login (IMAP: the tagged OK with `tag`; POP3: the +OK). Err: why not.
async fn login(
    up: &mut Conn,
    kind: Kind,
    tag: &[u8],
    account: &str,
    password: &str,
    out: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    let greeting = line(up).await?;
    let ok_greeting = match kind {
        Kind::Imap => greeting.starts_with(b"* OK"),
        Kind::Pop3 => greeting.starts_with(b"+OK"),
    };
    if !ok_greeting {
        return Err(format!("greeting {}", String::from_utf8_lossy(&greeting)));
    }
    let mut plain = Vec::with_capacity(account.len() + password.len() + 2);
    plain.push(0);
    plain.extend_from_slice(account.as_bytes());
    plain.push(0);
    plain.extend_from_slice(password.as_bytes());
    let b64 = crate::util::base64_encode(&plain);
    let command = match kind {
        Kind::Imap => format!("P1 AUTHENTICATE PLAIN {b64}\r\n"),
        Kind::Pop3 => format!("AUTH PLAIN {b64}\r\n"),
    };
    up.write_all(command.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let l = line(up).await?;
        match kind {
            Kind::Imap => {
                if let Some(rest) = l.strip_prefix(b"P1 ") {
                    if !rest.starts_with(b"OK") {
                        return Err(String::from_utf8_lossy(&l).into_owned());
                    }
                    let mut answer = tag.to_vec();
                    answer.push(b' ');
                    answer.extend_from_slice(rest);
                    answer.extend_from_slice(b"\r\n");
                    return Ok(answer);
                }
                // Untagged data of the login (CAPABILITY) goes to the
                // client, a few lines of it at most.
                if l.starts_with(b"* ") {
                    if out.len() + l.len() > LINE_MAX * 4 {
                        return Err("too much untagged data before the login's answer".into());
                    }
                    out.extend_from_slice(&l);
                    out.extend_from_slice(b"\r\n");
                    continue;
                }
                return Err(String::from_utf8_lossy(&l).into_owned());
            }
            Kind::Pop3 => {
                if l.starts_with(b"+OK") {
                    let mut answer = l;
                    answer.extend_from_slice(b"\r\n");
                    return Ok(answer);
                }
                return Err(String::from_utf8_lossy(&l).into_owned());
            }
        }
    }
}

/// Copy what the other node still sends to the client until it closes
/// (bounded: the other node ends a session it has answered).
async fn drain(up: &mut Conn, conn: &mut Conn) {
    while let ReadOutcome::Data = up.fill(LOGIN_TIMEOUT).await {
        let bytes = up.take_pending();
        if conn.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// Relay the session of `conn` (logged in here as `account`) to `home`.
/// `tag`: the client's IMAP login tag (empty for POP3). Writes the login's
/// answer to the client either way; returns when the session is over.
pub async fn relay(
    shard: &Shard,
    conn: &mut Conn,
    home: Home,
    kind: Kind,
    tag: &[u8],
    account: &str,
    password: &str,
) {
    let mut out = Vec::new();
    let up = async {
        let mut up = connect(&home).await?;
        let answer = login(&mut up, kind, tag, account, password, &mut out).await?;
        Ok::<_, String>((up, answer))
    };
    let (mut up, answer) = match up.await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(account, node = %home.node, error = %e, "cluster: proxy login at the account's node failed");
            let refusal: &[u8] = match kind {
                Kind::Imap => {
                    b" NO [UNAVAILABLE] The mailbox's node is not reachable, try again later\r\n"
                }
                // `tag` is empty for POP3.
                Kind::Pop3 => {
                    b"-ERR [SYS/TEMP] The mailbox's node is not reachable, try again later\r\n"
                }
            };
            let mut msg = tag.to_vec();
            msg.extend_from_slice(refusal);
            let _ = conn.write_all(&msg).await;
            return;
        }
    };
    out.extend_from_slice(&answer);
    if conn.write_all(&out).await.is_err() {
        return;
    }
    tracing::info!(account, node = %home.node, ?kind, "cluster: session relayed to the account's node");
    conn.set_buffer_max(64 * 1024);
    up.set_buffer_max(64 * 1024);
    // Whatever the client pipelined behind its login goes first.
    let idle = match kind {
        // RFC 3501 5.4: at least 30 minutes; the other node applies its own.
        Kind::Imap => Duration::from_secs(31 * 60),
        Kind::Pop3 => Duration::from_secs(shard.config().timeouts.pop3_idle_secs.max(600) + 60),
    };
    let mut to_up = conn.take_pending();
    loop {
        if !to_up.is_empty() {
            if up.write_all(&to_up).await.is_err() {
                return;
            }
            to_up.clear();
        }
        let (side, outcome) = {
            let from_client = conn.fill(idle);
            let from_up = up.fill(idle);
            futures::pin_mut!(from_client, from_up);
            match futures::future::select(from_client, from_up).await {
                futures::future::Either::Left((r, _)) => (0, r),
                futures::future::Either::Right((r, _)) => (1, r),
            }
        };
        match (side, outcome) {
            (0, ReadOutcome::Data) => to_up = conn.take_pending(),
            (_, ReadOutcome::Data) => {
                let bytes = up.take_pending();
                if conn.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            (0, ReadOutcome::Eof) => {
                // The client said all it will say (a half-close after QUIT
                // or LOGOUT): the answers to what it sent still come back.
                drain(&mut up, conn).await;
                return;
            }
            _ => return,
        }
    }
}
