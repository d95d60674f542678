//! The control socket: how `ringmail queue list|flush|remove` reaches a
//! running server.
//!
//! `DATA/control.sock` is a Unix stream socket (mode 0600: whoever can read
//! the data directory's mail may manage its queue) served by one std thread,
//! `ringmail-control`. A client writes one request line and reads the answer
//! until the server closes the connection:
//!
//! ```text
//! list                -> one block per queued message (relay::queue::describe)
//! flush [DOMAIN]      -> "N recipients scheduled now"
//! remove q<N>-<UID>   -> "removed q<N>-<UID>" (no bounce is sent)
//! bans                -> one line per banned address: "ADDRESS until UNIX-TIME (in N s)"
//! unban ADDRESS       -> "unbanned ADDRESS" (its failed logins are forgotten)
//! accounts            -> one line per account with stored mail
//! mailboxes ACCOUNT   -> one line per mailbox: name, messages, unseen, bytes,
//!                        UIDVALIDITY, UIDNEXT, special use (the owner answers)
//! compact [SHARD]     -> "compacted N segments" (shard 0 coordinates)
//! status [json]       -> uptime, version and per shard: sessions, accounts,
//!                        messages, segment/live bytes, queue, commits/s
//! reload              -> "reloaded", the keys applied and those needing a
//!                        restart (`runtime::reload`), or "error: ..."
//! export ACCOUNT      -> the account's snapshot stream (see `crate::transfer`)
//! import ACCOUNT      -> "ready MAX", then framed messages (see `runtime::transfer`)
//! backup DIR          -> progress lines, then "backup of ... done ..."
//! ```
//!
//! The last four run on a thread of their own (`runtime::transfer`).
//!
//! An answer starting with `error: ` is a failure. The thread forwards each
//! request to every shard over an unbounded futures channel that the shard
//! polls from a glommio task (`runtime::relay::start`), waits for every
//! shard's answer and combines them. Nothing here touches a shard's state.
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};

use crate::relay::queue::QueueId;

/// One request, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    List,
    /// Retry now: every deferred recipient, or those of one domain.
    Flush(Option<String>),
    Remove(QueueId),
    /// Addresses banned by the login throttle.
    Bans,
    /// Lift a ban (and forget the address's failures).
    Unban(std::net::IpAddr),
    /// The mailboxes of one account.
    Mailboxes(String),
    /// Compact now, all segments or those one shard wrote.
    Compact(Option<usize>),
    /// Export, import, backup: work for one shard (see `runtime::transfer`).
    Transfer(super::transfer::Request),
}

/// A request on its way to one shard; it answers on `reply` (an empty
/// answer to `Remove` means "not mine").
pub struct ControlRequest {
    pub command: Command,
    pub reply: oneshot::Sender<String>,
}

pub type ControlSender = mpsc::UnboundedSender<ControlRequest>;
pub type ControlReceiver = mpsc::UnboundedReceiver<ControlRequest>;

/// Bound on a request line.
const REQUEST_MAX: u64 = 1024;
/// How long a client may take to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

pub fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_lowercase();
    let arg = words.next();
    if words.next().is_some() {
        return Err("too many arguments".into());
    }
    match (verb.as_str(), arg) {
        ("list", None) => Ok(Command::List),
        ("flush", d) => Ok(Command::Flush(d.map(str::to_string))),
        ("remove", Some(id)) => QueueId::parse(id)
            .map(Command::Remove)
            .ok_or_else(|| format!("bad queue id {id:?} (like q0-12)")),
        ("bans", None) => Ok(Command::Bans),
        ("mailboxes", Some(a)) => Ok(Command::Mailboxes(a.to_string())),
        ("compact", None) => Ok(Command::Compact(None)),
        ("compact", Some(n)) => n
            .parse()
            .map(|n| Command::Compact(Some(n)))
            .map_err(|_| format!("bad shard number {n:?}")),
        ("unban", Some(a)) => {
            let a = a.strip_suffix("/64").unwrap_or(a);
            a.parse()
                .map(Command::Unban)
                .map_err(|_| format!("bad address {a:?}"))
        }
        _ => Err(format!(
            "unknown request {line:?} (list, flush [DOMAIN], remove ID, bans, unban ADDRESS, mailboxes ACCOUNT, compact [SHARD], status [json], reload)"
        )),
    }
}

/// Bind the socket and serve it on a thread, forwarding to `shards`.
/// What `status` reports besides the shards' snapshots.
#[derive(Clone)]
pub struct StatusSource {
    pub published: std::sync::Arc<crate::metrics::Published>,
    pub started: std::time::Instant,
    pub cores: usize,
    /// Reload the configuration (`runtime::reload`); answers its report.
    pub reload: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
}

