//! SMTP server session state machine (RFC 5321), sans-I/O.
//!
//! INTERFACE CONTRACT (the runtime in `runtime/` drives it; keep these names):
//!
//! ```text
//! let mut s = SmtpSession::new(params);          // params: SmtpParams
//! s.greeting(&mut out);                          // 220 banner
//! loop {
//!     match s.advance(&buf[pos..], &directory, &mut out) {
//!         (used, SmtpEvent::NeedInput) => { pos += used; flush out; read more }
//!         (used, SmtpEvent::Deliver(tx)) => { pos += used; deliver tx; s.delivered(outcome, &mut out) }
//!         (used, SmtpEvent::Close) => { pos += used; flush out; close }
//!     }
//! }
//! ```
//! The runtime owns timeouts: `s.in_data()` picks the data or command timeout,
//! and `s.timeout(&mut out)` writes the 421 reply.
