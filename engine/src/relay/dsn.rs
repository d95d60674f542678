//! Delivery status notifications: bounces and delay warnings (RFC 3464),
//! in the multipart/report structure of RFC 6522.
//!
//! [`build_dsn`] returns a complete message (CRLF line endings):
//! 1. `text/plain`: what happened, for people;
//! 2. `message/delivery-status`: the machine-readable report, one block per
//!    recipient (`Action: failed` or `delayed`, `Status`, `Remote-MTA`,
//!    `Diagnostic-Code`, ...);
//! 3. `text/rfc822-headers`: the original message's header section (never its
//!    body), cut at a line boundary past [`DsnParams::max_header_bytes`].
//!
//! Sending it: the notification goes to the original envelope sender with the
//! **null reverse path** (`MAIL FROM:<>`, see [`DSN_REVERSE_PATH`]) so that it
//! can never cause another notification. Callers must never build a DSN for a
//! message whose own reverse path is empty (it is itself a notification):
//! check with [`should_notify`]. If the original headers were 8-bit (an
//! SMTPUTF8 message) the DSN is too: check `dsn.is_ascii()` and set
//! `is_8bit` / `needs_smtputf8` when queueing it.
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use super::reply::Reply;

/// The reverse path of every DSN: null.
pub const DSN_REVERSE_PATH: &str = "";
/// Default bound on the original headers included.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Whether a message with this reverse path may get a DSN: not if it is
/// null (RFC 5321 section 4.5.5, RFC 3464 section 2).
pub fn should_notify(reverse_path: &str) -> bool {
    let p = reverse_path.trim();
    !(p.is_empty() || p == "<>")
}

/// What happened to a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    /// Given up: the message is returned.
    Failed,
    /// Still being retried.
    Delayed,
}

/// One recipient's report.
#[derive(Debug, Clone)]
pub struct DsnRecipient {
    /// The address delivery was attempted to.
    pub final_recipient: String,
    /// ORCPT (RFC 3461), when the client gave one: `rfc822;addr` or just the address.
    pub original_recipient: Option<String>,
    pub action: DsnAction,
    /// The server's reply (or a local one, [`Reply::local`]), for Status and
    /// Diagnostic-Code.
    pub reply: Reply,
    /// The host that gave the reply (`mx.example.com` or an address literal).
    pub remote_mta: Option<String>,
    pub last_attempt: SystemTime,
    /// For [`DsnAction::Delayed`]: when the queue gives up.
    pub will_retry_until: Option<SystemTime>,
}

/// Everything a notification needs.
#[derive(Debug, Clone)]
pub struct DsnParams<'a> {
    /// This host's name: `Reporting-MTA`, and `MAILER-DAEMON@<hostname>`.
    pub hostname: String,
    /// The original envelope sender (the notification's recipient). Must not
    /// be empty.
    pub original_sender: String,
    /// ENVID (RFC 3461), when the client gave one.
    pub original_envelope_id: Option<String>,
    /// When the original message arrived.
    pub arrival_date: SystemTime,
    /// The notification's Date.
    pub date: SystemTime,
    pub recipients: Vec<DsnRecipient>,
    /// The original message (headers and body; only headers are included).
    pub original: &'a [u8],
    /// Bound on the included headers ([`MAX_HEADER_BYTES`]).
    pub max_header_bytes: usize,
    /// The notification's Message-ID (with angle brackets); `None`: generated.
    pub message_id: Option<String>,
}

/// RFC 5322 date-time in UTC: `Tue, 14 Nov 2023 22:13:20 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        WD[(days + 4).rem_euclid(7) as usize],
        d,
        MON[(m - 1) as usize],
        y,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The Status field: the reply's enhanced code when its class fits the
/// action, else the reply's subject and detail under the action's class
/// (a 4.4.7 reply on a failed recipient reports 5.4.7), else `5.0.0` / `4.0.0`.
pub fn status_for(action: DsnAction, reply: &Reply) -> String {
    let class = match action {
        DsnAction::Failed => '5',
        DsnAction::Delayed => '4',
    };
    match reply.enhanced() {
        Some(code) if code.starts_with(class) => code.to_string(),
        Some(code) => format!("{class}{}", &code[1..]),
        None => format!("{class}.0.0"),
    }
}

