//! Reaching the database: the URL, TLS as its `sslmode` asks, and what every
//! connection gets (timeouts, keepalives, an application name).
//!
//! `sslmode` as libpq reads it:
//! - `disable`: no TLS;
//! - `prefer` (the default), `require`: TLS (`prefer`: when the server offers
//!   it), the certificate **not** verified, as libpq does without a root
//!   certificate: it protects against eavesdropping, not against a server
//!   that is not the one intended;
//! - `verify-ca`: TLS required, the certificate chain verified against
//!   `ca_file` (or the system's roots), the host name not checked;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.
//!
//! As with libpq, `require` with a `ca_file` verifies like `verify-ca`.
//! tokio-postgres knows only the first three; the `verify-*` modes are taken
//! out of the URL here and become "TLS required" with a verifying TLS setup.
//!
//! The URL holds the password: no message here ever shows it, nor the
//! `tokio_postgres::Config` parsed from it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio_postgres::Socket;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PostgresSettings;
use crate::store::StoreError;

/// The application name of pool connections (`pg_stat_activity`).
pub(super) const POOL_NAME: &str = "tokengate";
/// The application name of the connection that listens for changes.
pub(super) const LISTEN_NAME: &str = "tokengate-listen";
/// The application name of the connection that migrates the schema.
pub(super) const MIGRATE_NAME: &str = "tokengate-migrate";

/// Server-side limits of every statement on pool connections.
const REQUEST_LIMITS: &str = "-c statement_timeout=15000 -c lock_timeout=10000";
const NO_LIMITS: &str = "-c statement_timeout=0 -c lock_timeout=0";

/// Per socket-level attempt, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection of our own, to be polled by its owner.
pub(super) type Connection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// How certificates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Any certificate (`prefer`, `require`).
    Nothing,
    /// The chain up to a trusted root (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// Where and how to connect; cheap to clone.
#[derive(Clone)]
pub(super) struct Target {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Target([REDACTED])")
    }
}

impl Target {
    pub(super) fn new(settings: &PostgresSettings) -> Result<Target, StoreError> {
        let (url, verify) = take_verify_mode(&settings.url);
        let mut config = tokio_postgres::Config::from_str(&url).map_err(|e| invalid_url(&e))?;
        let verify = match verify {
            Some(v) => {
                config.ssl_mode(SslMode::Require);
                v
            }
            None if config.get_ssl_mode() == SslMode::Require && settings.ca_file.is_some() => {
                Verify::Chain
            }
            None => Verify::Nothing,
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A server that went away without a word (a crash, a dropped
        // route) is noticed within about half a minute on an idle
        // connection, and unacknowledged writes give up after 15 s.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(15));
        }
        config.application_name(POOL_NAME);
        // A request never waits on the database without end, also not for
        // a lock some other session holds: it fails with 503 instead. The
        // URL's own `options` win.
        if config.get_options().is_none() {
            config.options(REQUEST_LIMITS);
        }
        let tls = MakeRustlsConnect::new(tls_config(verify, settings.ca_file.as_deref())?);
        Ok(Target { config, tls })
    }

    /// The configuration for pool connections.
    pub(super) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub(super) fn tls(&self) -> &MakeRustlsConnect {
        &self.tls
    }

    /// The same target under another application name.
    pub(super) fn named(&self, application_name: &str) -> Target {
        let mut named = self.clone();
        named.config.application_name(application_name);
        named
    }

    /// The same target without the time limits of requests (migrations may
    /// take long on a big table, and wait for the advisory lock).
    pub(super) fn unlimited(&self) -> Target {
        let mut unlimited = self.clone();
        if unlimited.config.get_options() == Some(REQUEST_LIMITS) {
            unlimited.config.options(NO_LIMITS);
        }
        unlimited
    }

    /// A connection of its own (not from the pool).
    pub(super) async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// The message for a URL that does not parse. The parser's reason is kept
/// only when it names an option ("invalid value for option `port`"): other
/// reasons may quote a piece of the URL, and that piece may be the password.
fn invalid_url(e: &tokio_postgres::Error) -> StoreError {
    let reason = std::error::Error::source(e)
        .map(|s| s.to_string())
        .filter(|s| s.starts_with("invalid value for option `"));
    StoreError::Unavailable(match reason {
        Some(reason) => format!("the PostgreSQL URL is not valid: {reason}"),
        None => "the PostgreSQL URL is not valid (not shown: it may hold a password); \
                 expected postgres://user:password@host:5432/database?sslmode=verify-full"
            .to_string(),
    })
}

/// Takes `sslmode=verify-ca` or `sslmode=verify-full` out of a connection
/// string, a URL (`postgres://…?sslmode=verify-full`) or key=value pairs
/// (`host=db sslmode=verify-full`), for tokio-postgres, which does not know
/// them. The last `sslmode` counts, as in libpq.
fn take_verify_mode(url: &str) -> (String, Option<Verify>) {
    fn mode(param: &str) -> Option<Option<Verify>> {
        match param.strip_prefix("sslmode=")? {
            "verify-ca" => Some(Some(Verify::Chain)),
            "verify-full" => Some(Some(Verify::Full)),
            _ => Some(None),
        }
    }
    let mut verify = None;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None);
        };
        let mut kept = Vec::new();
        for param in query.split('&') {
            match mode(param) {
                Some(Some(v)) => verify = Some(v),
                Some(None) => {
                    verify = None;
                    kept.push(param);
                }
                None => kept.push(param),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (url, verify);
    }
    // key=value pairs: the words are cut out where they stand, so that the
    // rest (a quoted password with spaces) stays as it was.
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while !rest.is_empty() {
        let start = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        match mode(word) {
            Some(Some(v)) => verify = Some(v),
            Some(None) => {
                verify = None;
                out.push_str(word);
            }
            None => out.push_str(word),
        }
        rest = &rest[end..];
    }
    (out, verify)
}

fn tls_error(e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL TLS set-up failed: {e}"))
}

fn tls_config(verify: Verify, ca_file: Option<&Path>) -> Result<rustls::ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?;
    Ok(match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostName {
                roots: None,
                provider,
            }))
            .with_no_client_auth(),
        Verify::Chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostName {
                roots: Some(Arc::new(roots(ca_file)?)),
                provider,
            }))
            .with_no_client_auth(),
        Verify::Full => builder
            .with_root_certificates(roots(ca_file)?)
            .with_no_client_auth(),
    })
}

