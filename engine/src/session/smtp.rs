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
// Placeholder until the session lands (same signatures as the contract).
pub struct SmtpParams { pub hostname: String, pub peer: std::net::SocketAddr, pub message_size_max: usize, pub recipients_max: usize, pub errors_max: usize, pub session_id: u64 }
pub trait SmtpContext { fn recipient(&self, address: &str) -> RcptVerdict; fn now_unix(&self) -> i64; }
pub enum RcptVerdict { Local { account: String }, UnknownUser, NotLocal, TempFail }
pub struct Recipient { pub address: String, pub account: String }
pub struct Transaction { pub reverse_path: String, pub recipients: Vec<Recipient>, pub body: Vec<u8>, pub smtputf8: bool, pub body_8bit: bool }
pub enum DeliveryOutcome { Stored, TempFail }
pub enum SmtpEvent { NeedInput, Deliver(Transaction), Close }
pub struct SmtpSession;
impl SmtpSession {
    pub fn new(_p: SmtpParams) -> Self { SmtpSession }
    pub fn greeting(&mut self, _out: &mut Vec<u8>) {}
    pub fn advance(&mut self, _i: &[u8], _c: &dyn SmtpContext, _o: &mut Vec<u8>) -> (usize, SmtpEvent) { (0, SmtpEvent::Close) }
    pub fn delivered(&mut self, _o: DeliveryOutcome, _out: &mut Vec<u8>) {}
    pub fn in_data(&self) -> bool { false }
    pub fn timeout(&mut self, _out: &mut Vec<u8>) {}
    pub fn recycle_body(&mut self, _b: Vec<u8>) {}
}
