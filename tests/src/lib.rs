//! End-to-end harness: runs the real `ringmail` binary and talks to it over
//! loopback with real clients.
//!
//! - [`ringmail_bin`] (and [`loadgen_bin`]) builds the binary once per test process (same target
//!   directory and profile as the test itself) and returns its path.
//! - [`Server`] owns a temporary data directory, starts `ringmail serve` on
//!   ephemeral ports, waits (bounded) for the ready line, and can be killed
//!   with SIGKILL, stopped with SIGTERM and started again on the same data.
//! - [`Client`] is a raw line-oriented TCP client for exact transcripts;
//!   [`smtp_send`] and [`Pop3`] are small protocol clients built on it.
//! - [`run_python`] runs a stdlib client script from `py/`.
//!
//! Every wait is bounded in time; everything listens on 127.0.0.1 port 0, so
//! tests run in parallel.
//!
//! The tests, one file per area (`tests/*.rs`):
//! - `admin`: configuration errors (`FILE:LINE:COL`), `check-config`,
//!   `default-config`, the account CLI, a running server seeing account changes;
//! - `smtp`: EHLO, PIPELINING, BDAT, SIZE, recipient verdicts, sequencing,
//!   limits, long lines, smuggling, SMTPUTF8, trace headers, swaks (if installed);
//! - `diskfull.rs`: a full disk gets 452 4.3.1, acknowledged mail is unharmed (root only);
//! - `pop3`: a full poplib session, DELE/QUIT persistence across reconnect,
//!   SIGTERM and kill -9, locks, AUTH PLAIN, pipelining, malformed commands;
//! - `delivery`: fan-out across shards, dot-stuffing and 8-bit, 10 MiB,
//!   concurrent sessions, lettre as a client;
//! - `crash`: kill -9 during concurrent delivery, twice, then SIGTERM;
//! - `cores`: restarting the same data with 1 and 2 cores;
//! - `compaction`: segment compaction keeps live mail;
//! - `lifecycle`: graceful shutdown, connection limits, timeouts;
//! - `imap`: IMAP4rev1 and its extensions with a raw client, imaplib and
//!   mbsync (login, concurrent sessions, IDLE, APPEND across kill -9,
//!   COPY/MOVE, FETCH sections, BODYSTRUCTURE, SEARCH, mailboxes, CONDSTORE).
//! - `imap_conformance`: RFC details found by an outside suite (EXAMINE and \Recent,
//!   UIDVALIDITY of re-created mailboxes across restarts, a maximal ID before
//!   login, LIST-EXTENDED RECURSIVEMATCH, CONDSTORE enabling and the MODSEQ
//!   search key, addresses with comments in SEARCH, keywords announced in
//!   FLAGS under 50 concurrent sessions), raw and with imaplib.
//! - `memory`: unfinished DATA from many connections and addresses is spooled
//!   (RSS stays flat), the per-address spool budget answers 451 4.3.1; APPEND
//!   literals spool too and get NO [UNAVAILABLE] over the budget (raw and
//!   imaplib); the attack at scale (500 unfinished DATA, 100 held APPENDs:
//!   peak RSS bounded, a legitimate client served, nothing acknowledged lost
//!   to kill -9); a burst of parallel failed logins and 2,000 closed
//!   connections raise RSS by a bounded amount, which goes back afterwards;
//! - `probes`: a failed login for an unknown account takes as long as one
//!   for an existing account (lettre SMTP AUTH); NUL refused by DATA, BDAT
//!   and APPEND, 100,000-octet lines kept whole (smtplib, imaplib, poplib);
//! - `relay`: also the next hop's view of bare CR/LF, dot lines and long
//!   lines (a fake MX records the DATA octets), and DKIM signatures checked
//!   there by dkimpy (ed25519 and rsa; a changed body fails);
//! - `throttle`: 1,000 password guesses from 100 parallel clients over SMTP,
//!   IMAP and POP3 are slowed and then banned while the owner logs in from
//!   another address; an account attacked from many addresses refuses only
//!   those; `ringmail ban list|remove`; messages and recipients per account
//!   and hour, connections and SMTP commands per address and minute;
//! - `loadgen_tls`: the real `loadgen` binary against the server over
//!   STARTTLS/STLS and implicit TLS (SMTP, POP3, IMAP), verifying the
//!   server's certificate, no errors, resumed handshakes on reconnect;
//!
//! Client scripts (Python standard library only) live in `py/`.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Configuration text that turns login throttling off (no failure delay,
/// no bans), for tests that time or repeat failed logins on purpose.
pub const NO_THROTTLE: &str = "[auth_throttle]\nfailure_delay_ms = 0\nban_after_failures = 0\naccount_lock_after_failures = 0\n";

/// Default password given to accounts created by tests.
pub const PASSWORD: &str = "test-secret";
/// The embedded default configuration's demo accounts and passwords.
pub const DEMO_ACCOUNTS: [(&str, &str); 2] = [
    ("alice@example.test", "alice-secret"),
    ("bob@example.test", "bob-secret"),
];

