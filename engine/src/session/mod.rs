//! Sans-I/O protocol state machines: the runtime feeds bytes in and performs the
//! requests (delivery, authentication, mailbox commits) they hand back.
pub mod imap;
pub mod pop3;
pub mod smtp;
