//! The two ways a notice leaves: a JSON POST to a webhook, signed with
//! HMAC-SHA256 when a key is set, and mail over SMTP with STARTTLS or TLS
//! (lettre on rustls). Both trust the system's certificate authorities and,
//! when set, those of `upstream.ca_file` (an internal authority that signed
//! Jira's certificate usually signed the mail relay's too).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use sha2::Sha256;

use crate::config::{Config, SmtpTls, SmtpUrl};
use crate::secret::Secret;

/// The header that carries the webhook body's signature.
pub static X_TOKENGATE_SIGNATURE: HeaderName = HeaderName::from_static("x-tokengate-signature");

/// How long a webhook may take to answer, and a mail server each step.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the notice channels cannot be set up from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ChannelSetupError {
    #[error("[upstream] ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("[notify] webhook_url: {0}")]
    WebhookUrl(String),
    #[error("[notify] mail_from: {0:?} is not a mail address")]
    MailFrom(String),
    #[error("[notify] smtp_url_env: TLS for the mail server cannot be set up: {0}")]
    MailTls(String),
    #[error("TLS for the webhook cannot be set up: {0}")]
    WebhookTls(rustls::Error),
}

/// The certificate authorities of `upstream.ca_file`, on top of the system's.
fn extra_roots(config: &Config) -> Result<Vec<CertificateDer<'static>>, ChannelSetupError> {
    let path = &config.upstream.ca_file;
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |reason: String| ChannelSetupError::CaFile {
        path: path.clone(),
        reason,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .map(|c| c.map_err(|e| bad(e.to_string())))
        .collect()
}

/// The body of a webhook call, exactly these fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody<'a> {
    pub event: &'a str,
    pub user_key: &'a str,
    pub user_name: &'a str,
    pub token_id: u64,
    pub description: &'a str,
    pub valid_until: u64,
    pub text: &'a str,
}

/// Hex HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; not reached.
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A webhook: where, the signing key, a client.
pub struct Webhook {
    url: Uri,
    key: Option<Secret>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Webhook {
    pub fn new(config: &Config, key: Option<Secret>) -> Result<Webhook, ChannelSetupError> {
        let url: Uri = config
            .notify
            .webhook_url
            .parse()
            .map_err(|e| ChannelSetupError::WebhookUrl(format!("{e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        for cert in extra_roots(config)? {
            roots.add(cert).map_err(|e| ChannelSetupError::CaFile {
                path: config.upstream.ca_file.clone(),
                reason: e.to_string(),
            })?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(ChannelSetupError::WebhookTls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(WEBHOOK_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Webhook {
            url,
            key,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// POSTs `body`; Ok for a 2xx answer. The error says what went wrong
    /// without the body.
    pub async fn send(&self, body: &WebhookBody<'_>) -> Result<(), String> {
        let json = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.key {
            let sig = signature(key.expose().as_bytes(), &json);
            req = req.header(
                &X_TOKENGATE_SIGNATURE,
                HeaderValue::from_str(&sig).map_err(|e| e.to_string())?,
            );
        }
        let req = req
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| e.to_string())?;
        let status = tokio::time::timeout(WEBHOOK_TIMEOUT, async {
            let resp = self.client.request(req).await.map_err(|e| {
                let source = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                format!("{e}{source}")
            })?;
            let status = resp.status();
            // Read (and drop) the answer, so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok::<_, String>(status)
        })
        .await
        .map_err(|_| format!("no answer within {} s", WEBHOOK_TIMEOUT.as_secs()))??;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {status}"))
        }
    }
}

/// Mail: the server, the sender.
pub struct Mail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mail {
    pub fn new(config: &Config, url: &SmtpUrl) -> Result<Mail, ChannelSetupError> {
        let from: Mailbox = config
            .notify
            .mail_from
            .parse()
            .map_err(|_| ChannelSetupError::MailFrom(config.notify.mail_from.clone()))?;
        let mut tls = TlsParameters::builder(url.host.clone());
        for cert in extra_roots(config)? {
            let cert = Certificate::from_der(cert.to_vec())
                .map_err(|e| ChannelSetupError::MailTls(e.to_string()))?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| ChannelSetupError::MailTls(e.to_string()))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.clone())
            .port(url.port)
            .timeout(Some(SMTP_TIMEOUT))
            .tls(match url.tls {
                SmtpTls::StartTls => Tls::Required(tls),
                SmtpTls::Implicit => Tls::Wrapper(tls),
            });
        if let Some(user) = &url.user {
            let password = url
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mail {
            transport: builder.build(),
            from,
        })
    }

    /// Sends `text` to `to`. The error is the server's or the connection's,
    /// never the credentials.
    pub async fn send(&self, to: &str, subject: &str, text: &str) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| "the owner's address is not a mail address".to_string())?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(text.to_string())
            .map_err(|e| e.to_string())?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hex_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