/// How long a server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Read timeout of raw clients.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Locating the binary
// ---------------------------------------------------------------------------

/// Path of the `ringmail` binary, built on first use.
///
/// `RINGMAIL_BIN` overrides the lookup. Otherwise the test executable lives
/// in `<target>/[<triple>/]<profile>/deps/`; the binary is built with
/// `cargo build -p ringmail --bin ringmail` into the same target directory
/// and profile and found in `<profile>/`.
pub fn ringmail_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("ringmail", "ringmail", "RINGMAIL_BIN"))
}

/// Path of the `loadgen` binary, built on first use like [`ringmail_bin`]
/// (`LOADGEN_BIN` overrides).
pub fn loadgen_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("loadgen", "loadgen", "LOADGEN_BIN"))
}

/// Build `bin` of workspace package `package` into the test's own target
/// directory and profile (unless the environment variable `env_override`
/// names a binary) and return its path.
fn workspace_bin(package: &str, bin: &str, env_override: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a directory");
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut target_dir = profile_dir
        .parent()
        .expect("profile dir has a parent")
        .to_path_buf();
    let mut triple = None;
    // `<target>/<triple>/<profile>`: the target directory holds .rustc_info.json.
    if !target_dir.join(".rustc_info.json").exists() {
        if let Some(up) = target_dir.parent() {
            if up.join(".rustc_info.json").exists() {
                triple = Some(
                    target_dir
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
                target_dir = up.to_path_buf();
            }
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin]);
    // The tests cover cluster mode (`.ci/run` installs protoc for it).
    if package == "ringmail" {
        cmd.args(["--features", "cluster"]);
    }
    cmd.arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace_root());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(t) = &triple {
        cmd.args(["--target", t]);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo build for the {bin} binary: {e}"));
    assert!(
        status.success(),
        "cargo build -p {package} failed: {status}"
    );
    let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "built, but {} is missing", path.display());
    path
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Run `ringmail ARGS` to completion with `stdin` as standard input.
pub fn ringmail(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(ringmail_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ringmail");
    // The command may exit without reading its input (argument errors).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    wait_output(child, Duration::from_secs(60))
}

/// Wait for a child with a deadline (killing it when exceeded), collecting output.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let status = wait_deadline(&mut child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("child process did not finish within {limit:?}");
    });
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lists longer than this are added in bulk (see [`add_accounts`]).
const BULK_ACCOUNTS: usize = 8;

/// Add accounts with the CLI (all with `password`), asserting success.
/// A long list (the cluster test's thousand accounts): the first with the
/// CLI, the rest written to the account file (`address:PHC-hash` lines)
/// with one argon2id hash of small cost, so that neither adding them nor
/// the server's first check of each login takes a default-cost hash each.
pub fn add_accounts(data: &Path, addresses: &[&str], password: &str) {
    if addresses.len() > BULK_ACCOUNTS {
        add_accounts(data, &addresses[..1], password);
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let hasher =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"ringmail-tests-salt").unwrap();
        let hash = hasher
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string();
        let path = data.join("accounts");
        let mut file = std::fs::read_to_string(&path).expect("the account file");
        for a in &addresses[1..] {
            file.push_str(&format!("{}:{hash}\n", a.to_ascii_lowercase()));
        }
        std::fs::write(&path, file).expect("writing the account file");
        return;
    }
    for a in addresses {
        let out = ringmail(
            &["account", "add", a, "--data", data.to_str().unwrap()],
            &format!("{password}\n"),
        );
        assert_ok(&out, &format!("account add {a}"));
    }
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// How to start a server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Configuration file text (written next to the data directory).
    pub config: Option<String>,
    pub cores: usize,
    /// Accounts to create with the CLI before the first start.
    pub accounts: Vec<String>,
    /// Value of RINGMAIL_LOG.
    pub log: String,
    /// `--hostname` (the embedded default says mail.example.test).
    pub hostname: Option<String>,
    /// Put the data directory on a tmpfs of this many MiB (needs root);
    /// for disk-full tests. Unmounted when the server is dropped.
    pub tmpfs_mib: Option<u32>,
    /// A `.tar.gz` of a data directory unpacked into the data directory
    /// before the first start (accounts are added after it).
    pub seed: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: None,
            cores: 2,
            accounts: Vec::new(),
            // RINGMAIL_E2E_LOG=debug shows the servers' debug logs in failures.
            log: std::env::var("RINGMAIL_E2E_LOG").unwrap_or_else(|_| "info".into()),
            hostname: None,
            tmpfs_mib: None,
            seed: None,
        }
    }
}

