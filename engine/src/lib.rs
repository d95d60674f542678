//! ringmail: a thread-per-core mail server.
//!
//! Layers, from the wire inwards (see ARCHITECTURE.md for the full map):
//! - [`protocol`]: pure scanners and reply encoders over `&[u8]` (SMTP, POP3, IMAP).
//!   No sockets, files or clock.
//! - [`session`]: one explicit sans-I/O state machine per protocol: bytes in,
//!   replies and requests out.
//! - [`storage`]: append-only memory-mapped segment logs, records, per-account
//!   indexes, rkyv checkpoints, group commit. Knows nothing of SMTP or IMAP.
//! - [`runtime`]: glommio executors, listeners, shard routing, timers. The only
//!   layer that touches glommio.
//! - [`limits`] and [`config`]: every bound and setting.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod accounts;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod dkim;
pub mod limits;
pub mod metrics;
pub mod mime;
pub mod protocol;
pub mod relay;
pub mod runtime;
pub mod session;
pub mod storage;
pub mod tls;
pub mod transfer;
pub mod transport;
pub mod util;
