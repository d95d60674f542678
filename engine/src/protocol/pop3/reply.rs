//! Reply encoders and every reply text the POP3 server sends, in one place.
//!
//! RFC 1939 section 3: a status line is `+OK` or `-ERR`, optionally followed
//! by a space and text, then CRLF. RFC 2449 section 8 (RESP-CODES) puts an
//! extended response code in brackets right after `-ERR`; the codes used here
//! are from RFC 3206. Texts never echo client-supplied bytes, so no client
//! input can inject a line into the response stream.

use std::fmt::Arguments;
use std::io::Write as _;

/// RFC 3206 extended response codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    /// RFC 3206 section 5: bad credentials (AUTH-RESP-CODE capability).
    Auth,
    /// RFC 3206 section 4: the maildrop is already locked by another session.
    InUse,
    /// RFC 3206 section 5: a temporary system problem.
    SysTemp,
    /// RFC 3206 section 5: a permanent system problem.
    SysPerm,
}

impl RespCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            RespCode::Auth => "AUTH",
            RespCode::InUse => "IN-USE",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
        }
    }
}

// Fixed texts. Keep them ASCII and free of CR/LF.
pub const GREETING_SUFFIX: &str = "POP3 ringmail ready";
pub const OK_USER: &str = "send PASS";
pub const OK_NOOP: &str = "";
pub const OK_CAPA: &str = "capability list follows";
pub const OK_AUTH_LIST: &str = "supported mechanisms follow";
pub const OK_QUIT: &str = "ringmail POP3 server signing off";
pub const ERR_UNKNOWN: &str = "unknown command";
pub const ERR_LINE_TOO_LONG: &str = "line too long";
pub const ERR_WRONG_STATE: &str = "command not valid in this state";
pub const ERR_PASS_WITHOUT_USER: &str = "PASS must follow a successful USER";
pub const ERR_BAD_USER: &str = "invalid user name";
pub const ERR_APOP: &str = "APOP not supported";
pub const ERR_STLS: &str = "STLS not available";
pub const OK_STLS: &str = "Begin TLS negotiation";
pub const CAPA_STLS: &str = "STLS";
pub const ERR_TLS_ACTIVE: &str = "TLS already active";
pub const ERR_NEED_TLS: &str =
    "Plaintext authentication disallowed on non-secure connections; use STLS";
pub const ERR_AUTH_MECHANISM: &str = "unsupported authentication mechanism";
pub const ERR_AUTH_CANCELLED: &str = "authentication cancelled";
pub const ERR_AUTH_BASE64: &str = "invalid base64 in authentication response";
pub const ERR_AUTH_MALFORMED: &str = "malformed PLAIN authentication response";
pub const ERR_AUTH_FAILED: &str = "invalid user name or password";
pub const ERR_AUTH_TOO_MANY: &str = "too many authentication failures, closing connection";
pub const ERR_AUTHZ: &str = "not authorized to act as that user";
pub const ERR_IN_USE: &str = "maildrop already locked, try again later";
pub const ERR_TEMP_FAIL: &str = "temporary failure, try again later";
pub const ERR_BANNED: &str = "too many failed logins from your address, try again later";
pub const ERR_UPDATE_FAILED: &str = "some deleted messages not removed";
pub const ERR_NO_SUCH_MESSAGE: &str = "no such message";

/// RFC 2449 section 5 capabilities, in the order sent. `USER` and
/// `SASL PLAIN` are offered in both states: RFC 2449 lets a server list
/// capabilities it only honours in AUTHORIZATION.
pub const CAPABILITIES: &[&str] = &[
    "TOP",
    "UIDL",
    "USER",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    "SASL PLAIN",
    "IMPLEMENTATION ringmail",
];

/// SASL mechanisms listed by a bare `AUTH` (a widespread pre-CAPA practice).
pub const SASL_MECHANISMS: &[&str] = &["PLAIN"];