impl Options {
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.to_string());
        self
    }
    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = Some(name.to_string());
        self
    }
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = n;
        self
    }
    /// Accounts (password [`PASSWORD`]) created before the server starts.
    pub fn accounts<S: AsRef<str>>(mut self, list: &[S]) -> Self {
        self.accounts
            .extend(list.iter().map(|s| s.as_ref().to_string()));
        self
    }
    pub fn seed(mut self, archive: &Path) -> Self {
        self.seed = Some(archive.to_path_buf());
        self
    }
    pub fn tmpfs(mut self, mib: u32) -> Self {
        self.tmpfs_mib = Some(mib);
        self
    }
    pub fn start(self) -> Server {
        Server::start(self)
    }
}

/// Mount a tmpfs of `mib` MiB on `dir`; false when that is not possible here.
pub fn mount_tmpfs(dir: &Path, mib: u32) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `ringmail serve` arguments that put every listener (and the HTTP one) on
/// a free loopback port, so parallel servers never collide.
pub const LOOPBACK_LISTENERS: [&str; 16] = [
    "--smtp",
    "127.0.0.1:0",
    "--pop3",
    "127.0.0.1:0",
    "--imap",
    "127.0.0.1:0",
    "--submission",
    "127.0.0.1:0",
    "--submissions",
    "127.0.0.1:0",
    "--imaps",
    "127.0.0.1:0",
    "--pop3s",
    "127.0.0.1:0",
    "--http",
    "127.0.0.1:0",
];

/// A running (or stopped) `ringmail serve` on its own data directory.
pub struct Server {
    dir: tempfile::TempDir,
    pub data: PathBuf,
    pub config_path: Option<PathBuf>,
    pub cores: usize,
    log: String,
    hostname: Option<String>,
    child: Option<Child>,
    pub smtp: SocketAddr,
    pub pop3: SocketAddr,
    pub imap: SocketAddr,
    /// Message submission with STARTTLS (RFC 6409).
    pub submission: SocketAddr,
    /// Implicit-TLS listeners (RFC 8314).
    pub submissions: SocketAddr,
    pub imaps: SocketAddr,
    pub pop3s: SocketAddr,
    /// `/metrics` and `/healthz`.
    pub http: SocketAddr,
    /// Everything the server wrote on stderr, across restarts.
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The ready line of the latest start.
    pub ready_line: String,
    stop_elapsed: Option<Duration>,
    /// The data directory is a tmpfs we mounted.
    mounted: bool,
}

impl Server {
    /// Default options: embedded configuration, 2 cores.
    pub fn new() -> Server {
        Options::default().start()
    }

    pub fn options() -> Options {
        Options::default()
    }

