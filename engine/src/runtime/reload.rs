//! Configuration reload without a restart: SIGHUP and `ringmail reload`
//! (the control socket's `reload` request).
//!
//! The configuration is read again the way `serve` read it (the file, then
//! the command line's overrides). A file that does not parse or validate is
//! reported with file, line and key, and nothing changes. Otherwise the
//! settings a running server can take ([`Config::reloadable_from`]) go into
//! `Shared::live` and the shards copy it on their next read
//! (`Shard::config`); settings that need new sockets, executors or a
//! restart of a side thread are reported as such and ignored. Sessions in
//! progress are never dropped: each keeps the settings it started with.
//!
//! What a reload changes besides the shards' copies: the certificates (read
//! again, from the newly named files if they changed; a certificate that
//! fails to load fails the whole reload), the account directory's aliases,
//! the connection limiter, the import size limit and the authserv-id of the
//! mail-authentication verifier.
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::accounts::{AccountFile, Directory};
use crate::config::Config;

use super::shard::Shared;

/// Reads the configuration again: the file `serve` was started with (or the
/// embedded default) and the same command-line overrides, validated.
pub type Loader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// What one reload did.
#[derive(Debug, Default)]
pub struct Report {
    /// Keys whose new values are in force.
    pub applied: Vec<String>,
    /// Keys whose new values need a restart (the running values stay).
    pub restart: Vec<String>,
    /// The certificates in force after the reload (file, SHA-256).
    pub certificates: Vec<(String, String)>,
}

impl Report {
    /// The answer to `ringmail reload`.
    pub fn text(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let mut out = format!("reloaded\napplied: {}\n", list(&self.applied));
        if !self.restart.is_empty() {
            out.push_str(&format!(
                "needs a restart (running values kept): {}\n",
                list(&self.restart)
            ));
        }
        for (file, sha) in &self.certificates {
            out.push_str(&format!("certificate: {file} sha256 {sha}\n"));
        }
        out
    }
}

/// Serializes reloads with each other and with the account file watcher,
/// which rebuilds the directory from the aliases in force.
pub struct Reloader {
    loader: Loader,
    shared: Arc<Shared>,
    accounts: AccountFile,
    lock: Arc<Mutex<()>>,
}

impl Reloader {
    pub fn new(
        loader: Loader,
        shared: Arc<Shared>,
        accounts: AccountFile,
        lock: Arc<Mutex<()>>,
    ) -> Self {
        Reloader {
            loader,
            shared,
            accounts,
            lock,
        }
    }

    /// Reload and log the outcome; `why` names the trigger (`SIGHUP`,
    /// `control socket`).
    pub fn reload(&self, why: &str) -> Result<Report, String> {
        let result = self.try_reload();
        match &result {
            Ok(r) => tracing::info!(
                event = "config_reload",
                reason = why,
                applied = %r.applied.join(","),
                restart_needed = %r.restart.join(","),
                "configuration reloaded"
            ),
            Err(e) => tracing::error!(
                event = "config_reload",
                reason = why,
                error = %e,
                "configuration not reloaded; the running configuration stays"
            ),
        }
        for key in result.iter().flat_map(|r| &r.restart) {
            tracing::warn!(key = %key, "changed in the configuration but needs a restart; the running value stays");
        }
        result
    }

    fn try_reload(&self) -> Result<Report, String> {
        let _serial = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut new = (self.loader)()?;
        let running = self.shared.live.load_full();
        // `serve` made the data directory absolute; the file's may be relative.
        if let Ok(p) = std::fs::canonicalize(&new.data_dir) {
            if p == running.data_dir {
                new.data_dir = p;
            }
        }
        let merged = Config::reloadable_from(&running, &new);
        let restart = Config::changed_keys(&merged, &new);
        let applied = Config::changed_keys(&running, &merged);
        // Everything that can fail comes first, so a failure changes nothing.
        let (accounts, quotas) = self
            .accounts
            .read_all()
            .map_err(|e| format!("account file: {e}"))?;
        let certificates = self
            .shared
            .tls
            .reload_from(&merged)
            .map_err(|e| format!("certificates: {e}"))?;
        let l = &merged.limits;
        self.shared.limiter.set_limits(
            l.connections_max,
            l.connections_per_address_max,
            l.connections_per_address_per_minute,
            l.smtp_commands_per_address_per_minute,
        );
        super::transfer::configure(l.message_size_max);
        if let Some(v) = &self.shared.verifier {
            v.set_hostname(&merged.hostname);
        }
        self.shared.directory.store(Arc::new(
            Directory::new(accounts, &merged.aliases).with_quotas(quotas),
        ));
        self.shared.live.store(Arc::new(merged));
        self.shared.config_epoch.fetch_add(1, Ordering::AcqRel);
        Ok(Report {
            applied,
            restart,
            certificates: certificates
                .into_iter()
                .map(|c| (c.cert_path.display().to_string(), c.fingerprint))
                .collect(),
        })
    }
}
