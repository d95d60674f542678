//! Command line (clap derive). Every option carries its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::msggen::SizeSpec;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for SMTP, POP3 and IMAP servers (any server: it only speaks the protocols)",
    long_about = "Load generator for SMTP, POP3 and IMAP servers. Latencies are recorded per operation \
in HdrHistograms (1 us .. 60 s, 3 significant figures) and reported as p50/p90/p99/p99.9/max. \
Open-loop mode (--rate) measures latency from each operation's intended start time, so server \
stalls are not hidden (no coordinated omission). Only loopback or lab targets should be used."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Send messages over SMTP (EHLO once per connection, then MAIL/RCPT/DATA or BDAT per message).
    Smtp(SmtpArgs),
    /// Read mailboxes over POP3 (USER/PASS, STAT, LIST, UIDL, RETR, optional DELE, QUIT per session).
    Pop3(Pop3Args),
    /// IMAP sessions running a weighted random mix of commands.
    Imap(ImapArgs),
    /// Open many IMAP sessions, put them in IDLE and hold them.
    ImapIdle(ImapIdleArgs),
    /// SMTP senders and POP3/IMAP readers at the same time, each with its own histograms.
    Mixed(MixedArgs),
}

/// Options shared by every mode: runtime, timeouts and output.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Tokio worker threads (1 = single-threaded runtime, the lightest on a shared machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Inactivity timeout in seconds for every connect, read and write.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Hard limit on the whole run in seconds (every loop also has a count or duration bound).
    #[arg(long, default_value_t = 3600.0)]
    pub max_time: f64,
    /// Seed for all random choices (sizes of the mix, random recipients, IMAP op mix).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run id put in every message id (default: derived from time and pid).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Print one JSON object with the results on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Write the histograms to FILE as an HdrHistogram interval log (V2 compressed, tags = op names).
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// Draw latency-by-percentile curves per op into FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Print a progress line on stderr every second even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Never print the progress line, even on a terminal.
    #[arg(long, conflicts_with = "progress")]
    pub no_progress: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

/// TLS for every connection of the run (--verify's included).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Implicit TLS from the first byte (submissions 465, IMAPS 993, POP3S 995).
    #[arg(long, conflicts_with = "starttls")]
    pub tls: bool,
    /// Plain connect, then TLS: SMTP STARTTLS after EHLO (and EHLO again), IMAP STARTTLS after the greeting, POP3 STLS.
    #[arg(long)]
    pub starttls: bool,
    /// PEM file of the CA certificates to verify the server against (default: the system's roots).
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    pub tls_ca: Option<PathBuf>,
    /// Accept any server certificate (self-signed lab servers); handshake signatures are still checked.
    #[arg(long)]
    pub tls_insecure: bool,
    /// Name sent in SNI and verified in the certificate (default: the host part of the target).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Resume TLS sessions on reconnect (one shared client config and session cache); off: every handshake is full.
    #[arg(long, value_enum, default_value_t = OnOff::On, value_name = "on|off")]
    pub tls_resume: OnOff,
}

