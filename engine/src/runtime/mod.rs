//! Runtime: glommio executors (one per core), listeners, shard routing,
//! timers. The only layer that touches glommio, sockets and signals.
//!
//! Start-up: bind every SO_REUSEPORT socket per shard on every configured
//! address, in shard order (port 0 resolves to one port for all; see
//! listen.rs), give up root (privileges.rs), read the meta file (a new run),
//! load accounts and certificates, start one executor
//! per core; each joins the channel mesh, recovers its buckets, takes its
//! listeners and reports ready with its CPU. With `cpu_steering` and pinned
//! executors, a BPF program then steers each new connection to the shard on
//! its CPU. Then the process prints one `ringmail: ready ...` line on stdout.
//! SIGTERM/SIGINT: every shard stops accepting, lets sessions finish within
//! the grace period, makes everything durable, checkpoints, and exits 0.
pub mod catchup;
pub mod changes;
pub mod cluster;
pub mod control;
pub mod http;
pub mod imap;
pub mod limiter;
pub mod listen;
pub mod peer;
pub mod pop3;
pub mod privileges;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod shard;
pub mod smtp;
pub mod spool;
pub mod throttle;
pub mod transfer;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};

use crate::accounts::{AccountFile, Directory};
use crate::config::Config;
use crate::limits;
use crate::storage::Meta;

use shard::Shared;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data directory {path}: {source}")]
    Data {
        path: String,
        source: std::io::Error,
    },
    #[error("DKIM keys: {0}")]
    Dkim(String),
    #[error("accounts: {0}")]
    Accounts(#[from] crate::accounts::AccountError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("privileges: {0}")]
    Privileges(String),
    #[error("starting executors: {0}")]
    Executors(String),
    #[error("shard failed: {0}")]
    Shard(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("cluster: {0}")]
    Cluster(String),
}

#[cfg(feature = "cluster")]
type Member = crate::cluster::etcd::Member;
/// Without the feature a cluster never starts (`join_cluster` refuses).
#[cfg(not(feature = "cluster"))]
enum Member {}

fn cluster_view(m: &Member) -> crate::cluster::Shared {
    #[cfg(feature = "cluster")]
    return m.view.clone();
    #[cfg(not(feature = "cluster"))]
    match *m {}
}

fn leave_cluster(m: Member) {
    #[cfg(feature = "cluster")]
    m.leave();
    #[cfg(not(feature = "cluster"))]
    match m {}
}

/// Join the cluster of `[cluster]` (the membership thread, `cluster::etcd`).
fn join_cluster(
    c: &crate::config::Cluster,
    listeners: [&Vec<SocketAddr>; 5],
    tls_sha256: tokio::sync::watch::Receiver<Vec<String>>,
    progress: Arc<crate::cluster::Progress>,
    cores: usize,
    buckets: u32,
) -> Result<Member, ServeError> {
    #[cfg(feature = "cluster")]
    {
        let s = |v: &[SocketAddr]| v.iter().map(ToString::to_string).collect();
        let [smtp, imap, pop3, imaps, pop3s] = listeners;
        let record = crate::cluster::NodeRecord {
            id: c.node.clone(),
            internal: c.internal.clone(),
            smtp: s(smtp),
            imap: s(imap),
            pop3: s(pop3),
            cores,
            buckets,
            imaps: s(imaps),
            pop3s: s(pop3s),
            tls_sha256: tls_sha256.borrow().clone(),
            copied: 0,
        };
        crate::cluster::etcd::join(c, record, tls_sha256, progress).map_err(ServeError::Cluster)
    }
    #[cfg(not(feature = "cluster"))]
    {
        let _ = (c, listeners, tls_sha256, progress, cores, buckets);
        Err(ServeError::Cluster(
            "[cluster] is configured, but this binary was built without cluster support (cargo build --features cluster)".into(),
        ))
    }
}

/// Messages in flight between two shards before a sender waits.
const MESH_CHANNEL_SIZE: usize = 1024;

