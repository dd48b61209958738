//! Request smuggling and framing, end to end over raw TCP. Each vector's
//! bytes go to the gateway, which sits in front of a recording upstream that
//! parses exactly what arrives on the wire, per connection. A vector passes
//! when the gateway rejects it (4xx, connection closed) or the upstream sees
//! exactly the requests the client was entitled to, framed unambiguously,
//! and never a second, smuggled one. After every vector a clean request must
//! arrive whole, on a connection that never carried a broken exchange.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokengate::clock::ManualClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The marker of every request that must never reach the upstream as one.
const SMUGGLED: &str = "SMUGGLED";

// ---- a recording upstream that sees raw bytes ---------------------------------------

/// One request as the upstream parsed it off the wire.
#[derive(Debug, Clone)]
struct WireRequest {
    /// Which upstream connection (in accept order) carried it.
    conn: usize,
    method: String,
    target: String,
    /// Header lines in the order sent, names as sent.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl WireRequest {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
struct WireConn {
    raw: Vec<u8>,
    /// The gateway closed it (EOF seen).
    closed: bool,
    /// Bytes that were not a well-framed request (the recorder stopped there).
    garbage: bool,
}

#[derive(Debug, Default)]
struct Log {
    conns: Vec<WireConn>,
    requests: Vec<WireRequest>,
}

/// An HTTP/1.1 upstream written on raw TCP, so nothing is normalised before
/// it is recorded. Answers by path:
/// - `/rest/api/2/myself`, `/rest/api/2/mypermissions`: alice, no admin;
/// - `/refuse-upgrade...`: `200`, never `101`, connection kept;
/// - `/partial-response`: a head promising 1 MB, 1 KiB of it, then nothing;
/// - `/extra-bytes`: a `Content-Length: 2` answer followed by a forged second response;
/// - anything else: `200`, the body being the request target.
struct RawUpstream {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Log>> = Arc::default();
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = {
                    let mut log = l.lock().unwrap();
                    log.conns.push(WireConn::default());
                    log.conns.len() - 1
                };
                tokio::spawn(serve_wire(stream, id, l.clone()));
            }
        });
        RawUpstream { addr, log }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<WireRequest> {
        self.log.lock().unwrap().requests.clone()
    }

    /// Requests other than the gateway's own identity look-ups.
    fn forwarded(&self) -> Vec<WireRequest> {
        self.requests()
            .into_iter()
            .filter(|r| !r.target.starts_with("/rest/api/2/my"))
            .collect()
    }

    fn conns(&self) -> Vec<WireConn> {
        self.log.lock().unwrap().conns.clone()
    }

    /// Everything the upstream ever received, all connections.
    fn all_raw(&self) -> String {
        let conns = self.conns();
        let bytes: Vec<u8> = conns.iter().flat_map(|c| c.raw.clone()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits (bounded) until `done` holds for the log.
    async fn wait_for(&self, what: &str, done: impl Fn(&Log) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(&self.log.lock().unwrap()) {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn serve_wire(mut s: TcpStream, id: usize, log: Arc<Mutex<Log>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut parsing = true;
    loop {
        while parsing {
            match parse_request(&buf) {
                Ok(None) => break,
                Err(()) => {
                    log.lock().unwrap().conns[id].garbage = true;
                    parsing = false;
                }
                Ok(Some((mut req, used))) => {
                    buf.drain(..used);
                    req.conn = id;
                    log.lock().unwrap().requests.push(req.clone());
                    if answer(&mut s, &req).await.is_err() {
                        return;
                    }
                }
            }
        }
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let mut l = log.lock().unwrap();
        if n == 0 {
            l.conns[id].closed = true;
            return;
        }
        l.conns[id].raw.extend_from_slice(&chunk[..n]);
        drop(l);
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn answer(s: &mut TcpStream, req: &WireRequest) -> std::io::Result<()> {
    let path = req.target.split('?').next().unwrap_or("");
    let reply = match path {
        "/rest/api/2/myself" => {
            json_reply(r#"{"key":"alice","name":"alice","displayName":"Alice"}"#)
        }
        "/rest/api/2/mypermissions" => {
            json_reply(r#"{"permissions":{"SYSTEM_ADMIN":{"havePermission":false}}}"#)
        }
        "/partial-response" => {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
            r.extend_from_slice(&[b'p'; 1024]);
            r
        }
        "/extra-bytes" => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        )
        .into_bytes(),
        _ => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{}",
            req.target.len(),
            req.target
        )
        .into_bytes(),
    };
    s.write_all(&reply).await
}

fn json_reply(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// One request off the front of `buf`: `Ok(None)` while incomplete, `Err`
/// when the framing is not the one unambiguous form RFC 9112 allows (both
/// `Content-Length` and `Transfer-Encoding`, repeated or odd lengths, a
/// transfer coding other than `chunked`).
fn parse_request(buf: &[u8]) -> Result<Option<(WireRequest, usize)>, ()> {
    let Some(head_end) = find(buf, b"\r\n\r\n", 0) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ())?;
    let mut lines = head.split("\r\n");
    let mut start = lines.next().ok_or(())?.split(' ');
    let method = start.next().ok_or(())?.to_string();
    let target = start.next().ok_or(())?.to_string();
    if start.next() != Some("HTTP/1.1") {
        return Err(());
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(())?;
        if name.is_empty() || name.ends_with([' ', '\t']) || name.starts_with([' ', '\t']) {
            return Err(());
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut req = WireRequest {
        conn: 0,
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let te = req.header("transfer-encoding");
    let cl = req.header("content-length");
    let mut pos = head_end + 4;
    match (te.as_slice(), cl.as_slice()) {
        ([], []) => {}
        ([], [len]) => {
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let len: usize = len.parse().map_err(|_| ())?;
            if buf.len() < pos + len {
                return Ok(None);
            }
            req.body = buf[pos..pos + len].to_vec();
            pos += len;
        }
        (["chunked"], []) => loop {
            let Some(line_end) = find(buf, b"\r\n", pos) else {
                return Ok(None);
            };
            let line = std::str::from_utf8(&buf[pos..line_end]).map_err(|_| ())?;
            let size =
                usize::from_str_radix(line.split(';').next().unwrap_or(""), 16).map_err(|_| ())?;
            pos = line_end + 2;
            if size == 0 {
                // Trailer fields, then the empty line.
                loop {
                    let Some(end) = find(buf, b"\r\n", pos) else {
                        return Ok(None);
                    };
                    let trailer = &buf[pos..end];
                    pos = end + 2;
                    if trailer.is_empty() {
                        break;
                    }
                    let trailer = String::from_utf8_lossy(trailer);
                    req.headers.push((
                        format!("trailer:{}", trailer.split(':').next().unwrap_or("")),
                        trailer.into_owned(),
                    ));
                }
                break;
            }
            if buf.len() < pos + size + 2 {
                return Ok(None);
            }
            req.body.extend_from_slice(&buf[pos..pos + size]);
            if &buf[pos + size..pos + size + 2] != b"\r\n" {
                return Err(());
            }
            pos += size + 2;
        },
        _ => return Err(()),
    }
    Ok(Some((req, pos)))
}

// ---- the gateway and the client side ------------------------------------------------

struct Setup {
    gw: tokengate::Running,
    upstream: RawUpstream,
    _dir: tempfile::TempDir,
    /// A valid token of alice's.
    token: String,
}

async fn setup() -> Setup {
    let upstream = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = header_mode_config(&upstream.url(), dir.path());
    // One worker, one upstream pool: connection reuse is observable.
    config.server.workers = 1;
    let gw = start_with_secret(config, ManualClock::new(T0)).await;
    let created = gw
        .as_user("alice", "alice")
        .create_token(serde_json::json!({"tokenDescription": "smuggling tests"}))
        .await;
    let token = created["plainTextToken"].as_str().unwrap().to_string();
    Setup {
        gw,
        upstream,
        _dir: dir,
        token,
    }
}

/// The status codes of every response in `out`, in order.
fn statuses(out: &str) -> Vec<u16> {
    out.match_indices("HTTP/1.1 ")
        .filter_map(|(i, m)| out.get(i + m.len()..i + m.len() + 3)?.parse().ok())
        .collect()
}

/// Upstream framing is unambiguous: never both `Content-Length` and
/// `Transfer-Encoding`, at most one of each, and nothing left unparsed.
fn assert_clean_wire(upstream: &RawUpstream, vector: &str) {
    for r in upstream.requests() {
        let te = r.header("transfer-encoding").len();
        let cl = r.header("content-length").len();
        assert!(
            te + cl <= 1,
            "{vector}: ambiguous framing at the upstream: {r:?}"
        );
    }
    for (i, c) in upstream.conns().iter().enumerate() {
        assert!(
            !c.garbage,
            "{vector}: upstream connection {i} got unframed bytes"
        );
    }
    assert!(
        !upstream.all_raw().contains(SMUGGLED),
        "{vector}: smuggled bytes reached the upstream:\n{}",
        upstream.all_raw()
    );
}

/// A plain request after the vector arrives whole, gets its own answer, and
/// travels on an upstream connection that never carried an unfinished
/// exchange (so no leftover bytes can be read as part of it). Returns that
/// upstream connection.
async fn assert_next_request_is_clean(s: &Setup, vector: &str) -> usize {
    let target = format!("/after/{}", vector.replace(' ', "-"));
    let req = format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let (out, _) = exchange(s.gw.addr(), req.as_bytes()).await;
    assert_eq!(statuses(&out), [200], "{vector}: follow-up: {out}");
    assert!(
        out.ends_with(&target),
        "{vector}: follow-up got someone else's answer: {out}"
    );
    let seen: Vec<_> = s
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.target == target)
        .collect();
    assert_eq!(
        seen.len(),
        1,
        "{vector}: follow-up seen {} times",
        seen.len()
    );
    let conn = seen[0].conn;
    // Every request on that connection was complete and is one we expect.
    for r in s.upstream.requests().iter().filter(|r| r.conn == conn) {
        assert!(
            !r.target.contains(SMUGGLED),
            "{vector}: shared a connection with {r:?}"
        );
    }
    assert_clean_wire(&s.upstream, vector);
    conn
}

// ---- the vectors ------------------------------------------------------------------------

/// A request that must be refused outright, the smuggled second request
/// appended behind it.
struct Refused {
    name: &'static str,
    head: &'static str,
    body: &'static str,
}

fn smuggled_tail() -> String {
    format!(
        "GET /{SMUGGLED} HTTP/1.1\r\nHost: h\r\nX-Remote-User: admin\r\nX-Gateway-Secret: forged\r\n\r\n"
    )
}

/// A fresh gateway, sent `bytes` and the smuggled request behind them on one
/// connection: the setup, what came back, and whether the connection closed.
async fn send_vector(bytes: &str) -> (Setup, String, bool) {
    let s = setup().await;
    let bytes = format!("{bytes}{}", smuggled_tail());
    let (out, closed) = exchange(s.gw.addr(), bytes.as_bytes()).await;
    (s, out, closed)
}

#[tokio::test]
async fn ambiguous_framing_is_refused_with_400_and_never_reaches_the_upstream() {
    let vectors = [
        Refused {
            name: "te chunked then identity",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "te xchunked",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "te identity line then chunked line",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "space before the colon of transfer-encoding",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "tab before the colon of content-length",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nContent-Length\t: 5\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "two different content-lengths",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "content-length list with different values",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "content-length with a plus sign",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "negative content-length",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "content-length beyond u64",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "transfer-encoding on http 1.0",
            head: "POST /v HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "transfer-encoding folded onto a second line",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n chunked\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "content-length folded onto a second line",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\t0\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "bare carriage return inside a header",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nX-A: 1\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            body: "0\r\n\r\n",
        },
        Refused {
            name: "nul inside a header",
            head: "POST /v HTTP/1.1\r\nHost: h\r\nX-A: 1\0Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            body: "0\r\n\r\n",
        },
    ];
    for v in vectors {
        let (s, out, closed) = send_vector(&format!("{}\r\n{}", v.head, v.body)).await;
        let codes = statuses(&out);
        assert_eq!(codes.len(), 1, "{}: {out}", v.name);
        assert!(
            (400..500).contains(&codes[0]),
            "{}: expected a 4xx, got {out}",
            v.name
        );
        assert!(
            closed,
            "{}: connection left open after {}",
            v.name, codes[0]
        );
        assert!(
            s.upstream.forwarded().is_empty(),
            "{}: the upstream saw {:?}",
            v.name,
            s.upstream.forwarded()
        );
        assert_next_request_is_clean(&s, v.name).await;
        s.gw.stop().await;
    }
}

#[tokio::test]
async fn content_length_with_transfer_encoding_forwards_one_chunked_request_and_closes() {
    let orders = [
        (
            "cl then te",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "te then cl",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
    ];
    for (name, framing) in orders {
        // By Content-Length the body is "0\r\n\r\n"; by chunked it is empty and a
        // second request follows. Either way that request must not be served.
        let (s, out, closed) = send_vector(&format!(
            "POST /v HTTP/1.1\r\nHost: h\r\n{framing}\r\n0\r\n\r\n"
        ))
        .await;
        assert_eq!(statuses(&out), [200], "{name}: {out}");
        assert!(
            closed,
            "{name}: the connection must close after an ambiguous message"
        );
        let seen = s.upstream.forwarded();
        assert_eq!(seen.len(), 1, "{name}: {seen:?}");
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("POST", "/v")
        );
        assert!(seen[0].body.is_empty(), "{name}: body {:?}", seen[0].body);
        assert!(seen[0].header("content-length").len() <= 1);
        assert_next_request_is_clean(&s, name).await;
        s.gw.stop().await;
    }
}

#[tokio::test]
async fn an_oversize_chunk_size_fails_the_request_and_poisons_no_upstream_connection() {
    for size in [
        "fffffffffffffffff",
        "10000000000000000",
        "ffffffffffffffff0",
    ] {
        let (s, out, closed) = send_vector(&format!(
            "POST /v HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
        ))
        .await;
        // The client's body is at fault: 400, not a 502 blamed on the upstream.
        assert_eq!(statuses(&out), [400], "{size}: {out}");
        assert!(closed, "{size}: connection left open");
        // The upstream may have seen the head (bodies stream), but never a
        // complete request.
        assert!(
            s.upstream.forwarded().is_empty(),
            "{size}: {:?}",
            s.upstream.forwarded()
        );
        assert_next_request_is_clean(&s, size).await;
        s.gw.stop().await;
    }
}

#[tokio::test]
async fn chunked_bodies_are_reframed_so_the_upstream_sees_only_the_decoded_bytes() {
    let s = setup().await;
    // Chunk extensions, upper-case hex, a declared trailer carrying a forged
    // identity: the upstream gets the same body bytes, re-chunked by the
    // gateway, and no trailer.
    let bytes = "POST /v HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Remote-User\r\n\r\n\
                 3;ext=\"x\"\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Remote-User: admin\r\n\r\n\
                 GET /v2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let (out, _) = exchange(s.gw.addr(), bytes.as_bytes()).await;
    assert_eq!(statuses(&out), [200, 200], "{out}");
    let seen = s.upstream.forwarded();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].target, "/v");
    assert_eq!(seen[0].body, b"abc0123456789");
    assert!(
        seen[0]
            .headers
            .iter()
            .all(|(n, v)| !n.starts_with("trailer")
                && !v.contains("admin")
                && !n.eq_ignore_ascii_case("x-remote-user")),
        "{:?}",
        seen[0].headers
    );
    assert!(!s.upstream.all_raw().contains("admin"));
    assert_eq!(seen[1].target, "/v2");
    assert_clean_wire(&s.upstream, "reframed");
    s.gw.stop().await;
}

#[tokio::test]
async fn bytes_after_a_refused_upgrade_are_never_forwarded_and_open_no_tunnel() {
    let s = setup().await;
    for token in [None, Some(s.token.clone())] {
        let auth = token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let bytes = format!(
            "GET /refuse-upgrade HTTP/1.1\r\nHost: h\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n{}",
            smuggled_tail()
        );
        let mut c = TcpStream::connect(s.gw.addr()).await.unwrap();
        c.write_all(bytes.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
            .await
            .is_ok();
        let out = String::from_utf8_lossy(&out).into_owned();
        assert_eq!(statuses(&out), [200], "{out}");
        assert!(!out.contains(" 101 "), "{out}");
        assert!(closed, "a refused upgrade must end the connection: {out}");
        // No tunnel: writing more reaches nobody.
        let _ = c
            .write_all(format!("GET /{SMUGGLED}2 HTTP/1.1\r\n\r\n").as_bytes())
            .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = s.upstream.forwarded();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for r in &seen {
        assert_eq!(r.target, "/refuse-upgrade");
        assert_eq!(r.header("upgrade"), ["websocket"]);
    }
    assert_next_request_is_clean(&s, "refused upgrade").await;
    s.gw.stop().await;
}

#[tokio::test]
async fn a_pipelined_request_is_authenticated_on_its_own_and_cannot_borrow_the_token() {
    let s = setup().await;
    let bytes = format!(
        "GET /first HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n\
         GET /second HTTP/1.1\r\nHost: h\r\nX-Remote-User: admin\r\nX_Remote_User: admin\r\n\
         X-Gateway-Secret: forged\r\nConnection: close\r\n\r\n",
        s.token
    );
    let (out, closed) = exchange(s.gw.addr(), bytes.as_bytes()).await;
    assert_eq!(statuses(&out), [200, 200], "{out}");
    assert!(closed);
    // Each answer is its own request's, in order.
    let first = out.find("\r\n\r\n/first").expect("answer to /first");
    let second = out.find("\r\n\r\n/second").expect("answer to /second");
    assert!(first < second);
    let seen = s.upstream.forwarded();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].target, "/first");
    assert_eq!(seen[0].header("x-remote-user"), ["alice"]);
    assert_eq!(seen[0].header("x-gateway-secret"), [SECRET]);
    assert_eq!(seen[1].target, "/second");
    for (name, _) in &seen[1].headers {
        let n = tokengate::config::normalize_header_name(name);
        assert!(
            n != "x-remote-user" && n != "x-gateway-secret" && n != "authorization",
            "{name} reached the upstream on the anonymous request"
        );
    }
    assert_clean_wire(&s.upstream, "pipelined");
    s.gw.stop().await;
}

#[tokio::test]
async fn a_request_inside_a_body_stays_body() {
    let s = setup().await;
    let inner = smuggled_tail();
    let bytes = format!(
        "POST /upload HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{inner}",
        s.token,
        inner.len()
    );
    let (out, _) = exchange(s.gw.addr(), bytes.as_bytes()).await;
    assert_eq!(statuses(&out), [200], "{out}");
    let seen = s.upstream.forwarded();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/upload");
    assert_eq!(seen[0].body, inner.as_bytes());
    assert_eq!(seen[0].header("content-length"), [inner.len().to_string()]);
    assert_eq!(seen[0].header("x-remote-user"), ["alice"]);
    s.gw.stop().await;
}

/// Sequential requests share one upstream connection: the pool works, so a
/// fresh connection after an abort is the gateway's decision. (A connection
/// goes back to the pool just after its response ends, hence the pauses.)
async fn assert_pool_reuses(s: &Setup) {
    let mut conns = Vec::new();
    for i in 0..5 {
        let req = format!("GET /warm/{i} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let (out, _) = exchange(s.gw.addr(), req.as_bytes()).await;
        assert_eq!(statuses(&out), [200], "{out}");
        let target = format!("/warm/{i}");
        let seen = s.upstream.requests();
        conns.push(seen.iter().find(|r| r.target == target).unwrap().conn);
        if conns.len() >= 2 && conns[conns.len() - 1] == conns[conns.len() - 2] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the upstream pool never reused a connection: {conns:?}");
}

#[tokio::test]
async fn an_upstream_connection_is_dropped_when_the_client_aborts_mid_body() {
    let s = setup().await;
    assert_pool_reuses(&s).await;
    let mut c = TcpStream::connect(s.gw.addr()).await.unwrap();
    c.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\n0123456789",
            s.token
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The head and the first bytes stream to the upstream before the body is whole.
    s.upstream
        .wait_for("the upload head at the upstream", |l| {
            l.conns.iter().any(|c| {
                String::from_utf8_lossy(&c.raw).contains("POST /upload")
                    && c.raw.ends_with(b"0123456789")
            })
        })
        .await;
    drop(c);
    let upload_conn = s
        .upstream
        .conns()
        .iter()
        .position(|c| String::from_utf8_lossy(&c.raw).contains("POST /upload"))
        .unwrap();
    s.upstream
        .wait_for("the unfinished upload's connection to close", |l| {
            l.conns[upload_conn].closed
        })
        .await;
    assert!(
        s.upstream.requests().iter().all(|r| r.target != "/upload"),
        "the truncated upload must never be complete at the upstream"
    );
    let after = assert_next_request_is_clean(&s, "abort mid body").await;
    assert_ne!(after, upload_conn);
    s.gw.stop().await;
}

#[tokio::test]
async fn an_upstream_connection_is_dropped_when_the_client_aborts_mid_response() {
    let s = setup().await;
    assert_pool_reuses(&s).await;
    let mut c = TcpStream::connect(s.gw.addr()).await.unwrap();
    c.write_all(b"GET /partial-response HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(c);
    let partial = s
        .upstream
        .requests()
        .into_iter()
        .find(|r| r.target == "/partial-response")
        .unwrap();
    s.upstream
        .wait_for("the half-read connection to close", |l| {
            l.conns[partial.conn].closed
        })
        .await;
    let after = assert_next_request_is_clean(&s, "abort mid response").await;
    assert_ne!(after, partial.conn);
    s.gw.stop().await;
}

#[tokio::test]
async fn bytes_beyond_an_upstream_response_are_never_taken_as_the_next_answer() {
    let s = setup().await;
    let (out, _) = exchange(
        s.gw.addr(),
        b"GET /extra-bytes HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&out), [200], "{out}");
    assert!(out.ends_with("\r\n\r\nok"), "{out}");
    // The forged second response sits on that connection: the next request
    // must get its own answer, not the leftover.
    for i in 0..3 {
        let target = format!("/next/{i}");
        let req = format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let (out, _) = exchange(s.gw.addr(), req.as_bytes()).await;
        assert_eq!(statuses(&out), [200], "{out}");
        assert!(out.ends_with(&target), "got a leftover answer: {out}");
        assert!(!out.contains(SMUGGLED), "{out}");
    }
    s.gw.stop().await;
}
