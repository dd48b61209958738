//! The gateway as a plain reverse proxy (no tokens): targets, headers,
//! upgrades, upstream failures, TLS and HTTP/2 on the listener, timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn path_and_query_are_forwarded_byte_for_byte() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |_| {}).await;
    let targets = [
        "/rest/api/2/search?jql=project%20%3D%20DEMO&fields=summary,status",
        "/a%2Fb/c%20d",
        "/browse/DEMO-1;jsessionid=ABC?x=1;y=2",
        "/a/b/../../etc/passwd",
        "/./x/%2e%2e/y//z",
        "/?",
        "/plus+sign?q=a+b&empty=&flag",
    ];
    for target in targets {
        let req =
            format!("GET {target} HTTP/1.1\r\nHost: jira.example.com\r\nConnection: close\r\n\r\n");
        let resp = raw(gw.addr(), req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{target}: {resp}");
        assert_eq!(upstream.last().target, target);
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_path_prefix_of_the_upstream_url_is_kept() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&format!("{}/jira/", upstream.url()), |_| {}).await;
    let resp = gw.anonymous().fetch("/rest/api/2/myself?x=%2F").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.last().target, "/jira/rest/api/2/myself?x=%2F");
    gw.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |_| {}).await;
    let req = "GET /echo HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Private-Hop\r\nX-Private-Hop: 1\r\n\
               Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\n\
               Proxy-Connection: keep-alive\r\nTrailer: X-T\r\nX-Kept: yes\r\n\r\n";
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let resp = roundtrip(&mut s, req.as_bytes()).await.to_lowercase();
    assert!(resp.starts_with("http/1.1 200"), "{resp}");
    // The upstream's own hop-by-hop headers did not come through.
    assert!(!resp.contains("x-upstream-private"), "{resp}");
    assert!(!resp.contains("keep-alive: timeout"), "{resp}");
    let seen = upstream.last();
    for name in [
        "x-private-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "trailer",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream"
        );
    }
    assert_eq!(values(&seen.headers, "x-kept"), ["yes"]);
    gw.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_client_are_replaced() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |_| {}).await;
    let req = "GET /echo HTTP/1.1\r\nHost: jira.example.com\r\nX-Forwarded-For: 203.0.113.66\r\n\
               X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=203.0.113.66\r\n\
               X-Original-URL: /secure/admin\r\nX-Real-IP: 203.0.113.66\r\nConnection: close\r\n\r\n";
    raw(gw.addr(), req.as_bytes()).await;
    let seen = upstream.last();
    assert_eq!(values(&seen.headers, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&seen.headers, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        values(&seen.headers, "x-forwarded-host"),
        ["jira.example.com"]
    );
    for name in ["forwarded", "x-original-url", "x-real-ip"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_extended() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".into()]
    })
    .await;
    let req = "GET /echo HTTP/1.1\r\nHost: gw.internal\r\nX-Forwarded-For: 203.0.113.9\r\n\
               X-Forwarded-Proto: https\r\nX-Forwarded-Host: jira.example.com\r\nConnection: close\r\n\r\n";
    raw(gw.addr(), req.as_bytes()).await;
    let seen = upstream.last();
    assert_eq!(
        values(&seen.headers, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(values(&seen.headers, "x-forwarded-proto"), ["https"]);
    assert_eq!(
        values(&seen.headers, "x-forwarded-host"),
        ["jira.example.com"]
    );
    gw.stop().await;
}

#[tokio::test]
async fn host_is_the_upstreams_unless_preserved() {
    let upstream = EchoUpstream::start().await;
    for (preserve_host, host) in [
        (false, upstream.addr.to_string()),
        (true, "jira.example.com".to_string()),
    ] {
        let (gw, _dir) = gateway_for(&upstream.url(), |c| {
            c.upstream.preserve_host = preserve_host
        })
        .await;
        raw(
            gw.addr(),
            b"GET /echo HTTP/1.1\r\nHost: jira.example.com\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(values(&upstream.last().headers, "host"), [host]);
        gw.stop().await;
    }
}

#[tokio::test]
async fn identity_headers_sent_by_a_client_never_reach_the_upstream() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |_| {}).await;
    let req = "GET /echo HTTP/1.1\r\nHost: h\r\nX-Remote-User: admin\r\nx_remote_user: admin\r\n\
               X.Remote.User: admin\r\nConnection: close\r\n\r\n";
    let resp = raw(gw.addr(), req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = upstream.last();
    for (name, _) in seen.headers.iter() {
        assert_ne!(
            tokengate::config::normalize_header_name(name.as_str()),
            "x-remote-user"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn websocket_upgrade_requests_are_tunnelled() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |_| {}).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(WEBSOCKET_UPGRADE).await.unwrap();
    let head = read_head(&mut s, Duration::from_secs(5))
        .await
        .expect("the 101 before the connection closed");
    let head = head.to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    let seen = upstream.last();
    assert_eq!(values(&seen.headers, "upgrade"), ["websocket"]);
    assert_eq!(values(&seen.headers, "connection"), ["upgrade"]);
    for msg in [&b"ping"[..], b"hello through the tunnel"] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
    gw.stop().await;
}

#[tokio::test]
async fn unreachable_upstream_is_502_with_a_json_body() {
    let (gw, _dir) = gateway_for(&format!("http://{}", closed_port().await), |_| {}).await;
    let resp = gw.anonymous().fetch("/rest/api/2/myself").await;
    assert_eq!(resp.status(), 502);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = resp.json().await.unwrap();
    assert!(error_message(&body).contains("upstream"));
    assert_eq!(body["errors"], serde_json::json!({}));
    gw.stop().await;
}

#[tokio::test]
async fn slow_upstream_is_504_after_the_response_timeout() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| c.upstream.response_timeout_ms = 300).await;
    let started = std::time::Instant::now();
    let resp = gw.anonymous().fetch("/slow").await;
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value = resp.json().await.unwrap();
    assert!(error_message(&body).contains("in time"));
    gw.stop().await;
}

