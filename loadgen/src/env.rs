//! Run-wide settings shared by all modes: accounts, timeouts, run id.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::{AccountArgs, Common};

/// Accounts as addresses (for RCPT TO) and login names (POP3/IMAP).
pub struct Accounts {
    pub addrs: Vec<String>,
    pub logins: Vec<String>,
    pub password: String,
}

pub fn expand(pattern: &str, n: u64) -> String {
    pattern.replace("{n}", &n.to_string())
}

impl Accounts {
    pub fn from_args(a: &AccountArgs) -> Result<Accounts, String> {
        if a.accounts == 0 {
            return Err("--accounts must be at least 1".into());
        }
        if a.accounts > 10_000_000 {
            return Err("--accounts is limited to 10 million".into());
        }
        let login_pat = a
            .login_pattern
            .clone()
            .unwrap_or_else(|| a.account_pattern.clone());
        let range = a.first_account..a.first_account + a.accounts as u64;
        Ok(Accounts {
            addrs: range
                .clone()
                .map(|n| expand(&a.account_pattern, n))
                .collect(),
            logins: range.map(|n| expand(&login_pat, n)).collect(),
            password: a.password.clone(),
        })
    }
    pub fn len(&self) -> u32 {
        self.addrs.len() as u32
    }
}

/// Settings from [`Common`] in directly usable form.
#[derive(Clone)]
pub struct Env {
    pub threads: usize,
    pub timeout: Duration,
    pub max_time: Duration,
    pub seed: u64,
    pub run_id: String,
    pub progress: bool,
    /// `--tls` / `--starttls`: the shared client configuration.
    pub tls: Option<std::sync::Arc<crate::tls::TlsCtx>>,
}

pub fn secs(name: &str, v: f64) -> Result<Duration, String> {
    if !v.is_finite() || !(0.0..=1e7).contains(&v) {
        return Err(format!("{name}: {v} is not a valid number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

impl Env {
    /// `"implicit"` / `"starttls"`, or None without TLS.
    pub fn tls_mode(&self) -> Option<&'static str> {
        self.tls.as_ref().map(|t| t.mode.name())
    }

    pub fn from_common(c: &Common) -> Result<Env, String> {
        let run_id = match &c.run_id {
            Some(r) => {
                if r.is_empty()
                    || !r
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                {
                    return Err("--run-id: use letters, digits, '_' and '.' only".into());
                }
                r.clone()
            }
            None => {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let x = crate::msggen::splitmix64(
                    t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32),
                );
                format!("{:010x}", x >> 24)
            }
        };
        let timeout = secs("--timeout", c.timeout)?;
        if timeout.is_zero() {
            return Err("--timeout must be > 0".into());
        }
        Ok(Env {
            threads: c.threads.clamp(1, 256),
            timeout,
            max_time: secs("--max-time", c.max_time)?,
            seed: c.seed,
            run_id,
            progress: !c.no_progress && crate::stats::progress_enabled(c.progress),
            tls: crate::tls::TlsCtx::from_args(&c.tls)?,
        })
    }
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
// rlim_t is not u64 on every target
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        rl.rlim_cur as u64
    }
}
