//! What an attacker who reads the gateway closely tries, beyond smuggling and
//! spoofing (see `smuggling.rs`, `auth.rs`): scope bypass on the management
//! API, upstream sessions that outlive a token, lockout abuse, spellings of
//! the management API's path, TRACE and CONNECT, other upgrades, tokens
//! echoed back or left in URLs, HTTP/2 cookie and Host quirks, numbers that
//! overflow, and slow clients. One test per finding; each failed before the
//! change that made it pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client whose connections come from `ip` (any address of 127.0.0.0/8
/// reaches the gateway on 127.0.0.1).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
        .build()
        .unwrap()
}

// ---- 1. READ_ONLY binds the management API too ---------------------------------------

#[tokio::test]
async fn a_read_only_token_cannot_create_change_or_delete_tokens() {
    let s = JiraSetup::jira().await;
    let ro = s
        .as_user("alice", "alice")
        .create_token(json!({"tokenDescription": "read only", "tokenScope": 1}))
        .await;
    let ro_token = ro["plainTextToken"].as_str().unwrap().to_string();
    let id = ro["id"].as_u64().unwrap();
    let admin_ro = s
        .as_user("admin", "admin")
        .create_token(json!({"tokenDescription": "admin read only", "tokenScope": 1}))
        .await["plainTextToken"]
        .as_str()
        .unwrap()
        .to_string();

    let (ro, admin_ro) = (s.with_token(&ro_token), s.with_token(&admin_ro));
    let (status, _) = ro
        .post(
            "/user/token",
            json!({"tokenDescription": "escalated", "tokenScope": 2}),
        )
        .await;
    assert_eq!(status, 403, "create with a READ_ONLY token");
    let (status, _) = ro
        .patch(
            &format!("/user/token/{id}"),
            json!({"tokenDescription": "renamed"}),
        )
        .await;
    assert_eq!(status, 403, "update with a READ_ONLY token");
    let (status, _) = s
        .as_user("alice", &ro_token)
        .delete(&format!("/user/token/{id}"))
        .await;
    assert_eq!(status, 403, "delete with a READ_ONLY token");
    for path in [
        "/user/token/deleteAllFor/JIRAUSER10100",
        "/admin/failedLogins/JIRAUSER10100",
    ] {
        let (status, _) = admin_ro.delete(path).await;
        assert_eq!(status, 403, "{path} with an admin's READ_ONLY token");
    }

    // Looking is allowed, and nothing changed.
    let (status, list) = ro.get("/user/token").await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "no token was created: {list:?}");
    assert_eq!(list[0]["description"], "read only");
    let (status, page) = admin_ro.get("/user/tokensByFilter?notValidAfter=-1").await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 2);
}

// ---- 2. no upstream session for a token request -------------------------------------

#[tokio::test]
async fn a_token_request_never_hands_out_the_upstreams_session_cookie() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    // The simulated Jira starts a session for every login, as Jira does.
    let by_password = s.as_user("alice", "alice").myself().await;
    assert!(by_password.headers().contains_key("set-cookie"));
    let sso_logins = s
        .sim
        .seen()
        .iter()
        .filter(|r| r.headers.contains_key("x-remote-user"))
        .count();
    for caller in [s.with_token(&token), s.as_user("alice", &token)] {
        let resp = caller.myself().await;
        assert_eq!(resp.status(), 200);
        assert!(
            !resp.headers().contains_key("set-cookie"),
            "{:?}",
            resp.headers()
        );
    }
    assert_eq!(
        s.sim
            .seen()
            .iter()
            .filter(|r| r.headers.contains_key("x-remote-user"))
            .count(),
        sso_logins + 2,
        "both token requests reached the upstream as header logins"
    );
}

// ---- 3. only a confirmed login resets the count ----------------------------------------

/// The status of `GET path` as alice with `password`.
async fn password_call(s: &JiraSetup, path: &str, password: &str) -> StatusCode {
    s.as_user("alice", password).fetch(path).await.status()
}

#[tokio::test]
async fn a_public_page_answering_200_does_not_reset_the_failure_count() {
    let s = JiraSetup::jira().await;
    assert_eq!(password_call(&s, "/rest/api/2/myself", "wrong").await, 401);
    assert_eq!(password_call(&s, "/rest/api/2/myself", "wrong").await, 401);
    // Answered without looking at the password: neither counts nor resets.
    assert_eq!(password_call(&s, "/status", "wrong").await, 200);
    assert_eq!(password_call(&s, "/rest/api/2/myself", "wrong").await, 401);
    // That third 401 locked alice out from this address.
    let resp = s.as_user("alice", "alice").myself().await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-authentication-denied-reason"], "LOCKED");
}

