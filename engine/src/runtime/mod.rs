//! Runtime: glommio executors (one per core), listeners, shard routing,
//! timers. The only layer that touches glommio, sockets and signals.
//!
//! Start-up: read the meta file (a new run), load accounts, bind every
//! configured address once (so port 0 resolves to one port for all shards),
//! start one executor per core; each joins the channel mesh, recovers its
//! buckets, binds its own SO_REUSEPORT listener on each address, and reports
//! ready. Then the process prints one `ringmail: ready ...` line on stdout.
//! SIGTERM/SIGINT: every shard stops accepting, lets sessions finish within
//! the grace period, makes everything durable, checkpoints, and exits 0.
pub mod conn;
pub mod control;
pub mod imap;
pub mod limiter;
pub mod pop3;
pub mod relay;
pub mod shard;
pub mod smtp;

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
    Data { path: String, source: std::io::Error },
    #[error("accounts: {0}")]
    Accounts(#[from] crate::accounts::AccountError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("starting executors: {0}")]
    Executors(String),
    #[error("shard failed: {0}")]
    Shard(String),
}

/// Messages in flight between two shards before a sender waits.
const MESH_CHANNEL_SIZE: usize = 1024;

/// Run the server until SIGTERM/SIGINT.
pub fn serve(mut config: Config) -> Result<(), ServeError> {
    raise_fd_limit();
    let cores = config.effective_cores();
    let data_err = |source| ServeError::Data { path: config.data_dir.display().to_string(), source };
    let meta = Meta::start_run(&config.data_dir, limits::BUCKETS_DEFAULT).map_err(data_err)?;
    // glommio opens directories relative to nothing (a relative path fails
    // with EBADF): work with the absolute path from here on.
    config.data_dir = std::fs::canonicalize(&config.data_dir).map_err(data_err)?;

    let account_file = AccountFile::in_dir(&config.data_dir);
    let existing = account_file.read()?;
    for demo in &config.demo_accounts {
        let a = crate::accounts::canonical(&demo.address)?;
        if !existing.contains_key(&a) {
            account_file.add(&a, &demo.password)?;
            tracing::info!(account = a, "created demo account");
        }
    }
    let directory = Arc::new(ArcSwap::from_pointee(Directory::new(account_file.read()?, &config.aliases)));
    watch_accounts(account_file, config.aliases.clone(), directory.clone());

    // Bind each address once here, so that port 0 becomes one concrete port
    // that every shard then binds again with SO_REUSEPORT.
    let mut reserved = Vec::new();
    let mut resolve = |addrs: &[SocketAddr]| -> Result<Vec<SocketAddr>, ServeError> {
        let mut out = Vec::new();
        for addr in addrs {
            let s = reserve(*addr).map_err(|source| ServeError::Bind { addr: *addr, source })?;
            out.push(s.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(*addr));
            reserved.push(s);
        }
        Ok(out)
    };
    let smtp = resolve(&config.listen.smtp)?;
    let pop3 = resolve(&config.listen.pop3)?;
    let imap = resolve(&config.listen.imap)?;
    let submission = resolve(&config.listen.submission)?;
    // The one DNS thread for every shard, and the control channels.
    let (relay, control_senders) = relay::RelayShared::start(&config, cores);

    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(cores);
    let limiter = limiter::Limiter::new(config.limits.connections_max, config.limits.connections_per_address_max);
    let io_memory = config.storage.io_memory_kib * 1024;
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let placement = if config.pin_cores && cores <= online {
        PoolPlacement::MaxSpread(cores, CpuSet::online().ok())
    } else {
        PoolPlacement::Unbound(cores)
    };
    let shared = Arc::new(Shared {
        config,
        cores,
        meta,
        directory,
        limiter,
        shutdown: Default::default(),
        smtp,
        pop3,
        imap,
        ready: ready_tx,
        submission,
        relay,
    });

    let shared_sig = shared.clone();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| ServeError::Executors(format!("signal handler: {e}")))?;
    std::thread::Builder::new()
        .name("ringmail-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "stopping");
                shared_sig.shutdown.store(true, Ordering::Release);
            }
        })
        .map_err(|e| ServeError::Executors(e.to_string()))?;

    let mesh = MeshBuilder::full(cores, MESH_CHANNEL_SIZE);
    let shared_exec = shared.clone();
    let mut builder = LocalExecutorPoolBuilder::new(placement).name("ringmail").io_memory(io_memory);
    if shared.config.storage.spin_before_park_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(shared.config.storage.spin_before_park_us));
    }
    let handles = builder
        .on_all_shards(move || {
            let shared = shared_exec.clone();
            async move { shard::run(shared, mesh).await }
        })
        .map_err(|e| ServeError::Executors(e.to_string()))?;

    let mut failed = None;
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
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
    drop(reserved);
    if let Err(e) = control::start(&shared.config.data_dir, control_senders) {
        tracing::warn!(error = %e, "control socket unavailable: `ringmail queue` will not reach this server");
    }
    let list = |v: &[SocketAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    println!(
        "ringmail: ready smtp={} pop3={} imap={} submission={} cores={} data={}",
        list(&shared.smtp),
        list(&shared.pop3),
        list(&shared.imap),
        list(&shared.submission),
        cores,
        shared.config.data_dir.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let mut first_error = None;
    for r in handles.join_all() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(e.to_string())),
        }
    }
    match first_error {
        Some(e) => Err(ServeError::Shard(e)),
        None => Ok(()),
    }
}

/// Every connection is a descriptor: raise the soft limit to the hard one
/// (commonly 1024 vs 1M), as a server expecting thousands of clients must.
fn raise_fd_limit() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Bind (not listen) a socket with SO_REUSEPORT to fix the port.
fn reserve(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s)
}

/// Reload the account file when it changes (checked twice a second) and
/// publish a new directory snapshot; shards pick it up on their next lookup.
fn watch_accounts(file: AccountFile, aliases: std::collections::BTreeMap<String, String>, directory: Arc<ArcSwap<Directory>>) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = stamp(file.path());
    let _ = std::thread::Builder::new().name("ringmail-accounts".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = stamp(file.path());
        if now != last {
            last = now;
            match file.read() {
                Ok(accounts) => {
                    tracing::info!(accounts = accounts.len(), "account file reloaded");
                    directory.store(Arc::new(Directory::new(accounts, &aliases)));
                }
                Err(e) => tracing::error!(error = %e, "account file not reloaded"),
            }
        }
    });
}
