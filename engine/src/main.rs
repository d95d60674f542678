//! The `ringmail` command: run the server, manage accounts.
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ringmail::accounts::AccountFile;
use ringmail::config::Config;

#[derive(Parser)]
#[command(
    name = "ringmail",
    version,
    about = "A thread-per-core mail server: SMTP in (MX and submission), durable mailboxes, IMAP and POP3 out, relay with DKIM.",
    long_about = "ringmail accepts mail over SMTP for its local domains (checking SPF, DKIM, DMARC and ARC of mail from the Internet), \
takes mail from authenticated users on submission and relays it to other domains (MX lookups, STARTTLS with MTA-STS, DKIM \
signing, retries and bounces), appends it durably to per-account mailboxes (memory-mapped segment logs with group commit, one \
executor per core) and serves it over IMAP4rev1 and POP3, all with TLS (STARTTLS and implicit).\n\n\
With no configuration file it runs on an embedded default: 127.0.0.1 only, SMTP 2525, submission 5870, submissions 4650, \
IMAP 1430, IMAPS 9930, POP3 1100, POP3S 9950, metrics and health on HTTP 9180, data in ./ringmail-data, local domain \
example.test, demo accounts alice@example.test (password alice-secret) and bob@example.test (password bob-secret).",
    after_help = "Examples:\n  ringmail serve                                  # the embedded default\n  \
ringmail serve --config /etc/ringmail/ringmail.toml\n  ringmail default-config > ringmail.toml\n  \
echo 's3cret' | ringmail account add carol@example.test\n  ringmail status\n\n\
Every command takes --config FILE and --data DIR; `ringmail COMMAND --help` shows its own examples."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded default configuration unless --config is given).
    #[command(
        after_help = "Examples:\n  ringmail serve\n  ringmail serve --config /etc/ringmail/ringmail.toml\n  ringmail serve --data /var/lib/ringmail --cores 4 --smtp 0.0.0.0:25 --imaps 0.0.0.0:993"
    )]
    Serve(ServeArgs),
    /// Manage accounts in the data directory (a running server picks changes up within a second).
    #[command(
        after_help = "Examples:\n  echo \'s3cret\' | ringmail account add carol@example.test\n  ringmail account list\n  echo \'n3w\' | ringmail account passwd carol@example.test\n  ringmail account remove carol@example.test"
    )]
    Account {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Show what the data directory holds (offline: reads it, changes nothing).
    #[command(
        after_help = "Examples:\n  ringmail inspect --data /var/lib/ringmail\n  ringmail inspect --count-only"
    )]
    Inspect {
        #[command(flatten)]
        common: Common,
        /// Print only the total number of stored messages.
        #[arg(long)]
        count_only: bool,
    },
    /// Act on the relay queue of a running server (through DATA/control.sock).
    #[command(
        after_help = "Examples:\n  ringmail queue list\n  ringmail queue flush example.org\n  ringmail queue remove q0-12"
    )]
    Queue {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Show a running server's state: uptime, version and per core the open
    /// sessions, accounts, messages, segment and live bytes, queue depth and
    /// commits per second over the last minute.
    #[command(
        after_help = "Examples:\n  ringmail status\n  ringmail status --json | jq '.shards[].commits_per_second'"
    )]
    Status {
        #[command(flatten)]
        common: Common,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Make the running server read its configuration again (as SIGHUP does):
    /// local domains, aliases, limits, timeouts, relay and login-throttle
    /// settings, mail-authentication policy, certificates. Settings that need
    /// new sockets or executors are listed as needing a restart. A file that
    /// does not parse changes nothing, and the error names file, line and key.
    #[command(
        after_help = "Examples:\n  ringmail reload --data /var/lib/ringmail\n  kill -HUP $(pidof ringmail)    # the same, by signal (see the log)"
    )]
    Reload {
        #[command(flatten)]
        common: Common,
    },
    /// The mailboxes of an account on the running server.
    #[command(
        after_help = "Examples:\n  ringmail mailbox list carol@example.test\n  ringmail mailbox stats carol@example.test"
    )]
    Mailbox {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: MailboxAction,
    },
    /// Reclaim segments whose bytes are mostly deleted mail now, on the
    /// running server (it also does so every storage.compact_interval_secs).
    #[command(after_help = "Examples:\n  ringmail compact\n  ringmail compact --shard 1")]
    Compact {
        #[command(flatten)]
        common: Common,
        /// Only segments written by this shard (core).
        #[arg(long)]
        shard: Option<usize>,
    },
    /// Cluster mode: the members and the bucket map in etcd (`[cluster]` of
    /// the configuration names the cluster and the etcd endpoints).
    #[command(
        after_help = "Examples:\n  ringmail cluster status --config /etc/ringmail/ringmail.toml\n  ringmail cluster rebalance --dry-run --config /etc/ringmail/ringmail.toml"
    )]
    Cluster {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Client addresses banned after failed logins, on the running server.
    #[command(after_help = "Examples:\n  ringmail ban list\n  ringmail ban remove 192.0.2.7")]
    Ban {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: BanAction,
    },
    /// Export accounts of the running server as Maildir++ trees or mbox files
    /// (a consistent snapshot per account; the server keeps serving).
    #[command(
        after_help = "Examples:\n  ringmail export carol@example.test /srv/export\n  ringmail export --all --format mbox /srv/export"
    )]
    Export {
        #[command(flatten)]
        common: Common,
        /// Every account with stored mail.
        #[arg(long)]
        all: bool,
        /// maildir (Dovecot's Maildir++ with dovecot-uidlist and dovecot-keywords) or mbox (mboxrd).
        #[arg(long)]
        format: String,
        /// ACCOUNT DIR, or with --all just DIR (one subdirectory per account is written in DIR).
        #[arg(required = true, num_args = 1..=2, value_names = ["ACCOUNT", "DIR"])]
        args: Vec<String>,
    },
    /// Import a Maildir (Maildir++, Dovecot's included) or mbox files into an
    /// account of the running server; a rerun adds nothing twice.
    #[command(
        after_help = "Examples:\n  ringmail import /home/carol/Maildir carol@example.test\n  ringmail import --format mbox /var/mail/carol carol@example.test"
    )]
    Import {
        #[command(flatten)]
        common: Common,
        /// maildir or mbox (mboxrd and mboxo are both read).
        #[arg(long)]
        format: String,
        /// A Maildir++ root, an mbox file (into INBOX) or a directory of mbox files.
        src: PathBuf,
        account: String,
    },
    /// Copy the data directory of the running server to DIR (a new or empty
    /// directory) while it keeps serving; `ringmail serve --data DIR` starts on the copy.
    #[command(
        after_help = "Examples:\n  ringmail backup /srv/backup/ringmail-$(date +%F)\n  ringmail serve --data /srv/backup/ringmail-2026-12-06   # start on the copy"
    )]
    Backup {
        #[command(flatten)]
        common: Common,
        dir: PathBuf,
    },
    /// DKIM signing keys (in DATA/dkim/; the server loads them at start).
    #[command(
        after_help = "Examples:\n  ringmail dkim generate example.org\n  ringmail dkim generate example.org --selector rsa1 --algorithm rsa\n  ringmail dkim list"
    )]
    Dkim {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Print the DNS records a mail domain needs (MX, SPF, DKIM, DMARC,
    /// MTA-STS, TLS-RPT and RFC 6186 client SRV records).
    #[command(after_help = "Examples:\n  ringmail dns-records example.org")]
    DnsRecords {
        #[command(flatten)]
        common: Common,
        domain: String,
    },
    /// Print the embedded default configuration as a TOML file to start from.
    #[command(after_help = "Examples:\n  ringmail default-config > /etc/ringmail/ringmail.toml")]
    DefaultConfig,
    /// Check a configuration file and exit.
    #[command(after_help = "Examples:\n  ringmail check-config /etc/ringmail/ringmail.toml")]
    CheckConfig { file: PathBuf },
}

#[derive(Args, Clone)]
struct Common {
    /// Configuration file (TOML). Without it the embedded default is used.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration's data_dir).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Executors, one per core (0: every online CPU).
    #[arg(long)]
    cores: Option<usize>,
    /// Our host name (banner, EHLO, Received headers).
    #[arg(long)]
    hostname: Option<String>,
    /// SMTP listen address (repeatable); replaces the configured list.
    #[arg(long)]
    smtp: Vec<SocketAddr>,
    /// POP3 listen address (repeatable); replaces the configured list.
    #[arg(long)]
    pop3: Vec<SocketAddr>,
    /// IMAP listen address (repeatable); replaces the configured list.
    #[arg(long)]
    imap: Vec<SocketAddr>,
    /// SMTP submission listen address (repeatable); replaces the configured list.
    #[arg(long)]
    submission: Vec<SocketAddr>,
    /// Submission over implicit TLS (repeatable); replaces the configured list.
    #[arg(long)]
    submissions: Vec<SocketAddr>,
    /// IMAP over implicit TLS (repeatable); replaces the configured list.
    #[arg(long)]
    imaps: Vec<SocketAddr>,
    /// POP3 over implicit TLS (repeatable); replaces the configured list.
    #[arg(long)]
    pop3s: Vec<SocketAddr>,
    /// HTTP metrics and health listener (repeatable); replaces the configured list.
    #[arg(long)]
    http: Vec<SocketAddr>,
}

#[derive(Subcommand)]
enum QueueAction {
    /// List queued messages and the state of each recipient.
    List,
    /// Retry deferred recipients now (all, or those of one domain).
    Flush { domain: Option<String> },
    /// Remove a message from the queue (no bounce is sent). ID as shown by `list`, e.g. q0-12.
    Remove { id: String },
}

#[derive(Subcommand)]
enum MailboxAction {
    /// Mailbox names with their message counts.
    List { account: String },
    /// Per mailbox: messages, unseen, bytes, UIDVALIDITY, UIDNEXT, special use; and the totals.
    Stats { account: String },
}

#[derive(Subcommand)]
enum DkimAction {
    /// Make a signing key for DOMAIN and print the TXT record to publish.
    Generate {
        domain: String,
        #[arg(long, default_value = "ringmail")]
        selector: String,
        /// ed25519 (RFC 8463) or rsa (2048 bits)
        #[arg(long, default_value = "ed25519")]
        algorithm: String,
    },
    /// List the keys and their TXT records.
    List,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Live members, and how many buckets each is primary and replica for.
    Status,
    /// Place every bucket without a live primary (on its replica first) and
    /// spread the replicas evenly over the live members, moving as few as
    /// it can (the map is written only if nobody changed it meanwhile).
    Rebalance {
        /// Show what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also move buckets off live primaries to even them out: each new
        /// primary first becomes the bucket's replica and copies its mail,
        /// and the primaries move once every such node reports it copied.
        #[arg(long)]
        move_primaries: bool,
    },
    /// Which bucket each address's account is in, and the nodes that hold
    /// it (one block of three lines per address).
    Locate {
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Give a node no buckets (its primaries go to their replicas, which
    /// hold every acknowledged delivery), to take it out of service.
    Drain {
        node: String,
        /// Let the node take buckets again at the next rebalance.
        #[arg(long)]
        undo: bool,
    },
}

#[derive(Subcommand)]
enum BanAction {
    /// List banned addresses (an IPv6 ban covers the address's /64) and when each ban ends.
    List,
    /// Lift the ban of an address and forget its failed logins.
    Remove { address: String },
}

#[derive(Subcommand)]
enum AccountAction {
    /// Add an account; the password is read from the first line of standard input.
    Add { address: String },
    /// Change an account's password (read from standard input).
    Passwd { address: String },
    /// Remove an account (its stored mail stays in the data directory).
    Remove { address: String },
    /// List accounts.
    List,
    /// Show or set an account's storage limit (IMAP QUOTA, RFC 9208). LIMIT is
    /// octets, with an optional K, M or G suffix (powers of 1024); 0 removes
    /// the account's own limit, so `[limits] quota_octets` applies again.
    Quota {
        address: String,
        /// The new limit; without it, the limit in force is shown.
        limit: Option<String>,
    },
    /// Add many accounts sharing one password (read from standard input). The
    /// pattern's placeholder (the letter n in braces) is replaced by each number:
    /// the pattern shown in README.md with --count 10000 creates 0u@.. to 9999u@..
    Bulk {
        /// Address pattern containing the placeholder (n in braces), e.g. the one in README.md.
        #[arg(long)]
        pattern: String,
        /// How many accounts.
        #[arg(long)]
        count: u64,
        /// First number.
        #[arg(long, default_value_t = 0)]
        start: u64,
    },
}

fn load_config(common: &Common) -> Result<Config, String> {
    let mut config = match &common.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(d) = &common.data {
        config.data_dir = d.clone();
    }
    Ok(config)
}

/// The configuration `serve` runs with: the file (or the embedded default)
/// with the command line's overrides, validated.
fn serve_config(args: &ServeArgs) -> Result<Config, String> {
    let mut config = load_config(&args.common)?;
    if let Some(c) = args.cores {
        config.cores = c;
    }
    if let Some(h) = &args.hostname {
        config.hostname.clone_from(h);
    }
    let listen = &mut config.listen;
    for (list, given) in [
        (&mut listen.smtp, &args.smtp),
        (&mut listen.pop3, &args.pop3),
        (&mut listen.imap, &args.imap),
        (&mut listen.submission, &args.submission),
        (&mut listen.submissions, &args.submissions),
        (&mut listen.imaps, &args.imaps),
        (&mut listen.pop3s, &args.pop3s),
        (&mut listen.http, &args.http),
    ] {
        if !given.is_empty() {
            list.clone_from(given);
        }
    }
    config.validate()?;
    Ok(config)
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading password: {e}"))?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        return Err("empty password (give it on standard input)".into());
    }
    Ok(pw)
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(args) => {
            let config = serve_config(&args);
            init_logs(config.as_ref().map(|c| c.log_format).unwrap_or_default());
            let config = config?;
            // SIGHUP and `ringmail reload` read the file again with the same
            // command-line overrides.
            let loader: ringmail::runtime::reload::Loader = Box::new(move || serve_config(&args));
            ringmail::runtime::serve(config, Some(loader)).map_err(|e| e.to_string())
        }
        Command::Account { common, action } => {
            let config = load_config(&common)?;
            let file = AccountFile::in_dir(&config.data_dir);
            match action {
                AccountAction::Add { address } => {
                    let pw = read_password()?;
                    let a = file.add(&address, &pw).map_err(|e| e.to_string())?;
                    println!("added {a}");
                }
                AccountAction::Passwd { address } => {
                    let pw = read_password()?;
                    file.set_password(&address, &pw)
                        .map_err(|e| e.to_string())?;
                    println!("password changed for {address}");
                }
                AccountAction::Remove { address } => {
                    file.remove(&address).map_err(|e| e.to_string())?;
                    println!("removed {address}");
                }
                AccountAction::Quota { address, limit } => {
                    if let Some(limit) = limit {
                        let own = match limit.to_ascii_lowercase().as_str() {
                            "default" => None,
                            "none" | "unlimited" => Some(0),
                            _ => Some(ringmail::accounts::parse_octets(&limit).ok_or_else(|| {
                                format!("{limit:?} is not a size (e.g. 1073741824, 512M, 2G), none or default")
                            })?),
                        };
                        file.set_quota(&address, own).map_err(|e| e.to_string())?;
                    }
                    let (hashes, quotas) = file.read_all().map_err(|e| e.to_string())?;
                    let a = ringmail::accounts::canonical(&address).map_err(|e| e.to_string())?;
                    if !hashes.contains_key(&a) {
                        return Err(format!("no account {a}"));
                    }
                    let d = ringmail::accounts::Directory::default().with_quotas(quotas);
                    let whose = if d.own_quota(&a).is_some() {
                        "its own"
                    } else {
                        "the default, [limits] quota_octets"
                    };
                    match d.quota(&a, config.limits.quota_octets) {
                        Some(q) => println!("{a}: quota {q} octets ({whose})"),
                        None => println!("{a}: no quota ({whose})"),
                    }
                }
                AccountAction::List => {
                    let mut all: Vec<String> = file
                        .read()
                        .map_err(|e| e.to_string())?
                        .into_keys()
                        .collect();
                    all.sort();
                    for a in all {
                        println!("{a}");
                    }
                }
                AccountAction::Bulk {
                    pattern,
                    count,
                    start,
                } => {
                    if !pattern.contains("{n}") {
                        return Err("--pattern must contain {n}".into());
                    }
                    let pw = read_password()?;
                    let list: Vec<String> = (start..start + count)
                        .map(|n| pattern.replace("{n}", &n.to_string()))
                        .collect();
                    let added = file.add_many(&list, &pw).map_err(|e| e.to_string())?;
                    println!("added {added} accounts");
                }
            }
            Ok(())
        }
        Command::Inspect { common, count_only } => {
            let config = load_config(&common)?;
            let dir = std::fs::canonicalize(&config.data_dir)
                .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
            let meta = ringmail::storage::Meta::read(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            let summary = glommio::LocalExecutorBuilder::default()
                .io_memory(256 << 10)
                .make()
                .map_err(|e| e.to_string())?
                .run(async move {
                    let store = ringmail::storage::Store::open(ringmail::storage::StoreConfig {
                        data_dir: dir,
                        shard: 0,
                        shards: 1,
                        meta,
                        segment_size: ringmail::limits::SEGMENT_SIZE as usize,
                        checkpoint_every_records: u64::MAX,
                        zero_segments: false,
                        append_through_map: false,
                        sync_inline_max_us: 0,
                    })
                    .map_err(|e| e.to_string())?;
                    Ok::<_, String>(store.summary())
                })?;
            let total: usize = summary
                .iter()
                .flat_map(|(_, m)| m.iter().map(|x| x.1))
                .sum();
            if count_only {
                println!("{total}");
            } else {
                println!(
                    "buckets {} run {} accounts {} messages {total}",
                    meta.buckets,
                    meta.run,
                    summary.len()
                );
                for (account, mailboxes) in summary {
                    let parts: Vec<String> = mailboxes
                        .iter()
                        .filter(|m| m.1 > 0)
                        .map(|(n, c, sz)| format!("{n}={c} ({sz} bytes)"))
                        .collect();
                    println!(
                        "{account}: {}",
                        if parts.is_empty() {
                            "empty".into()
                        } else {
                            parts.join(", ")
                        }
                    );
                }
            }
            Ok(())
        }
        Command::Queue { common, action } => {
            let config = load_config(&common)?;
            let request = match action {
                QueueAction::List => "list".to_string(),
                QueueAction::Flush { domain: Some(d) } => format!("flush {d}"),
                QueueAction::Flush { domain: None } => "flush".to_string(),
                QueueAction::Remove { id } => format!("remove {id}"),
            };
            let answer = ringmail::runtime::control::request(&config.data_dir, &request)?;
            print!("{answer}");
            Ok(())
        }
        Command::Status { common, json } => {
            let config = load_config(&common)?;
            let request = if json { "status json" } else { "status" };
            let answer = ringmail::runtime::control::request(&config.data_dir, request)?;
            print!("{answer}");
            Ok(())
        }
        Command::Reload { common } => {
            let config = load_config(&common)?;
            print!(
                "{}",
                ringmail::runtime::control::request(&config.data_dir, "reload")?
            );
            Ok(())
        }
        Command::Mailbox { common, action } => {
            let config = load_config(&common)?;
            let (account, stats) = match &action {
                MailboxAction::List { account } => (account, false),
                MailboxAction::Stats { account } => (account, true),
            };
            let answer = ringmail::runtime::control::request(
                &config.data_dir,
                &format!("mailboxes {account}"),
            )?;
            let (mut messages, mut bytes) = (0u64, 0u64);
            for line in answer.lines() {
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                messages += field("messages=");
                bytes += field("bytes=");
                if stats {
                    println!("{line}");
                } else {
                    // The name (quoted) and its count.
                    let name = line
                        .rsplit_once("\" messages=")
                        .map(|(n, _)| format!("{n}\""))
                        .unwrap_or_default();
                    println!("{name} {}", field("messages="));
                }
            }
            if stats {
                println!("total messages={messages} bytes={bytes}");
            }
            Ok(())
        }
        Command::Compact { common, shard } => {
            let config = load_config(&common)?;
            let request = match shard {
                Some(n) => format!("compact {n}"),
                None => "compact".to_string(),
            };
            print!(
                "{}",
                ringmail::runtime::control::request(&config.data_dir, &request)?
            );
            Ok(())
        }
        Command::Cluster { common, action } => {
            let config = load_config(&common)?;
            let Some(cluster) = &config.cluster else {
                return Err("the configuration has no [cluster] section".into());
            };
            #[cfg(feature = "cluster")]
            {
                let out = match action {
                    ClusterAction::Status => ringmail::cluster::etcd::status(cluster)?,
                    ClusterAction::Rebalance {
                        dry_run,
                        move_primaries,
                    } => ringmail::cluster::etcd::rebalance(cluster, dry_run, move_primaries)?,
                    ClusterAction::Drain { node, undo } => {
                        ringmail::cluster::etcd::drain(cluster, &node, undo)?
                    }
                    ClusterAction::Locate { addresses } => {
                        let accounts = addresses
                            .iter()
                            .map(|a| ringmail::accounts::canonical(a))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| e.to_string())?;
                        ringmail::cluster::etcd::locate(cluster, &accounts)?
                    }
                };
                print!("{out}");
                Ok(())
            }
            #[cfg(not(feature = "cluster"))]
            {
                let _ = (cluster, action);
                Err("this binary was built without cluster support (cargo build --features cluster)".into())
            }
        }
        Command::Ban { common, action } => {
            let config = load_config(&common)?;
            let request = match action {
                BanAction::List => "bans".to_string(),
                BanAction::Remove { address } => format!("unban {address}"),
            };
            let answer = ringmail::runtime::control::request(&config.data_dir, &request)?;
            print!("{answer}");
            Ok(())
        }
        Command::Export {
            common,
            all,
            format,
            args,
        } => {
            let (account, dir) = match (all, &args[..]) {
                (true, [dir]) => (None, PathBuf::from(dir)),
                (false, [account, dir]) => (Some(account.clone()), PathBuf::from(dir)),
                _ => return Err("give ACCOUNT DIR, or --all DIR".into()),
            };
            let config = load_config(&common)?;
            let format = ringmail::transfer::Format::parse(&format)
                .ok_or_else(|| format!("unknown format {format:?} (maildir or mbox)"))?;
            let accounts = match account {
                Some(a) => vec![a],
                None => ringmail::transfer::accounts(&config.data_dir)?,
            };
            for a in accounts {
                let (boxes, messages) =
                    ringmail::transfer::export(&config.data_dir, &a, format, &dir)?;
                println!("exported {a}: {boxes} mailboxes, {messages} messages");
            }
            Ok(())
        }
        Command::Import {
            common,
            format,
            src,
            account,
        } => {
            let config = load_config(&common)?;
            let format = ringmail::transfer::Format::parse(&format)
                .ok_or_else(|| format!("unknown format {format:?} (maildir or mbox)"))?;
            // SIGPIPE is ignored here (see main): write without panicking.
            use std::io::Write;
            let s = ringmail::transfer::import(
                &config.data_dir,
                format,
                &src,
                &account,
                &mut |line| {
                    let _ = writeln!(std::io::stderr(), "{line}");
                },
            )?;
            let mut out = std::io::stdout();
            let _ = writeln!(
                out,
                "imported into {account}: {} added, {} already present, {} refused",
                s.added, s.present, s.refused
            );
            if !s.mailboxes_created.is_empty() {
                let _ = writeln!(out, "mailboxes created: {}", s.mailboxes_created.join(", "));
            }
            if !s.uids_kept.is_empty() {
                let _ = writeln!(out, "UIDs kept (new mailboxes): {}", s.uids_kept.join(", "));
            }
            if !s.uids_new.is_empty() {
                let _ = writeln!(
                    out,
                    "new UIDs given (mailboxes already in use): {}",
                    s.uids_new.join(", ")
                );
            }
            if s.refused > 0 {
                return Err(format!("{} messages refused (named above)", s.refused));
            }
            Ok(())
        }
        Command::Backup { common, dir } => {
            let config = load_config(&common)?;
            print!("{}", ringmail::transfer::backup(&config.data_dir, &dir)?);
            Ok(())
        }
        Command::Dkim { common, action } => {
            let config = load_config(&common)?;
            match action {
                DkimAction::Generate {
                    domain,
                    selector,
                    algorithm,
                } => {
                    let alg = ringmail::dkim::Algorithm::parse(&algorithm).ok_or_else(|| {
                        format!("unknown algorithm {algorithm:?} (ed25519 or rsa)")
                    })?;
                    let (path, txt) =
                        ringmail::dkim::generate(&config.data_dir, &domain, &selector, alg)?;
                    println!(
                        "key written to {} (restart the server to sign with it)",
                        path.display()
                    );
                    println!(
                        "publish: {selector}._domainkey.{}. IN TXT \"{txt}\"",
                        domain.trim_end_matches('.').to_ascii_lowercase()
                    );
                }
                DkimAction::List => {
                    let keys = ringmail::dkim::Keys::load(&config.data_dir)?;
                    for (domain, key) in keys.iter() {
                        println!(
                            "{}._domainkey.{domain}. IN TXT \"{}\"",
                            key.selector,
                            ringmail::dkim::record_of(key)?
                        );
                    }
                }
            }
            Ok(())
        }
        Command::DnsRecords { common, domain } => {
            let config = load_config(&common)?;
            let keys = ringmail::dkim::Keys::load(&config.data_dir)?;
            print!(
                "{}",
                ringmail::dkim::dns_records(&config.hostname, &domain, &keys)?
            );
            Ok(())
        }
        Command::DefaultConfig => {
            print!("{}", ringmail::config::DEFAULT_CONFIG_TOML);
            Ok(())
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file).map_err(|e| e.to_string())?;
            for line in ringmail::tls::check(&config, ringmail::util::unix_now())
                .map_err(|e| e.to_string())?
            {
                println!("{line}");
            }
            let relay = ringmail::tls::ClientTls::load(&config)
                .map_err(|e| format!("{}: relay.tls_ca_file: {e}", file.display()))?;
            println!(
                "relay tls: {} trusted CA certificates from {}",
                relay.roots,
                relay.ca_file.display()
            );
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}

/// Logs go to stderr, filtered by `RINGMAIL_LOG` (default `info`), as text
/// or as one JSON object per line (`log_format = "json"`).
fn init_logs(format: ringmail::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGMAIL_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        ringmail::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        ringmail::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` starts its logs once its configuration says which format.
    if !matches!(cli.command, Command::Serve(_)) {
        init_logs(ringmail::config::LogFormat::Text);
    }
    if !matches!(cli.command, Command::Serve(_)) {
        // A command whose output is cut short (`ringmail account list |
        // head`) ends quietly by SIGPIPE, as Unix tools do, instead of
        // panicking in println!. The server keeps SIGPIPE ignored: a client
        // closing its socket must never kill it.
        // SAFETY: setting a signal disposition to the default, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if matches!(cli.command, Command::Import { .. }) {
        // An import that the server ends early (an error answer) must
        // report why instead of dying on its next write.
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmail: {e}");
            ExitCode::FAILURE
        }
    }
}
