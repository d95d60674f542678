//! POP3 (RFC 1939, RFC 2449) scanners and replies.
