//! IMAP client (placeholder).
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{ImapArgs, ImapIdleArgs};
use crate::env::Env;

pub async fn cmd_imap(_a: ImapArgs, _env: Env) -> Result<ExitCode, String> {
    Err("imap: not implemented yet".into())
}
pub async fn cmd_imap_idle(_a: ImapIdleArgs, _env: Env) -> Result<ExitCode, String> {
    Err("imap-idle: not implemented yet".into())
}
pub async fn fetch_all(
    _addr: &str,
    _user: &str,
    _pass: &str,
    _mailbox: &str,
    _timeout: Duration,
    _each: impl FnMut(&[u8]),
) -> Result<u64, String> {
    Err("imap verify not implemented yet".into())
}
