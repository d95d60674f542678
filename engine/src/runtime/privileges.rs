//! Giving up root once the listeners are bound.
//!
//! Started as root, the server binds every listening socket (ports below
//! 1024 need it), then switches to `user` (and `group`, else the user's
//! primary group) before it opens the data directory, reads a certificate or
//! accepts a connection: everything after [`drop_to`] runs unprivileged.
//! While still root it creates a missing data directory for that user and
//! raises the locked-memory limit to what the executors' io_uring buffers
//! need (an unprivileged process no longer has CAP_IPC_LOCK).
//!
//! Root without `user` is refused when any listener is off loopback, unless
//! `allow_root = true`: a process that parses mail from the Internet should
//! not hold every right on the machine. A loopback-only server (the embedded
//! default, tests, a local relay) may stay root.
//!
//! Must never: run after a thread other than the main one has started
//! (setuid must cover the whole process; glibc broadcasts it to threads, but
//! nothing here relies on that).
use std::net::SocketAddr;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::Config;

/// Who the process runs as once [`drop_to`] has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not started as root: nothing to give up.
    Unprivileged,
    /// Switched to this user and group.
    Dropped { user: String, uid: u32, gid: u32 },
    /// Stayed root: loopback only, or `allow_root`.
    StayedRoot,
}

/// Every address the configuration listens on.
fn listen_addrs(config: &Config) -> impl Iterator<Item = &SocketAddr> {
    let l = &config.listen;
    [
        &l.smtp,
        &l.pop3,
        &l.imap,
        &l.submission,
        &l.submissions,
        &l.imaps,
        &l.pop3s,
    ]
    .into_iter()
    .flatten()
}

/// Whether a root process may keep running as root with this configuration.
pub fn root_allowed(config: &Config) -> bool {
    config.allow_root || all_loopback(config)
}

/// Every listener is on a loopback address.
pub fn all_loopback(config: &Config) -> bool {
    listen_addrs(config).all(|a| a.ip().is_loopback())
}

/// Before any socket is bound: refuse root without `user` off loopback, so
/// a refused start never opened a port.
pub fn preflight(config: &Config) -> Result<(), String> {
    if Uid::effective().is_root() && config.user.is_none() && !root_allowed(config) {
        return Err(REFUSE_ROOT.into());
    }
    Ok(())
}

const REFUSE_ROOT: &str =
    "refusing to run as root with listeners off loopback: set `user` (and `group`) \
                           to the account the server should run as, or `allow_root = true`";

/// Apply the `user` / `group` / `allow_root` policy. Call after binding the
/// listeners and before anything else touches files or sockets.
pub fn drop_to(config: &Config, io_memory_bytes: usize) -> Result<Outcome, String> {
    if !Uid::effective().is_root() {
        if let Some(user) = &config.user {
            tracing::debug!(
                user,
                "not started as root: `user` has nothing to switch from"
            );
        }
        return Ok(Outcome::Unprivileged);
    }
    let Some(name) = &config.user else {
        if root_allowed(config) {
            if config.allow_root {
                tracing::warn!("running as root (allow_root = true)");
            }
            return Ok(Outcome::StayedRoot);
        }
        return Err(REFUSE_ROOT.into());
    };
    let user = User::from_name(name)
        .map_err(|e| format!("user {name:?}: {e}"))?
        .ok_or_else(|| {
            format!("user {name:?} does not exist (create it, e.g. `useradd --system {name}`)")
        })?;
    if user.uid.is_root() {
        return Err(format!(
            "user {name:?} is root; name an unprivileged account"
        ));
    }
    let gid = match &config.group {
        Some(g) => {
            Group::from_name(g)
                .map_err(|e| format!("group {g:?}: {e}"))?
                .ok_or_else(|| format!("group {g:?} does not exist"))?
                .gid
        }
        None => user.gid,
    };
    prepare_data_dir(&config.data_dir, user.uid, gid)?;
    raise_memlock(io_memory_bytes);
    // Supplementary groups first (they would keep root's), then the group,
    // then the user: after setuid nothing else may be changed.
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid: {e}"))?;
    nix::unistd::setuid(user.uid).map_err(|e| format!("setuid: {e}"))?;
    // setuid as root sets the real, effective and saved IDs: there must be
    // no way back.
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || Uid::effective().is_root() {
        return Err("could not give up root".into());
    }
    Ok(Outcome::Dropped {
        user: name.clone(),
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
    })
}

/// A data directory that does not exist yet is made here, as root, and
/// given to the server's user (its parent, e.g. /var/lib, is root's). An
/// existing one is left as it is: its owner is the operator's choice, and a
/// directory the user cannot write fails the start with its path.
fn prepare_data_dir(dir: &Path, uid: Uid, gid: Gid) -> Result<(), String> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    nix::unistd::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    Ok(())
}

/// glommio registers `io_memory` bytes per executor with io_uring; without
/// CAP_IPC_LOCK that counts against RLIMIT_MEMLOCK (8 MiB on many systems).
/// Raise soft and hard limits while root can.
fn raise_memlock(needed: usize) {
    let needed = needed as libc::rlim_t + (4 << 20);
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut l) == 0
            && l.rlim_cur != libc::RLIM_INFINITY
            && l.rlim_cur < needed
        {
            l.rlim_cur = needed;
            l.rlim_max = l.rlim_max.max(needed);
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_allowed_on_loopback_only_or_when_asked() {
        let mut c = Config::default();
        assert!(root_allowed(&c), "the embedded default listens on loopback");
        c.listen.imap.push("[::1]:1143".parse().unwrap());
        assert!(root_allowed(&c));
        c.listen.smtp = vec!["0.0.0.0:25".parse().unwrap()];
        assert!(!root_allowed(&c));
        c.allow_root = true;
        assert!(root_allowed(&c));
    }
}
