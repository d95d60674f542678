//! SMTP server session state machine.
