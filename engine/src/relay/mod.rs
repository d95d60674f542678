//! Relay: mail for other domains leaves through these parts.
//!
//! - [`dns`]: MX resolution on one side thread shared by every executor,
//!   batched, coalesced and cached.
//! - [`client`]: the outbound SMTP client, a sans-I/O state machine and a
//!   glommio driver delivering several messages over one connection.
//! - [`dsn`]: delivery status notifications (bounces and delay warnings).
//! - [`mta_sts`]: MTA-STS policies (RFC 8461) of destination domains, fetched
//!   and cached on a side thread.
//! - [`reply`]: SMTP reply parsing, shared by the client and the DSNs.
//! - [`testdns`]: a scripted DNS responder for tests.
//! - [`queue`]: the persistent outbound queue (names, ids, retry schedule).
//!
//! The worker that drains the queue is `runtime::relay`; these parts
//! take plain values and return plain outcomes.
pub mod client;
pub mod dns;
pub mod dsn;
pub mod mta_sts;
pub mod queue;
pub mod reply;
pub mod testdns;
