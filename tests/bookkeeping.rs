//! Counters that must come back down however a request ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn in_flight(admin: std::net::SocketAddr) -> f64 {
    let text = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("tokengate_in_flight_requests "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the in-flight gauge is exported")
}

/// A client that hangs up while its request waits for the upstream: the
/// handler is dropped mid-request, and the in-flight gauge still comes down.
#[tokio::test]
async fn the_in_flight_gauge_comes_down_when_a_client_disconnects_mid_request() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&upstream.url(), dir.path());
    config.server.admin_listen = "127.0.0.1:0".into();
    let gw = start(config).await;
    let admin = gw.admin_addr().unwrap();
    let mut sock = TcpStream::connect(gw.addr()).await.unwrap();
    // The echo upstream answers /slow after 30 s.
    sock.write_all(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight(admin).await < 1.0 {
        assert!(Instant::now() < deadline, "the request never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(sock);
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight(admin).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the gauge stayed up after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}