/// Run the server until SIGTERM/SIGINT. `loader` reads the configuration
/// again on SIGHUP and `ringmail reload` (`runtime::reload`); without one a
/// reload only reads the certificates again.
pub fn serve(mut config: Config, loader: Option<reload::Loader>) -> Result<(), ServeError> {
    raise_fd_limit();
    let cores = config.effective_cores();
    let data_err = |source| ServeError::Data {
        path: config.data_dir.display().to_string(),
        source,
    };
    // Every listening socket of every shard, bound here in shard order.
    let internal: Vec<SocketAddr> = config
        .cluster
        .iter()
        .filter_map(|c| c.internal.parse().ok())
        .collect();
    let protos: [(shard::Proto, &[SocketAddr]); 8] = [
        (shard::Proto::Smtp, &config.listen.smtp),
        (shard::Proto::Pop3, &config.listen.pop3),
        (shard::Proto::Imap, &config.listen.imap),
        (shard::Proto::Submission, &config.listen.submission),
        (shard::Proto::Submissions, &config.listen.submissions),
        (shard::Proto::Imaps, &config.listen.imaps),
        (shard::Proto::Pop3s, &config.listen.pop3s),
        (shard::Proto::Internal, &internal),
    ];
    privileges::preflight(&config).map_err(ServeError::Privileges)?;
    let (listeners, bound) = listen::Listeners::bind(&protos, cores)
        .map_err(|(addr, source)| ServeError::Bind { addr, source })?;
    let http_listeners = config
        .listen
        .http
        .iter()
        .map(|a| {
            std::net::TcpListener::bind(a).map_err(|source| ServeError::Bind { addr: *a, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let http_addrs: Vec<SocketAddr> = http_listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let started = std::time::Instant::now();
    // Root only as long as binding needs it: everything after this line
    // (data directory, certificates, sessions) runs as `user`.
    let io_memory_total = config.storage.io_memory_kib * 1024 * cores;
    match privileges::drop_to(&config, io_memory_total).map_err(ServeError::Privileges)? {
        privileges::Outcome::Dropped { user, uid, gid } => {
            tracing::info!(user, uid, gid, "listeners bound; running unprivileged")
        }
        privileges::Outcome::StayedRoot => {
            tracing::debug!("running as root (loopback listeners only)")
        }
        privileges::Outcome::Unprivileged => {}
    }
    // One server per data directory: a second one appending to the same
    // segments would corrupt them. The lock goes with the process (kill -9
    // included), so a restart after a crash is never refused.
    let _data_lock = lock_data_dir(&config.data_dir).map_err(data_err)?;
    let meta = Meta::start_run(&config.data_dir, limits::BUCKETS_DEFAULT).map_err(data_err)?;
    // glommio opens directories relative to nothing (a relative path fails
    // with EBADF): work with the absolute path from here on.
    config.data_dir = std::fs::canonicalize(&config.data_dir).map_err(data_err)?;

    let account_file = AccountFile::in_dir(&config.data_dir);
    let existing = account_file.read()?;
    if !config.demo_accounts.is_empty() && !privileges::all_loopback(&config) {
        tracing::warn!(
            "demo accounts with public passwords are configured and a listener is off loopback: remove [[demo_accounts]] from the configuration"
        );
    }
    for demo in &config.demo_accounts {
        let a = crate::accounts::canonical(&demo.address)?;
        if !existing.contains_key(&a) {
            account_file.add(&a, &demo.password)?;
            tracing::info!(account = a, "created demo account");
        }
    }
    let (hashes, quotas) = account_file.read_all()?;
    let directory = Arc::new(ArcSwap::from_pointee(
        Directory::new(hashes, &config.aliases).with_quotas(quotas),
    ));
    // The configuration in force (replaced by reloads), and the lock that
    // keeps a reload and the account watcher from rebuilding the directory
    // at once.
    let live = Arc::new(ArcSwap::from_pointee(config.clone()));
    let directory_lock = Arc::new(std::sync::Mutex::new(()));
    watch_accounts(
        account_file.clone(),
        live.clone(),
        directory.clone(),
        directory_lock.clone(),
    );

    // Certificates before any connection is accepted: a bad certificate
    // fails the start. Read as `user`: key files must be readable by it
    // (reloads read them again).
    let tls = Arc::new(crate::tls::Tls::load(&config).map_err(|e| ServeError::Tls(e.to_string()))?);
    let [smtp, pop3, imap, submission, submissions, imaps, pop3s, _internal]: [Vec<SocketAddr>; 8] =
        bound.try_into().expect("eight protocols");
    // The one DNS thread for every shard, and the control channels.
    let client_tls =
        crate::tls::ClientTls::load(&config).map_err(|e| ServeError::Tls(e.to_string()))?;
    if client_tls.verified.is_none() {
        tracing::warn!(ca_file = %client_tls.ca_file.display(), "no trusted CA certificates: relay destinations with require-verified will defer");
    }
    let (relay, control_senders) = relay::RelayShared::start(&config, cores, Arc::new(client_tls));

    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(cores);
    let limiter = limiter::Limiter::with_rates(
        config.limits.connections_max,
        config.limits.connections_per_address_max,
        config.limits.connections_per_address_per_minute,
        config.limits.smtp_commands_per_address_per_minute,
    );
    let io_memory = config.storage.io_memory_kib * 1024;
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let placement = if config.pin_cores && cores <= online {
        PoolPlacement::MaxSpread(cores, CpuSet::online().ok())
    } else {
        PoolPlacement::Unbound(cores)
    };
    // Made now, off the shards, so that the first login for an unknown name
    // does not pay for making it (which would itself tell the name apart).
    let _ = std::thread::Builder::new()
        .name("ringmail-dummy-hash".into())
        .spawn(|| {
            crate::accounts::dummy_hash();
        });
    spool::tune_malloc(cores);
    let spool_dir = spool::prepare_dir(&config.data_dir).map_err(|source| ServeError::Data {
        path: config.data_dir.join("spool").display().to_string(),
        source,
    })?;
    let (session_ram_max, spool_max) = spool::resolve(&config.memory, &config.data_dir, cores);
    tracing::info!(session_ram_max, spool_max, "message data budgets per core");
    let dkim = crate::dkim::Keys::load(&config.data_dir).map_err(ServeError::Dkim)?;
    if !dkim.is_empty() {
        tracing::info!(keys = dkim.count(), "DKIM signing keys loaded");
    }
    // Inbound mail authentication shares the DNS thread.
    let verifier = match (&relay.dns, config.mail_auth.verify) {
        (Some(dns), true) => {
            match crate::auth::Verifier::start(dns, &config.mail_auth, &config.hostname) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(error = %e, "mail authentication not started: mail from the Internet is deferred (451 4.7.0)");
                    None
                }
            }
        }
        (None, true) => {
            tracing::error!("no DNS thread: mail authentication not started, mail from the Internet is deferred (451 4.7.0)");
            None
        }
        _ => None,
    };
    let copied = Arc::new(crate::cluster::Progress::new(cores));
    let member = match &config.cluster {
        None => None,
        Some(c) => {
            let listeners = [&smtp, &imap, &pop3, &imaps, &pop3s];
            let pins = tls.fingerprints();
            let progress = copied.clone();
            Some(join_cluster(
                c,
                listeners,
                pins,
                progress,
                cores,
                meta.buckets,
            )?)
        }
    };
    let shared = Arc::new(Shared {
        cluster: member.as_ref().map(cluster_view),
        copied,
        in_flight: Arc::new(crate::cluster::InFlight::new(cores)),
        silence: Default::default(),
        bucket_sends: Default::default(),
        copies_open: Default::default(),
        config,
        live,
        config_epoch: Default::default(),
        cores,
        meta,
        directory,
        limiter,
        usage: Default::default(),
        shutdown: Default::default(),
        smtp,
        pop3,
        imap,
        ready: ready_tx,
        submission,
        relay,
        listeners,
        submissions,
        imaps,
        pop3s,
        tls: tls.clone(),
        spool_dir,
        session_ram_max,
        spool_max,
        dkim: Arc::new(dkim),
        published: Arc::new(crate::metrics::Published::new(cores)),
        serving: Default::default(),
        verifier,
    });
    http::start(http_listeners, shared.clone(), started)
        .map_err(|e| ServeError::Executors(format!("HTTP listener: {e}")))?;

    let loader = loader.unwrap_or_else(|| {
        let start = shared.config.clone();
        Box::new(move || Ok(start.clone()))
    });
    let reloader = Arc::new(reload::Reloader::new(
        loader,
        shared.clone(),
        account_file,
        directory_lock,
    ));
    // Before the signal thread: a reload from then on may change it.
    transfer::configure(shared.config.limits.message_size_max);
    let shared_sig = shared.clone();
    let reloader_sig = reloader.clone();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| ServeError::Executors(format!("signal handler: {e}")))?;
    std::thread::Builder::new()
        .name("ringmail-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGHUP {
                    let _ = reloader_sig.reload("SIGHUP");
                    continue;
                }
                tracing::info!(signal = sig, "stopping");
                notify_systemd(&[sd_notify::NotifyState::Stopping]);
                shared_sig.shutdown.store(true, Ordering::Release);
                break;
            }
        })
        .map_err(|e| ServeError::Executors(e.to_string()))?;

    let mesh = MeshBuilder::full(cores, MESH_CHANNEL_SIZE);
    let shared_exec = shared.clone();
    let mut builder = LocalExecutorPoolBuilder::new(placement)
        .name("ringmail")
        .io_memory(io_memory);
    if shared.config.storage.spin_before_park_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(
            shared.config.storage.spin_before_park_us,
        ));
    }
    let handles = builder
        .on_all_shards(move || {
            let shared = shared_exec.clone();
            async move { shard::run(shared, mesh).await }
        })
        .map_err(|e| ServeError::Executors(e.to_string()))?;

    let mut failed = None;
    let mut cpus = vec![None; cores];
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok((id, cpu))) => cpus[id] = cpu,
            Ok(Err(e)) => {
                failed = Some(e);
                break;
            }
            Err(_) => {
                failed = Some("a shard exited during start-up".into());
                break;
            }
        }
    }
    if let Some(e) = failed {
        shared.shutdown.store(true, Ordering::Release);
        let _ = handles.join_all();
        return Err(ServeError::Shard(e));
    }
    // CPU steering needs every shard pinned to its own CPU.
    let steer: Option<Vec<usize>> = cpus.into_iter().collect();
    let steer = steer.filter(|c| {
        shared.config.cpu_steering
            && c.iter().collect::<std::collections::HashSet<_>>().len() == c.len()
    });
    match shared.listeners.finish(steer.as_deref()) {
        Ok(()) if steer.is_some() => {
            tracing::info!(cpus = ?steer, "connections steered to the executor on their CPU")
        }
        Ok(()) => {}
        Err(e) => {
            tracing::warn!(error = %e, "CPU steering unavailable; the kernel spreads connections by hash")
        }
    }
    let status = control::StatusSource {
        published: shared.published.clone(),
        started,
        cores,
        reload: Arc::new(move || match reloader.reload("control socket") {
            Ok(report) => report.text(),
            Err(e) => format!("error: {e}\n"),
        }),
    };
    if let Err(e) = control::start(&shared.config.data_dir, control_senders, status) {
        tracing::warn!(error = %e, "control socket unavailable: `ringmail queue` will not reach this server");
    }
    watch_certificates(shared.tls.clone());
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    // Written with errors ignored: a supervisor that reads only the ready
    // line and closes the pipe must not bring the server down (println!
    // would panic on EPIPE).
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "ringmail: ready smtp={} pop3={} imap={} submission={} submissions={} imaps={} pop3s={} http={} cores={} data={}",
        list(&shared.smtp),
        list(&shared.pop3),
        list(&shared.imap),
        list(&shared.submission),
        list(&shared.submissions),
        list(&shared.imaps),
        list(&shared.pop3s),
        list(&http_addrs),
        cores,
        shared.config.data_dir.display()
    );
    // The certificate a client may pin, right after the ready line.
    for c in shared.tls.certificates() {
        let kind = if c.generated {
            "self-signed, generated"
        } else {
            "configured"
        };
        let _ = writeln!(
            stdout,
            "ringmail: tls certificate {} ({kind}) names={} sha256={}",
            c.cert_path.display(),
            c.names.join(","),
            c.fingerprint
        );
    }
    let _ = stdout.flush();
    drop(stdout);
    shared.serving.store(true, Ordering::Release);
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving on {cores} cores")),
    ]);

    let mut first_error = None;
    for r in handles.join_all() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(e.to_string())),
        }
    }
    if let Some(m) = member {
        leave_cluster(m);
    }
    match first_error {
        Some(e) => Err(ServeError::Shard(e)),
        None => Ok(()),
    }
}