/// Which accounts exist on the server and how to log into them.
#[derive(Args, Debug, Clone)]
pub struct AccountArgs {
    /// Number of accounts (recipients / mailboxes) to spread the load over.
    #[arg(long, default_value_t = 100)]
    pub accounts: u32,
    /// Address pattern; the placeholder n in braces is replaced by the account number (default shown below).
    #[arg(long, default_value = "{n}u@example.test")]
    pub account_pattern: String,
    /// Number of the first account (the placeholder runs from this to this + accounts - 1).
    #[arg(long, default_value_t = 0)]
    pub first_account: u64,
    /// Login name pattern for POP3/IMAP, with the same placeholder (default: the address pattern).
    #[arg(long)]
    pub login_pattern: Option<String>,
    /// Password for every account (POP3/IMAP and --verify).
    #[arg(long, default_value = "password")]
    pub password: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptOrder {
    /// Message n goes to accounts n*k .. n*k+k-1 (mod accounts).
    RoundRobin,
    /// Accounts drawn at random (seeded) per message.
    Random,
}

#[derive(Args, Debug, Clone)]
pub struct SmtpOpts {
    /// Total messages to send (including warm-up). Default 1000 unless --duration is given.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Stop after this many seconds (whichever of --messages / --duration comes first).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds at the start whose results are not recorded (histograms, counters, rates).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Message size in bytes (suffix k/m allowed), or `mix`: 2 KiB .. 1 MiB, mostly small with a tail of large.
    #[arg(long, default_value = "4096")]
    pub size: SizeSpec,
    /// Recipients (RCPT TO) per message.
    #[arg(long, default_value_t = 1)]
    pub recipients_per_message: u32,
    /// How recipients are chosen over the accounts.
    #[arg(long, value_enum, default_value_t = RcptOrder::RoundRobin)]
    pub recipient_order: RcptOrder,
    /// Envelope and header sender.
    #[arg(long, default_value = "sender@example.test")]
    pub from: String,
    /// Send this file (an RFC 5322 message with CRLF line ends, e.g. one
    /// DKIM-signed for a verification benchmark) as every message instead
    /// of generated ones; --size is ignored. Not with --verify.
    #[arg(long, value_name = "FILE", conflicts_with = "verify")]
    pub message_file: Option<std::path::PathBuf>,
    /// Name sent in EHLO.
    #[arg(long, default_value = "loadgen.example.test")]
    pub helo: String,
    /// Do not pipeline MAIL/RCPT/DATA even if the server advertises PIPELINING.
    #[arg(long)]
    pub no_pipelining: bool,
    /// Send the message with BDAT (CHUNKING, RFC 3030) instead of DATA; fails if not advertised.
    #[arg(long)]
    pub bdat: bool,
    /// Messages per connection before QUIT and reconnect (default: unlimited).
    #[arg(long, value_name = "N")]
    pub reuse: Option<u64>,
    /// Open loop: start messages at this fixed rate (messages/s) and measure latency from each intended start.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// After sending, read every mailbox back and check each acknowledged message is there exactly once, byte-identical.
    #[arg(long)]
    pub verify: bool,
    /// POP3 server (host:port) used by --verify.
    #[arg(long, value_name = "ADDR")]
    pub verify_pop3: Option<String>,
    /// IMAP server (host:port) used by --verify.
    #[arg(long, value_name = "ADDR")]
    pub verify_imap: Option<String>,
    /// Seconds to wait before reading mailboxes back (for servers that deliver asynchronously).
    #[arg(long, default_value_t = 0.0)]
    pub verify_wait: f64,
}

#[derive(Args, Debug, Clone)]
pub struct SmtpArgs {
    /// SMTP server address (host:port).
    #[arg(long)]
    pub target: String,
    /// Concurrent SMTP connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    #[command(flatten)]
    pub opts: SmtpOpts,
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct Pop3Opts {
    /// Total sessions (default: one per account when no --duration is given).
    #[arg(long)]
    pub sessions: Option<u64>,
    /// Stop starting sessions after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds at the start whose results are not recorded.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Delete every retrieved message (DELE), committed by QUIT.
    #[arg(long)]
    pub delete: bool,
    /// Retrieve at most this many messages per session.
    #[arg(long)]
    pub max_retr: Option<u64>,
    /// Open loop: start sessions at this fixed rate (sessions/s), each on
    /// a free connection slot; `session` latency counts from the intended
    /// start (default: closed loop).
    #[arg(long, value_name = "SESSIONS_PER_SEC")]
    pub rate: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct Pop3Args {
    /// POP3 server address (host:port).
    #[arg(long)]
    pub target: String,
    /// Concurrent POP3 connections (one session at a time each).
    #[arg(long, default_value_t = 8)]
    pub connections: u32,
    #[command(flatten)]
    pub opts: Pop3Opts,
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub common: Common,
}

pub const DEFAULT_IMAP_MIX: &str =
    "login=1,select=5,fetch_headers=10,fetch_body=5,store=5,search=3,idle=1,logout=1";

#[derive(Args, Debug, Clone)]
pub struct ImapOpts {
    /// Run for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds at the start whose results are not recorded.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Weighted command mix: login, select, fetch_headers, fetch_body, store, search, idle, logout.
    #[arg(long, default_value = DEFAULT_IMAP_MIX)]
    pub mix: String,
    /// Number of messages (by UID) in each fetch_headers window.
    #[arg(long, default_value_t = 50)]
    pub window: u32,
    /// How long each `idle` op stays in IDLE before DONE, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub idle_ms: u64,
    /// Criteria for the `search` op (UID SEARCH <criteria>).
    #[arg(long, default_value = "UNSEEN")]
    pub search: String,
    /// Mailbox to SELECT.
    #[arg(long, default_value = "INBOX")]
    pub mailbox: String,
}

#[derive(Args, Debug, Clone)]
pub struct ImapArgs {
    /// IMAP server address (host:port).
    #[arg(long)]
    pub target: String,
    /// Concurrent IMAP connections, each running one session after another.
    #[arg(long, default_value_t = 8)]
    pub connections: u32,
    #[command(flatten)]
    pub opts: ImapOpts,
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct ImapIdleArgs {
    /// IMAP server address (host:port).
    #[arg(long)]
    pub target: String,
    /// Number of sessions to log in and hold in IDLE.
    #[arg(long, default_value_t = 1000)]
    pub sessions: u32,
    /// Seconds to hold all sessions in IDLE once every login finished.
    #[arg(long, default_value_t = 30.0)]
    pub hold: f64,
    /// Logins in flight at once during the ramp-up.
    #[arg(long, default_value_t = 200)]
    pub login_concurrency: u32,
    /// Mailbox to SELECT before IDLE.
    #[arg(long, default_value = "INBOX")]
    pub mailbox: String,
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct MixedArgs {
    /// SMTP server for the senders (omit to run no senders).
    #[arg(long)]
    pub smtp_target: Option<String>,
    /// POP3 server for the readers (omit to run no POP3 readers).
    #[arg(long)]
    pub pop3_target: Option<String>,
    /// IMAP server for the readers (omit to run no IMAP readers).
    #[arg(long)]
    pub imap_target: Option<String>,
    /// Concurrent SMTP connections.
    #[arg(long, default_value_t = 16)]
    pub smtp_connections: u32,
    /// Concurrent POP3 connections.
    #[arg(long, default_value_t = 4)]
    pub pop3_connections: u32,
    /// Concurrent IMAP connections.
    #[arg(long, default_value_t = 4)]
    pub imap_connections: u32,
    /// Run for this many seconds (all parts).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds at the start whose results are not recorded.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Open-loop SMTP rate in messages/s (default: closed loop).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// SMTP message size in bytes (suffix k/m) or `mix`.
    #[arg(long, default_value = "4096")]
    pub size: SizeSpec,
    /// Recipients per SMTP message.
    #[arg(long, default_value_t = 1)]
    pub recipients_per_message: u32,
    /// Envelope and header sender.
    #[arg(long, default_value = "sender@example.test")]
    pub from: String,
    /// Do not pipeline SMTP commands.
    #[arg(long)]
    pub no_pipelining: bool,
    /// POP3 readers delete what they retrieved.
    #[arg(long)]
    pub pop3_delete: bool,
    /// POP3: retrieve at most this many messages per session.
    #[arg(long)]
    pub pop3_max_retr: Option<u64>,
    /// IMAP command mix (see `loadgen imap --help`).
    #[arg(long, default_value = DEFAULT_IMAP_MIX)]
    pub imap_mix: String,
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub common: Common,
}
