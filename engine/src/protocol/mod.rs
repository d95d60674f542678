//! Wire formats: pure scanners and reply encoders. Nothing here performs I/O,
//! reads the clock, or allocates per command on the hot path.
pub mod imap;
pub mod pop3;
pub mod smtp;