#[tokio::test]
async fn a_login_the_upstream_confirms_resets_the_failure_count() {
    let s = JiraSetup::jira().await;
    for _ in 0..3 {
        assert_eq!(password_call(&s, "/rest/api/2/myself", "wrong").await, 401);
        assert_eq!(password_call(&s, "/rest/api/2/myself", "wrong").await, 401);
        // Jira says `X-Seraph-LoginReason: OK` and names alice in `X-AUSERNAME`.
        assert_eq!(password_call(&s, "/rest/api/2/myself", "alice").await, 200);
    }
}

// ---- 4. locks are per user and address; valid tokens are never refused ----------------

#[tokio::test]
async fn a_stranger_cannot_lock_out_the_admin() {
    let s = JiraSetup::jira().await;
    let admin_token = s.token_for("admin").await;
    let stranger = client_from([127, 0, 0, 2]);
    let from_stranger = |caller: Caller| caller.over(stranger.clone());
    for _ in 0..3 {
        let resp = from_stranger(s.as_user("admin", "guess")).myself().await;
        assert_eq!(resp.status(), 401);
    }
    // Locked out from the stranger's address only.
    let resp = from_stranger(s.as_user("admin", "admin")).myself().await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-authentication-denied-reason"], "LOCKED");
    // The real admin, from their own address, with a password and a token.
    assert_eq!(s.as_user("admin", "admin").myself().await.status(), 200);
    for client in [&s.http, &stranger] {
        let by_token = s.with_token(&admin_token).over(client.clone());
        let by_basic = s.as_user("admin", &admin_token).over(client.clone());
        for resp in [
            by_token.myself().await,
            by_basic.myself().await,
            by_token.api(Method::GET, "/user/token").answer().await,
        ] {
            assert_eq!(resp.status(), 200, "a valid token is never locked out");
        }
    }
    // authTest tells a stranger nothing about locks: the locked admin's wrong
    // password reads exactly like a never-locked user's.
    let details = |user: &'static str, from: reqwest::Client| {
        let caller = s.as_user(user, "guess").over(from);
        async move {
            let (status, v) = caller.get("/user/authTest").await;
            assert_eq!(status, 200);
            assert_eq!(v["isSuccessfulAuthentication"], false);
            v["authenticationFailureDetails"].clone()
        }
    };
    let locked = details("admin", stranger.clone()).await;
    let unlocked = details("bob", client_from([127, 0, 0, 3])).await;
    assert_eq!(locked, unlocked);
    assert!(
        !locked.to_string().to_lowercase().contains("lock"),
        "{locked}"
    );
    // An admin's reset clears the lock from every address.
    let (status, _) = s
        .with_token(&admin_token)
        .delete(&format!("/admin/failedLogins/{ADMIN_KEY}"))
        .await;
    assert_eq!(status, 204);
    let resp = from_stranger(s.as_user("admin", "admin")).myself().await;
    assert_eq!(resp.status(), 200);
}

// ---- 5. spellings of the management API's path ---------------------------------------

#[tokio::test]
async fn no_spelling_of_the_management_api_path_is_forwarded() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    s.sim.clear_seen();
    for path in [
        "/rest/./de.resolution.apitokenauth/latest/user/token",
        "/x/../rest/de.resolution.apitokenauth/latest/user/token",
        "/rest;x=1/de.resolution.apitokenauth/latest/user/token",
        "/rest/%2e/de.resolution.apitokenauth/latest/user/token",
        "/rest/%2E%2E/rest/de.resolution.apitokenauth/latest/user/token",
        "/rest\\de.resolution.apitokenauth/latest/user/token",
        "/foo/..;/rest/de.resolution.apitokenauth/latest/user/token",
        "/rest/de.resolution.apitoken%2561uth/latest/user/token",
        "/Rest/DE.resolution.ApiTokenAuth/latest/user/token",
    ] {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: jira\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let out = raw(s.gw.addr(), head.as_bytes()).await;
        let status = out.get(9..12).unwrap_or("");
        assert!(
            status == "404" || status == "400" || status == "200",
            "{path}: {out}"
        );
    }
    for path in [
        "/../rest/api/2/myself",
        "/a/%2e%2e/%2e%2e/etc/passwd",
        "/browse/X%zz",
    ] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: jira\r\nConnection: close\r\n\r\n");
        let out = raw(s.gw.addr(), head.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
    }
    assert!(s.sim.seen().is_empty(), "{:?}", s.sim.seen());
}

// ---- 6. TRACE and CONNECT --------------------------------------------------------------

