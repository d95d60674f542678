//! TLS client side (rustls on the ring provider, through tokio-rustls).
//!
//! One [`TlsCtx`] is built per run from the `--tls*` options: a single
//! `rustls::ClientConfig`, shared by every connection, so its in-memory
//! session cache lets reconnects resume (TLS 1.3 tickets, TLS 1.2 session
//! ids or tickets) unless `--tls-resume off`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::cli::{OnOff, TlsArgs};

/// When TLS starts on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// From the first byte (submissions, IMAPS, POP3S).
    Implicit,
    /// After SMTP/IMAP `STARTTLS` or POP3 `STLS` on a plain connection.
    StartTls,
}

impl TlsMode {
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit",
            TlsMode::StartTls => "starttls",
        }
    }
}

/// Everything a connection needs to run a TLS handshake.
pub struct TlsCtx {
    pub mode: TlsMode,
    /// `--tls-server-name`; otherwise the host part of each target.
    pub server_name: Option<ServerName<'static>>,
    /// Tokio connector on the run's one `ClientConfig` (and its session cache).
    pub connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCtx")
            .field("mode", &self.mode)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
pub fn host_of(target: &str) -> &str {
    if let Some(rest) = target.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return &rest[..end];
        }
    }
    match target.rsplit_once(':') {
        // a bare IPv6 address has more than one colon
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => target,
    }
}

fn parse_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("{name:?} is neither a DNS name nor an IP address"))
}

impl TlsCtx {
    /// Build from the command line; `None` when neither `--tls` nor
    /// `--starttls` is given (the other TLS options are then refused).
    pub fn from_args(a: &TlsArgs) -> Result<Option<Arc<TlsCtx>>, String> {
        let mode = match (a.tls, a.starttls) {
            (true, false) => TlsMode::Implicit,
            (false, true) => TlsMode::StartTls,
            (true, true) => return Err("--tls and --starttls exclude each other".into()),
            (false, false) => {
                if a.tls_ca.is_some() || a.tls_insecure || a.tls_server_name.is_some() {
                    return Err(
                        "--tls-ca, --tls-insecure and --tls-server-name need --tls or --starttls"
                            .into(),
                    );
                }
                return Ok(None);
            }
        };
        if a.tls_insecure && a.tls_ca.is_some() {
            return Err("--tls-insecure and --tls-ca exclude each other".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let mut config = if a.tls_insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let roots = match &a.tls_ca {
                Some(p) => roots_from_file(p)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        if a.tls_resume == OnOff::Off {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let server_name = a.tls_server_name.as_deref().map(parse_name).transpose()?;
        let config = Arc::new(config);
        Ok(Some(Arc::new(TlsCtx {
            mode,
            connector: tokio_rustls::TlsConnector::from(config),
            server_name,
        })))
    }

    /// The name sent in SNI and checked against the certificate.
    pub fn name_for(&self, target: &str) -> io::Result<ServerName<'static>> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => parse_name(host_of(target)).map_err(crate::conn::protocol_error),
        }
    }
}

/// Trust anchors from a PEM file (`--tls-ca`).
pub fn roots_from_file(path: &Path) -> Result<RootCertStore, String> {
    let err = |e: &dyn std::fmt::Display| format!("--tls-ca {}: {e}", path.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&e))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(err(&"no usable certificate in the file"));
    }
    Ok(roots)
}

/// The system's trust anchors (rustls-native-certs: on Linux the OpenSSL
/// locations, `/etc/ssl/certs` and `SSL_CERT_FILE` / `SSL_CERT_DIR`).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(format!(
            "no system CA certificates found ({}); give --tls-ca FILE or --tls-insecure",
            if why.is_empty() {
                "none installed".to_string()
            } else {
                why.join("; ")
            }
        ));
    }
    Ok(roots)
}

/// `--tls-insecure`: any certificate is taken, for self-signed lab servers.
/// The handshake's signatures are still checked by the provider, so the
/// session keys belong to whoever holds the presented certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> TlsArgs {
        TlsArgs {
            tls: false,
            starttls: false,
            tls_ca: None,
            tls_insecure: false,
            tls_server_name: None,
            tls_resume: OnOff::On,
        }
    }

    #[test]
    fn host_part_of_targets() {
        assert_eq!(host_of("127.0.0.1:2525"), "127.0.0.1");
        assert_eq!(host_of("mail.example.test:465"), "mail.example.test");
        assert_eq!(host_of("[::1]:993"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn options_are_checked() {
        assert!(TlsCtx::from_args(&args()).unwrap().is_none());
        let mut a = args();
        a.tls_insecure = true;
        assert!(TlsCtx::from_args(&a).is_err(), "insecure without a mode");
        a.starttls = true;
        let c = TlsCtx::from_args(&a).unwrap().unwrap();
        assert_eq!(c.mode, TlsMode::StartTls);
        assert_eq!(
            c.name_for("127.0.0.1:1430").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        a.tls = true;
        assert!(TlsCtx::from_args(&a).is_err(), "both modes");
        a.starttls = false;
        a.tls_server_name = Some("mail.example.test".into());
        a.tls_resume = OnOff::Off;
        let c = TlsCtx::from_args(&a).unwrap().unwrap();
        assert_eq!(c.mode, TlsMode::Implicit);
        assert_eq!(
            c.name_for("127.0.0.1:9930").unwrap(),
            ServerName::try_from("mail.example.test").unwrap()
        );
        a.tls_server_name = Some("not a name".into());
        assert!(TlsCtx::from_args(&a).is_err());
    }

    #[test]
    fn ca_file_is_read() {
        let dir = std::env::temp_dir().join(format!("loadgen-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, cert.cert.pem()).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        assert_eq!(roots_from_file(&good).unwrap().len(), 1);
        assert!(roots_from_file(&empty).is_err());
        assert!(roots_from_file(&dir.join("missing.pem")).is_err());
        let mut a = args();
        a.tls = true;
        a.tls_ca = Some(good.clone());
        assert!(TlsCtx::from_args(&a).unwrap().is_some());
        a.tls_insecure = true;
        assert!(
            TlsCtx::from_args(&a).is_err(),
            "--tls-ca with --tls-insecure"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
