//! SMTP (RFC 5321) scanners and replies.