/// Printable ASCII only (header fields of the report are 7-bit).
fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\t' || (' '..='~').contains(&c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// An address for `Final-Recipient` / `Original-Recipient`: `rfc822;` when
/// ASCII, else RFC 6533 `utf-8;` with `\x{HEX}` escapes.
fn address_field(addr: &str) -> String {
    let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
    if addr.is_ascii() {
        format!("rfc822; {}", ascii(addr))
    } else {
        let mut s = String::from("utf-8; ");
        for c in addr.chars() {
            if c.is_ascii() && !c.is_ascii_control() && c != '\\' {
                s.push(c);
            } else {
                let _ = write!(s, "\\x{{{:X}}}", c as u32);
            }
        }
        s
    }
}

/// One header field, folded at spaces to keep lines under 78 characters.
fn field(out: &mut String, name: &str, value: &str) {
    let mut line_len = name.len() + 1;
    out.push_str(name);
    out.push(':');
    for (i, word) in value.split(' ').filter(|w| !w.is_empty()).enumerate() {
        if i > 0 && line_len + 1 + word.len() > 78 {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
}

/// Wrap text at spaces to lines under 76 characters, indented by `indent`.
fn wrap(out: &mut String, indent: &str, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > 76 {
            let _ = write!(out, "{indent}{line}\r\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = write!(out, "{indent}{line}\r\n");
    }
}

/// The header section of `message`, up to (not including) the blank line,
/// cut after the last complete line within `max` bytes. Line endings become
/// CRLF; the result ends with CRLF (or is empty).
fn header_section(message: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len().min(max) + 2);
    let mut pos = 0;
    while pos < message.len() {
        let (line, next) = match memchr::memchr(b'\n', &message[pos..]) {
            Some(i) => (&message[pos..pos + i], pos + i + 1),
            None => (&message[pos..], message.len()),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break; // end of the header section
        }
        if out.len() + line.len() + 2 > max {
            break;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        pos = next;
    }
    out
}

/// Build the notification. See the module documentation for how to send it.
pub fn build_dsn(params: DsnParams<'_>) -> Vec<u8> {
    debug_assert!(
        should_notify(&params.original_sender),
        "no DSN for a null reverse path"
    );
    let host = ascii(&params.hostname);
    let any_failed = params
        .recipients
        .iter()
        .any(|r| r.action == DsnAction::Failed);
    let headers = header_section(params.original, params.max_header_bytes);
    let mut rng = rand::thread_rng();
    // A boundary that cannot occur in the included headers (bounded retries;
    // 64 random bits make a clash practically impossible anyway).
    let mut boundary = String::new();
    for _ in 0..8 {
        boundary = format!("=_ringmail_{:016x}", rng.gen::<u64>());
        if memchr::memmem::find(&headers, boundary.as_bytes()).is_none() {
            break;
        }
    }
    let message_id = params.message_id.clone().unwrap_or_else(|| {
        format!(
            "<dsn.{:016x}.{:08x}@{host}>",
            rng.gen::<u64>(),
            rng.gen::<u32>()
        )
    });
    let date = rfc5322_date(params.date);

    let mut m = String::with_capacity(4096 + headers.len());
    // Top-level header.
    field(
        &mut m,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{host}>"),
    );
    field(
        &mut m,
        "To",
        &format!(
            "<{}>",
            params
                .original_sender
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
        ),
    );
    let subject = if any_failed {
        "Undelivered Mail Returned to Sender"
    } else {
        "Delayed Mail (still being retried)"
    };
    field(&mut m, "Subject", subject);
    field(&mut m, "Date", &date);
    field(&mut m, "Message-ID", &message_id);
    field(&mut m, "Auto-Submitted", "auto-replied");
    field(&mut m, "MIME-Version", "1.0");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
    ));
    m.push_str("\r\nThis is a MIME-formatted delivery status notification.\r\n\r\n");

    // 1. For people.
    let mut text = String::new();
    let _ = write!(text, "This is the mail system at {host}.\r\n\r\n");
    let failed: Vec<&DsnRecipient> = params
        .recipients
        .iter()
        .filter(|r| r.action == DsnAction::Failed)
        .collect();
    let delayed: Vec<&DsnRecipient> = params
        .recipients
        .iter()
        .filter(|r| r.action == DsnAction::Delayed)
        .collect();
    let describe = |m: &mut String, r: &DsnRecipient| {
        let who = match &r.remote_mta {
            Some(mta) if !r.reply.local => format!("host {} said: {}", ascii(mta), r.reply),
            _ if r.reply.local => r.reply.text(),
            _ => r.reply.to_string(),
        };
        let _ = write!(
            m,
            "<{}>:\r\n",
            r.final_recipient
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
        );
        wrap(m, "    ", &who);
        m.push_str("\r\n");
    };
    if !failed.is_empty() {
        wrap(
            &mut text,
            "",
            "Your message could not be delivered to the recipients below. The mail system has given up; \
             the reasons are given for each recipient. The headers of your message are attached.",
        );
        text.push_str("\r\n");
        for r in &failed {
            describe(&mut text, r);
        }
    }
    if !delayed.is_empty() {
        let until = delayed.iter().filter_map(|r| r.will_retry_until).max();
        let mut intro = String::from(
            "Delivery of your message to the recipients below has been delayed. This is a warning only; \
             you do not need to send the message again.",
        );
        if let Some(u) = until {
            let _ = write!(
                intro,
                " The mail system will keep trying until {}.",
                rfc5322_date(u)
            );
        }
        wrap(&mut text, "", &intro);
        text.push_str("\r\n");
        for r in &delayed {
            describe(&mut text, r);
        }
    }
    let _ = write!(m, "--{boundary}\r\n");
    m.push_str("Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n");
    if !text.is_ascii() {
        m.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    m.push_str("\r\n");
    m.push_str(&text);

    // 2. For programs (RFC 3464 section 2.1).
    let _ = write!(m, "--{boundary}\r\n");
    m.push_str(
        "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n",
    );
    field(&mut m, "Reporting-MTA", &format!("dns; {host}"));
    if let Some(envid) = &params.original_envelope_id {
        field(&mut m, "Original-Envelope-Id", &ascii(envid));
    }
    field(&mut m, "Arrival-Date", &rfc5322_date(params.arrival_date));
    for r in &params.recipients {
        m.push_str("\r\n");
        if let Some(orcpt) = &r.original_recipient {
            let value = match orcpt.split_once(';') {
                Some((kind, addr)) => format!("{}; {}", ascii(kind.trim()), ascii(addr.trim())),
                None => address_field(orcpt),
            };
            field(&mut m, "Original-Recipient", &value);
        }
        field(
            &mut m,
            "Final-Recipient",
            &address_field(&r.final_recipient),
        );
        field(
            &mut m,
            "Action",
            match r.action {
                DsnAction::Failed => "failed",
                DsnAction::Delayed => "delayed",
            },
        );
        field(&mut m, "Status", &status_for(r.action, &r.reply));
        if let Some(mta) = &r.remote_mta {
            field(&mut m, "Remote-MTA", &format!("dns; {}", ascii(mta)));
        }
        if r.reply.local {
            field(
                &mut m,
                "Diagnostic-Code",
                &format!("X-ringmail; {}", ascii(&r.reply.text())),
            );
        } else {
            field(
                &mut m,
                "Diagnostic-Code",
                &format!("smtp; {}", ascii(&r.reply.to_string())),
            );
        }
        field(&mut m, "Last-Attempt-Date", &rfc5322_date(r.last_attempt));
        if r.action == DsnAction::Delayed {
            if let Some(until) = r.will_retry_until {
                field(&mut m, "Will-Retry-Until", &rfc5322_date(until));
            }
        }
    }
    m.push_str("\r\n");

    // 3. The original headers (RFC 6522 section 3: text/rfc822-headers).
    let _ = write!(m, "--{boundary}\r\n");
    m.push_str(
        "Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n",
    );
    if !headers.is_ascii() {
        m.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    m.push_str("\r\n");
    let mut out = m.into_bytes();
    out.extend_from_slice(&headers);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests;
