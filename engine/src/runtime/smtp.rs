//! Drives one SMTP connection: reads into the connection buffer, lets the
//! sans-I/O session consume it, performs the deliveries it asks for, and
//! writes its replies (once per batch of pipelined commands).
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use glommio::net::TcpStream;

use crate::accounts::Lookup;
use crate::auth::policy::{self, Decision, Refusal as AuthRefusal};
use crate::session::smtp::{
    AuthResult, DeliveryOutcome, RcptVerdict, SmtpContext, SmtpEvent, SmtpParams, SmtpSession,
    StartTlsResult,
};
use crate::storage::Folder;

use super::limiter::{Permit, Refusal};
use super::shard::{unix_now, ConnCount, Login, Shard};
use super::spool::{MessageBody, Spooler, Track};
use crate::transport::{Conn, ReadOutcome};

struct Ctx<'a> {
    shard: &'a Shard,
}

impl SmtpContext for Ctx<'_> {
    fn recipient(&self, address: &str) -> RcptVerdict {
        let config = self.shard.config();
        // RFC 5321 4.5.1: "postmaster" without a domain must be accepted.
        let full;
        let address = if address.eq_ignore_ascii_case("postmaster") {
            match config.local_domains.first() {
                Some(d) => {
                    full = format!("postmaster@{d}");
                    &full
                }
                None => return RcptVerdict::UnknownUser,
            }
        } else {
            address
        };
        let Some((_, domain)) = address.rsplit_once('@') else {
            return RcptVerdict::UnknownUser;
        };
        let domain = domain.trim_end_matches('.');
        if !config.is_local_domain(domain) {
            return RcptVerdict::NotLocal;
        }
        match self.shard.directory().resolve(address) {
            Lookup::Account(account) if self.shard.over_quota(&account, 0) => {
                RcptVerdict::OverQuota { account }
            }
            Lookup::Account(account) => RcptVerdict::Local { account },
            Lookup::Unknown => RcptVerdict::UnknownUser,
        }
    }

    fn now_unix(&self) -> i64 {
        unix_now()
    }

    fn has_room(&self, account: &str, size: u64) -> bool {
        !self.shard.over_quota(account, size)
    }

    fn may_send_as(&self, account: &str, address: &str) -> bool {
        let senders = &self.shard.config().senders;
        if !senders.check_ownership
            || senders
                .send_as_anyone
                .iter()
                .any(|a| a.eq_ignore_ascii_case(account))
        {
            return true;
        }
        matches!(self.recipient(address), RcptVerdict::Local { account: owner } if owner.eq_ignore_ascii_case(account))
    }
}

/// The domain a message is signed for: its From: address's (the one the
/// sender was checked against), else the reverse path's.
pub fn signing_domain(message: &[u8], reverse_path: &str) -> Option<String> {
    use crate::mime::address::{parse_address_list, Address};
    let (header, _) = crate::mime::header::split(message);
    let from = crate::mime::header::field_value(header, b"From").and_then(|v| {
        parse_address_list(&crate::mime::header::unfold(v))
            .into_iter()
            .find_map(|a| match a {
                Address::Mailbox { host, .. } if !host.is_empty() => {
                    Some(String::from_utf8_lossy(&host).into_owned())
                }
                _ => None,
            })
    });
    from.or_else(|| reverse_path.rsplit_once('@').map(|(_, d)| d.to_string()))
        .map(|d| d.to_ascii_lowercase())
}

/// DKIM-sign `body` with the keys of its domain, on a blocking thread (a
/// large message's hash must not hold up the shard). Returns the body and,
/// when signed, the signatures followed by a copy of the body.
async fn dkim_sign(
    shard: &Shard,
    body: MessageBody,
    reverse_path: &str,
) -> (MessageBody, Option<Vec<u8>>) {
    let Some(domain) = signing_domain(&body, reverse_path) else {
        return (body, None);
    };
    let keys = shard.shared.dkim.clone();
    if keys.for_domain(&domain).is_empty() {
        return (body, None);
    }
    let (body, signed) = glommio::executor()
        .spawn_blocking(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                keys.sign(&domain, &body)
            }));
            let signed = match r {
                Ok(Ok(headers)) => {
                    let mut v = Vec::with_capacity(headers.len() + body.len());
                    v.extend_from_slice(&headers);
                    v.extend_from_slice(&body);
                    Some(v)
                }
                Ok(Err(e)) => {
                    tracing::warn!(domain, error = %e, "DKIM signing failed; relaying unsigned");
                    None
                }
                Err(_) => None,
            };
            (body, signed)
        })
        .await;
    (body, signed)
}