fn self_signed() -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

fn tls_client(
    root: rustls::pki_types::CertificateDer<'static>,
    addr: std::net::SocketAddr,
) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", addr)
        .build()
        .unwrap()
}

#[tokio::test]
async fn tls_on_the_listener_with_http2_and_http1() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = self_signed();
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let mut config = test_config(&upstream.url(), dir.path());
    config.server.tls_cert = dir.path().join("cert.pem").display().to_string();
    config.server.tls_key = dir.path().join("key.pem").display().to_string();
    let gw = start(config).await;
    let client = tls_client(der, gw.addr());
    let url = format!("https://localhost:{}/echo?tls=1", gw.addr().port());
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2, "ALPN picks HTTP/2");
    let seen = upstream.last();
    assert_eq!(seen.target, "/echo?tls=1");
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "the upstream is spoken to in HTTP/1.1"
    );
    assert_eq!(values(&seen.headers, "x-forwarded-proto"), ["https"]);
    // Plain HTTP on the TLS port is not served.
    let plain = raw(
        gw.addr(),
        b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!plain.contains("200 OK"));
    gw.stop().await;
}

#[tokio::test]
async fn http2_from_the_client_in_cleartext() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| c.server.h2c = true).await;
    let resp = gw
        .anonymous()
        .over(http2_client())
        .request(Method::POST, "/rest/api/2/issue?h2=yes")
        .body("{\"fields\":{}}")
        .answer()
        .await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/rest/api/2/issue?h2=yes");
    assert_eq!(seen.body_len, 13);
    assert_eq!(values(&seen.headers, "host"), [upstream.addr.to_string()]);
    assert_eq!(
        values(&seen.headers, "x-forwarded-host"),
        [gw.addr().to_string()]
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_plain_listener_speaks_only_http1_unless_h2c_is_on() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |_| {}).await;
    let url = format!("http://{}/rest/api/2/serverInfo", gw.addr());
    let h2 = http2_client().get(&url).send().await;
    assert!(
        h2.is_err(),
        "HTTP/2 with prior knowledge is refused: {h2:?}"
    );
    let resp = gw.anonymous().fetch("/rest/api/2/serverInfo").await;
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn oversized_request_head_is_431() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| c.server.max_header_bytes = 8192).await;
    let big = "a".repeat(20_000);
    let req = format!("GET /echo HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let resp = raw(gw.addr(), req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(upstream.seen().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_after_the_header_timeout() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| c.server.header_read_timeout_ms = 300).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: h\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(read_or_end(&mut s).await, 0, "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(upstream.seen().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_timeout_until_the_idle_timeout() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |c| {
        c.server.header_read_timeout_ms = 200;
        c.server.idle_timeout_ms = 1_000;
    })
    .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let get = b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n";
    assert!(roundtrip(&mut s, get).await.starts_with("HTTP/1.1 200"));
    // Idle for longer than the header timeout: still open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(roundtrip(&mut s, get).await.starts_with("HTTP/1.1 200"));
    // Idle for longer than the idle timeout: closed.
    let started = std::time::Instant::now();
    assert_eq!(read_or_end(&mut s).await, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "closed too early: {:?}",
        started.elapsed()
    );
    gw.stop().await;
}
