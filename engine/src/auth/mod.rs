//! Inbound mail authentication: SPF (RFC 7208), DKIM (RFC 6376, RFC 8463),
//! DMARC (RFC 7489) and ARC (RFC 8617) of mail from the Internet, recorded
//! in an Authentication-Results field (RFC 8601) and turned into a decision.
//!
//! - [`header`]: pure functions over message bytes (forged
//!   Authentication-Results fields, field boundaries, DMARC `pct`);
//! - [`policy`]: the pure mapping from results and settings to a decision;
//! - [`cache`]: bounded TTL caches for mail-auth's parsed records;
//! - [`verifier`]: the work on the DNS side thread (`relay::dns`), which
//!   shards reach through [`verifier::Verifier::verify`].
//!
//! This module never touches a socket of its own or a shard; the SMTP
//! driver (`runtime/smtp.rs`) decides when to verify and applies the result.
pub mod cache;
pub mod header;
pub mod policy;
pub mod verifier;

pub use verifier::{Envelope, Outcome, Verifier};
