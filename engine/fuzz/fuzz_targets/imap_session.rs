//! Arbitrary IMAP command sequences from three sessions of one account,
//! with deliveries and failed commits between them, run by the session
//! state machine on the in-memory store; the client-side invariants are
//! checked after every command (`session::imap::exercise`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringmail::session::imap::exercise::run(data);
});
