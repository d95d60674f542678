//! SMTP reply encoding and the one table of reply texts.
//!
//! Owns: the wire form of a reply (`code SP [enhanced-code SP] text CRLF`,
//! RFC 5321 section 4.2 and RFC 2034), the multi-line EHLO reply
//! (RFC 5321 section 4.2.1: `250-...` lines, then `250 ...`), and every fixed
//! reply text the server sends ([`replies`]). Handlers pick a named reply; they
//! never spell out a reply string themselves.
//!
//! Must never: perform I/O, allocate anything but the growth of the output
//! buffer, or write a reply containing CR or LF inside its text (a reply text
//! that embeds client data could otherwise forge extra reply lines).
use std::io::Write as _;

/// One fixed SMTP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code (RFC 5321 section 4.2).
    pub code: u16,
    /// Enhanced status code (RFC 3463), omitted on replies RFC 2034 section 3
    /// exempts (the greeting, EHLO/HELO replies) and on 354, which has no class.
    pub enhanced: Option<&'static str>,
    /// Human-readable text.
    pub text: &'static str,
}

impl Reply {
    const fn new(code: u16, enhanced: &'static str, text: &'static str) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            text,
        }
    }

    const fn plain(code: u16, text: &'static str) -> Self {
        Reply {
            code,
            enhanced: None,
            text,
        }
    }

    /// True for 4xx and 5xx replies.
    pub const fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Write `code SP [enhanced SP] text CRLF`.
    pub fn write(&self, out: &mut Vec<u8>) {
        self.write_prefix(out, b' ');
        out.extend_from_slice(self.text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Write `code SP [enhanced SP] hostname SP text CRLF`: the form of the 421
    /// replies, which RFC 5321 section 4.2 (reply 421) says start with the
    /// server's name.
    pub fn write_with_host(&self, out: &mut Vec<u8>, hostname: &str) {
        self.write_prefix(out, b' ');
        push_sanitized(out, hostname.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Write `code SP [enhanced SP] text SP suffix CRLF`; the suffix is
    /// sanitized (no control characters reach the wire).
    pub fn write_with_suffix(&self, out: &mut Vec<u8>, suffix: &[u8]) {
        self.write_prefix(out, b' ');
        out.extend_from_slice(self.text.as_bytes());
        out.push(b' ');
        push_sanitized(out, suffix);
        out.extend_from_slice(b"\r\n");
    }

    fn write_prefix(&self, out: &mut Vec<u8>, sep: u8) {
        push_code(out, self.code);
        out.push(sep);
        if let Some(enhanced) = self.enhanced {
            out.extend_from_slice(enhanced.as_bytes());
            out.push(b' ');
        }
    }
}

fn push_code(out: &mut Vec<u8>, code: u16) {
    let code = code.min(999);
    out.extend_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
}

/// Append `bytes`, replacing every control character (and DEL) with `?`, so
/// that nothing we echo can end a reply line early.
fn push_sanitized(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(
        bytes
            .iter()
            .map(|&b| if b < 0x20 || b == 0x7f { b'?' } else { b }),
    );
}

/// The greeting, `220 <hostname> ESMTP ringmail` (RFC 5321 section 4.3.1;
/// no enhanced code, RFC 2034 section 3).
pub fn write_greeting(out: &mut Vec<u8>, hostname: &str) {
    out.extend_from_slice(b"220 ");
    push_sanitized(out, hostname.as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(replies::GREETING_TEXT.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The reply to HELO: a single `250 <hostname>` line (RFC 5321 section 4.1.1.1).
pub fn write_helo(out: &mut Vec<u8>, hostname: &str) {
    out.extend_from_slice(b"250 ");
    push_sanitized(out, hostname.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The multi-line reply to EHLO (RFC 5321 section 4.1.1.1 and 4.2.1):
/// `250-<hostname>`, then one line per extension keyword, the last one with
/// `250 ` instead of `250-`.
pub fn write_ehlo<S: AsRef<str>>(out: &mut Vec<u8>, hostname: &str, keywords: &[S]) {
    out.extend_from_slice(if keywords.is_empty() {
        b"250 "
    } else {
        b"250-"
    });
    push_sanitized(out, hostname.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (i, keyword) in keywords.iter().enumerate() {
        out.extend_from_slice(if i + 1 == keywords.len() {
            b"250 "
        } else {
            b"250-"
        });
        push_sanitized(out, keyword.as_ref().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// `250 2.0.0 Ok: queued as <id>` after a stored message.
pub fn write_queued(out: &mut Vec<u8>, id: &str) {
    replies::QUEUED.write_with_suffix(out, id.as_bytes());
}

/// `250 2.0.0 <n> octets received` after a BDAT chunk that is not the last
/// (RFC 3030 section 2 leaves the text free; this is the customary one).
pub fn write_chunk_received(out: &mut Vec<u8>, octets: u64) {
    let reply = replies::CHUNK_RECEIVED;
    push_code(out, reply.code);
    out.push(b' ');
    if let Some(enhanced) = reply.enhanced {
        out.extend_from_slice(enhanced.as_bytes());
        out.push(b' ');
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{octets} ");
    out.extend_from_slice(reply.text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Every fixed reply the SMTP server sends. Codes follow RFC 5321 section 4.2.2
/// and 4.2.3, enhanced codes RFC 3463 / RFC 5248.
pub mod replies {
    use super::Reply;

    /// Text after the hostname in the 220 greeting.
    pub const GREETING_TEXT: &str = "ESMTP ringmail";
    /// Extension keywords we always advertise in EHLO, besides `SIZE <max>`
    /// (which needs the configured number and is built by the session).
    /// PIPELINING: RFC 2920; 8BITMIME: RFC 6152; ENHANCEDSTATUSCODES: RFC 2034;
    /// SMTPUTF8: RFC 6531; CHUNKING: RFC 3030 (BINARYMIME is not offered).
    pub const EHLO_PIPELINING: &str = "PIPELINING";
    pub const EHLO_8BITMIME: &str = "8BITMIME";
    pub const EHLO_ENHANCEDSTATUSCODES: &str = "ENHANCEDSTATUSCODES";
    pub const EHLO_SMTPUTF8: &str = "SMTPUTF8";
    pub const EHLO_CHUNKING: &str = "CHUNKING";
    /// Prefix of the SIZE keyword (RFC 1870 section 4): `SIZE <max octets>`.
    pub const EHLO_SIZE_PREFIX: &str = "SIZE ";
    /// RFC 4954 section 3: the SASL mechanisms offered, when AUTH is offered.
    pub const EHLO_AUTH: &str = "AUTH PLAIN LOGIN";
    /// RFC 3207.
    pub const EHLO_STARTTLS: &str = "STARTTLS";
    pub const STARTTLS_READY: Reply = Reply::new(220, "2.0.0", "Ready to start TLS");
    /// RFC 3207 section 4.
    pub const STARTTLS_TEMPFAIL: Reply =
        Reply::new(454, "4.7.0", "TLS not available due to temporary reason");
    pub const TLS_ALREADY: Reply = Reply::new(503, "5.5.1", "Error: TLS already active");
    pub const TLS_IN_TRANSACTION: Reply =
        Reply::new(503, "5.5.1", "Error: MAIL transaction in progress");
    /// RFC 3207 section 4.
    pub const TLS_REQUIRED: Reply = Reply::new(530, "5.7.0", "Must issue a STARTTLS command first");

    // --- 2xx / 3xx ---
    pub const OK: Reply = Reply::new(250, "2.0.0", "Ok");
    pub const MAIL_OK: Reply = Reply::new(250, "2.1.0", "Ok");
    pub const RCPT_OK: Reply = Reply::new(250, "2.1.5", "Ok");
    pub const QUEUED: Reply = Reply::new(250, "2.0.0", "Ok: queued as");
    pub const CHUNK_RECEIVED: Reply = Reply::new(250, "2.0.0", "octets received");
    pub const BYE: Reply = Reply::new(221, "2.0.0", "Bye");
    pub const HELP: Reply = Reply::new(
        214,
        "2.0.0",
        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
    );
    /// RFC 5321 section 3.5.3: 252 when we will not verify but will accept.
    pub const VRFY: Reply = Reply::new(
        252,
        "2.5.2",
        "Cannot VRFY user, but will accept message and attempt delivery",
    );
    /// RFC 4954 section 6.
    pub const AUTH_OK: Reply = Reply::new(235, "2.7.0", "Authentication successful");
    /// RFC 4954 section 4: a 334 continuation with an empty challenge (PLAIN).
    pub const AUTH_CONTINUE: Reply = Reply::plain(334, "");
    /// AUTH LOGIN challenges: base64 of "Username:" and "Password:".
    pub const AUTH_LOGIN_USER: Reply = Reply::plain(334, "VXNlcm5hbWU6");
    pub const AUTH_LOGIN_PASSWORD: Reply = Reply::plain(334, "UGFzc3dvcmQ6");
    /// 354 has no enhanced code: RFC 3463 classes are 2, 4 and 5 only.
    pub const START_DATA: Reply = Reply::plain(354, "End data with <CR><LF>.<CR><LF>");

    // --- 4xx ---
    pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, "4.5.3", "Error: too many recipients");
    pub const RCPT_TEMPFAIL: Reply =
        Reply::new(451, "4.3.0", "Error: temporary recipient lookup failure");
    pub const STORAGE_TEMPFAIL: Reply = Reply::new(452, "4.3.1", "Insufficient system storage");
    /// Cluster mode: this node's lease in etcd may have lapsed, so it may no
    /// longer own the recipients' buckets (RFC 3463 X.3.0, other or undefined
    /// mail system status): the client tries again.
    pub const NODE_UNAVAILABLE: Reply =
        Reply::new(451, "4.3.0", "Cluster membership lapsed, try again later");
    /// Cluster mode: the node that stores a recipient's mailbox did not
    /// take the message (RFC 3463 X.4.0, other routing status).
    pub const OWNER_UNAVAILABLE: Reply = Reply::new(
        451,
        "4.4.0",
        "The mailbox's node is not reachable, try again later",
    );
    /// The recipient's account is at its storage limit: RFC 3463 X.2.2
    /// "mailbox full", as a temporary failure at RCPT (RFC 5321 4.2.2's 452,
    /// "insufficient system storage"), so the sender's server retries and
    /// the mail arrives once the user made room; nothing is refused later.
    pub const MAILBOX_FULL: Reply = Reply::new(452, "4.2.2", "Mailbox full, try again later");
    /// The shard's budget for messages in flight had no room for this one
    /// (it was read to its end and thrown away).
    pub const BUSY_TEMPFAIL: Reply = Reply::new(
        451,
        "4.3.1",
        "Insufficient system resources, try again later",
    );
    /// RFC 5321 section 2.3.8 / RFC 5322 section 2.3: NUL is not allowed in
    /// a message; IMAP could not serve it without BINARY (RFC 3501 4.3).
    /// RFC 3463 5.6.0: other or undefined media error.
    pub const NUL_REFUSED: Reply = Reply::new(550, "5.6.0", "Message contains NUL octets");
    /// Written with the hostname first (see [`Reply::write_with_host`]).
    pub const TOO_MANY_ERRORS: Reply = Reply::new(421, "4.7.0", "Error: too many errors");
    /// Written with the hostname first.
    pub const TIMEOUT: Reply = Reply::new(421, "4.4.2", "Error: timeout exceeded");
    /// RFC 4954 section 6: the password could not be checked right now.
    pub const AUTH_TEMPFAIL: Reply = Reply::new(454, "4.7.0", "Temporary authentication failure");
    /// Written with the hostname first: too many failed AUTH attempts.
    pub const AUTH_TOO_MANY: Reply =
        Reply::new(421, "4.7.0", "Error: too many authentication failures");
    pub const AUTH_BANNED: Reply = Reply::new(
        421,
        "4.7.0",
        "Error: too many failed logins from your address, try again later",
    );
    /// Written with the hostname first. A BDAT whose size cannot be read leaves
    /// us unable to tell chunk bytes from commands, so we close rather than
    /// interpret message data as commands.
    pub const BDAT_DESYNC: Reply = Reply::new(
        421,
        "4.5.0",
        "Error: unreadable BDAT size, closing connection",
    );

    // --- 5xx ---
    pub const UNRECOGNIZED: Reply = Reply::new(500, "5.5.2", "Error: command not recognized");
    pub const LINE_TOO_LONG: Reply = Reply::new(500, "5.5.6", "Line too long");
    pub const SYNTAX: Reply = Reply::new(501, "5.5.4", "Syntax error in parameters or arguments");
    pub const HELO_SYNTAX: Reply = Reply::new(501, "5.5.4", "Syntax: EHLO/HELO hostname");
    pub const BDAT_SYNTAX: Reply = Reply::new(501, "5.5.4", "Syntax: BDAT size [LAST]");
    pub const PARAM_SYNTAX: Reply = Reply::new(501, "5.5.4", "Bad MAIL/RCPT parameter syntax");
    /// X.1.7: bad sender's mailbox address syntax (RFC 3463 section 3.2).
    pub const BAD_SENDER: Reply = Reply::new(501, "5.1.7", "Bad sender address syntax");
    /// X.1.3: bad destination mailbox address syntax (RFC 3463 section 3.2).
    pub const BAD_RECIPIENT: Reply = Reply::new(501, "5.1.3", "Bad recipient address syntax");
    /// RFC 6531 section 3.5: a non-ASCII address without SMTPUTF8 on MAIL.
    pub const NON_ASCII_ADDRESS: Reply =
        Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
    pub const NOT_IMPLEMENTED: Reply = Reply::new(502, "5.5.1", "Error: command not implemented");
    pub const NEED_HELO: Reply = Reply::new(503, "5.5.1", "Error: send HELO/EHLO first");
    pub const NESTED_MAIL: Reply = Reply::new(503, "5.5.1", "Error: nested MAIL command");
    pub const NEED_MAIL: Reply = Reply::new(503, "5.5.1", "Error: need MAIL command");
    pub const DATA_AFTER_BDAT: Reply =
        Reply::new(503, "5.5.1", "Error: DATA not allowed after BDAT");
    pub const RCPT_AFTER_BDAT: Reply =
        Reply::new(503, "5.5.1", "Error: RCPT not allowed after BDAT");
    pub const NO_RECIPIENTS: Reply = Reply::new(554, "5.5.1", "Error: no valid recipients");
    pub const UNKNOWN_PARAM: Reply = Reply::new(555, "5.5.4", "Unsupported MAIL/RCPT parameter");
    /// RFC 1870 section 6.1 and RFC 5321 section 4.5.3.1.10.
    pub const SIZE_EXCEEDED: Reply = Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    );
    pub const UNKNOWN_USER: Reply =
        Reply::new(550, "5.1.1", "Recipient address rejected: user unknown");
    /// Unauthenticated clients outside `relay_networks` never relay: a
    /// recipient outside our domains is refused.
    pub const RELAY_DENIED: Reply = Reply::new(550, "5.7.1", "Relay access denied");
    pub const SENDER_NOT_OWNED: Reply = Reply::new(
        553,
        "5.7.1",
        "Sender address rejected: not owned by the authenticated user",
    );
    pub const SEND_RATE_LIMITED: Reply = Reply::new(
        452,
        "4.7.0",
        "Too many messages or recipients from this account this hour, try again later",
    );
    pub const COMMAND_RATE: Reply = Reply::new(
        421,
        "4.7.0",
        "Error: too many commands from your address, slow down",
    );
    /// RFC 7489 section 6.6.3 and 10.3: DMARC failed under p=reject.
    pub const DMARC_REJECT: Reply = Reply::new(
        550,
        "5.7.1",
        "Message rejected: it fails the DMARC policy of its From: domain",
    );
    /// RFC 7489 section 6.6.1: the From: field names several domains, so no
    /// single DMARC policy applies; refused rather than let through.
    pub const SEVERAL_FROM_DOMAINS: Reply = Reply::new(
        550,
        "5.7.1",
        "Message rejected: From: addresses of more than one domain",
    );
    /// Mail authentication is configured but could not be carried out
    /// (the verifier is not running or failed): try again later rather
    /// than store the message unverified.
    pub const AUTH_UNAVAILABLE: Reply = Reply::new(
        451,
        "4.7.0",
        "Sender authentication unavailable, try again later",
    );
    /// RFC 7372 section 3.2: SPF fail (X.7.23), with `spf_fail = "reject"`.
    pub const SPF_REJECT: Reply = Reply::new(
        550,
        "5.7.23",
        "Message rejected: SPF does not permit your address to send for this domain",
    );
    /// RFC 7208 section 8.6 and RFC 7372 section 3.2 (X.7.24): SPF could
    /// not be evaluated for a DNS failure; try again later.
    pub const SPF_TEMPFAIL: Reply = Reply::new(
        451,
        "4.7.24",
        "SPF check failed temporarily (DNS), try again later",
    );
    pub const FROM_NOT_OWNED: Reply = Reply::new(
        553,
        "5.7.1",
        "From: address rejected: not owned by the authenticated user",
    );
    /// RFC 4954 section 6: submission needs AUTH before MAIL.
    pub const AUTH_REQUIRED: Reply = Reply::new(530, "5.7.0", "Authentication required");
    /// RFC 4954 section 6.
    pub const AUTH_FAILED: Reply = Reply::new(535, "5.7.8", "Authentication credentials invalid");
    /// RFC 4954 section 4: unknown mechanism.
    pub const AUTH_MECHANISM: Reply = Reply::new(504, "5.5.4", "Unrecognized authentication type");
    /// RFC 4954 section 4: AUTH once per session, never inside a transaction.
    pub const AUTH_ALREADY: Reply = Reply::new(503, "5.5.1", "Error: already authenticated");
    pub const AUTH_IN_TRANSACTION: Reply = Reply::new(
        503,
        "5.5.1",
        "Error: AUTH not permitted during a mail transaction",
    );
    /// RFC 4954 section 4: the client answered a challenge with `*`.
    pub const AUTH_CANCELLED: Reply = Reply::new(501, "5.0.0", "Authentication cancelled");
    /// RFC 4954 section 4: a response that is not valid base64 / SASL.
    pub const AUTH_BAD_RESPONSE: Reply = Reply::new(501, "5.5.2", "Cannot decode response");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn single_line_replies() {
        let mut out = Vec::new();
        replies::OK.write(&mut out);
        replies::START_DATA.write(&mut out);
        replies::TIMEOUT.write_with_host(&mut out, "mx.test");
        assert_eq!(
            s(&out),
            "250 2.0.0 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
             421 4.4.2 mx.test Error: timeout exceeded\r\n"
        );
    }

    #[test]
    fn dynamic_replies() {
        let mut out = Vec::new();
        write_greeting(&mut out, "mx.test");
        write_helo(&mut out, "mx.test");
        write_queued(&mut out, "00AB0001");
        write_chunk_received(&mut out, 1234);
        assert_eq!(
            s(&out),
            "220 mx.test ESMTP ringmail\r\n250 mx.test\r\n250 2.0.0 Ok: queued as 00AB0001\r\n\
             250 2.0.0 1234 octets received\r\n"
        );
    }

    #[test]
    fn ehlo_multiline() {
        let mut out = Vec::new();
        write_ehlo(&mut out, "mx.test", &["PIPELINING", "SIZE 10", "CHUNKING"]);
        assert_eq!(
            s(&out),
            "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10\r\n250 CHUNKING\r\n"
        );
        out.clear();
        write_ehlo::<&str>(&mut out, "mx.test", &[]);
        assert_eq!(s(&out), "250 mx.test\r\n");
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let mut out = Vec::new();
        replies::QUEUED.write_with_suffix(&mut out, b"a\r\n250 forged");
        assert_eq!(s(&out), "250 2.0.0 Ok: queued as a??250 forged\r\n");
    }
}