    pub fn start(opts: Options) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("ringmail-e2e-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mounted = match opts.tmpfs_mib {
            Some(mib) => {
                assert!(mount_tmpfs(&data, mib), "cannot mount a tmpfs (not root?)");
                true
            }
            None => false,
        };
        let config_path = opts.config.as_ref().map(|text| {
            let p = dir.path().join("ringmail.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        if let Some(archive) = &opts.seed {
            let st = Command::new("tar")
                .arg("-xzf")
                .arg(archive)
                .arg("-C")
                .arg(&data)
                .status()
                .expect("running tar");
            assert!(st.success(), "unpacking {} failed", archive.display());
        }
        if !opts.accounts.is_empty() {
            let list: Vec<&str> = opts.accounts.iter().map(|s| s.as_str()).collect();
            add_accounts(&data, &list, PASSWORD);
        }
        // A configuration file brings no demo accounts (their passwords are
        // public); the tests written against the embedded default's alice
        // and bob get them with the CLI, unless they made them themselves.
        if opts.config.is_some() {
            for (address, password) in DEMO_ACCOUNTS {
                if !opts.accounts.iter().any(|a| a == address) && opts.seed.is_none() {
                    add_accounts(&data, &[address], password);
                }
            }
        }
        let unset: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut s = Server {
            dir,
            data,
            config_path,
            cores: opts.cores,
            log: opts.log,
            hostname: opts.hostname,
            child: None,
            smtp: unset,
            pop3: unset,
            imap: unset,
            submission: unset,
            submissions: unset,
            imaps: unset,
            pop3s: unset,
            http: unset,
            stderr: Arc::new(Mutex::new(Vec::new())),
            ready_line: String::new(),
            stop_elapsed: None,
            mounted,
        };
        s.spawn();
        s
    }

    /// The server's own certificate (the embedded default's self-signed
    /// one, for `hostname`): clients trust it as their CA.
    pub fn tls_cert(&self) -> PathBuf {
        let dir = self.data.join("tls");
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "pem"))
            .expect("no certificate in DATA/tls")
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Start the process on the data directory; panics unless it becomes ready.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let mut cmd = Command::new(ringmail_bin());
        cmd.arg("serve")
            .arg("--data")
            .arg(&self.data)
            .arg("--cores")
            .arg(self.cores.to_string());
        cmd.args(LOOPBACK_LISTENERS);
        if let Some(c) = &self.config_path {
            cmd.arg("--config").arg(c);
        }
        if let Some(h) = &self.hostname {
            cmd.arg("--hostname").arg(h);
        }
        cmd.env("RINGMAIL_LOG", &self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning ringmail serve");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let sink = self.stderr.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                sink.lock().unwrap().extend_from_slice(&line);
                line.clear();
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                let _ = tx.send(line.trim_end().to_string());
                line.clear();
            }
        });
        let start = Instant::now();
        let ready = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("ringmail: ready ") => break line,
                Ok(other) => panic!(
                    "unexpected stdout line before ready: {other:?}\n{}",
                    self.stderr_text()
                ),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        std::thread::sleep(Duration::from_millis(100));
                        panic!(
                            "ringmail exited during start-up ({status}):\n{}",
                            self.stderr_text()
                        );
                    }
                    if start.elapsed() > READY_TIMEOUT {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "ringmail not ready within {READY_TIMEOUT:?}:\n{}",
                            self.stderr_text()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = wait_deadline(&mut child, Duration::from_secs(5));
                    panic!(
                        "ringmail closed stdout before ready ({status:?}):\n{}",
                        self.stderr_text()
                    );
                }
            }
        };
        let field = |name: &str| -> SocketAddr {
            let v = ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in ready line {ready:?}"));
            v.split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|e| panic!("bad {name} address in {ready:?}: {e}"))
        };
        self.smtp = field("smtp");
        self.pop3 = field("pop3");
        self.imap = field("imap");
        self.submission = field("submission");
        self.submissions = field("submissions");
        self.imaps = field("imaps");
        self.pop3s = field("pop3s");
        self.http = field("http");
        assert!(
            ready.contains(&format!(" cores={} ", self.cores)),
            "ready line {ready:?} lacks cores={}",
            self.cores
        );
        assert!(
            ready.contains(&format!(" data={}", self.data.display())),
            "ready line {ready:?} lacks the data dir"
        );
        self.ready_line = ready;
        self.child = Some(child);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("server not running").id();
        // SAFETY: plain kill(2) on the pid of our own child, which has not been reaped.
        let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({pid}, {sig}) failed");
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGKILL);
            let mut child = self.child.take().unwrap();
            let _ = child.wait();
        }
    }

    /// SIGTERM; wait (bounded) and assert exit status 0. Returns how long the stop took.
    pub fn terminate(&mut self) -> Duration {
        let status = self.stop_with(libc::SIGTERM, Duration::from_secs(30));
        assert!(
            status.success(),
            "ringmail exited with {status} after SIGTERM:\n{}",
            self.stderr_tail(4000)
        );
        self.stop_elapsed.take().unwrap_or_default()
    }

    /// Send `sig`, wait at most `limit`, return the exit status (SIGKILL when over the limit).
    pub fn stop_with(&mut self, sig: libc::c_int, limit: Duration) -> ExitStatus {
        self.signal(sig);
        self.wait_exit(limit)
    }

    /// Wait (at most `limit`, else SIGKILL and panic) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        let mut child = self.child.take().unwrap();
        match wait_deadline(&mut child, limit) {
            Some(s) => {
                self.stop_elapsed = Some(t.elapsed());
                s
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ringmail did not exit within {limit:?}:\n{}",
                    self.stderr_tail(4000)
                );
            }
        }
    }

    /// Start again on the same data directory (new ports). The server must be stopped.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Start again with another core count.
    pub fn restart_with_cores(&mut self, cores: usize) {
        self.cores = cores;
        self.spawn();
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    pub fn stderr_tail(&self, n: usize) -> String {
        let s = self.stderr_text();
        let cut = s.len().saturating_sub(n);
        let cut = (cut..s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(s.len());
        s[cut..].to_string()
    }

    /// Add accounts through the CLI while the server runs (or not).
    pub fn add_accounts(&self, addresses: &[&str]) {
        add_accounts(&self.data, addresses, PASSWORD);
    }
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.mounted {
            let _ = std::process::Command::new("umount")
                .arg(&self.data)
                .status();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- ringmail stderr (tail) ----\n{}\n---- end ----",
                self.stderr_tail(6000)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Raw clients
// ---------------------------------------------------------------------------

/// A line-oriented TCP client with read timeouts.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One SMTP reply (possibly multi-line).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    /// Text of every line, after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// The enhanced status code (RFC 2034) of the first line, e.g. "5.1.1".
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let w = first.split_whitespace().next()?;
        let parts: Vec<&str> = w.split('.').collect();
        (parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then_some(w)
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Assert the code and, when given, the enhanced status code.
    #[track_caller]
    pub fn expect(&self, code: u16, enhanced: Option<&str>) -> &Self {
        assert_eq!(self.code, code, "unexpected reply: {self:?}");
        if let Some(e) = enhanced {
            assert_eq!(
                self.enhanced(),
                Some(e),
                "unexpected enhanced status code: {self:?}"
            );
        }
        self
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client over a connection made elsewhere (e.g. from a chosen source address).
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// One line including its CRLF, or an error (timeout, EOF mid-line, closed).
    pub fn try_read_line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            if self.buf.len() > 64 * 1024 * 1024 {
                return Err(std::io::Error::other("line longer than 64 MiB"));
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed (partial line {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[track_caller]
    pub fn read_line(&mut self) -> Vec<u8> {
        self.try_read_line()
            .unwrap_or_else(|e| panic!("reading a line: {e}"))
    }

    /// A line as text without its line ending.
    #[track_caller]
    pub fn line(&mut self) -> String {
        let l = self.read_line();
        assert!(
            l.ends_with(b"\r\n"),
            "line not terminated by CRLF: {:?}",
            String::from_utf8_lossy(&l)
        );
        String::from_utf8_lossy(&l[..l.len() - 2]).into_owned()
    }

    /// Read one SMTP reply, checking its syntax (RFC 5321 4.2).
    pub fn try_reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let raw = self.try_read_line()?;
            if !raw.ends_with(b"\r\n") {
                return Err(std::io::Error::other(format!(
                    "reply line without CRLF: {:?}",
                    String::from_utf8_lossy(&raw)
                )));
            }
            let l = String::from_utf8_lossy(&raw[..raw.len() - 2]).into_owned();
            let bad = || std::io::Error::other(format!("malformed reply line {l:?}"));
            if l.len() < 3 || !l.as_bytes()[..3].iter().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let c: u16 = l[..3].parse().unwrap();
            if *code.get_or_insert(c) != c {
                return Err(std::io::Error::other(format!(
                    "reply code changed mid-reply: {l:?}"
                )));
            }
            match l.as_bytes().get(3) {
                None => {
                    lines.push(String::new());
                    break;
                }
                Some(b' ') => {
                    lines.push(l[4..].to_string());
                    break;
                }
                Some(b'-') => lines.push(l[4..].to_string()),
                _ => return Err(bad()),
            }
            if lines.len() > 1000 {
                return Err(std::io::Error::other("reply longer than 1000 lines"));
            }
        }
        Ok(Reply {
            code: code.unwrap(),
            lines,
        })
    }

    #[track_caller]
    pub fn reply(&mut self) -> Reply {
        self.try_reply()
            .unwrap_or_else(|e| panic!("reading SMTP reply: {e}"))
    }

    /// Send `line` + CRLF, read the reply.
    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// True when the peer closes the connection (EOF or reset) within `within`,
    /// after discarding anything it still sends.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.buf.clear();
        let end = Instant::now() + within;
        let mut chunk = [0u8; 4096];
        while Instant::now() < end {
            self.stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(_) => return true,
            }
        }
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        false
    }

    /// Bytes received but not read yet, after waiting briefly for more.
    pub fn drain_for(&mut self, wait: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        std::mem::take(&mut self.buf)
    }
}

/// Open an SMTP session: read the 220 greeting, send EHLO, return the client and the EHLO reply.
pub fn smtp_connect(addr: SocketAddr) -> (Client, Reply) {
    let mut c = Client::connect(addr);
    c.reply().expect(220, None);
    let ehlo = c.cmd("EHLO client.e2e.test");
    ehlo.expect(250, None);
    (c, ehlo)
}

/// Dot-stuff a message for DATA (RFC 5321 4.5.2) and append the terminator.
/// The message must use CRLF line endings; a missing final CRLF is added.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 50 + 5);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Receiver-side transparency (RFC 5321 4.5.2) on CRLF-delimited lines.
pub fn rfc_unstuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    let mut at_line_start = true;
    let mut i = 0;
    while i < wire.len() {
        if at_line_start && wire[i] == b'.' {
            i += 1;
            at_line_start = false;
            continue;
        }
        at_line_start = wire[i] == b'\n' && i > 0 && wire[i - 1] == b'\r';
        out.push(wire[i]);
        i += 1;
    }
    out
}

/// How a message body is transferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    Data,
    /// BDAT in chunks of at most this many bytes (RFC 3030).
    Bdat(usize),
}

/// Send one transaction on an open session (after EHLO). Returns the reply
/// to the end of data (DATA's final dot or BDAT LAST), or Err on an
/// unexpected reply earlier in the transaction / I/O failure.
pub fn smtp_transaction(
    c: &mut Client,
    from: &str,
    rcpts: &[&str],
    message: &[u8],
    how: Transfer,
) -> Result<Reply, String> {
    let io = |e: std::io::Error| e.to_string();
    c.try_send(format!("MAIL FROM:<{from}>\r\n").as_bytes())
        .map_err(io)?;
    let r = c.try_reply().map_err(io)?;
    if r.code != 250 {
        return Err(format!("MAIL: {r:?}"));
    }
    for rcpt in rcpts {
        c.try_send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .map_err(io)?;
        let r = c.try_reply().map_err(io)?;
        if r.code != 250 {
            return Err(format!("RCPT {rcpt}: {r:?}"));
        }
    }
    match how {
        Transfer::Data => {
            c.try_send(b"DATA\r\n").map_err(io)?;
            let r = c.try_reply().map_err(io)?;
            if r.code != 354 {
                return Err(format!("DATA: {r:?}"));
            }
            c.try_send(&dot_stuff(message)).map_err(io)?;
            c.try_reply().map_err(io)
        }
        Transfer::Bdat(chunk) => {
            let chunks: Vec<&[u8]> = message.chunks(chunk.max(1)).collect();
            if chunks.is_empty() {
                c.try_send(b"BDAT 0 LAST\r\n").map_err(io)?;
                return c.try_reply().map_err(io);
            }
            for (i, part) in chunks.iter().enumerate() {
                let last = i + 1 == chunks.len();
                let mut buf = format!("BDAT {}{}\r\n", part.len(), if last { " LAST" } else { "" })
                    .into_bytes();
                buf.extend_from_slice(part);
                c.try_send(&buf).map_err(io)?;
                let r = c.try_reply().map_err(io)?;
                if last {
                    return Ok(r);
                }
                if r.code != 250 {
                    return Err(format!("BDAT chunk {i}: {r:?}"));
                }
            }
            unreachable!()
        }
    }
}

/// Connect, EHLO, send one message with DATA, QUIT. Panics unless every step succeeds.
#[track_caller]
pub fn smtp_send(addr: SocketAddr, from: &str, rcpts: &[&str], message: &[u8]) {
    let (mut c, _) = smtp_connect(addr);
    let r = smtp_transaction(&mut c, from, rcpts, message, Transfer::Data)
        .unwrap_or_else(|e| panic!("sending: {e}"));
    r.expect(250, Some("2.0.0"));
    c.cmd("QUIT").expect(221, None);
}

/// A minimal POP3 client (RFC 1939) on [`Client`].
pub struct Pop3 {
    pub c: Client,
    pub greeting: String,
}

impl Pop3 {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Pop3 {
        let mut c = Client::connect(addr);
        let greeting = c.line();
        assert!(greeting.starts_with("+OK"), "POP3 greeting: {greeting:?}");
        Pop3 { c, greeting }
    }

    /// Send a command, return its status line.
    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> String {
        self.c.send(format!("{line}\r\n").as_bytes());
        self.c.line()
    }

    #[track_caller]
    pub fn ok(&mut self, line: &str) -> String {
        let r = self.cmd(line);
        assert!(r.starts_with("+OK"), "{line:?} -> {r:?}");
        r
    }

    /// USER + PASS; panics unless both succeed.
    #[track_caller]
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Pop3 {
        let mut p = Pop3::connect(addr);
        p.ok(&format!("USER {user}"));
        p.ok(&format!("PASS {password}"));
        p
    }

    /// The lines of a multi-line response body, un-stuffed, without CRLF.
    #[track_caller]
    pub fn multiline(&mut self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        loop {
            let l = self.c.read_line();
            assert!(
                l.ends_with(b"\r\n"),
                "POP3 line without CRLF: {:?}",
                String::from_utf8_lossy(&l)
            );
            let l = &l[..l.len() - 2];
            if l == b"." {
                return lines;
            }
            lines.push(if l.starts_with(b".") {
                l[1..].to_vec()
            } else {
                l.to_vec()
            });
        }
    }

    /// STAT: (count, octets).
    #[track_caller]
    pub fn stat(&mut self) -> (usize, u64) {
        let r = self.ok("STAT");
        let w: Vec<&str> = r.split_whitespace().collect();
        assert!(w.len() >= 3, "STAT reply {r:?}");
        (
            w[1].parse().expect("STAT count"),
            w[2].parse().expect("STAT size"),
        )
    }

    /// UIDL listing: (message number, unique id).
    #[track_caller]
    pub fn uidl(&mut self) -> Vec<(usize, String)> {
        self.ok("UIDL");
        self.multiline()
            .into_iter()
            .map(|l| {
                let s = String::from_utf8(l).expect("UIDL line is ASCII");
                let (n, id) = s
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("UIDL line {s:?}"));
                (n.parse().unwrap(), id.to_string())
            })
            .collect()
    }

    /// RETR n: the message as stored (CRLF line endings, un-stuffed).
    #[track_caller]
    pub fn retr(&mut self, n: usize) -> Vec<u8> {
        self.ok(&format!("RETR {n}"));
        join_lines(self.multiline())
    }

    /// RETR n as an LF-splitting client (like Python's poplib) reads it:
    /// everything up to the first CRLF "." CRLF, with a leading dot removed
    /// from every LF-delimited line. Unlike [`Pop3::retr`] it tolerates bare
    /// LF (or CR) inside the message.
    #[track_caller]
    pub fn retr_lf_framed(&mut self, n: usize) -> Vec<u8> {
        self.ok(&format!("RETR {n}"));
        let mut raw = Vec::new();
        loop {
            raw.extend_from_slice(&self.c.read_line());
            if raw == b".\r\n" || raw.ends_with(b"\r\n.\r\n") {
                break;
            }
        }
        raw.truncate(raw.len() - 3);
        let mut out = Vec::with_capacity(raw.len());
        for line in raw.split_inclusive(|b| *b == b'\n') {
            if line.starts_with(b".") {
                out.extend_from_slice(&line[1..]);
            } else {
                out.extend_from_slice(line);
            }
        }
        out
    }

    #[track_caller]
    pub fn quit(mut self) {
        self.ok("QUIT");
        assert!(
            self.c.closed_within(Duration::from_secs(5)),
            "server did not close after QUIT"
        );
    }
}

