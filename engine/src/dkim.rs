//! DKIM signing (RFC 6376, Ed25519 per RFC 8463) of mail relayed for
//! authenticated senders.
//!
//! Keys live in `DATA/dkim/<domain>/<selector>.<ed25519|rsa>.der` (mode
//! 0600): Ed25519 as PKCS#8, RSA as PKCS#1. `ringmail dkim generate` makes
//! them and prints the TXT record to publish; the server loads every key at
//! start. A message is signed once, when it is queued for relay, with every
//! key of its From: domain; the signatures are stored with the queued
//! message, so retries send the same bytes. Canonicalisation is
//! relaxed/relaxed; the crate `mail-auth` does the canonicalisation and the
//! signature (on `ring`), nothing here touches cryptography.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};

/// Headers signed when present; the ones absent are signed as absent (so
/// they cannot be added later), and From is listed twice to oversign it.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ed25519,
    Rsa,
}

impl Algorithm {
    fn extension(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::Rsa => "rsa",
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" | "ed25519-sha256" => Some(Algorithm::Ed25519),
            "rsa" | "rsa-sha256" => Some(Algorithm::Rsa),
            _ => None,
        }
    }
}

/// One signing key.
pub struct Key {
    pub selector: String,
    pub algorithm: Algorithm,
    der: Vec<u8>,
}

/// Every key, by domain (lowercase).
#[derive(Default)]
pub struct Keys {
    by_domain: HashMap<String, Vec<Key>>,
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dkim")
}

impl Keys {
    /// Load `DATA/dkim/*/*.der`; a missing directory is no keys.
    pub fn load(data_dir: &Path) -> Result<Keys, String> {
        let mut keys = Keys::default();
        let Ok(domains) = std::fs::read_dir(dir(data_dir)) else {
            return Ok(keys);
        };
        for d in domains.flatten() {
            let domain = d.file_name().to_string_lossy().to_ascii_lowercase();
            let Ok(files) = std::fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(stem) = name.strip_suffix(".der") else {
                    continue;
                };
                let Some((selector, alg)) = stem.rsplit_once('.') else {
                    continue;
                };
                let Some(algorithm) = Algorithm::parse(alg) else {
                    continue;
                };
                let der =
                    std::fs::read(f.path()).map_err(|e| format!("{}: {e}", f.path().display()))?;
                let key = Key {
                    selector: selector.to_string(),
                    algorithm,
                    der,
                };
                // Refuse a key that does not load now rather than at the first message.
                key.check()
                    .map_err(|e| format!("{}: {e}", f.path().display()))?;
                keys.by_domain.entry(domain.clone()).or_default().push(key);
            }
        }
        for v in keys.by_domain.values_mut() {
            v.sort_by(|a, b| a.selector.cmp(&b.selector));
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    pub fn count(&self) -> usize {
        self.by_domain.values().map(Vec::len).sum()
    }

    /// Every (domain, key), by domain and selector.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Key)> {
        let mut domains: Vec<&String> = self.by_domain.keys().collect();
        domains.sort();
        domains
            .into_iter()
            .flat_map(move |d| self.by_domain[d].iter().map(move |k| (d.as_str(), k)))
    }

    pub fn for_domain(&self, domain: &str) -> &[Key] {
        self.by_domain
            .get(&domain.trim_end_matches('.').to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// `DKIM-Signature:` header fields for `message`, one per key of
    /// `domain`, ready to prepend (empty when the domain has no key).
    pub fn sign(&self, domain: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for key in self.for_domain(domain) {
            out.extend_from_slice(key.sign(domain, message)?.as_bytes());
        }
        Ok(out)
    }
}

impl Key {
    fn check(&self) -> Result<(), String> {
        match self.algorithm {
            Algorithm::Ed25519 => Ed25519Key::from_pkcs8_der(&self.der).map(|_| ()),
            Algorithm::Rsa => rsa_key(&self.der).map(|_| ()),
        }
        .map_err(|e| e.to_string())
    }

    fn sign(&self, domain: &str, message: &[u8]) -> Result<String, String> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let signature = match self.algorithm {
            Algorithm::Ed25519 => signature(
                Ed25519Key::from_pkcs8_der(&self.der).map_err(|e| e.to_string())?,
                domain,
                &self.selector,
                message,
            ),
            Algorithm::Rsa => signature(
                rsa_key(&self.der).map_err(|e| e.to_string())?,
                domain,
                &self.selector,
                message,
            ),
        };
        signature.map(|s| s.to_header()).map_err(|e| e.to_string())
    }
}

/// Sign `message` with `key` for `domain` and `selector`, relaxed/relaxed.
fn signature<K: SigningKey>(
    key: K,
    domain: String,
    selector: &str,
    message: &[u8],
) -> mail_auth::Result<mail_auth::dkim::Signature> {
    DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(message)
}

fn rsa_key(pkcs1_der: &[u8]) -> mail_auth::Result<RsaKey<Sha256>> {
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(pkcs1_der)))
}

/// The TXT record to publish at `<selector>._domainkey.<domain>`.
pub fn txt_record(algorithm: Algorithm, public_key: &[u8]) -> String {
    let k = match algorithm {
        Algorithm::Ed25519 => "ed25519",
        Algorithm::Rsa => "rsa",
    };
    format!(
        "v=DKIM1; k={k}; p={}",
        crate::util::base64_encode(public_key)
    )
}

