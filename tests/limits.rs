//! Limits against slow and greedy clients: a stalled request body (proxy path
//! and management API), a client that never reads its response, a request
//! with too many header fields, and `server.max_connections`.
//!
//! Covered elsewhere: an oversized head (431), a slow head and idle keep-alive
//! (tests/proxy.rs), an oversized API body (413, tests/api.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use tokengate::Running;
use tokengate::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A plain GET through the gateway answers 200, quickly.
async fn others_are_served(gw: &Running) {
    let started = Instant::now();
    let resp = gw
        .anonymous()
        .request(Method::GET, "/echo")
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .expect("another client is served");
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---- slow request body -----------------------------------------------------------

#[tokio::test]
async fn a_request_body_that_stalls_for_the_header_timeout_is_answered_408_and_closed() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| c.server.header_read_timeout_ms = 500).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    // While this body stalls, the gateway serves others.
    others_are_served(&gw).await;
    let head = read_head(&mut s, Duration::from_secs(5))
        .await
        .expect("an answer to the stalled request");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
    // Then the connection is closed: its body can never be completed.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection stays open after the 408");
    // The upstream saw the request cut short, never a complete 100-byte body.
    assert!(upstream.seen().iter().all(|seen| seen.body_len < 100));
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_body_that_keeps_moving_is_not_cut_off() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| {
        c.server.header_read_timeout_ms = 500;
        // The pause rule alone: 50 bytes a second is below the default minimum rate.
        c.server.min_body_bytes_per_second = 0;
    })
    .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    // 10 pieces 200 ms apart: 2 s in all, four times the allowed gap, no gap too long.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"0123456789").await.unwrap();
    }
    let head = read_head(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(upstream.last().body_len, 100);
    gw.stop().await;
}

/// `response_timeout_ms` runs from the body's last movement: an upload that
/// keeps moving is forwarded whole however long it takes (large attachments
/// from slow links must pass).
#[tokio::test]
async fn an_upload_that_keeps_moving_outlasts_the_response_timeout() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| {
        c.server.header_read_timeout_ms = 500;
        c.server.min_body_bytes_per_second = 0;
        c.upstream.response_timeout_ms = 1_000;
    })
    .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b"01234").await.is_err() {
                break;
            }
        }
        s
    });
    let mut s = sender.await.unwrap();
    let head = read_head(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        started.elapsed() >= Duration::from_millis(3_500),
        "4 s of body, twice the limit"
    );
    assert_eq!(upstream.last().body_len, 100);
    gw.stop().await;
}

/// An upstream that stops reading a request body is cut off after
/// `response_timeout_ms` without progress: 504, never a hang.
#[tokio::test]
async fn an_upstream_that_stops_reading_the_body_is_a_504_after_the_response_timeout() {
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    // Accepts and keeps the connections, reads nothing.
    let keeper = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            kept.push(c);
        }
    });
    let (gw, _dir) = gateway_for(&format!("http://{hole_addr}"), |c| {
        c.upstream.response_timeout_ms = 1_000;
    })
    .await;
    let total: usize = 256 * 1024 * 1024;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 4096 {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            other => panic!("no answer: {other:?}"),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    writer.abort();
    keeper.abort();
    gw.stop().await;
}