/// The roots a server certificate must lead to: `ca_file`, else the system's.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |e: &dyn fmt::Display| {
                StoreError::Unavailable(format!("the PostgreSQL CA file {}: {e}", path.display()))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no certificate in it"));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(StoreError::Unavailable(
                    "no system CA certificates found to verify the PostgreSQL server; set ca_file"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// The verifier of the modes that do not check the host name.
/// - `prefer` and `require` (`roots: None`): any certificate is taken (libpq
///   without a root certificate does the same);
/// - `verify-ca` (`roots: Some`): the chain must lead to a trusted root; the
///   name in the certificate is not compared with the host.
///
/// The handshake signatures are always checked, so the server holds the key
/// of the certificate it shows.
#[derive(Debug)]
struct NoHostName {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_are_taken_out_of_urls() {
        let (url, v) = take_verify_mode("postgres://u:p@db:5432/tg?sslmode=verify-full");
        assert_eq!(
            (url.as_str(), v),
            ("postgres://u:p@db:5432/tg", Some(Verify::Full))
        );
        let (url, v) =
            take_verify_mode("postgresql://db/tg?application_name=x&sslmode=verify-ca&port=5433");
        assert_eq!(
            (url.as_str(), v),
            (
                "postgresql://db/tg?application_name=x&port=5433",
                Some(Verify::Chain)
            )
        );
        let (url, v) = take_verify_mode("postgres://db/tg?sslmode=verify-full&sslmode=require");
        assert_eq!(
            (url.as_str(), v),
            ("postgres://db/tg?sslmode=require", None),
            "the last counts"
        );
        let (url, v) = take_verify_mode("postgres://db/tg?sslmode=disable");
        assert_eq!(
            (url.as_str(), v),
            ("postgres://db/tg?sslmode=disable", None)
        );
        let (url, v) = take_verify_mode("host=db  password='a  b' sslmode=verify-full dbname=tg");
        assert_eq!(
            (url.as_str(), v),
            ("host=db  password='a  b'  dbname=tg", Some(Verify::Full))
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let settings = |url: &str| PostgresSettings {
            url: url.to_string(),
            ca_file: None,
            pool_size: 2,
        };
        for url in [
            "postgres://u:s3cret@db:notaport/tg",
            "host=db password=s3cret nonsense",
            "postgres://u:s3cret@db/tg?sslmode=sometimes",
            "postgres://u:s3cret@[nonsense",
        ] {
            let e = settings(url).check().unwrap_err().to_string();
            assert!(e.contains("URL is not valid"), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e = Target::new(&settings("postgres://db/tg?sslmode=sometimes"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode"), "{e}");
    }

    #[test]
    fn require_with_a_ca_file_verifies_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let settings = PostgresSettings {
            url: "postgres://db/tg?sslmode=require".into(),
            ca_file: Some(missing),
            pool_size: 2,
        };
        let e = Target::new(&settings).unwrap_err().to_string();
        assert!(e.contains("CA file"), "the file is read: {e}");
        let plain = PostgresSettings {
            ca_file: None,
            ..settings
        };
        assert!(Target::new(&plain).is_ok(), "no verification without one");
    }

    fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    fn roots_of(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        Arc::new(roots)
    }

    #[test]
    fn verify_ca_checks_the_chain_but_not_the_name() {
        let (ours, theirs) = (ca("tokengate test CA"), ca("someone else"));
        let cert = rcgen::CertificateParams::new(vec!["db.example".to_string()])
            .unwrap()
            .signed_by(&rcgen::KeyPair::generate().unwrap(), &ours)
            .unwrap()
            .der()
            .clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let elsewhere = ServerName::try_from("elsewhere.example").unwrap();
        let now = UnixTime::now();
        let chain_only = NoHostName {
            roots: Some(roots_of(&ours)),
            provider: provider.clone(),
        };
        assert!(
            chain_only
                .verify_server_cert(&cert, &[], &elsewhere, &[], now)
                .is_ok()
        );
        let stranger = NoHostName {
            roots: Some(roots_of(&theirs)),
            provider: provider.clone(),
        };
        assert!(
            stranger
                .verify_server_cert(&cert, &[], &elsewhere, &[], now)
                .is_err()
        );
        // verify-full (rustls' own verifier) wants the name as well.
        let full =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots_of(&ours), provider)
                .build()
                .unwrap();
        assert!(
            full.verify_server_cert(&cert, &[], &elsewhere, &[], now)
                .is_err()
        );
        let named = ServerName::try_from("db.example").unwrap();
        assert!(
            full.verify_server_cert(&cert, &[], &named, &[], now)
                .is_ok()
        );
    }
}
