//! A small SMTP server for the notice tests, written here (no SMTP server
//! crate fits: they are clients, or run on their own event loop with their
//! own TLS). It speaks what a mail relay speaks to tokengate: EHLO, STARTTLS
//! (or TLS from the first byte), AUTH PLAIN and LOGIN, MAIL, RCPT, DATA,
//! RSET, QUIT; it checks the login, keeps every message, and can refuse the
//! next DATA commands with a 451, as a relay that is briefly unwell does.
//! Its certificate is self-signed for 127.0.0.1 and localhost; `ca_pem`
//! is what a client must trust.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A message as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent, CRLF line ends.
    pub data: String,
    /// Whether it came over TLS.
    pub tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTlsMode {
    StartTls,
    Implicit,
}

struct Shared {
    mode: SmtpTlsMode,
    user: String,
    password: String,
    mails: Mutex<Vec<Received>>,
    /// DATA commands still to refuse with 451.
    refuse: AtomicU32,
    /// DATA commands refused so far.
    refused: AtomicU32,
    tls: TlsAcceptor,
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    /// The certificate to trust, PEM.
    pub ca_pem: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SmtpServer {
    /// Listens on 127.0.0.1; logins must be `user`/`password`.
    pub async fn start(mode: SmtpTlsMode, user: &str, password: &str) -> SmtpServer {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode,
            user: user.into(),
            password: password.into(),
            mails: Mutex::new(Vec::new()),
            refuse: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            tls: TlsAcceptor::from(Arc::new(tls)),
        });
        let stop = CancellationToken::new();
        let (s, st) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = st.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let s = s.clone();
                tokio::spawn(async move {
                    match s.mode {
                        SmtpTlsMode::Implicit => {
                            if let Ok(tls) = s.tls.accept(stream).await {
                                dialog(tls, true, true, &s).await;
                            }
                        }
                        SmtpTlsMode::StartTls => {
                            if let Some(plain) = dialog(stream, false, true, &s).await
                                && let Ok(tls) = s.tls.accept(plain).await
                            {
                                dialog(tls, true, false, &s).await;
                            }
                        }
                    }
                });
            }
        });
        SmtpServer {
            addr,
            ca_pem: cert.pem(),
            shared,
            stop,
        }
    }

    /// Refuse the next `n` DATA commands with 451.
    pub fn refuse_next(&self, n: u32) {
        self.shared.refuse.store(n, Ordering::SeqCst);
    }

    pub fn refused(&self) -> u32 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    pub fn mails(&self) -> Vec<Received> {
        self.shared.mails.lock().unwrap().clone()
    }
}

/// One SMTP conversation on `stream`. Returns the stream when the client
/// asked for STARTTLS (the caller then shakes hands and talks on).
async fn dialog<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tls: bool,
    greet: bool,
    s: &Shared,
) -> Option<S> {
    let mut io = BufReader::new(stream);
    macro_rules! say {
        ($text:expr) => {
            if io.get_mut().write_all($text.as_bytes()).await.is_err() {
                return None;
            }
        };
    }
    if greet {
        say!("220 test.invalid ESMTP ready\r\n");
    }
    let (mut authed, mut from, mut to) = (false, String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if !tls && s.mode == SmtpTlsMode::StartTls {
                say!("250-test.invalid\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
            } else {
                say!("250-test.invalid\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n");
            }
        } else if upper == "STARTTLS" && !tls {
            say!("220 go ahead\r\n");
            return Some(io.into_inner());
        } else if let Some(initial) = upper.strip_prefix("AUTH PLAIN").map(|_| &command[10..]) {
            let initial = initial.trim();
            let encoded = if initial.is_empty() {
                say!("334 \r\n");
                line.clear();
                io.read_line(&mut line).await.ok()?;
                line.trim().to_string()
            } else {
                initial.to_string()
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_default();
            let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
            authed = parts.len() == 3
                && parts[1] == s.user.as_bytes()
                && parts[2] == s.password.as_bytes();
            say!(if authed {
                "235 2.7.0 accepted\r\n"
            } else {
                "535 5.7.8 bad credentials\r\n"
            });
        } else if upper.starts_with("AUTH LOGIN") {
            let mut answers = Vec::new();
            for prompt in ["334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n"] {
                say!(prompt);
                line.clear();
                io.read_line(&mut line).await.ok()?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(line.trim())
                    .unwrap_or_default();
                answers.push(String::from_utf8_lossy(&decoded).into_owned());
            }
            authed = answers == [s.user.clone(), s.password.clone()];
            say!(if authed {
                "235 2.7.0 accepted\r\n"
            } else {
                "535 5.7.8 bad credentials\r\n"
            });
        } else if upper.starts_with("MAIL FROM:") {
            if !authed || !tls {
                say!("530 5.7.0 authentication required\r\n");
                continue;
            }
            from = command[10..].trim().trim_matches(['<', '>']).to_string();
            to.clear();
            say!("250 ok\r\n");
        } else if upper.starts_with("RCPT TO:") {
            to.push(command[8..].trim().trim_matches(['<', '>']).to_string());
            say!("250 ok\r\n");
        } else if upper == "DATA" {
            if s.refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                s.refused.fetch_add(1, Ordering::SeqCst);
                say!("451 4.3.0 try again later\r\n");
                continue;
            }
            say!("354 go on\r\n");
            let mut data = String::new();
            loop {
                line.clear();
                if io.read_line(&mut line).await.ok()? == 0 {
                    return None;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            s.mails.lock().unwrap().push(Received {
                from: from.clone(),
                to: to.clone(),
                data,
                tls,
            });
            say!("250 2.0.0 queued\r\n");
        } else if upper == "RSET" || upper == "NOOP" {
            say!("250 ok\r\n");
        } else if upper == "QUIT" {
            say!("221 bye\r\n");
            return None;
        } else {
            say!("500 unknown command\r\n");
        }
    }
}