/// Rejoin POP3 lines with CRLF (every line, including the last, ends in CRLF).
pub fn join_lines(lines: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(&l);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Every message of a maildrop as (UIDL, bytes), via one POP3 session ending in QUIT.
#[track_caller]
pub fn fetch_all(addr: SocketAddr, user: &str, password: &str) -> Vec<(String, Vec<u8>)> {
    let mut p = Pop3::login(addr, user, password);
    let list = p.uidl();
    let mut out = Vec::with_capacity(list.len());
    for (n, uid) in list {
        out.push((uid, p.retr(n)));
    }
    p.quit();
    out
}

/// Split a stored message into (trace headers, original message): the server
/// prepends `Return-Path: <...>` and a `Received:` header (possibly folded).
/// Panics when either is missing or malformed.
#[track_caller]
pub fn strip_trace(stored: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    let next_line = |pos: &mut usize| -> &[u8] {
        let rest = &stored[*pos..];
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| i + 2)
            .unwrap_or_else(|| {
                panic!(
                    "stored message ends inside its trace headers: {:?}",
                    String::from_utf8_lossy(&stored[..stored.len().min(400)])
                )
            });
        *pos += end;
        &rest[..end]
    };
    let rp = next_line(&mut pos);
    assert!(
        rp.starts_with(b"Return-Path: <") && rp.ends_with(b">\r\n"),
        "first stored line is not Return-Path: {:?}",
        String::from_utf8_lossy(rp)
    );
    let rcvd = next_line(&mut pos);
    assert!(
        rcvd.starts_with(b"Received: "),
        "second stored line is not Received: {:?}",
        String::from_utf8_lossy(rcvd)
    );
    let mut received = rcvd.to_vec();
    while stored[pos..].starts_with(b" ") || stored[pos..].starts_with(b"\t") {
        let cont = next_line(&mut pos);
        received.extend_from_slice(cont);
    }
    // RFC 5321 4.4: the time stamp follows the last ';'.
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains(';'),
        "Received header without a date: {text:?}"
    );
    (&stored[..pos], &stored[pos..])
}

