//! Accounts: the account file, password hashes, recipient lookup.
//!
//! The account file `<data_dir>/accounts` holds one account a line,
//! `address:argon2-phc-hash`, like a Dovecot passwd-file, optionally followed
//! by `:quota=SIZE` (the account's own storage limit, RFC 9208: octets, or
//! with a K, M or G suffix; 0 for no limit at all), which overrides
//! `[limits] quota_octets`. `ringmail account`
//! edits it atomically (write a temporary file, fsync, rename); a running
//! server notices the change within a second and swaps in a new immutable
//! [`Directory`] snapshot, so shards read it without any lock.
//!
//! This module never touches sockets and never runs on an executor's hot
//! path with blocking work: hashing and verification are CPU-heavy on purpose
//! (argon2) and the runtime runs them on a blocking thread.
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

pub const ACCOUNT_FILE: &str = "accounts";

/// canonical address -> PHC password hash.
pub type Hashes = HashMap<String, String>;
/// canonical address -> the account's own storage limit in octets.
pub type Quotas = HashMap<String, u64>;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0:?} is not a valid address (expected local@domain)")]
    BadAddress(String),
    #[error("account {0} already exists")]
    Exists(String),
    #[error("no account {0}")]
    Missing(String),
    #[error("{path}:{line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Canonical form of an address: the domain lower-cased, the local part too
/// (RFC 5321 2.4 lets us treat local parts case-insensitively for our own
/// mailboxes, and every user coming from Postfix or Dovecot expects it).
pub fn canonical(address: &str) -> Result<String, AccountError> {
    let a = address.trim();
    let (local, domain) = a
        .rsplit_once('@')
        .ok_or_else(|| AccountError::BadAddress(a.into()))?;
    if local.is_empty()
        || domain.is_empty()
        || a.bytes().any(|b| b <= b' ' || b == b':' || b == 0x7f)
        || domain.contains('@')
    {
        return Err(AccountError::BadAddress(a.into()));
    }
    Ok(a.to_lowercase())
}

/// One immutable snapshot of accounts and aliases.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    /// canonical address -> PHC hash string.
    accounts: HashMap<String, String>,
    /// canonical alias -> canonical account; `@domain` keys are catch-alls.
    aliases: HashMap<String, String>,
    /// Accounts' own storage limits from the account file (0: unlimited,
    /// whatever the default).
    quotas: HashMap<String, u64>,
}

/// What a recipient address is to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Account(String),
    Unknown,
}

impl Directory {
    pub fn new(accounts: HashMap<String, String>, aliases: &BTreeMap<String, String>) -> Self {
        let aliases = aliases
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.to_lowercase()))
            .collect();
        Directory {
            accounts,
            aliases,
            quotas: HashMap::new(),
        }
    }

    /// The same directory with the account file's own storage limits.
    pub fn with_quotas(mut self, quotas: HashMap<String, u64>) -> Self {
        self.quotas = quotas;
        self
    }

    /// The account's storage limit in octets: its own from the account
    /// file, else `default` (0 in either place: none).
    pub fn quota(&self, account: &str, default: u64) -> Option<u64> {
        let q = self.quotas.get(account).copied().unwrap_or(default);
        (q > 0).then_some(q)
    }

    /// The account's own limit, if the account file gives one (0: none).
    pub fn own_quota(&self, account: &str) -> Option<u64> {
        self.quotas.get(account).copied()
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    pub fn password_hash(&self, account: &str) -> Option<&str> {
        self.accounts.get(account).map(String::as_str)
    }

    pub fn contains(&self, account: &str) -> bool {
        self.accounts.contains_key(account)
    }

    /// Resolve an address on a local domain to an account: exact account,
    /// exact alias, `local+detail` stripped of its detail, then the domain's
    /// catch-all alias.
    pub fn resolve(&self, address: &str) -> Lookup {
        let Ok(a) = canonical(address) else {
            return Lookup::Unknown;
        };
        if let Some(found) = self.resolve_exact(&a) {
            return Lookup::Account(found);
        }
        let (local, domain) = a.rsplit_once('@').expect("canonical has @");
        if let Some((base, _detail)) = local.split_once('+') {
            if let Some(found) = self.resolve_exact(&format!("{base}@{domain}")) {
                return Lookup::Account(found);
            }
        }
        if let Some(target) = self.aliases.get(&format!("@{domain}")) {
            if self.accounts.contains_key(target) {
                return Lookup::Account(target.clone());
            }
        }
        Lookup::Unknown
    }

    fn resolve_exact(&self, a: &str) -> Option<String> {
        if self.accounts.contains_key(a) {
            return Some(a.to_string());
        }
        // One level of alias only: alias chains are a configuration mistake.
        self.aliases
            .get(a)
            .filter(|t| self.accounts.contains_key(*t))
            .cloned()
    }
}