/// Verify a message from the Internet on the DNS thread. The body travels
/// in an `Arc` and comes back (the DNS thread drops its reference before it
/// answers; should it not have, the bytes are copied). `None`: the DNS
/// thread is gone or the verification failed; the caller defers.
async fn authenticate(
    verifier: &crate::auth::Verifier,
    body: MessageBody,
    peer: SocketAddr,
    helo: String,
    reverse_path: &str,
) -> (MessageBody, Option<crate::auth::Outcome>) {
    // The session's own Received: field is not part of what was received.
    let skip = crate::auth::header::first_field_len(&body);
    let shared = Arc::new(body);
    let outcome = verifier
        .verify(
            shared.clone(),
            skip,
            crate::auth::Envelope {
                ip: peer.ip().to_canonical(),
                helo,
                mail_from: reverse_path.to_string(),
            },
        )
        .await;
    let body = Arc::try_unwrap(shared).unwrap_or_else(|a| MessageBody::Heap(a.to_vec()));
    (body, outcome)
}

/// Remove the Authentication-Results fields that claim our authserv-id
/// (RFC 8601 section 5): in place for a body in RAM, into a new buffer for
/// a spooled one (only when there is one to remove).
fn strip_forged_results(body: MessageBody, hostname: &str) -> MessageBody {
    use crate::auth::header::{forged_results, remove_ranges, without_ranges};
    let forged = forged_results(&body, hostname);
    if forged.is_empty() {
        return body;
    }
    tracing::info!(
        fields = forged.len(),
        "removed Authentication-Results fields forged for our host name"
    );
    match body {
        MessageBody::Heap(mut v) => {
            remove_ranges(&mut v, &forged);
            MessageBody::Heap(v)
        }
        MessageBody::Mapped(m) => MessageBody::Heap(without_ranges(&m, &forged)),
    }
}

/// Whether every address in the From: field(s) of `message` may be used by
/// `account` (RFC 5322 3.6.2; a message without From: is left alone).
///
/// Checked twice: as ringmail reads the header (lenient, built for IMAP
/// ENVELOPE) and as mail-auth reads it, which is what a DMARC verifier
/// downstream aligns with the DKIM signature. The two disagree on malformed
/// headers (a line that is no field ends ringmail's header but not
/// mail-auth's; `<a@x> <b@x>` is one address to ringmail and another to
/// mail-parser), and each disagreement would let a sender put a From: the
/// check never saw under our signature. Found by the from_header fuzz target.
/// Public, with any context, for the fuzz target (`engine/fuzz`).
pub fn from_header_allowed(ctx: &impl SmtpContext, account: &str, message: &[u8]) -> bool {
    use crate::mime::address::{parse_address_list, Address};
    let (header, _) = crate::mime::header::split(message);
    crate::mime::header::field_values(header, b"From").all(|value| {
        let value = crate::mime::header::unfold(value);
        // RFC 5322 3.2.3/3.4.1: no control character belongs in an address
        // outside obsolete syntax. The lenient ENVELOPE parser drops them,
        // so "ali\x13ce@" would be checked as "alice@" while the recipient
        // (and a DMARC verifier) sees another address: refuse such a field.
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return false;
        }
        parse_address_list(&value).iter().all(|a| match a {
            Address::Mailbox { mailbox, host, .. } => {
                let address = format!(
                    "{}@{}",
                    String::from_utf8_lossy(mailbox),
                    String::from_utf8_lossy(host)
                );
                ctx.may_send_as(account, &address)
            }
            Address::GroupStart(_) | Address::GroupEnd => true,
        })
    }) && dmarc_from(message)
        .iter()
        .all(|address| ctx.may_send_as(account, address))
}