#[tokio::test]
async fn a_management_api_body_that_stalls_is_answered_408() {
    let s = JiraSetup::jira_with(|c| c.server.header_read_timeout_ms = 500).await;
    let mut conn = TcpStream::connect(s.gw.addr()).await.unwrap();
    // alice:alice
    conn.write_all(
        b"POST /rest/de.resolution.apitokenauth/latest/user/token HTTP/1.1\r\nHost: h\r\n\
          Authorization: Basic YWxpY2U6YWxpY2U=\r\nContent-Type: application/json\r\n\
          Content-Length: 200\r\n\r\n{\"tokenDescr",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let head = read_head(&mut conn, Duration::from_secs(5))
        .await
        .expect("an answer to the stalled request");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // No token was created for alice.
    let (status, body) = s.as_user("alice", "alice").get("/user/token").await;
    assert_eq!(status, 200);
    assert!(body.as_array().is_some_and(|a| a.is_empty()), "{body}");
}

// ---- slow read -------------------------------------------------------------------

/// An upstream that answers `GET /big` with a 1 GiB body, written as
/// fast as the gateway takes it; counts the bytes its sockets accepted and
/// notes when a write fails (the gateway dropped the connection).
struct FloodUpstream {
    addr: SocketAddr,
    sent: Arc<AtomicU64>,
    dropped: Arc<AtomicBool>,
}

const FLOOD_BYTES: u64 = 1 << 30;

impl FloodUpstream {
    async fn start() -> FloodUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let (counter, flag) = (sent.clone(), dropped.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let (counter, flag) = (counter.clone(), flag.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    // Only /big floods: the gateway's readiness probes and the
                    // requests of other clients get a small answer.
                    if head.starts_with(b"GET /count ") {
                        // The number of header fields that arrived.
                        let text = String::from_utf8_lossy(&head);
                        let fields = text
                            .split("\r\n")
                            .skip(1)
                            .take_while(|l| !l.is_empty())
                            .count()
                            .to_string();
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{fields}",
                            fields.len()
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                        return;
                    }
                    if !head.starts_with(b"GET /big ") {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                            .await;
                        return;
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {FLOOD_BYTES}\r\n\r\n"
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut left = FLOOD_BYTES;
                    while left > 0 {
                        let n = left.min(chunk.len() as u64) as usize;
                        match s.write(&chunk[..n]).await {
                            Ok(0) | Err(_) => {
                                flag.store(true, Ordering::SeqCst);
                                return;
                            }
                            Ok(w) => {
                                counter.fetch_add(w as u64, Ordering::SeqCst);
                                left -= w as u64;
                            }
                        }
                    }
                });
            }
        });
        FloodUpstream {
            addr,
            sent,
            dropped,
        }
    }
}

#[tokio::test]
async fn a_client_that_never_reads_a_large_response_holds_bounded_memory_and_is_dropped() {
    let flood = FloodUpstream::start().await;
    let (gw, _dir) = gateway_for(&format!("http://{}", flood.addr), |c| {
        c.server.idle_timeout_ms = 1_000;
    })
    .await;
    let mut stalled = TcpStream::connect(gw.addr()).await.unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let asked = Instant::now();
    // The stalled client reads nothing at all. Wait until the pipe is full.
    let mut last = 0;
    let mut plateau = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = flood.sent.load(Ordering::SeqCst);
        if now == last && now > 0 {
            plateau += 1;
            if plateau >= 3 {
                break;
            }
        } else {
            plateau = 0;
        }
        last = now;
    }
    let buffered = flood.sent.load(Ordering::SeqCst);
    assert!(buffered > 0, "the upstream sent something");
    assert!(
        buffered < 64 * 1024 * 1024,
        "{buffered} bytes of a {FLOOD_BYTES}-byte body left the upstream for a client that reads nothing"
    );
    // Others are served meanwhile.
    let small = gw
        .anonymous()
        .request(Method::GET, "/small")
        .timeout(Duration::from_secs(3))
        .answer()
        .await;
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.unwrap(), "ok");
    // After idle_timeout_ms without a byte accepted, the gateway drops the
    // stalled connection and, with it, the upstream one; not before.
    assert!(
        !flood.dropped.load(Ordering::SeqCst) || asked.elapsed() >= Duration::from_millis(900),
        "dropped after {:?}",
        asked.elapsed()
    );
    let started = Instant::now();
    while !flood.dropped.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        flood.dropped.load(Ordering::SeqCst),
        "the upstream connection of the stalled client is still open"
    );
    // What reaches the client is a truncated body, then the end.
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stalled.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n as u64,
            Err(_) => panic!("the stalled connection is still open after {got} bytes"),
        }
    }
    assert!(got < FLOOD_BYTES, "{got} bytes");
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_reads_slowly_but_steadily_is_not_cut_off() {
    let flood = FloodUpstream::start().await;
    let (gw, _dir) = gateway_for(&format!("http://{}", flood.addr), |c| {
        c.server.idle_timeout_ms = 1_000;
    })
    .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    // 3 s at about 2.5 MB/s: three times the idle timeout, never a second without progress.
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let mut this_round = 0;
        while this_round < 256 * 1024 {
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("data keeps coming")
                .unwrap();
            assert!(n > 0, "closed after {got} bytes");
            this_round += n;
        }
        got += this_round as u64;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(got >= 4 * 1024 * 1024, "{got} bytes");
    assert!(!flood.dropped.load(Ordering::SeqCst));
    gw.stop().await;
}