/// The account file on disk.
#[derive(Clone)]
pub struct AccountFile {
    path: PathBuf,
}

impl AccountFile {
    pub fn in_dir(data_dir: &Path) -> Self {
        AccountFile {
            path: data_dir.join(ACCOUNT_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read every account's password hash. A missing file is an empty
    /// directory.
    pub fn read(&self) -> Result<HashMap<String, String>, AccountError> {
        Ok(self.read_all()?.0)
    }

    /// Read the password hashes and the accounts' own storage limits.
    pub fn read_all(&self) -> Result<(Hashes, Quotas), AccountError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((HashMap::new(), HashMap::new()))
            }
            Err(source) => {
                return Err(AccountError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let mut out = HashMap::new();
        let mut quotas = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let corrupt = |message: &str| AccountError::Corrupt {
                path: self.path.clone(),
                line: i + 1,
                message: message.into(),
            };
            let mut parts = line.split(':');
            let (Some(addr), Some(hash)) = (parts.next(), parts.next()) else {
                return Err(corrupt("expected address:hash"));
            };
            let addr = canonical(addr).map_err(|_| corrupt("bad address"))?;
            PasswordHash::new(hash).map_err(|_| corrupt("bad password hash"))?;
            for field in parts {
                match field.split_once('=') {
                    Some(("quota", v)) => {
                        let q = parse_octets(v).ok_or_else(|| corrupt("bad quota"))?;
                        quotas.insert(addr.clone(), q);
                    }
                    _ => return Err(corrupt("unknown field after the hash")),
                }
            }
            out.insert(addr, hash.to_string());
        }
        Ok((out, quotas))
    }

    /// Set an account's own storage limit (`Some(0)`: no limit), or with
    /// `None` remove it so that `[limits] quota_octets` applies.
    pub fn set_quota(&self, address: &str, octets: Option<u64>) -> Result<String, AccountError> {
        let a = canonical(address)?;
        let (all, mut quotas) = self.read_all()?;
        if !all.contains_key(&a) {
            return Err(AccountError::Missing(a));
        }
        match octets {
            None => quotas.remove(&a),
            Some(q) => quotas.insert(a.clone(), q),
        };
        self.write_all(&all, &quotas)?;
        Ok(a)
    }

    /// Replace the file atomically.
    pub fn write_all(
        &self,
        accounts: &HashMap<String, String>,
        quotas: &HashMap<String, u64>,
    ) -> Result<(), AccountError> {
        let io = |source| AccountError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self.path.with_extension("tmp");
        let sorted: BTreeMap<_, _> = accounts.iter().collect();
        let mut text = String::with_capacity(accounts.len() * 128);
        for (a, h) in sorted {
            text.push_str(a);
            text.push(':');
            text.push_str(h);
            if let Some(q) = quotas.get(a) {
                text.push_str(&format!(":quota={q}"));
            }
            text.push('\n');
        }
        // Password hashes: readable by the server's user only, whatever the
        // umask (an offline guesser needs only the hash).
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        // A temporary file left by an older build may have a wider mode.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }

    pub fn add(&self, address: &str, password: &str) -> Result<String, AccountError> {
        let a = canonical(address)?;
        let (mut all, quotas) = self.read_all()?;
        if all.contains_key(&a) {
            return Err(AccountError::Exists(a));
        }
        all.insert(a.clone(), hash_password(password)?);
        self.write_all(&all, &quotas)?;
        Ok(a)
    }

    /// Add many accounts sharing one password. The hash is computed once and
    /// shared (same salt): fine for load tests, documented as such.
    pub fn add_many(&self, addresses: &[String], password: &str) -> Result<usize, AccountError> {
        let (mut all, quotas) = self.read_all()?;
        let hash = hash_password(password)?;
        let mut added = 0;
        for address in addresses {
            let a = canonical(address)?;
            if let std::collections::hash_map::Entry::Vacant(e) = all.entry(a) {
                e.insert(hash.clone());
                added += 1;
            }
        }
        self.write_all(&all, &quotas)?;
        Ok(added)
    }

    pub fn remove(&self, address: &str) -> Result<(), AccountError> {
        let a = canonical(address)?;
        let (mut all, quotas) = self.read_all()?;
        if all.remove(&a).is_none() {
            return Err(AccountError::Missing(a));
        }
        self.write_all(&all, &quotas)
    }

    pub fn set_password(&self, address: &str, password: &str) -> Result<(), AccountError> {
        let a = canonical(address)?;
        let (mut all, quotas) = self.read_all()?;
        let slot = all
            .get_mut(&a)
            .ok_or_else(|| AccountError::Missing(a.clone()))?;
        *slot = hash_password(password)?;
        self.write_all(&all, &quotas)
    }
}

/// A size: `1048576`, `512K`, `100M`, `2G` (powers of 1024).
pub fn parse_octets(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Hash a password with argon2id and the crate's default (OWASP) parameters.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Check a password against a PHC hash string. CPU-heavy: call off the executor.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, made once per process with the same
/// parameters as `hash_password`. A login for an account that does not
/// exist is checked against it, so that it costs what a wrong password for
/// an existing account costs and the time taken does not tell an attacker
/// which accounts exist. CPU-heavy on first use: call off the executor (the
/// runtime makes it on a thread at start).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut secret = [0u8; 32];
        use argon2::password_hash::rand_core::RngCore;
        OsRng.fill_bytes(&mut secret);
        let pw: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        // Argon2 with default parameters cannot fail on a 64-byte password;
        // should it, a malformed hash still makes verification fail (it is
        // only ever used to fail), just faster.
        hash_password(&pw).unwrap_or_default()
    })
}

/// Verify `password` against `hash` when there is one, else against the
/// dummy hash (always false, same cost). CPU-heavy: call off the executor.
pub fn verify_or_dummy(hash: Option<&str>, password: &str) -> bool {
    match hash {
        Some(h) => verify_password(h, password),
        None => {
            verify_password(dummy_hash(), password);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_accounts_aliases_detail_catchall() {
        let mut acc = HashMap::new();
        acc.insert("bob@example.test".to_string(), "h".to_string());
        acc.insert("alice@example.test".to_string(), "h".to_string());
        let mut al = BTreeMap::new();
        al.insert(
            "Postmaster@example.test".to_string(),
            "alice@example.test".to_string(),
        );
        al.insert("@other.test".to_string(), "bob@example.test".to_string());
        let d = Directory::new(acc, &al);
        assert_eq!(
            d.resolve("BOB@Example.TEST"),
            Lookup::Account("bob@example.test".into())
        );
        assert_eq!(
            d.resolve("postmaster@example.test"),
            Lookup::Account("alice@example.test".into())
        );
        assert_eq!(
            d.resolve("bob+lists@example.test"),
            Lookup::Account("bob@example.test".into())
        );
        assert_eq!(
            d.resolve("anyone@other.test"),
            Lookup::Account("bob@example.test".into())
        );
        assert_eq!(d.resolve("carol@example.test"), Lookup::Unknown);
        assert_eq!(d.resolve("not-an-address"), Lookup::Unknown);
    }

    #[test]
    fn file_round_trip_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let f = AccountFile::in_dir(dir.path());
        assert!(f.read().unwrap().is_empty());
        f.add("Carol@Example.test", "pw").unwrap();
        assert!(matches!(
            f.add("carol@example.test", "x"),
            Err(AccountError::Exists(_))
        ));
        let all = f.read().unwrap();
        let h = all.get("carol@example.test").unwrap();
        assert!(verify_password(h, "pw"));
        assert!(!verify_password(h, "wrong"));
        f.add_many(&["1u@example.test".into(), "2u@example.test".into()], "pw")
            .unwrap();
        assert_eq!(f.read().unwrap().len(), 3);
        // Password hashes are for the server's user only.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        f.remove("carol@example.test").unwrap();
        assert!(matches!(
            f.remove("carol@example.test"),
            Err(AccountError::Missing(_))
        ));
        std::fs::write(f.path(), "bad line\n").unwrap();
        let e = f.read().unwrap_err().to_string();
        assert!(e.contains(":1:"), "{e}");
    }

    #[test]
    fn dummy_hash_has_the_real_parameters_and_never_matches() {
        let real = hash_password("pw").unwrap();
        let dummy = dummy_hash();
        let params = |h: &str| {
            let p = PasswordHash::new(h).unwrap();
            (p.algorithm.to_string(), p.version, p.params.to_string())
        };
        assert_eq!(params(&real), params(dummy));
        assert!(!verify_or_dummy(None, "pw"));
        assert!(!verify_or_dummy(None, ""));
        assert!(verify_or_dummy(Some(&real), "pw"));
        assert!(!verify_or_dummy(Some(&real), "px"));
        assert_eq!(dummy_hash(), dummy, "made once");
    }
}
