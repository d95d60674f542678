//! Drives one POP3 connection. Authorization happens on whichever shard
//! accepted the connection; after a successful login the connection moves to
//! the shard that owns the account (the descriptor, the session state and any
//! bytes already read travel over the mesh), so every maildrop operation is
//! local to its owner.
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;

use glommio::net::TcpStream;

use crate::protocol::pop3::write_stuffed;
use crate::session::pop3::{
    LoginResult, Maildrop, MaildropEntry, Pop3Event, Pop3Params, Pop3Session,
};
use crate::storage::{index, Body};

use super::limiter::{Permit, Refusal};
use super::shard::{ConnCount, Login, Shard, ShardMsg};
use crate::transport::{Conn, ReadOutcome};

/// The frozen maildrop of a logged-in session, and its lock.
struct Drop_ {
    account: String,
    uids: Vec<u32>,
    bodies: Vec<Body>,
    _lock: LockGuard,
}

struct LockGuard {
    shard: Rc<Shard>,
    account: String,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.shard.pop3_locks.borrow_mut().remove(&self.account);
    }
}

/// Serve one POP3 connection; `implicit_tls`: TLS from the first byte (RFC 8314).
pub async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Result<Permit, Refusal>,
    implicit_tls: bool,
) {
    let count = ConnCount::new(&shard);
    let mut conn = Conn::accepted(stream);
    let refusal: &'static [u8] = if implicit_tls {
        b""
    } else {
        b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
    };
    let Some(permit) = conn.admit(permit, |_| refusal).await else {
        return;
    };
    if implicit_tls && shard.accept_tls(&mut conn, peer, "pop3s").await.is_none() {
        return;
    }
    let mut session = Pop3Session::new(Pop3Params {
        hostname: shard.config().hostname.clone(),
        auth_failures_max: shard.config().limits.auth_failures_max,
        stls: true,
        tls: implicit_tls,
        auth_plaintext: shard.config().auth_without_tls_for(peer.ip()),
    });
    let mut out = Vec::with_capacity(512);
    session.greeting(&mut out);
    if conn.flush(&mut out).await.is_err() {
        return;
    }
    run(shard, conn, session, None, permit, out, count).await;
}

/// Continue a session moved here after its login.
pub async fn adopted(
    shard: Rc<Shard>,
    conn: Conn,
    mut session: Pop3Session,
    account: String,
    permit: Permit,
) {
    let count = ConnCount::new(&shard);
    let mut out = Vec::with_capacity(512);
    let maildrop = open_maildrop(&shard, &account, &mut session, &mut out);
    run(shard, conn, session, maildrop, permit, out, count).await;
}

fn open_maildrop(
    shard: &Rc<Shard>,
    account: &str,
    session: &mut Pop3Session,
    out: &mut Vec<u8>,
) -> Option<Drop_> {
    debug_assert_eq!(shard.owner_of(account), shard.id);
    if !shard.pop3_locks.borrow_mut().insert(account.to_string()) {
        session.login_result(LoginResult::InUse, out);
        return None;
    }
    let lock = LockGuard {
        shard: shard.clone(),
        account: account.to_string(),
    };
    let snapshot = shard.store.with_account(account, |a| {
        a.mailbox(index::INBOX).map(|inbox| {
            (
                inbox.uidvalidity,
                inbox
                    .messages
                    .iter()
                    .map(|m| (m.uid, m.loc))
                    .collect::<Vec<_>>(),
            )
        })
    });
    // An account that never received mail has no index yet: an empty maildrop.
    let (uidvalidity, list) = snapshot.flatten().unwrap_or((0, Vec::new()));
    let mut entries = Vec::with_capacity(list.len());
    let mut uids = Vec::with_capacity(list.len());
    let mut bodies = Vec::with_capacity(list.len());
    for (uid, loc) in list {
        let Some(body) = shard.store.body(loc) else {
            tracing::error!(account, uid, "index entry without its body");
            continue;
        };
        // RFC 1939 7: a unique-id is 1-70 printable characters, stable across sessions.
        entries.push(MaildropEntry {
            size: u64::from(loc.len),
            uidl: format!("{uidvalidity}.{uid}"),
        });
        uids.push(uid);
        bodies.push(body);
    }
    session.login_result(LoginResult::Ok(Maildrop { entries }), out);
    Some(Drop_ {
        account: account.to_string(),
        uids,
        bodies,
        _lock: lock,
    })
}