/// `+OK` or `+OK text`.
pub fn ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+OK");
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `+OK ` followed by formatted text.
pub fn ok_fmt(out: &mut Vec<u8>, args: Arguments<'_>) {
    out.extend_from_slice(b"+OK ");
    // Writing into a Vec cannot fail.
    let _ = out.write_fmt(args);
    out.extend_from_slice(b"\r\n");
}

/// `-ERR text` or `-ERR [CODE] text`.
pub fn err(out: &mut Vec<u8>, code: Option<RespCode>, text: &str) {
    err_fmt(out, code, format_args!("{text}"));
}

/// `-ERR [CODE] ` followed by formatted text.
pub fn err_fmt(out: &mut Vec<u8>, code: Option<RespCode>, args: Arguments<'_>) {
    out.extend_from_slice(b"-ERR ");
    if let Some(code) = code {
        out.push(b'[');
        out.extend_from_slice(code.as_str().as_bytes());
        out.extend_from_slice(b"] ");
    }
    let _ = out.write_fmt(args);
    out.extend_from_slice(b"\r\n");
}

/// One line of a multi-line response (the caller guarantees it does not
/// start with '.', so no stuffing is needed).
pub fn line_fmt(out: &mut Vec<u8>, args: Arguments<'_>) {
    let _ = out.write_fmt(args);
    out.extend_from_slice(b"\r\n");
}

/// The terminator of a multi-line response.
pub fn end_multiline(out: &mut Vec<u8>) {
    out.extend_from_slice(b".\r\n");
}

/// RFC 5034 section 4: an empty server challenge.
pub fn sasl_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+ \r\n");
}

/// The greeting, `+OK <hostname> POP3 ringmail ready`. Bytes of the host
/// name outside printable ASCII are replaced by '?' so a bad configuration
/// cannot break the line.
pub fn greeting(out: &mut Vec<u8>, hostname: &str) {
    out.extend_from_slice(b"+OK ");
    out.extend(
        hostname
            .bytes()
            .map(|b| if (0x21..=0x7e).contains(&b) { b } else { b'?' }),
    );
    out.push(b' ');
    out.extend_from_slice(GREETING_SUFFIX.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The full CAPA response (RFC 2449 section 5).
pub fn capa(out: &mut Vec<u8>, caps: &[&str]) {
    ok(out, OK_CAPA);
    for cap in caps {
        line_fmt(out, format_args!("{cap}"));
    }
    end_multiline(out);
}

/// The mechanism list answered to a bare `AUTH`.
pub fn auth_list(out: &mut Vec<u8>) {
    ok(out, OK_AUTH_LIST);
    for mech in SASL_MECHANISMS {
        line_fmt(out, format_args!("{mech}"));
    }
    end_multiline(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        ok(&mut out, "");
        ok(&mut out, "hi");
        ok_fmt(&mut out, format_args!("{} {}", 2, 320));
        err(&mut out, None, ERR_UNKNOWN);
        err(&mut out, Some(RespCode::InUse), ERR_IN_USE);
        err_fmt(&mut out, Some(RespCode::SysTemp), format_args!("x{}", 1));
        assert_eq!(
            out,
            b"+OK\r\n+OK hi\r\n+OK 2 320\r\n-ERR unknown command\r\n\
              -ERR [IN-USE] maildrop already locked, try again later\r\n-ERR [SYS/TEMP] x1\r\n"
        );
    }

    #[test]
    fn greeting_sanitises_hostname() {
        let mut out = Vec::new();
        greeting(&mut out, "mail.example.org");
        greeting(&mut out, "bad\r\nhost");
        assert_eq!(
            out,
            b"+OK mail.example.org POP3 ringmail ready\r\n+OK bad??host POP3 ringmail ready\r\n"
        );
    }

    #[test]
    fn capa_is_terminated() {
        let mut out = Vec::new();
        capa(&mut out, CAPABILITIES);
        assert_eq!(
            out,
            b"+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\n\
              AUTH-RESP-CODE\r\nPIPELINING\r\nSASL PLAIN\r\nIMPLEMENTATION ringmail\r\n.\r\n"
        );
    }
}