/// Every connection is a descriptor: raise the soft limit to the hard one
/// (commonly 1024 vs 1M), as a server expecting thousands of clients must.
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Take `DATA/lock` (flock, exclusive, not waiting) for the life of the
/// returned file, and write our pid into it for the next one's message.
fn lock_data_dir(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if !dir.exists() {
        // Mail and password hashes live here: a new data directory is the
        // server's user's alone, whatever the umask.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    } else if let Ok(m) = std::fs::metadata(dir) {
        use std::os::unix::fs::PermissionsExt;
        if m.permissions().mode() & 0o007 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", m.permissions().mode() & 0o777), "the data directory is open to other users (mail and password hashes are inside); chmod o-rwx it");
        }
    }
    let path = dir.join("lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)?;
    if nix::fcntl::flock(f.as_raw_fd(), nix::fcntl::FlockArg::LockExclusiveNonblock).is_err() {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "in use by another ringmail (pid {}); one server per data directory",
                pid.trim()
            ),
        ));
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{}", std::process::id())?;
    Ok(f)
}

/// Tell systemd (Type=notify, `NOTIFY_SOCKET` set) about a state change;
/// nothing without systemd. A failed send is logged, never fatal.
fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Swap in the certificate files' current contents; on error keep the old ones.
fn reload_certificates(tls: &crate::tls::Tls, why: &str) {
    match tls.reload() {
        Ok(certs) => {
            for c in certs {
                tracing::info!(reason = why, cert = %c.cert_path.display(), sha256 = c.fingerprint, "TLS certificate loaded");
            }
        }
        Err(e) => {
            tracing::error!(reason = why, error = %e, "TLS certificates not reloaded; the previous ones stay in use")
        }
    }
}