/// Cluster mode: the last answer of a session whose maildrop moved to
/// another node (`Shard::serves`).
const MOVED: &[u8] = b"-ERR [SYS/TEMP] maildrop moved to another node, connect again\r\n";

async fn run(
    shard: Rc<Shard>,
    mut conn: Conn,
    mut session: Pop3Session,
    mut maildrop: Option<Drop_>,
    permit: Permit,
    mut out: Vec<u8>,
    count: ConnCount,
) {
    let peer = conn.peer();
    let fd = conn.fd();
    let idle_timeout = shard.config().pop3_idle_timeout();
    loop {
        let (used, event) = session.advance(conn.pending(), &mut out);
        conn.consume(used);
        match event {
            Pop3Event::NeedInput => {
                if conn.flush(&mut out).await.is_err() {
                    return;
                }
                if shard.stopping() {
                    let _ = conn
                        .write_all(b"-ERR [SYS/TEMP] server shutting down\r\n")
                        .await;
                    return;
                }
                let account = maildrop.as_ref().map(|m| m.account.as_str());
                // Cluster mode: the maildrop moved to another node (its
                // bucket did); the session ends without UPDATE, so nothing
                // is deleted here, and the client's next connection is
                // relayed to the new primary.
                if account.is_some_and(|a| !shard.serves(a)) {
                    let _ = conn.write_all(MOVED).await;
                    return;
                }
                shard.set_idle_as(fd, account);
                let r = conn.fill(idle_timeout).await;
                shard.set_idle(fd, false);
                match r {
                    ReadOutcome::Data => {}
                    // RFC 1939 3: a session ended other than by QUIT never enters UPDATE.
                    ReadOutcome::Eof | ReadOutcome::Failed(_) => {
                        if shard.stopping() {
                            let _ = conn
                                .write_all(b"-ERR [SYS/TEMP] server shutting down\r\n")
                                .await;
                        } else if account.is_some_and(|a| !shard.serves(a)) {
                            let _ = conn.write_all(MOVED).await;
                        }
                        return;
                    }
                    ReadOutcome::TimedOut => {
                        let _ = conn.write_all(b"-ERR autologout timer expired\r\n").await;
                        return;
                    }
                }
            }
            Pop3Event::Login { user, password } => {
                let account = match shard
                    .login(
                        conn.peer().ip(),
                        "pop3",
                        conn.tls_info().map_or("", |i| i.version),
                        &user,
                        &password,
                    )
                    .await
                {
                    Login::Ok(account) => account,
                    Login::Failed => {
                        session.login_result(LoginResult::BadCredentials, &mut out);
                        continue;
                    }
                    Login::Banned => {
                        session.login_result(LoginResult::Banned, &mut out);
                        continue;
                    }
                    Login::Busy => {
                        session.login_result(LoginResult::TempFail, &mut out);
                        continue;
                    }
                };
                // Cluster mode: an account stored on another node is
                // served there, through this connection.
                match shard.remote_home(&account, super::proxy::Kind::Pop3) {
                    Ok(None) => {}
                    Ok(Some(home)) => {
                        if conn.flush(&mut out).await.is_err() {
                            return;
                        }
                        let kind = super::proxy::Kind::Pop3;
                        super::proxy::relay(
                            &shard, &mut conn, home, kind, b"", &account, &password,
                        )
                        .await;
                        return;
                    }
                    Err(why) => {
                        tracing::warn!(account, why, "cluster: the account's node is unavailable");
                        session.login_result(LoginResult::TempFail, &mut out);
                        continue;
                    }
                }
                let owner = shard.owner_of(&account);
                if owner == shard.id {
                    maildrop = open_maildrop(&shard, &account, &mut session, &mut out);
                    continue;
                }
                // Move to the owner: earlier pipelined replies go out first.
                if conn.flush(&mut out).await.is_err() {
                    return;
                }
                let conn = match conn.detach() {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot move connection");
                        return;
                    }
                };
                drop(count);
                let msg = ShardMsg::AdoptPop3 {
                    conn,
                    session: Box::new(session),
                    account,
                    permit,
                };
                if shard.senders.send_to(owner, msg).await.is_err() {
                    tracing::error!(owner, "owner shard unavailable; connection dropped");
                }
                return;
            }
            Pop3Event::StartTls => {
                let Some(slot) = shard.handshake_slot() else {
                    session.starttls_result(false, &mut out);
                    continue;
                };
                session.starttls_result(true, &mut out);
                if conn.flush(&mut out).await.is_err() {
                    return;
                }
                if shard
                    .tls_handshake(slot, &mut conn, peer, "pop3")
                    .await
                    .is_none()
                {
                    return;
                }
                session.tls_started();
            }
            Pop3Event::SendMessage { index, body_lines } => {
                let Some(drop_) = maildrop.as_ref() else {
                    return;
                };
                let Some(body) = drop_.bodies.get(index) else {
                    return;
                };
                if send_message(&mut conn, &mut out, body.bytes(), body_lines)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Pop3Event::Update { deleted } => {
                let ok = match maildrop.as_ref() {
                    // Cluster mode: the maildrop moved to another node
                    // during the session; what is deleted here would come
                    // back there. RFC 1939 6: "-ERR some deleted messages
                    // not removed".
                    Some(d) if !deleted.is_empty() && !shard.serves(&d.account) => false,
                    Some(d) if !deleted.is_empty() => {
                        let uids: Vec<u32> = deleted
                            .iter()
                            .filter_map(|i| d.uids.get(*i).copied())
                            .collect();
                        match expunge(&shard, &d.account, uids).await {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(error = %e, "POP3 update failed");
                                false
                            }
                        }
                    }
                    _ => true,
                };
                session.update_result(ok, &mut out);
            }
            Pop3Event::Close => {
                let _ = conn.flush(&mut out).await;
                return;
            }
        }
    }
}