/// Make a key for `domain` under `selector` in the data directory; returns
/// its path and the TXT record to publish. An existing key is kept (error).
pub fn generate(
    data_dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
) -> Result<(PathBuf, String), String> {
    use mail_auth::dkim::generate::DkimKeyPair;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !s.starts_with('.')
    };
    if !valid(&domain) || !valid(selector) {
        return Err("domain and selector may hold letters, digits, '-' and '.' only".into());
    }
    let pair = match algorithm {
        Algorithm::Ed25519 => DkimKeyPair::generate_ed25519(),
        Algorithm::Rsa => DkimKeyPair::generate_rsa(2048),
    }
    .map_err(|e| e.to_string())?;
    let d = dir(data_dir).join(&domain);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let path = d.join(format!("{selector}.{}.der", algorithm.extension()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(pair.private_key())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, txt_record(algorithm, pair.public_key())))
}

/// The public key of a stored key, as its TXT record.
pub fn record_of(key: &Key) -> Result<String, String> {
    let public = match key.algorithm {
        Algorithm::Ed25519 => Ed25519Key::from_pkcs8_der(&key.der).map(|k| k.public_key()),
        Algorithm::Rsa => rsa_key(&key.der).map(|k| k.public_key()),
    }
    .map_err(|e| e.to_string())?;
    Ok(txt_record(key.algorithm, &public))
}

/// The DNS records `domain` needs when `hostname` is its mail server, as
/// zone-file lines with comments.
pub fn dns_records(hostname: &str, domain: &str, keys: &Keys) -> Result<String, String> {
    use std::fmt::Write;
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let h = hostname.trim_end_matches('.').to_ascii_lowercase();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "; Mail for {d}, served by {h} (add A/AAAA records for {h} too)."
    );
    let _ = writeln!(o, "{d}. IN MX 10 {h}.");
    let _ = writeln!(o, "; SPF (RFC 7208): only the MX sends for the domain.");
    let _ = writeln!(o, "{d}. IN TXT \"v=spf1 mx -all\"");
    let mine = keys.for_domain(&d);
    if mine.is_empty() {
        let _ = writeln!(
            o,
            "; DKIM: no key yet; make one with `ringmail dkim generate {d}` and run this again."
        );
    } else {
        let _ = writeln!(
            o,
            "; DKIM (RFC 6376, RFC 8463): the keys ringmail signs with."
        );
        for k in mine {
            let _ = writeln!(
                o,
                "{}._domainkey.{d}. IN TXT \"{}\"",
                k.selector,
                record_of(k)?
            );
        }
    }
    let _ = writeln!(
        o,
        "; DMARC (RFC 7489): start with p=none and a report address, then quarantine or reject."
    );
    let _ = writeln!(
        o,
        "_dmarc.{d}. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@{d}\""
    );
    let _ = writeln!(
        o,
        "; MTA-STS (RFC 8461): also serve https://mta-sts.{d}/.well-known/mta-sts.txt with"
    );
    let _ = writeln!(
        o,
        ";   version: STSv1 / mode: testing / mx: {h} / max_age: 604800"
    );
    let _ = writeln!(o, "_mta-sts.{d}. IN TXT \"v=STSv1; id=1\"");
    let _ = writeln!(o, "; TLS reporting (RFC 8460).");
    let _ = writeln!(
        o,
        "_smtp._tls.{d}. IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@{d}\""
    );
    let _ = writeln!(
        o,
        "; Client configuration (RFC 6186, RFC 8314): implicit TLS first."
    );
    let _ = writeln!(o, "_submissions._tcp.{d}. IN SRV 0 1 465 {h}.");
    let _ = writeln!(o, "_submission._tcp.{d}. IN SRV 10 1 587 {h}.");
    let _ = writeln!(o, "_imaps._tcp.{d}. IN SRV 0 1 993 {h}.");
    let _ = writeln!(o, "_imap._tcp.{d}. IN SRV 10 1 143 {h}.");
    let _ = writeln!(o, "_pop3s._tcp.{d}. IN SRV 0 1 995 {h}.");
    let _ = writeln!(o, "_pop3._tcp.{d}. IN SRV 10 1 110 {h}.");
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let (path, txt) = generate(dir.path(), "Example.TEST", "s1", Algorithm::Ed25519).unwrap();
        assert!(path.ends_with("dkim/example.test/s1.ed25519.der"));
        assert!(txt.starts_with("v=DKIM1; k=ed25519; p="));
        assert!(
            generate(dir.path(), "example.test", "s1", Algorithm::Ed25519).is_err(),
            "an existing key is kept"
        );
        assert!(generate(dir.path(), "../x", "s1", Algorithm::Ed25519).is_err());
        let keys = Keys::load(dir.path()).unwrap();
        assert_eq!(keys.count(), 1);
        assert_eq!(record_of(&keys.for_domain("example.test")[0]).unwrap(), txt);
        let msg = b"From: a@example.test\r\nTo: b@far.test\r\nSubject: hi\r\n\r\nbody\r\n";
        let h = String::from_utf8(keys.sign("example.test.", msg).unwrap()).unwrap();
        assert!(h.starts_with("DKIM-Signature: "), "{h}");
        assert!(
            h.contains("a=ed25519-sha256")
                && h.contains("d=example.test")
                && h.contains("s=s1")
                && h.contains("c=relaxed/relaxed"),
            "{h}"
        );
        assert!(h.ends_with("\r\n"));
        assert!(keys.sign("other.test", msg).unwrap().is_empty());
    }
}