/// The From: addresses mail-auth finds in `message` (lower-cased). Only the
/// part up to the first empty line is given to it: its header section never
/// reaches past one, and its parser would otherwise hash the body for every
/// DKIM-Signature field it meets, on this executor.
fn dmarc_from(message: &[u8]) -> Vec<String> {
    let end = [&b"\n\n"[..], b"\n\r\n"]
        .iter()
        .filter_map(|blank| memchr::memmem::find(message, blank))
        .min()
        .map_or(message.len(), |i| i + 1);
    mail_auth::AuthenticatedMessage::parse(&message[..end]).map_or_else(Vec::new, |m| m.from)
}

/// Serve one SMTP connection; `submission`: a submission listener (AUTH
/// before MAIL); `implicit_tls`: TLS from the first byte (RFC 8314).
/// What the per-transaction log event and the metrics need, taken at the
/// end of data.
struct TxRecord {
    end_of_data: std::time::Instant,
    size: u64,
    /// (local, relayed) recipients.
    rcpts: (u64, u64),
}

/// One log event per SMTP transaction (stable field names: `queue_id`,
/// `client`, `helo`, `tls`, `account`, `sender`, `recipients`, `size`,
/// `reply`, `latency_us`) plus `ringmail_smtp_transactions_total`,
/// `ringmail_delivery_seconds` and, for an acknowledged message, its
/// recipients and size.
fn count_transaction(
    shard: &Shard,
    session: &SmtpSession,
    peer: SocketAddr,
    submission: bool,
    tx: &TxRecord,
    sender: &str,
    code: u16,
) {
    if code == 0 {
        return;
    }
    let latency = tx.end_of_data.elapsed();
    let m = &shard.metrics;
    m.smtp_transaction(submission, code);
    m.delivery_seconds.observe(latency.as_secs_f64());
    if code / 100 == 2 {
        m.recipients_local
            .set(m.recipients_local.get() + tx.rcpts.0);
        m.recipients_queued
            .set(m.recipients_queued.get() + tx.rcpts.1);
        m.message_bytes_received
            .set(m.message_bytes_received.get() + tx.size);
    }
    tracing::info!(
        event = "smtp_transaction",
        queue_id = session.queue_id(),
        client = %peer.ip(),
        helo = session.helo().unwrap_or(""),
        tls = session.tls().map(|t| t.version).unwrap_or(""),
        account = session.authenticated().unwrap_or(""),
        sender,
        recipients = tx.rcpts.0 + tx.rcpts.1,
        size = tx.size,
        reply = code,
        latency_us = latency.as_micros() as u64,
        "message {}",
        if code / 100 == 2 { "accepted" } else { "refused" }
    );
}

/// What a node's hand-over may add to a message it accepted (its
/// Received: and Authentication-Results: fields).
pub(crate) const INTERNAL_HEADROOM: usize = 64 * 1024;

/// Which listener a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Port 25: mail from other servers.
    Mx,
    /// Submission (AUTH before MAIL), STARTTLS.
    Submission,
    /// Submission over implicit TLS (RFC 8314).
    Submissions,
    /// Cluster mode: another node hands over mail for accounts this node is
    /// primary for. Only from the cluster's members; the sending node
    /// already checked the mail (authentication results, limits), so it is
    /// stored as received, never forwarded again.
    Internal,
}