/// Write `+OK` (already in `out`), then the byte-stuffed message straight from
/// the segment mapping: slices of the message go to the socket as they are,
/// only the few inserted bytes are copied. TCP_CORK packs it into full segments.
async fn send_message(
    conn: &mut Conn,
    out: &mut Vec<u8>,
    message: &[u8],
    body_lines: Option<usize>,
) -> std::io::Result<()> {
    enum Piece {
        Message(Range<usize>),
        Inserted(Range<usize>),
    }
    let base = message.as_ptr() as usize;
    let mut pieces = Vec::new();
    let mut inserted = Vec::new();
    write_stuffed(message, body_lines, &mut |s: &[u8]| {
        let p = s.as_ptr() as usize;
        if p >= base && p + s.len() <= base + message.len() && !s.is_empty() {
            pieces.push(Piece::Message(p - base..p - base + s.len()));
        } else {
            let at = inserted.len();
            inserted.extend_from_slice(s);
            pieces.push(Piece::Inserted(at..inserted.len()));
        }
    });
    conn.cork(true);
    let mut result = Ok(());
    for piece in pieces {
        match piece {
            Piece::Inserted(r) => out.extend_from_slice(&inserted[r]),
            Piece::Message(r) => {
                if let Err(e) = conn.flush(out).await {
                    result = Err(e);
                    break;
                }
                if let Err(e) = conn.write_all(&message[r]).await {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    if result.is_ok() {
        result = conn.flush(out).await;
    }
    conn.cork(false);
    result
}

/// The UPDATE state's removal (RFC 1939 6): in cluster mode here and on
/// the replica.
async fn expunge(
    shard: &Shard,
    account: &str,
    mut uids: Vec<u32>,
) -> Result<(), crate::storage::StorageError> {
    uids.sort_unstable();
    uids.dedup();
    if shard.mapped().is_some() && !uids.is_empty() {
        let modseq = shard.store.next_modseq(account, index::INBOX)?;
        let ops = [crate::storage::record::Op::Expunge {
            account,
            mailbox: index::INBOX,
            uids,
            modseq,
        }];
        return Box::pin(super::changes::commit(shard, &ops)).await;
    }
    shard.store.expunge(account, index::INBOX, uids).await
}