#[tokio::test]
async fn trace_and_connect_are_refused_and_never_forwarded() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    s.sim.clear_seen();
    for head in [
        format!(
            "TRACE /rest/api/2/myself HTTP/1.1\r\nHost: jira\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
        "TRACE / HTTP/1.1\r\nHost: jira\r\nConnection: close\r\n\r\n".to_string(),
        "CONNECT jira.example.com:443 HTTP/1.1\r\nHost: jira.example.com:443\r\nConnection: close\r\n\r\n"
            .to_string(),
    ] {
        let out = raw(s.gw.addr(), head.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
        assert!(out.to_lowercase().contains("\r\nallow: "), "{out}");
    }
    assert!(s.sim.seen().is_empty(), "{:?}", s.sim.seen());
}

// ---- 7. only WebSocket upgrades ---------------------------------------------------------

#[tokio::test]
async fn only_websocket_is_tunnelled() {
    let up = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&up.url(), |_| {}).await;
    let out = raw(
        gw.addr(),
        b"GET /upgrade HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = up.last();
    assert!(values(&seen.headers, "upgrade").is_empty(), "{seen:?}");
    assert!(
        values(&seen.headers, "http2-settings").is_empty(),
        "{seen:?}"
    );

    // WebSocket still switches.
    let mut sock = TcpStream::connect(gw.addr()).await.unwrap();
    sock.write_all(WEBSOCKET_UPGRADE).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    gw.stop().await;
}

// ---- 8. tokens are never echoed back or forwarded in URLs ------------------------------

#[tokio::test]
async fn a_token_is_never_echoed_in_an_error() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let resp = s
        .as_user("alice", "alice")
        .api(Method::POST, "/user/token")
        .json(&json!({"tokenDescription": "x", token.clone(): 1, "weird name!": 2}))
        .answer()
        .await;
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(&token), "{text}");
    assert!(!text.contains("weird name"), "{text}");
    assert!(text.contains("unknown field"), "{text}");

    // A token-shaped method name.
    let head = format!(
        "{token} /rest/de.resolution.apitokenauth/latest/user/token HTTP/1.1\r\nHost: jira\r\nConnection: close\r\n\r\n"
    );
    let out = raw(s.gw.addr(), head.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert!(!out.contains(&token), "{out}");
}

#[tokio::test]
async fn a_token_in_the_query_string_is_refused_and_never_forwarded() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let underscore = token.replacen('_', "%5F", 1);
    s.sim.clear_seen();
    for target in [
        format!("/rest/api/2/myself?access_token={token}"),
        format!("/rest/api/2/search?jql=x&os_authType=basic&t={underscore}"),
        format!("/rest/de.resolution.apitokenauth/latest/user/token?token={token}"),
    ] {
        let resp = s.anonymous().fetch(&target).await;
        assert_eq!(resp.status(), 400, "{target}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("Authorization header"), "{text}");
        assert!(!text.contains(&token), "{text}");
    }
    assert!(s.sim.seen().is_empty(), "{:?}", s.sim.seen());
    // Ordinary queries pass.
    let resp = s
        .with_token(&token)
        .fetch("/rest/api/2/myself?expand=groups&x=tg_short")
        .await;
    assert_eq!(resp.status(), 200);
}

// ---- 9. a wrong-user token counts against the name given -------------------------------

#[tokio::test]
async fn a_wrong_user_token_counts_against_the_claimed_user_not_the_owner() {
    let s = JiraSetup::jira().await;
    let bobs = s.token_for("bob").await;
    for _ in 0..3 {
        assert_eq!(s.as_user("alice", &bobs).myself().await.status(), 401);
    }
    assert_eq!(password_call(&s, "/rest/api/2/myself", "alice").await, 403);
    assert_eq!(
        s.as_user("bob", "bob").myself().await.status(),
        200,
        "the token's owner is not counted"
    );
}

// ---- 10. store files are private ---------------------------------------------------------

#[cfg(unix)]
#[tokio::test]
async fn the_store_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = JiraSetup::jira().await;
    s.token_for("alice").await;
    let store = &s.config.tokens.store_path;
    let mode = std::fs::metadata(store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", store.display());
    for e in std::fs::read_dir(store).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_file() {
            assert_eq!(m.permissions().mode() & 0o077, 0, "{}", e.path().display());
        }
    }
}

// ---- 11. HTTP/2 cookies and Host ---------------------------------------------------------

#[tokio::test]
async fn http2_cookie_fields_reach_the_upstream_as_one_header() {
    let up = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&up.url(), |c| c.server.h2c = true).await;
    let resp = gw
        .anonymous()
        .over(http2_client())
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .fetch("/page")
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(values(&up.last().headers, "cookie"), ["a=1; b=2"]);
    gw.stop().await;
}

