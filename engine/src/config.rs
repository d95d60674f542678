//! Configuration: the embedded default, a TOML file, and command-line overrides.
//!
//! `ringmail serve` with no arguments runs on [`Config::default`]: loopback,
//! unprivileged ports, data in `./ringmail-data`, local domain `example.test`
//! and two demo accounts. A file given with `--config` replaces the defaults
//! key by key; unknown keys are errors, reported with file, line and column.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::limits;

/// Demo accounts of the embedded default configuration, with their passwords.
/// Documented in README.md; only used when no `--config` file is given.
pub const DEMO_ACCOUNTS: [(&str, &str); 2] =
    [("alice@example.test", "alice-secret"), ("bob@example.test", "bob-secret")];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Our host name: SMTP banner, EHLO reply, Received headers.
    pub hostname: String,
    /// Where segments, checkpoints and the account file live.
    pub data_dir: PathBuf,
    /// Executors (one per core). 0 means every online CPU.
    pub cores: usize,
    /// Pin each executor to its own CPU.
    pub pin_cores: bool,
    /// Domains whose mail is delivered into local mailboxes.
    pub local_domains: Vec<String>,
    /// Aliases: `"alias@domain" = "account@domain"`; `"@domain" = "account@domain"` is a catch-all.
    pub aliases: std::collections::BTreeMap<String, String>,
    pub listen: Listen,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub storage: Storage,
    /// Accounts created at start-up when missing (the default configuration's
    /// demo accounts live here). Passwords are hashed before they are stored.
    pub demo_accounts: Vec<DemoAccount>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoAccount {
    pub address: String,
    pub password: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub smtp: Vec<SocketAddr>,
    pub pop3: Vec<SocketAddr>,
    pub imap: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub message_size_max: usize,
    pub recipients_max: usize,
    pub connections_max: usize,
    pub connections_per_address_max: usize,
    pub smtp_errors_max: usize,
    pub auth_failures_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub smtp_command_secs: u64,
    pub smtp_data_secs: u64,
    pub pop3_idle_secs: u64,
    /// On SIGTERM/SIGINT: how long in-flight sessions may take to finish.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Checkpoint a bucket's index after this many records were logged for it.
    pub checkpoint_every_records: u64,
    /// Compact a sealed segment when less than this percentage of it is live.
    pub compact_live_percent: u32,
    /// How often shard 0 looks for segments to compact, in seconds (0: never).
    pub compact_interval_secs: u64,
    /// Memory glommio locks per executor for io_uring buffers, in KiB. We use
    /// buffered files and mappings, not DMA, so little is needed.
    pub io_memory_kib: usize,
    /// Busy-poll this long before an idle executor sleeps, in microseconds:
    /// cheaper cross-core wake-ups for CPU burned while idle.
    pub spin_before_park_us: u64,
    /// Write zeros over a new segment before use. On file systems where the
    /// first write into a preallocated (unwritten) extent makes fdatasync
    /// also write the inode, this moves that cost off the commit path.
    pub zero_segments: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "mail.example.test".into(),
            data_dir: PathBuf::from("./ringmail-data"),
            cores: 0,
            pin_cores: true,
            local_domains: vec!["example.test".into()],
            // RFC 5321 4.5.1: every domain needs a postmaster.
            aliases: [("postmaster@example.test".to_string(), "alice@example.test".to_string())].into(),
            listen: Listen::default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            storage: Storage::default(),
            demo_accounts: DEMO_ACCOUNTS
                .iter()
                .map(|(a, p)| DemoAccount { address: (*a).into(), password: (*p).into() })
                .collect(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            smtp: vec!["127.0.0.1:2525".parse().unwrap()],
            pop3: vec!["127.0.0.1:1100".parse().unwrap()],
            imap: vec!["127.0.0.1:1430".parse().unwrap()],
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_size_max: limits::MESSAGE_SIZE_MAX,
            recipients_max: limits::RECIPIENTS_MAX,
            connections_max: limits::CONNECTIONS_MAX,
            connections_per_address_max: limits::CONNECTIONS_PER_ADDRESS_MAX,
            smtp_errors_max: limits::SMTP_ERRORS_MAX,
            auth_failures_max: limits::AUTH_FAILURES_MAX,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            smtp_command_secs: limits::SMTP_COMMAND_TIMEOUT.as_secs(),
            smtp_data_secs: limits::SMTP_DATA_TIMEOUT.as_secs(),
            pop3_idle_secs: limits::POP3_IDLE_TIMEOUT.as_secs(),
            shutdown_grace_secs: 10,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage { checkpoint_every_records: 4096, compact_live_percent: 50, compact_interval_secs: 60, io_memory_kib: 512, spin_before_park_us: 0, zero_segments: false }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Read and validate a TOML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parse configuration text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((0, 0));
            ConfigError::Parse { path: path.into(), line, column, message: e.message().to_string() }
        })?;
        config.validate().map_err(|message| ConfigError::Invalid { path: path.into(), message })?;
        Ok(config)
    }

    /// Check relations serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.hostname.is_empty() {
            return Err("hostname must not be empty".into());
        }
        if self.limits.message_size_max == 0 || self.limits.message_size_max > limits::MESSAGE_SIZE_MAX
        {
            return Err(format!(
                "limits.message_size_max must be between 1 and {}",
                limits::MESSAGE_SIZE_MAX
            ));
        }
        if self.limits.recipients_max == 0 {
            return Err("limits.recipients_max must be at least 1".into());
        }
        if self.cores > 256 {
            return Err("cores must be at most 256".into());
        }
        for d in &self.local_domains {
            if d.is_empty() || d.contains('@') {
                return Err(format!("local_domains: {d:?} is not a domain"));
            }
        }
        Ok(())
    }

    /// Number of executors to start.
    pub fn effective_cores(&self) -> usize {
        if self.cores > 0 {
            self.cores
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }

    pub fn smtp_command_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.smtp_command_secs)
    }
    pub fn smtp_data_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.smtp_data_secs)
    }
    pub fn pop3_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.pop3_idle_secs)
    }

    /// True when `domain` (any case) is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// The embedded default configuration as an annotated TOML file