// ---- too many header fields ------------------------------------------------------

fn request_with_fields(n: usize) -> String {
    let mut req = String::from("GET /count HTTP/1.1\r\nHost: h\r\nConnection: close\r\n");
    // Two fields above plus n-2 small ones: n fields, well under max_header_bytes.
    for i in 0..n.saturating_sub(2) {
        req.push_str(&format!("X-F{i}: v\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// hyper's limit of 100 header fields in a request head (HTTP/1.1): the 101st
/// is refused by the parser, 431, before the gateway looks at the request.
/// (Tomcat, in front of Jira, allows 100 too, so adding X-Forwarded-* can
/// still push a 98-field request over the upstream's limit.)
#[tokio::test]
async fn more_than_100_header_fields_are_431_and_100_pass() {
    let upstream = FloodUpstream::start().await;
    let (gw, _dir) = gateway_for(&format!("http://{}", upstream.addr), |_| {}).await;
    let many = request_with_fields(101);
    assert!(many.len() < 16_384);
    let resp = raw(gw.addr(), many.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // Refused by the parser: no request id, the handler never ran.
    assert!(
        !resp.to_ascii_lowercase().contains("x-request-id"),
        "{resp}"
    );
    let resp = raw(gw.addr(), request_with_fields(100).as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // 100 fields in, 100 less Connection plus X-Forwarded-For/-Proto/-Host and
    // X-Request-Id out, as the upstream counted them.
    let fields: usize = resp.rsplit("\r\n\r\n").next().unwrap().parse().unwrap();
    assert!((100..=104).contains(&fields), "{fields}");
    gw.stop().await;
}

// ---- max_connections -------------------------------------------------------------

/// Requests for /echo the upstream saw (not the gateway's readiness probes).
fn echoed(upstream: &EchoUpstream) -> usize {
    upstream
        .seen()
        .iter()
        .filter(|s| s.target == "/echo")
        .count()
}

/// Sends a keep-alive GET; true when a 200 head arrives within `within`.
async fn served(s: &mut TcpStream, within: Duration) -> bool {
    read_head(s, within)
        .await
        .is_some_and(|h| h.starts_with("HTTP/1.1 200"))
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| {
        c.server.max_connections = 2;
        // Two workers, two sockets: the cap holds across both.
        c.server.workers = 2;
    })
    .await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        conns.push(Some(s));
    }
    // Exactly two are served; the others wait (connected, unanswered).
    let mut answered = Vec::new();
    for (i, s) in conns.iter_mut().enumerate() {
        if let Some(s) = s
            && served(s, Duration::from_millis(700)).await
        {
            answered.push(i);
        }
    }
    assert_eq!(answered.len(), 2, "served: {answered:?}");
    assert_eq!(echoed(&upstream), 2);
    // One served connection closes: one waiting connection is served, one only.
    conns[answered[0]] = None;
    let mut newly = Vec::new();
    for (i, s) in conns.iter_mut().enumerate() {
        if let Some(s) = s
            && !answered.contains(&i)
            && served(s, Duration::from_millis(1_500)).await
        {
            newly.push(i);
        }
    }
    assert_eq!(newly.len(), 1, "newly served: {newly:?}");
    assert_eq!(echoed(&upstream), 3);
    drop(conns);
    // All closed: the gateway serves again at once.
    others_are_served(&gw).await;
    gw.stop().await;
}

#[test]
fn max_connections_must_be_between_1_and_1000000() {
    for (value, ok) in [
        (0, false),
        (1, true),
        (10_000, true),
        (1_000_000, true),
        (1_000_001, false),
    ] {
        let src =
            format!("[server]\nmax_connections = {value}\n[tokens]\nstore_path = \"/tmp/x\"\n");
        let rejected = match Config::from_toml("t.toml", &src) {
            Ok(c) => c.server.max_connections != value,
            Err(e) => e.to_string().contains("max_connections"),
        };
        assert_eq!(!rejected, ok, "max_connections = {value}");
    }
    assert_eq!(Config::default().server.max_connections, 10_000);
}