pub async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Result<Permit, Refusal>,
    role: Role,
) {
    let submission = matches!(role, Role::Submission | Role::Submissions);
    let implicit_tls = role == Role::Submissions;
    let internal = role == Role::Internal;
    let _count = ConnCount::new(&shard);
    let mut conn = Conn::accepted(stream);
    let refusal = |r| -> &'static [u8] {
        match r {
            // Nothing in clear on a TLS port: just close.
            _ if implicit_tls => b"",
            Refusal::ServerFull => b"421 4.7.0 Too many connections, try again later\r\n",
            Refusal::AddressFull => b"421 4.7.0 Too many connections from your address\r\n",
            Refusal::AddressRate => {
                b"421 4.7.0 Too many connections from your address this minute, try again later\r\n"
            }
        }
    };
    // Connection limits apply before any handshake work.
    let Some(_permit) = conn.admit(permit, refusal).await else {
        return;
    };
    if internal && !shard.is_cluster_peer(peer.ip()) {
        tracing::warn!(%peer, "internal listener: not a member of this cluster; closed");
        let _ = conn
            .write_all(b"554 5.7.1 Not a member of this cluster\r\n")
            .await;
        return;
    }
    let mut tls = None;
    if implicit_tls {
        tls = shard.accept_tls(&mut conn, peer, "submissions").await;
        if tls.is_none() {
            return;
        }
    }
    let config = shard.config();
    let relay_client = config
        .relay
        .relay_networks
        .iter()
        .any(|n| n.contains(peer.ip()));
    let mut session = SmtpSession::new(SmtpParams {
        hostname: config.hostname.clone(),
        peer,
        // A node hands over what it accepted, with its Received: and
        // Authentication-Results: added: room for those.
        message_size_max: if internal {
            config.limits.message_size_max + INTERNAL_HEADROOM
        } else {
            config.limits.message_size_max
        },
        recipients_max: config.limits.recipients_max,
        errors_max: config.limits.smtp_errors_max,
        session_id: shard.session_id(),
        // Passwords in clear only over loopback unless configured otherwise;
        // under TLS the session always offers AUTH.
        auth: config.auth_without_tls_for(peer.ip()),
        starttls: true,
        tls,
        submission,
        relay_client,
        auth_failures_max: config.limits.auth_failures_max,
        require_tls: internal,
    });
    let mut out = Vec::with_capacity(1024);
    session.greeting(&mut out);
    // Commands are charged to the address's per-minute rate in batches, so
    // the shared counter is touched once per COMMAND_BATCH commands.
    const COMMAND_BATCH: u64 = 16;
    let command_rate_exempt = config.rate_exempt(peer.ip()) || internal;
    let mut commands_charged = 0u64;
    if conn.flush(&mut out).await.is_err() {
        return;
    }
    let fd = conn.fd();
    // Unauthenticated senders on port 25 share a spool budget per address.
    let charge_to = |s: &SmtpSession| {
        (s.authenticated().is_none() && !relay_client && !internal)
            .then(|| peer.ip().to_canonical())
    };
    let mut spooler = Spooler::new(shard.budget.clone(), charge_to(&session));
    // Which message the spooler holds bytes of (`SmtpSession::message_serial`).
    let mut spooled_serial = None;
    // Internal listener: the client presented a member's certificate.
    let mut member = false;
    loop {
        // A member copying buckets it gained (runtime/catchup.rs), between
        // transactions: the rest of the connection is that copy.
        if member
            && !session.message_in_progress()
            && super::catchup::is_request(conn.pending())
            && memchr::memchr(b'\n', conn.pending()).is_some()
        {
            super::catchup::serve(&shard, &mut conn).await;
            return;
        }
        let (used, event) = {
            let ctx = Ctx { shard: &shard };
            session.advance(conn.pending(), &ctx, &mut out)
        };
        conn.consume(used);
        let (t4, t5) = session.take_refused_transactions();
        for _ in 0..t4 {
            shard.metrics.smtp_transaction(submission, 451);
        }
        for _ in 0..t5 {
            shard.metrics.smtp_transaction(submission, 550);
        }
        let seen = session.commands_seen();
        if !command_rate_exempt && seen - commands_charged >= COMMAND_BATCH {
            let n = (seen - commands_charged).min(u64::from(u32::MAX)) as u32;
            commands_charged = seen;
            if !shard
                .shared
                .limiter
                .command_rate
                .charge(peer.ip(), n, super::limiter::minute_now())
            {
                tracing::info!(event = "throttle", decision = "refuse_command_rate", %peer, "session closed: too many SMTP commands from this address this minute");
                crate::protocol::smtp::replies::COMMAND_RATE
                    .write_with_host(&mut out, &config.hostname);
                let _ = conn.flush(&mut out).await;
                return;
            }
        }
        match event {
            SmtpEvent::NeedInput => {
                if session.message_in_progress() && !session.body_buffer().is_empty() {
                    if spooled_serial != Some(session.message_serial()) {
                        spooler.reset();
                        spooler.set_address(charge_to(&session));
                        spooled_serial = Some(session.message_serial());
                    }
                    match spooler.track(session.body_buffer()).await {
                        Ok(Track::Held) => {}
                        Ok(Track::Refused) => {
                            tracing::info!(%peer, spool = shard.budget.spool_used(), "no room for the message in flight; it is refused with 451");
                            session.refuse_message();
                        }
                        Err(e) if super::spool::is_disk_full(&e) => {
                            tracing::warn!(%peer, error = %e, "no disk space for the message in flight; it is refused with 452");
                            session.refuse_message_disk_full();
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "spooling failed; the message is refused with 451");
                            session.refuse_message();
                        }
                    }
                } else if !session.message_in_progress() && spooled_serial.take().is_some() {
                    spooler.reset();
                }
                if conn.flush(&mut out).await.is_err() {
                    return;
                }
                let idle = !session.in_data();
                if idle && shard.stopping() {
                    let _ = conn.write_all(b"421 4.3.2 Service shutting down\r\n").await;
                    return;
                }
                let timeout = if session.in_data() {
                    config.smtp_data_timeout()
                } else {
                    config.smtp_command_timeout()
                };
                shard.set_idle(fd, idle);
                let r = conn.fill(timeout).await;
                shard.set_idle(fd, false);
                match r {
                    ReadOutcome::Data => {}
                    ReadOutcome::Eof => {
                        if shard.stopping() {
                            let _ = conn.write_all(b"421 4.3.2 Service shutting down\r\n").await;
                        }
                        return;
                    }
                    ReadOutcome::TimedOut => {
                        session.timeout(&mut out);
                        let _ = conn.flush(&mut out).await;
                        return;
                    }
                    ReadOutcome::Failed(_) => return,
                }
            }
            SmtpEvent::Auth { user, password } => {
                let result = match shard
                    .login(
                        peer.ip(),
                        "smtp",
                        session.tls().map_or("", |t| t.version),
                        &user,
                        &password,
                    )
                    .await
                {
                    Login::Ok(account) => AuthResult::Ok { account },
                    Login::Failed => AuthResult::Failed,
                    Login::Banned => AuthResult::Banned,
                    Login::Busy => AuthResult::TempFail,
                };
                if let AuthResult::Ok { account } = &result {
                    tracing::debug!(%peer, account, "SMTP AUTH");
                }
                session.auth_result(result, &mut out);
            }
            SmtpEvent::Deliver(mut tx) => {
                let now = unix_now();
                let mut rec = TxRecord {
                    end_of_data: std::time::Instant::now(),
                    size: 0,
                    rcpts: (tx.recipients.len() as u64, tx.relay.len() as u64),
                };
                // Answer the transaction and record it (metrics, the
                // smtp_transaction event).
                macro_rules! finish {
                    ($outcome:expr) => {{
                        let code = session.delivered($outcome, &mut out);
                        count_transaction(
                            &shard,
                            &session,
                            peer,
                            submission,
                            &rec,
                            &tx.reverse_path,
                            code,
                        );
                    }};
                }
                if spooled_serial.take() != Some(session.message_serial()) {
                    spooler.reset();
                }
                let mut body = match spooler.finish(std::mem::take(&mut tx.body)).await {
                    Ok(b) => b,
                    Err(e) if super::spool::is_over_budget(&e) => {
                        tracing::info!(%peer, spool = shard.budget.spool_used(), "no room for the end of the message in flight; it is refused with 451");
                        finish!(DeliveryOutcome::Busy);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "spooled message unreadable");
                        finish!(DeliveryOutcome::TempFail);
                        continue;
                    }
                };
                rec.size = body.len() as u64;
                if let Some(account) = session.authenticated().map(str::to_string) {
                    if !from_header_allowed(&Ctx { shard: &shard }, &account, &body) {
                        tracing::info!(%peer, account, "From: address not owned by the authenticated account; refused with 553");
                        finish!(DeliveryOutcome::SenderNotOwned);
                        continue;
                    }
                    let recipients = (tx.recipients.len() + tx.relay.len()) as u32;
                    if !shard.charge_sending(&account, recipients).await {
                        tracing::info!(event = "throttle", decision = "refuse_send_rate", %peer, account, recipients, "sending rate of the account reached; refused with 452");
                        finish!(DeliveryOutcome::RateLimited);
                        continue;
                    }
                }
                // Mail from the Internet: SPF, DKIM, DMARC, ARC on the DNS
                // thread, then the policy. Forged Authentication-Results for
                // our authserv-id go from every message that crosses our
                // trust boundary (RFC 8601 section 5), whether or not it is
                // verified: a client neither authenticated, nor in
                // relay_networks, nor in trusted_networks.
                let mut folder = Folder::Inbox;
                let mut results_field = None;
                let from_outside = session.authenticated().is_none()
                    && !relay_client
                    && !internal
                    && !config.mail_auth.trusted(peer.ip());
                if from_outside && config.mail_auth.verify {
                    // Verification is on: a message it could not look at is
                    // deferred, never stored as if it had passed.
                    let outcome = match &shard.shared.verifier {
                        Some(verifier) => {
                            let helo = session.helo().unwrap_or_default().to_string();
                            let (b, outcome) =
                                authenticate(verifier, body, peer, helo, &tx.reverse_path).await;
                            body = b;
                            outcome
                        }
                        None => None,
                    };
                    let refused = match &outcome {
                        None => {
                            tracing::error!(%peer, "mail authentication unavailable; message deferred with 451");
                            Some(DeliveryOutcome::AuthUnavailable)
                        }
                        Some(outcome) => {
                            let decision = policy::decide(&config.mail_auth, &outcome.facts);
                            tracing::debug!(%peer, ?decision, facts = ?outcome.facts, domain = outcome.from_domain, "mail authentication");
                            match decision {
                                Decision::Inbox => None,
                                Decision::Junk => {
                                    folder = Folder::Junk;
                                    None
                                }
                                Decision::Reject(AuthRefusal::DmarcReject) => {
                                    Some(DeliveryOutcome::DmarcRejected)
                                }
                                Decision::Reject(AuthRefusal::SpfFail) => {
                                    Some(DeliveryOutcome::SpfRejected)
                                }
                                Decision::Reject(AuthRefusal::SeveralFromDomains) => {
                                    Some(DeliveryOutcome::SeveralFromDomains)
                                }
                                Decision::Defer => Some(DeliveryOutcome::SpfDeferred),
                            }
                        }
                    };
                    if let Some(refused) = refused {
                        if let Some(outcome) = &outcome {
                            tracing::info!(%peer, facts = ?outcome.facts, domain = outcome.from_domain, "message refused by mail authentication policy");
                        }
                        finish!(refused);
                        continue;
                    }
                    results_field = outcome.map(|o| o.header);
                }
                if from_outside {
                    body = strip_forged_results(body, &config.hostname);
                    // A reload may have changed the hostname since this
                    // session began; the verifier already writes the new
                    // one, so fields forged for it go too.
                    let current = shard.config();
                    if !current.hostname.eq_ignore_ascii_case(&config.hostname) {
                        body = strip_forged_results(body, &current.hostname);
                    }
                }
                // Relayed recipients first, into this shard's queue; then the
                // local ones. Both must be durable before the 250.
                let mut result = Ok(());
                // Mail relayed for an authenticated sender is DKIM-signed for
                // its From: domain once, here, and queued with its signatures.
                let mut signed = None;
                if !tx.relay.is_empty() && session.authenticated().is_some() {
                    let (b, s) = dkim_sign(&shard, body, &tx.reverse_path).await;
                    body = b;
                    signed = s;
                }
                if !tx.relay.is_empty() {
                    let queued: &[u8] = signed.as_deref().unwrap_or(&body);
                    match super::relay::enqueue(
                        &shard,
                        &tx.reverse_path,
                        &tx.relay,
                        queued,
                        tx.smtputf8,
                        tx.body_8bit,
                    )
                    .await
                    {
                        Ok(id) => {
                            tracing::debug!(%id, recipients = tx.relay.len(), "queued for relay")
                        }
                        Err(e) => result = Err(e),
                    }
                }
                let left;
                if result.is_ok() && internal && tx.changes {
                    // A primary's changes to its replica's mailboxes.
                    let accounts: Vec<String> =
                        tx.recipients.iter().map(|r| r.account.clone()).collect();
                    result =
                        super::changes::store_changes(&shard, &accounts, &body, tx.map_version)
                            .await;
                    left = Some(body);
                } else if let (true, true, Some(to)) = (result.is_ok(), internal, &tx.append) {
                    // An IMAP APPEND's copy from the account's primary:
                    // into its mailbox, as the primary stored it.
                    let accounts: Vec<String> =
                        tx.recipients.iter().map(|r| r.account.clone()).collect();
                    result = super::cluster::store_appended(
                        &shard,
                        &accounts,
                        to,
                        &body,
                        tx.map_version,
                    )
                    .await;
                    left = Some(body);
                } else if result.is_ok() && !tx.recipients.is_empty() {
                    let accounts: Vec<String> =
                        tx.recipients.iter().map(|r| r.account.clone()).collect();
                    // Cluster mode: the other nodes' shares and the
                    // replica copies go first; what stays is stored here.
                    // A hand-over carries the verdict of the node the
                    // client reached.
                    if internal && tx.junk {
                        folder = Folder::Junk;
                    }
                    // Held until the local commit below is done.
                    let _routing = if internal {
                        shard.routing_from(tx.map_version)
                    } else {
                        shard.routing()
                    };
                    let plan = match super::cluster::plan_delivery(&shard, &accounts, internal, &tx)
                        .await
                    {
                        Ok(plan) => plan,
                        Err(why) => {
                            tracing::warn!(%peer, why, "cluster: a recipient's node did not take the message; deferred with 451");
                            finish!(DeliveryOutcome::OwnerUnavailable);
                            continue;
                        }
                    };
                    let mut prefix = Vec::with_capacity(tx.reverse_path.len() + 20);
                    // RFC 5321 4.4: the final delivery server adds Return-Path.
                    prefix.extend_from_slice(b"Return-Path: <");
                    prefix.extend_from_slice(tx.reverse_path.as_bytes());
                    prefix.extend_from_slice(b">\r\n");
                    // RFC 8601 section 5: our results go above the fields
                    // already present (after Return-Path, which is added at
                    // final delivery).
                    if let Some(field) = &results_field {
                        prefix.extend_from_slice(field.as_bytes());
                    }
                    // The other nodes' shares and the replica copies first,
                    // then the local share: a message is visible here (to
                    // IMAP, whose changes to it go to the replica) only once
                    // the replica holds it, and a copy that fails leaves
                    // nothing stored here.
                    if let Err(why) = super::cluster::send_copies(
                        &shard,
                        &plan.away,
                        &tx,
                        results_field.as_deref(),
                        &body,
                        folder == Folder::Junk,
                        internal,
                    )
                    .await
                    {
                        tracing::warn!(%peer, why, "cluster: a recipient's node did not take the message; deferred with 451");
                        finish!(DeliveryOutcome::OwnerUnavailable);
                        continue;
                    }
                    if plan.here.is_empty() {
                        left = Some(body);
                    } else {
                        // Cluster mode: a retry of what a failure left
                        // stored here is stored once.
                        let once = shard.once_for(&tx.reverse_path, &body);
                        let (r, b) = shard
                            .deliver_to(&plan.here, folder, prefix, body, now, once)
                            .await;
                        result = r;
                        left = b;
                    }
                } else {
                    left = Some(body);
                }
                let outcome = match result {
                    // Cluster mode: no 250 once the lease may have lapsed
                    // (another node may own these buckets by now). The
                    // message may be stored; the client sends it again.
                    Ok(()) if !shard.may_acknowledge() => {
                        tracing::warn!("cluster lease lapsed: delivery not acknowledged");
                        DeliveryOutcome::NotMember
                    }
                    Ok(()) => DeliveryOutcome::Stored,
                    Err(e) => {
                        tracing::warn!(error = %e, "delivery failed");
                        DeliveryOutcome::TempFail
                    }
                };
                finish!(outcome);
                // Reuse a small buffer for the next message; a large one goes
                // back to the allocator (idle sessions must not hold it).
                match left.and_then(MessageBody::into_heap) {
                    Some(mut b) if b.capacity() <= shard.budget.threshold() => {
                        b.clear();
                        session.recycle_body(b);
                    }
                    Some(b) => shard.budget.freed(b.capacity() as u64),
                    None => {}
                }
            }
            SmtpEvent::StartTls => {
                let Some(slot) = shard.handshake_slot() else {
                    tracing::warn!(%peer, "too many TLS handshakes in progress; STARTTLS refused");
                    session.starttls_result(StartTlsResult::TempFail, &mut out);
                    continue;
                };
                session.starttls_result(StartTlsResult::Ready, &mut out);
                if conn.flush(&mut out).await.is_err() {
                    return;
                }
                if internal {
                    // Another node hands mail over: it must present the
                    // certificate it published (a client certificate),
                    // not only come from a member's address.
                    let config = shard.shared.tls.internal_server_config();
                    let Some(info) = shard
                        .tls_handshake_with(slot, &mut conn, peer, "internal", config)
                        .await
                    else {
                        return;
                    };
                    let presented = conn.peer_certificate_sha256();
                    if !presented
                        .as_deref()
                        .is_some_and(|p| shard.is_member_certificate(p))
                    {
                        tracing::warn!(%peer, certificate = ?presented, "internal listener: the client certificate is no member's; connection closed");
                        let _ = conn
                            .write_all(b"421 4.7.0 Not a member of this cluster\r\n")
                            .await;
                        return;
                    }
                    member = true;
                    session.tls_started(info);
                    continue;
                }
                match shard.tls_handshake(slot, &mut conn, peer, "smtp").await {
                    Some(info) => session.tls_started(info),
                    None => return,
                }
            }
            SmtpEvent::Close => {
                let _ = conn.flush(&mut out).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owns only alice@example.test.
    struct Alice;

    impl SmtpContext for Alice {
        fn recipient(&self, _: &str) -> RcptVerdict {
            RcptVerdict::NotLocal
        }
        fn now_unix(&self) -> i64 {
            0
        }
        fn may_send_as(&self, _: &str, address: &str) -> bool {
            address.eq_ignore_ascii_case("alice@example.test")
        }
    }

    #[test]
    fn from_header_check_sees_what_the_recipient_sees() {
        let ok = b"From: Alice <alice@example.test>\r\n\r\nx\r\n";
        assert!(from_header_allowed(&Alice, "alice@example.test", ok));
        // Found by the from_header fuzz target: the control character was
        // dropped before the ownership check, not in the sent message.
        let ctl = b"Subject: hi\r\nFrom: ali\x13ce@example.test\r\nHello there\r\n";
        assert!(!from_header_allowed(&Alice, "alice@example.test", ctl));
        let del = b"From: <alice\x7f@example.test>\r\n\r\n";
        assert!(!from_header_allowed(&Alice, "alice@example.test", del));
        // Found by the from_header fuzz target: a line that is no field ends
        // ringmail's header, not mail-auth's (a DMARC verifier's).
        let hidden = b"Subject: hi\nnot a field\nFrom: bob@example.test\n\nx\n";
        assert!(!from_header_allowed(&Alice, "alice@example.test", hidden));
        // Two angle addresses without a comma: ringmail reads the first only.
        let two = b"From: <alice@example.test> <bob@example.test>\r\n\r\n";
        assert!(!from_header_allowed(&Alice, "alice@example.test", two));
        // Folding whitespace (tab) is no control character here.
        let tab = b"From: Alice\r\n\t<alice@example.test>\r\n\r\n";
        assert!(from_header_allowed(&Alice, "alice@example.test", tab));
    }
}