/// (`ringmail default-config`). A test checks it equals [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = r#"# ringmail configuration. Every key is optional; missing keys take these defaults.

# Our host name: SMTP banner, EHLO reply, Received headers.
hostname = "mail.example.test"
# Segments, checkpoints, the account file and the meta file live here.
data_dir = "./ringmail-data"
# Executors, one per core; 0 = every online CPU. Accounts are spread over them.
cores = 0
# Pin each executor to its own CPU (ignored when cores > online CPUs).
pin_cores = true
# Mail for these domains is delivered into local mailboxes.
local_domains = ["example.test"]

# Demo accounts created at start when missing. Remove them in production and
# manage accounts with `ringmail account add ADDRESS` (password on stdin).
[[demo_accounts]]
address = "alice@example.test"
password = "alice-secret"

[[demo_accounts]]
address = "bob@example.test"
password = "bob-secret"

# "alias@domain" = "account@domain"; "@domain" = "account@domain" is a catch-all.
# local+detail@domain is delivered to local@domain when no exact match exists.
[aliases]
"postmaster@example.test" = "alice@example.test"

[listen]
smtp = ["127.0.0.1:2525"]
pop3 = ["127.0.0.1:1100"]
imap = ["127.0.0.1:1430"]

[limits]
# SIZE (RFC 1870): advertised in EHLO, checked at MAIL and at end of data. Max 32 MiB.
message_size_max = 33554432
# RFC 5321 4.5.3.1.8 asks for at least 100.
recipients_max = 100
connections_max = 10000
connections_per_address_max = 256
# Failed SMTP commands before the session is closed with 421.
smtp_errors_max = 20
# Failed logins on one POP3/IMAP connection before it is closed.
auth_failures_max = 3

[timeouts]
# RFC 5321 4.5.3.2: 5 minutes for a command, 10 minutes for data.
smtp_command_secs = 300
smtp_data_secs = 600
# RFC 1939 3: the POP3 autologout timer, at least 10 minutes.
pop3_idle_secs = 600
# On SIGTERM/SIGINT, how long open sessions may take to finish.
shutdown_grace_secs = 10

[storage]
# Checkpoint a bucket's index after this many records were logged for it.
checkpoint_every_records = 4096
# Compact a sealed segment when less than this percentage of it is live.
compact_live_percent = 50
# How often to look for segments to compact, in seconds (0: never).
compact_interval_secs = 60
# Memory each executor locks for io_uring, in KiB (see docs/TUNING.md).
io_memory_kib = 512
# Busy-poll before an idle executor sleeps, in microseconds (0: sleep at once).
spin_before_park_us = 0
# Write zeros over a new segment (prepared in the background, before it is
# needed) so commits sync only data, not block allocation. Costs a full
# write of every segment; measure it on your disks (docs/TUNING.md).
zero_segments = false
"#;

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_documented() {
        Config::default().validate().unwrap();
        let parsed = Config::parse(DEFAULT_CONFIG_TOML, Path::new("default.toml")).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn file_overrides_and_reports_position() {
        let c = Config::parse(
            "hostname = \"mx.test\"\ncores = 2\n[listen]\nsmtp = [\"127.0.0.1:0\"]\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.hostname, "mx.test");
        assert_eq!(c.cores, 2);
        assert_eq!(c.listen.pop3, Listen::default().pop3);
        let e = Config::parse("hostname = \"a\"\nbogus = 1\n", Path::new("x.toml")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("x.toml:2:1:"), "{s}");
        assert!(s.contains("bogus"), "{s}");
        let e = Config::parse("[limits]\nmessage_size_max = 0\n", Path::new("y.toml")).unwrap_err();
        assert!(e.to_string().contains("message_size_max"));
    }
}