#[tokio::test]
async fn several_or_broken_host_headers_are_refused() {
    let s = JiraSetup::jira().await;
    for head in [
        "GET /rest/api/2/serverInfo HTTP/1.1\r\nHost: jira\r\nHost: evil\r\nConnection: close\r\n\r\n",
        "GET /rest/api/2/serverInfo HTTP/1.1\r\nHost: user@jira\r\nConnection: close\r\n\r\n",
        "GET /rest/api/2/serverInfo HTTP/1.1\r\nHost: jira/path\r\nConnection: close\r\n\r\n",
        "GET /rest/api/2/serverInfo HTTP/1.1\r\nHost: ji ra\r\nConnection: close\r\n\r\n",
    ] {
        let out = raw(s.gw.addr(), head.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{head:?}: {out}");
    }
    let out = raw(
        s.gw.addr(),
        b"GET /rest/api/2/serverInfo HTTP/1.1\r\nHost: jira.example.com:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

// ---- 12. overflowing pages, text-direction characters -----------------------------------

#[tokio::test]
async fn a_page_beyond_any_offset_and_a_text_direction_override_are_400() {
    let s = JiraSetup::jira().await;
    let (status, v) = s
        .as_user("admin", "admin")
        .get("/user/tokensByFilter?page=99999999999999999999")
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["errors"]["page"].is_string(), "{v}");
    for bad in ["\u{202E}gnp.exe", "a\u{2066}b", "x\u{202A}"] {
        let (status, v) = s
            .as_user("alice", "alice")
            .post("/user/token", json!({"tokenDescription": bad}))
            .await;
        assert_eq!(status, 400, "{bad:?}: {v}");
    }
}

// ---- slow clients -------------------------------------------------------------------------

/// A request body that trickles in just under the pause limit is cut once
/// it falls below the minimum rate.
#[tokio::test]
async fn a_trickling_request_body_is_cut_by_the_minimum_rate() {
    let up = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&up.url(), |c| {
        c.server.header_read_timeout_ms = 1_000;
        c.server.min_body_bytes_per_second = 100;
    })
    .await;
    let mut sock = TcpStream::connect(gw.addr()).await.unwrap();
    sock.write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    // One byte every 300 ms: never a pause of a second, ~3 bytes a second.
    for _ in 0..40 {
        if sock.write_all(b"x").await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(300), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut after {:?}",
        started.elapsed()
    );
    gw.stop().await;
}

/// A WebSocket tunnel holds its connection's slot under `max_connections`
/// and is given the shutdown grace before it is closed.
#[tokio::test]
async fn a_websocket_tunnel_counts_as_a_connection_and_is_drained_at_shutdown() {
    let up = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&up.url(), |c| {
        c.server.max_connections = 1;
        c.server.workers = 1;
        c.server.shutdown_grace_ms = 1_500;
    })
    .await;
    let mut tunnel = TcpStream::connect(gw.addr()).await.unwrap();
    tunnel.write_all(WEBSOCKET_UPGRADE).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    async fn echo(tunnel: &mut TcpStream) -> bool {
        let mut buf = [0u8; 4];
        tunnel.write_all(b"ping").await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(2), tunnel.read_exact(&mut buf)).await,
                Ok(Ok(4))
            )
    }
    assert!(echo(&mut tunnel).await);

    // While the tunnel is open, the one slot is taken: a second connection waits.
    let page = gw.anonymous().request(Method::GET, "/page");
    let waiting = tokio::time::timeout(Duration::from_millis(700), page.send()).await;
    assert!(
        waiting.is_err(),
        "served while the tunnel held the only slot"
    );

    // At shutdown the tunnel keeps working through the grace, then closes.
    let started = Instant::now();
    let stopping = tokio::spawn(gw.stop());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(echo(&mut tunnel).await, "the tunnel works during the grace");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stops after the grace")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the tunnel is closed"
    );
}

/// An HTTP/2 client that stops reading holds no response forever: flow
/// control blocks the stream, not the socket, and the connection is closed
/// after `idle_timeout_ms` without progress.
#[tokio::test]
async fn an_http2_client_that_stops_reading_is_disconnected() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let up = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&up.url(), |c| {
        c.server.idle_timeout_ms = 1_000;
        c.server.h2c = true;
    })
    .await;
    let sock = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024)
        .handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(sock))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/download/104857600", gw.addr()))
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Hold the body, never read it: no WINDOW_UPDATE is ever sent.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(15), conn).await;
    assert!(
        ended.is_ok(),
        "the stalled HTTP/2 connection was never closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    drop(resp);
    gw.stop().await;
}