/// Reload the certificates when one of their files changes (checked every
/// second; a renewal tool writing cert and key one after the other may see
/// one failed attempt in between, which keeps the old pair).
fn watch_certificates(tls: Arc<crate::tls::Tls>) {
    // The files are asked for each time: a configuration reload may name
    // others.
    let stamp = |tls: &crate::tls::Tls| {
        tls.watched_files()
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    std::fs::metadata(p).and_then(|m| m.modified()).ok(),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut last = stamp(&tls);
    let _ = std::thread::Builder::new()
        .name("ringmail-certs".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = stamp(&tls);
            if now != last {
                // A reload that switched files already loaded the new ones.
                let same_files = now.iter().map(|f| &f.0).eq(last.iter().map(|f| &f.0));
                last = now;
                if same_files {
                    reload_certificates(&tls, "file changed");
                }
            }
        });
}

/// Reload the account file when it changes (checked twice a second) and
/// publish a new directory snapshot; shards pick it up on their next lookup.
fn watch_accounts(
    file: AccountFile,
    live: Arc<ArcSwap<Config>>,
    directory: Arc<ArcSwap<Directory>>,
    lock: Arc<std::sync::Mutex<()>>,
) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = stamp(file.path());
    let _ = std::thread::Builder::new()
        .name("ringmail-accounts".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = stamp(file.path());
            if now != last {
                last = now;
                let _serial = lock.lock().unwrap_or_else(|e| e.into_inner());
                match file.read_all() {
                    Ok((accounts, quotas)) => {
                        tracing::info!(accounts = accounts.len(), "account file reloaded");
                        let aliases = &live.load().aliases;
                        directory.store(Arc::new(
                            Directory::new(accounts, aliases).with_quotas(quotas),
                        ));
                    }
                    Err(e) => tracing::error!(error = %e, "account file not reloaded"),
                }
            }
        });
}