/// The Return-Path address of a stored message.
pub fn return_path(stored: &[u8]) -> String {
    let end = stored
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(stored.len());
    let l = String::from_utf8_lossy(&stored[..end]);
    l.trim_start_matches("Return-Path: <")
        .trim_end_matches('>')
        .to_string()
}

/// Assert two byte strings are equal; on failure show where they first differ.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let ctx = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(60)..(at + 60).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: bytes differ at offset {at} (got {} bytes, want {}):\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        ctx(got),
        ctx(want)
    );
}

/// Which shard owns an account when the server runs `cores` executors on a
/// new data directory (256 buckets). Mirrors the engine's routing (FNV-1a
/// of the canonical address); used only to choose accounts that span shards.
pub fn shard_of(account: &str, cores: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in account.to_ascii_lowercase().as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((h % 256) as usize) % cores
}

/// Names `prefix0@example.test`, `prefix1@...`: `n` accounts, at least `min_each`
/// on every one of `cores` shards.
pub fn accounts_on_all_shards(
    prefix: &str,
    n: usize,
    cores: usize,
    min_each: usize,
) -> Vec<String> {
    let list: Vec<String> = (0..n)
        .map(|i| format!("{prefix}{i}@example.test"))
        .collect();
    for s in 0..cores {
        let k = list.iter().filter(|a| shard_of(a, cores) == s).count();
        assert!(
            k >= min_each,
            "only {k} of {list:?} on shard {s}: pick another prefix"
        );
    }
    list
}

