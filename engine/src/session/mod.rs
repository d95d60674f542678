//! Sans-I/O protocol state machines: the runtime feeds bytes in and performs the
//! requests (delivery, authentication, mailbox commits) they hand back.
pub mod fetch;
pub mod imap;
pub mod mailboxes;
pub mod order;
pub mod pop3;
pub mod search;
pub mod smtp;
pub mod store;
pub mod transfer;

/// The TLS parameters of a connection, as the sessions see them (trace
/// headers, logs). The runtime fills it in once a handshake completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// IANA name of the cipher suite, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: &'static str,
}
