//! Upstream faults beyond a refused connection (502) and a black hole (504),
//! which tests/proxy.rs covers: a connection reset in the middle of a
//! response body (HTTP/1.1 with Content-Length, chunked, and HTTP/2 from the
//! client), an upstream 401 to the credentials swapped in for a token, and a
//! CAPTCHA 403 to a password on the proxy path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::Duration;

use common::{Gateway, JiraSetup, gateway_for, http2_client};
use tokengate::demo::sim::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---- log capture -----------------------------------------------------------------

/// Every log line of this test binary, kept (and scanned for secrets, as the
/// shared harness does, aborting when one holds a token or password).
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf).into_owned();
        if let Some(what) = common::secrets::find_secret(&line) {
            eprintln!("a log line holds {what}");
            std::process::abort();
        }
        LINES.lock().unwrap().push(line);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every test calls this first, so that the capture, not the shared
/// harness's scanner, is the binary's subscriber.
fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Capture)
            .init();
    });
}

fn logged(needle: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

// ---- an upstream that breaks off its answers -------------------------------------

/// How the upstream answers `GET /cut`: a 1 MB body announced, 100 kB sent,
/// then a TCP reset. Every other request gets a small complete answer.
#[derive(Clone, Copy)]
enum Framing {
    ContentLength,
    Chunked,
}

const ANNOUNCED: usize = 1_000_000;
const SENT: usize = 100_000;

async fn cutting_upstream(framing: Framing) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve_cutting(s, framing));
        }
    });
    addr
}

async fn serve_cutting(mut s: TcpStream, framing: Framing) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request head at a time (the gateway sends no bodies here).
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head: Vec<u8> = buf.drain(..head_end).collect();
        if !head.starts_with(b"GET /cut ") {
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if s.write_all(ok).await.is_err() {
                return;
            }
            continue;
        }
        let body = vec![b'x'; SENT];
        let out = match framing {
            Framing::ContentLength => {
                let mut out =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {ANNOUNCED}\r\n\r\n").into_bytes();
                out.extend_from_slice(&body);
                out
            }
            Framing::Chunked => {
                let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for piece in body.chunks(10_000) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out
            }
        };
        let _ = s.write_all(&out).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A reset, not a clean close: linger 0, then drop.
        let _ = s.set_zero_linger();
        return;
    }
}

async fn gateway_to(addr: SocketAddr) -> (tokengate::Running, tempfile::TempDir) {
    capture_logs();
    gateway_for(&format!("http://{addr}"), |c| {
        c.server.admin_listen = "127.0.0.1:0".into();
        c.server.h2c = true;
    })
    .await
}

/// Sends `GET /cut` on a raw connection; returns the response head and the
/// body bytes received until the gateway closed the connection.
async fn raw_cut(gw: SocketAddr) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(gw).await.unwrap();
    // Keep-alive: a complete response would leave the connection open.
    s.write_all(b"GET /cut HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await;
    assert!(
        read.is_ok(),
        "the gateway kept the connection of a broken response open"
    );
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    (
        String::from_utf8_lossy(&all[..end]).into_owned(),
        all[end..].to_vec(),
    )
}

