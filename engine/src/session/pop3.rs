//! POP3 server session state machine.