pub fn start(
    data_dir: &Path,
    shards: Vec<ControlSender>,
    status: StatusSource,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    // A socket file left by a killed server.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    let data_dir = data_dir.to_path_buf();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("ringmail-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => serve(c, &shards, &data_dir, &status),
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

fn serve(conn: UnixStream, shards: &[ControlSender], data_dir: &Path, status: &StatusSource) {
    let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut line = String::new();
    let Ok(reader) = conn.try_clone() else { return };
    let mut reader = BufReader::new(reader);
    if reader
        .by_ref()
        .take(REQUEST_MAX)
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    // Export, import and backup run long: on a thread of their own.
    if super::transfer::is_transfer(&line) {
        let ctx = super::transfer::Context {
            data_dir: data_dir.to_path_buf(),
            shards: shards.to_vec(),
        };
        super::transfer::spawn(conn, reader, line, ctx);
        return;
    }
    // Status is read from the published snapshots: no shard is asked.
    if let Some(rest) = line.trim().strip_prefix("status") {
        let answer = match rest.trim() {
            "" => status_text(status),
            "json" => status_json(status),
            other => format!("error: unknown status format {other:?}\n"),
        };
        let mut conn = conn;
        let _ = conn.write_all(answer.as_bytes());
        return;
    }
    // A reload runs here, on the control thread, like one from SIGHUP.
    if line.trim().eq_ignore_ascii_case("reload") {
        let mut conn = conn;
        let _ = conn.write_all((status.reload)().as_bytes());
        return;
    }
    let answer = match parse(line.trim()) {
        Ok(cmd) => ask(shards, cmd),
        Err(e) => format!("error: {e}\n"),
    };
    let mut conn = conn;
    let _ = conn.write_all(answer.as_bytes());
}

fn status_json(s: &StatusSource) -> String {
    let v = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "cores": s.cores,
        "shards": s.published.status(),
    });
    format!("{v}\n")
}

fn status_text(s: &StatusSource) -> String {
    use std::fmt::Write as _;
    let up = s.started.elapsed().as_secs();
    let mut out = format!(
        "ringmail {} up {}d {:02}:{:02}:{:02}, {} cores\n",
        env!("CARGO_PKG_VERSION"),
        up / 86_400,
        up / 3600 % 24,
        up / 60 % 60,
        up % 60,
        s.cores
    );
    let _ = writeln!(
        out,
        "{:>5} {:>6} {:>6} {:>6} {:>6} {:>9} {:>9} {:>14} {:>14} {:>6} {:>10} {:>10}",
        "shard",
        "smtp",
        "subm",
        "pop3",
        "imap",
        "accounts",
        "messages",
        "segment_bytes",
        "live_bytes",
        "queue",
        "records/s",
        "commits/s"
    );
    for sh in s.published.status() {
        let n = |k: &str| sh.sessions.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:>5} {:>6} {:>6} {:>6} {:>6} {:>9} {:>9} {:>14} {:>14} {:>6} {:>10.1} {:>10.1}",
            sh.shard,
            n("smtp"),
            n("submission") + n("submissions"),
            n("pop3") + n("pop3s"),
            n("imap") + n("imaps"),
            sh.accounts,
            sh.messages,
            sh.segment_bytes,
            sh.live_bytes,
            sh.queue_messages,
            sh.records_per_second,
            sh.commits_per_second
        );
    }
    out
}

/// Ask every shard, combine the answers.
fn ask(shards: &[ControlSender], command: Command) -> String {
    let mut waiting = Vec::new();
    for s in shards {
        let (tx, rx) = oneshot::channel();
        if s.unbounded_send(ControlRequest {
            command: command.clone(),
            reply: tx,
        })
        .is_ok()
        {
            waiting.push(rx);
        }
    }
    let answers: Vec<String> = futures::executor::block_on(futures::future::join_all(waiting))
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    if answers.len() < shards.len() {
        return "error: a shard did not answer (shutting down?)\n".into();
    }
    match command {
        Command::List => {
            let all: String = answers.concat();
            if all.is_empty() {
                "queue is empty\n".into()
            } else {
                all
            }
        }
        Command::Flush(_) => {
            let n: usize = answers
                .iter()
                .filter_map(|a| a.trim().parse::<usize>().ok())
                .sum();
            format!("{n} recipients scheduled now\n")
        }
        Command::Remove(id) => match answers.into_iter().find(|a| !a.is_empty()) {
            Some(a) => format!("{a}\n"),
            None => format!("error: no queued message {id}\n"),
        },
        Command::Bans => {
            let all: String = answers.concat();
            if all.is_empty() {
                "no banned addresses\n".into()
            } else {
                all
            }
        }
        Command::Unban(a) => match answers.into_iter().find(|x| !x.is_empty()) {
            Some(x) => format!("{x}\n"),
            None => format!("error: {a} is not banned\n"),
        },
        Command::Transfer(_) => answers.concat(),
        Command::Mailboxes(a) => match answers.into_iter().find(|x| !x.is_empty()) {
            Some(x) => x,
            None => format!("error: no account {a} with stored mail\n"),
        },
        Command::Compact(_) => answers.concat(),
    }
}

/// Client side (the CLI): send `request` to the server running on
/// `data_dir` and return its answer; `Err` for an error answer or no server.
pub fn request(data_dir: &Path, request: &str) -> Result<String, String> {
    let path = socket_path(data_dir);
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        format!(
            "{}: {e} (is the server running on this data directory?)",
            path.display()
        )
    })?;
    conn.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    match answer.strip_prefix("error: ") {
        Some(e) => Err(e.trim_end().to_string()),
        None => Ok(answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse("list"), Ok(Command::List));
        assert_eq!(parse("flush"), Ok(Command::Flush(None)));
        assert_eq!(
            parse("FLUSH b.test"),
            Ok(Command::Flush(Some("b.test".into())))
        );
        assert_eq!(
            parse("remove q2-9"),
            Ok(Command::Remove(QueueId { queue: 2, uid: 9 }))
        );
        assert!(parse("remove 9").is_err());
        assert!(parse("remove").is_err());
        assert!(parse("list x").is_err());
        assert!(parse("flush a b").is_err());
        assert!(parse("").is_err());
        assert_eq!(parse("bans"), Ok(Command::Bans));
        assert_eq!(
            parse("unban 192.0.2.1"),
            Ok(Command::Unban("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(
            parse("unban 2001:db8::/64"),
            Ok(Command::Unban("2001:db8::".parse().unwrap()))
        );
        assert!(parse("unban nonsense").is_err());
    }
}
