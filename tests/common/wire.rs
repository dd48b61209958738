//! Raw bytes on a TCP connection, for what an HTTP client would not send or
//! would hide: smuggling vectors, forged header spellings, slow clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes, returns everything the server sent until it closed
/// (or 10 s passed).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    read_to_close(addr, request, Duration::from_secs(10))
        .await
        .0
}

/// Writes `bytes` on a fresh connection; returns what came back and whether
/// the gateway closed the connection (within 5 s).
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    read_to_close(addr, bytes, Duration::from_secs(5)).await
}

async fn read_to_close(addr: SocketAddr, bytes: &[u8], within: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Writes `request` on an open connection and reads once (up to 64 KiB,
/// within 5 s): what a keep-alive client gets back.
pub async fn roundtrip(s: &mut TcpStream, request: &[u8]) -> String {
    s.write_all(request).await.unwrap();
    read_once(s).await
}

/// One read of up to 64 KiB within 5 s.
async fn read_once(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// One read within 5 s: how many bytes came; 0 when the connection ended
/// (or failed) instead.
pub async fn read_or_end(s: &mut TcpStream) -> usize {
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0)
}

/// Writes `bytes` on a fresh connection and reads one response (head and
/// `Content-Length` body), without waiting for the connection to close.
pub async fn first_response(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("a whole response within 5 s")
            .unwrap();
        if n == 0 {
            return text;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads until the end of a response head; returns the head, or `None` when
/// the connection ends or `within` passes first.
pub async fn read_head(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + within;
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 65_536 {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A WebSocket upgrade request for `/upgrade` (the echo upstream switches).
pub const WEBSOCKET_UPGRADE: &[u8] =
    b"GET /upgrade HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