/// Run an outside tool (mbsync, fetchmail, ...) for at most 60 s; panics
/// with its output unless it exits 0. Returns stdout followed by stderr.
#[track_caller]
pub fn run_tool(mut cmd: Command, what: &str) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let out = wait_output(child, Duration::from_secs(60));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{log}",
        out.status
    );
    log
}

/// Run `python3 py/<script> ARGS...`; panics with its output unless it exits 0.
/// Returns its standard output.
#[track_caller]
pub fn run_python(script: &str, args: &[String]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script);
    let child = Command::new("python3")
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 (needed for {script}; .ci/run installs it): {e}")
        });
    let out = wait_output(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 {script} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Run Python code given inline (`python3 -c`); its stdout. Panics, with
/// stderr, when it fails.
pub fn python_code(code: &str) -> String {
    let child = Command::new("python3")
        .args(["-c", code])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    let out = wait_output(child, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "python3 -c failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ringmail serve ARGS` that must refuse to start: checks a clean error
/// exit (status 1, no panic) within 30 s and returns its stderr.
pub fn serve_refused<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let child = Command::new(ringmail_bin())
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ringmail serve");
    let out = wait_output(child, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "not a clean error exit:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// True when `program` is found on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Poll `f` every 50 ms until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every bare LF and every bare CR becomes CRLF, as POP3 and the relay send them.
pub fn normalize_line_ends(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 8);
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'\n' if i == 0 || b[i - 1] != b'\r' => out.extend_from_slice(b"\r\n"),
            b'\r' if b.get(i + 1) != Some(&b'\n') => out.extend_from_slice(b"\r\n"),
            _ => out.push(c),
        }
    }
    out
}

/// A TCP connection to `to` from the loopback address `from`.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 listener expected")
    };
    // SAFETY: plain socket calls on a descriptor we own; addresses are
    // valid sockaddr_in structures.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as libc::sa_family_t;
        local.sin_addr.s_addr = u32::from(from).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &local as *const _ as *const libc::sockaddr, len),
            0,
            "bind {from}"
        );
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as libc::sa_family_t;
        remote.sin_port = to.port().to_be();
        remote.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        assert_eq!(
            libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len),
            0,
            "connect from {from}"
        );
        TcpStream::from_raw_fd(fd)
    }
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// A port nothing listens on right now, for an instance that starts later.
/// Taken below the kernel's ephemeral range (32768 and up by default), so
/// the outgoing connections of the other tests, which get ephemeral ports,
/// cannot take it in the meantime; a counter keeps this process's tests
/// apart, and the process id spreads concurrent test processes.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 600) * 20;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (offset + n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A self-signed ECDSA P-256 certificate for `names` with openssl(1).
pub fn openssl_cert(
    dir: &Path,
    stem: &str,
    names: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    let san = names
        .split(',')
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        &format!("/CN={}", names.split(',').next().unwrap()),
        "-addext",
        &format!("subjectAltName={san}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// Run openssl(1) with `args`, asserting success.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA in `dir` (ca.pem, ca.key); the path of ca.pem.
pub fn make_test_ca(dir: &Path) -> PathBuf {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-subj",
        "/CN=ringmail test CA",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    dir.join("ca.pem")
}

/// A certificate `stem`.pem/.key in `dir`, for `cn` with subjectAltName
/// `san` (`DNS:a,IP:127.0.0.1`) and extendedKeyUsage `usage`
/// (`serverAuth`, `clientAuth`), signed by the CA of [`make_test_ca`].
pub fn ca_signed(dir: &Path, stem: &str, cn: &str, san: &str, usage: &str) -> (PathBuf, PathBuf) {
    let p = |f: String| dir.join(f).to_str().unwrap().to_string();
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(format!("{stem}.key")),
        "-out",
        &p(format!("{stem}.csr")),
        "-subj",
        &format!("/CN={cn}"),
    ]);
    std::fs::write(
        dir.join(format!("{stem}.cnf")),
        format!("subjectAltName={san}\nextendedKeyUsage={usage}\n"),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(format!("{stem}.csr")),
        "-CA",
        &p("ca.pem".into()),
        "-CAkey",
        &p("ca.key".into()),
        "-CAcreateserial",
        "-out",
        &p(format!("{stem}.pem")),
        "-days",
        "2",
        "-extfile",
        &p(format!("{stem}.cnf")),
    ]);
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

/// A GET with Python's urllib (an independent HTTP client): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let script = format!(
        "import urllib.request, urllib.error\n\
         try:\n    r = urllib.request.urlopen('http://{addr}{path}', timeout=10)\n    print(r.status); print(r.headers.get('Content-Type')); print(r.read().decode(), end='')\n\
         except urllib.error.HTTPError as e:\n    print(e.code); print(e.headers.get('Content-Type')); print(e.read().decode(), end='')\n"
    );
    let text = python_code(&script);
    let mut lines = text.splitn(3, '\n');
    let status = lines.next().unwrap().parse().unwrap();
    let ctype = lines.next().unwrap().to_string();
    if path == "/metrics" && status == 200 {
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    }
    (status, lines.next().unwrap_or("").to_string())
}

/// Sum of a metric's samples whose labels contain every `want` pair.
pub fn metric_sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name
                || !want
                    .iter()
                    .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")))
            {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// Scrape `/metrics` until `what` holds (10 s at most); the text.
pub fn scrape_until(server: &Server, what: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        let (status, body) = http_get(server.http, "/metrics");
        assert_eq!(status, 200);
        if what(&body) {
            return body;
        }
        last = body;
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("metrics never showed it:\n{last}");
}