#[tokio::test]
async fn an_upstream_reset_mid_body_leaves_a_content_length_shortfall_and_a_closed_connection() {
    let up = cutting_upstream(Framing::ContentLength).await;
    let (gw, _dir) = gateway_to(up).await;
    let (head, body) = raw_cut(gw.addr()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {ANNOUNCED}")),
        "{head}"
    );
    assert!(
        body.len() < ANNOUNCED,
        "{} of {ANNOUNCED} bytes",
        body.len()
    );
    // An HTTP client sees an error, never a complete-looking answer.
    let resp = gw.anonymous().fetch("/cut").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());
    // The gateway still serves.
    let ok = gw.anonymous().fetch("/other").await;
    assert_eq!(ok.text().await.unwrap(), "ok");
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_reset_mid_chunked_body_never_sends_the_last_chunk() {
    let up = cutting_upstream(Framing::Chunked).await;
    let (gw, _dir) = gateway_to(up).await;
    let (head, body) = raw_cut(gw.addr()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    // Some data came through, but not the terminating zero-length chunk.
    assert!(body.len() > 1000, "{} bytes", body.len());
    assert!(!body.ends_with(b"0\r\n\r\n"), "the stream looks complete");
    let resp = gw.anonymous().fetch("/cut").await;
    assert!(resp.bytes().await.is_err());
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_reset_mid_body_resets_only_that_http2_stream() {
    let up = cutting_upstream(Framing::ContentLength).await;
    let (gw, _dir) = gateway_to(up).await;
    let h2 = gw.anonymous().over(http2_client());
    let resp = h2.fetch("/cut").await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "a complete-looking body");
    // The same client (one HTTP/2 connection) goes on working.
    let ok = h2.fetch("/other").await;
    assert_eq!(ok.version(), http::Version::HTTP_2);
    assert_eq!(ok.text().await.unwrap(), "ok");
    gw.stop().await;
}

// ---- the upstream refuses what the gateway swapped in -----------------------------

async fn metric(s: &JiraSetup, name: &str) -> f64 {
    let text = s.metrics_text().await;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const CREDENTIALS_REJECTED: &str = "tokengate_upstream_errors_total{kind=\"credentials_rejected\"}";

#[tokio::test]
async fn an_upstream_401_to_swapped_in_credentials_is_passed_on_logged_and_counted() {
    capture_logs();
    // The gateway sends the wrong shared secret: the upstream trusts no identity header.
    let s = JiraSetup::jira_with(|c| {
        c.server.admin_listen = "127.0.0.1:0".into();
        c.upstream.credentials.secret_env = "LOOKUP_PW".into();
    })
    .await;
    let token = s.token_for("alice").await;
    assert_eq!(metric(&s, CREDENTIALS_REJECTED).await, 0.0);
    for round in 1..=2 {
        let resp = s.with_token(&token).myself().await;
        // The upstream's own 401, passed on (the gateway's 401 has its own body).
        assert_eq!(resp.status(), 401);
        // Not a failure of the token: every request is forwarded and counted.
        assert_eq!(metric(&s, CREDENTIALS_REJECTED).await, f64::from(round));
    }
    let lines = logged("swapped-in credentials");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("ERROR") && l.contains("[upstream.credentials]"))
    );
    // Only the swapped-in credentials fail: a password goes through to the same upstream.
    assert_eq!(s.as_user("alice", "alice").myself().await.status(), 200);
}

// ---- CAPTCHA on the proxy path -----------------------------------------------------

/// Decision: a CAPTCHA 403 is the upstream refusing to check the password at
/// all, so it is not a failed attempt for the gateway's lockout (counting it
/// would lock users out for Jira's own defence) and not a success either.
#[tokio::test]
async fn an_upstream_captcha_on_the_proxy_path_is_passed_on_and_not_counted_as_a_failure() {
    capture_logs();
    let mut sim = SimConfig::jira();
    sim.captcha_after = Some(2);
    let s = JiraSetup::with(sim, |c| {
        c.server.admin_listen = "127.0.0.1:0".into();
        c.auth.max_failed_attempts = 3;
    })
    .await;
    let myself = |password: &'static str| {
        let alice = s.as_user("alice", password);
        async move { alice.myself().await }
    };
    // Two wrong passwords: two failures for the gateway, and the upstream wants a CAPTCHA.
    for _ in 0..2 {
        assert_eq!(myself("wrong").await.status(), 401);
    }
    // Three answers of the upstream's CAPTCHA. Counted as failures, the first
    // would lock alice out and the next would be the gateway's own lockout.
    for _ in 0..3 {
        let resp = myself("alice").await;
        assert_eq!(resp.status(), 403);
        let reason = resp.headers()["x-authentication-denied-reason"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(reason.starts_with("CAPTCHA_CHALLENGE"), "{reason}");
    }
    let locked = metric(&s, "tokengate_lockouts_total").await;
    assert_eq!(locked, 0.0);
}
