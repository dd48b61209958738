//! Who the upstream believes the caller is: the identity and secret headers
//! tokengate injects can be neither forged nor removed by a client, origin
//! and path-override headers are tokengate's (or a trusted proxy's), and no
//! value tokengate writes can carry CR, LF or NUL. Complements the spoofing
//! checks of `auth.rs` and `proxy.rs` with the spellings, schemes, modes,
//! protocols and byte-level tricks they leave out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use tokengate::demo::sim::{SimConfig, SimUser};

/// Client-sent lines forging the identity and the shared secret, in every
/// spelling a server might fold into the real names.
const FORGED: &str = "X-Remote-User: admin\r\nx-remote-user: admin\r\nX-REMOTE-USER: admin\r\n\
    X_Remote_User: admin\r\nx.remote.user: admin\r\nX-Remote_User: admin\r\nx_remote.user: admin\r\n\
    X-Remote-User: \r\nX-Remote-User: alice, admin\r\n\
    X-Gateway-Secret: forged\r\nx-gateway-secret: forged\r\nX_GATEWAY_SECRET: forged\r\n\
    x.gateway.secret: forged\r\nX-Gateway_Secret: forged\r\nX-Gateway-Secret: s3cret-between-gateway-and-jira\r\n";

#[tokio::test]
async fn forged_identity_and_secret_headers_never_reach_the_upstream_under_any_credential() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    // (credential, a token request, who the upstream must take the caller for)
    let cases = [
        (None, false, None),
        (Some(format!("Bearer {token}")), true, Some("alice")),
        (Some(basic("alice", &token)), true, Some("alice")),
        (Some(basic("ALICE", &token)), true, Some("alice")),
        // A password is forwarded as it came: the upstream judges it, not a forged header.
        (Some(basic("alice", "alice")), false, Some("alice")),
        (Some(basic("alice", "wrong")), false, None),
        (
            Some("Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnag".to_string()),
            false,
            None,
        ),
    ];
    for (auth, token_path, expected_user) in cases {
        let path = probe();
        let auth_line = auth
            .as_ref()
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: h\r\n{auth_line}{FORGED}Connection: close\r\n\r\n"
        );
        let (out, _) = exchange(s.gw.addr(), req.as_bytes()).await;
        let seen = s
            .seen_at(&path)
            .unwrap_or_else(|| panic!("{auth_line} not forwarded: {out}"));
        let identity = spelled(&seen.headers, "X-Remote-User");
        let secret = spelled(&seen.headers, "X-Gateway-Secret");
        if token_path {
            assert_eq!(identity, ["alice"], "{auth_line}");
            assert_eq!(secret, [SECRET], "{auth_line}");
        } else {
            assert!(identity.is_empty(), "{auth_line}: identity {identity:?}");
            assert!(secret.is_empty(), "{auth_line}: secret {secret:?}");
        }
        assert_eq!(
            seen.user.as_deref(),
            expected_user,
            "{auth_line}: the upstream took the caller for someone else"
        );
    }
}

#[tokio::test]
async fn forged_identity_headers_over_http2_never_reach_the_upstream() {
    let s = JiraSetup::jira_with(|c| c.server.h2c = true).await;
    let token = s.token_for("alice").await;
    for with_token in [false, true] {
        let path = probe();
        let caller = if with_token {
            s.with_token(&token)
        } else {
            s.anonymous()
        };
        let resp = caller
            .over(http2_client())
            .header("x-remote-user", "admin")
            .header("x_remote_user", "admin")
            .header("x.remote.user", "admin")
            .header("x-gateway-secret", "forged")
            .header("x_gateway_secret", SECRET)
            .fetch(&path)
            .await;
        assert_eq!(resp.version(), http::Version::HTTP_2);
        // Anonymous callers get the upstream's own 401: the forged headers did not count.
        assert_eq!(resp.status(), if with_token { 200 } else { 401 });
        let seen = s.seen_at(&path).unwrap();
        if with_token {
            assert_eq!(spelled(&seen.headers, "x-remote-user"), ["alice"]);
            assert_eq!(spelled(&seen.headers, "x-gateway-secret"), [SECRET]);
            assert_eq!(seen.user.as_deref(), Some("alice"));
        } else {
            assert!(spelled(&seen.headers, "x-remote-user").is_empty());
            assert!(spelled(&seen.headers, "x-gateway-secret").is_empty());
            assert_eq!(seen.user, None);
        }
    }
}

#[tokio::test]
async fn obs_folded_or_malformed_identity_lines_are_refused_and_nothing_is_forwarded() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let vectors = [
        // A continuation line that a folding parser would glue to X-Innocent,
        // and a splitting one would read as a header of its own.
        "X-Innocent: yes\r\n X-Remote-User: admin\r\n",
        "X-Innocent: yes\r\n\tX-Gateway-Secret: forged\r\n",
        // Folding that would extend our own header's value.
        "X-Remote-User: alice\r\n admin\r\n",
        // Whitespace around the name.
        "X-Remote-User : admin\r\n",
        "X-Remote-User\t: admin\r\n",
        " X-Remote-User: admin\r\n",
        // CR or NUL inside a value, hiding a second line.
        "X-Innocent: a\rX-Remote-User: admin\r\n",
        "X-Innocent: a\0X-Remote-User: admin\r\n",
        "X-Remote-User: admin\0\r\n",
    ];
    for with_token in [false, true] {
        for forged in vectors {
            let before = s.sim.seen().len();
            let path = probe();
            let auth = if with_token {
                format!("Authorization: Bearer {token}\r\n")
            } else {
                String::new()
            };
            let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\n{auth}{forged}\r\n");
            let (out, closed) = exchange(s.gw.addr(), req.as_bytes()).await;
            assert!(
                out.starts_with("HTTP/1.1 400"),
                "{forged:?} (token: {with_token}): {out}"
            );
            assert!(closed, "{forged:?}: connection left open");
            assert_eq!(
                s.sim.seen().len(),
                before,
                "{forged:?} (token: {with_token}) reached the upstream"
            );
        }
    }
}

#[tokio::test]
async fn a_bare_lf_line_is_its_own_header_and_is_stripped_like_any_other() {
    let s = JiraSetup::jira().await;
    let path = probe();
    // Lenient parsers end a line at a bare LF: the forged header is then a
    // header like any other, and it is removed as one.
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: h\r\nX-Innocent: yes\nX-Remote-User: admin\nX_Gateway_Secret: {SECRET}\r\nConnection: close\r\n\r\n"
    );
    let (out, _) = exchange(s.gw.addr(), req.as_bytes()).await;
    // Forwarded as an anonymous request: the upstream's own 401.
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(out.contains("x-ausername: anonymous"), "{out}");
    let seen = s.seen_at(&path).unwrap();
    assert_eq!(values(&seen.headers, "x-innocent"), ["yes"]);
    assert!(spelled(&seen.headers, "x-remote-user").is_empty());
    assert!(spelled(&seen.headers, "x-gateway-secret").is_empty());
    assert_eq!(seen.user, None);
}

#[tokio::test]
async fn connection_options_cannot_remove_what_tokengate_injects_in_any_mode() {
    let connection_lines = [
        "Connection: close, X-Remote-User\r\n",
        "Connection: X-Remote-User, X-Gateway-Secret\r\n",
        "Connection: keep-alive\r\nConnection: x_remote_user, x.gateway.secret\r\n",
        "Connection: Authorization, Cookie, X-Remote-User\r\n",
        "Connection: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Host\r\n",
    ];
    let header_mode = JiraSetup::jira().await;
    let basic_mode = JiraSetup::with(with_service_account(SimConfig::jira()), |c| {
        c.upstream.credentials.mode = tokengate::config::CredentialMode::Basic;
        c.upstream.credentials.username = "svc".into();
        c.upstream.credentials.password_env = "SVC_PW".into();
    })
    .await;
    let bearer_mode = JiraSetup::with(with_service_account(SimConfig::jira()), |c| {
        c.upstream.credentials.mode = tokengate::config::CredentialMode::Bearer;
        c.upstream.credentials.token_env = "SVC_PAT".into();
    })
    .await;
    // The shared secret stays configured in every mode, so the simulated Jira
    // takes the caller for the identity header's user whenever it is intact.
    for (mode, s, authorization) in [
        ("header", &header_mode, None),
        ("basic", &basic_mode, Some("Basic c3ZjOnN2Yy1wdw==")),
        ("bearer", &bearer_mode, Some("Bearer svc-pat")),
    ] {
        let token = s.token_for("alice").await;
        for connection in connection_lines {
            for version in ["HTTP/1.1", "HTTP/1.0"] {
                let path = probe();
                let req = format!(
                    "GET {path} {version}\r\nHost: jira.example.com\r\nAuthorization: Bearer {token}\r\n{connection}\r\n"
                );
                let out = first_response(s.gw.addr(), req.as_bytes()).await;
                assert!(out.contains(" 200 "), "{mode} {connection:?}: {out}");
                let seen = s.seen_at(&path).unwrap();
                let what = format!("{mode} {version} {connection:?}");
                assert_eq!(spelled(&seen.headers, "x-remote-user"), ["alice"], "{what}");
                assert_eq!(
                    spelled(&seen.headers, "x-gateway-secret"),
                    [SECRET],
                    "{what}"
                );
                assert_eq!(
                    values(&seen.headers, "authorization"),
                    authorization
                        .map(|a| vec![a.to_string()])
                        .unwrap_or_default(),
                    "{what}"
                );
                assert_eq!(seen.user.as_deref(), Some("alice"), "{what}");
                assert_eq!(
                    values(&seen.headers, "x-forwarded-for"),
                    ["127.0.0.1"],
                    "{what}"
                );
                assert_eq!(
                    values(&seen.headers, "x-forwarded-proto"),
                    ["http"],
                    "{what}"
                );
                assert_eq!(
                    values(&seen.headers, "x-forwarded-host"),
                    ["jira.example.com"],
                    "{what}"
                );
                assert!(!seen.headers.contains_key("connection"), "{what}");
            }
        }
    }
}

/// Origin and path-override headers a client may try, in several spellings.
const ORIGIN_FORGERIES: &str = "X-Forwarded-For: 203.0.113.66\r\nX_Forwarded_For: 203.0.113.67\r\n\
    X-Forwarded-Proto: https\r\nx.forwarded.proto: https\r\nX-Forwarded-Host: evil.example\r\n\
    X_Forwarded_Host: evil.example\r\nForwarded: for=203.0.113.66;proto=https;host=evil.example\r\n\
    forwarded: for=\"[2001:db8::66]\"\r\nX-Original-URL: /secure/admin/ViewApplicationProperties.jspa\r\n\
    X_Original_URL: /secure/admin\r\nX-Rewrite-URL: /secure/admin\r\nx.rewrite.url: /secure/admin\r\n\
    X-Original-URI: /secure/admin\r\nX-Real-IP: 203.0.113.66\r\nX-Forwarded-Port: 443\r\n";

fn assert_no_forged_origin(seen: &http::HeaderMap, what: &str) {
    for name in [
        "forwarded",
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
    ] {
        assert!(
            spelled(seen, name).is_empty(),
            "{what}: {name} reached the upstream"
        );
    }
    for (k, v) in seen.iter() {
        let v = String::from_utf8_lossy(v.as_bytes());
        assert!(
            !v.contains("evil.example") && !v.contains("/secure/admin"),
            "{what}: {k}: {v} reached the upstream"
        );
    }
}

#[tokio::test]
async fn origin_and_path_override_headers_of_an_untrusted_client_are_replaced_or_removed() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    for auth in [String::new(), format!("Authorization: Bearer {token}\r\n")] {
        let path = probe();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: jira.example.com\r\n{auth}{ORIGIN_FORGERIES}Connection: close\r\n\r\n"
        );
        let (out, _) = exchange(s.gw.addr(), req.as_bytes()).await;
        let what = if auth.is_empty() {
            "anonymous"
        } else {
            "token"
        };
        // The simulated Jira wants a user for this path: 401 when anonymous.
        let expected = if auth.is_empty() {
            "HTTP/1.1 401"
        } else {
            "HTTP/1.1 200"
        };
        assert!(out.starts_with(expected), "{what}: {out}");
        let seen = s.seen_at(&path).unwrap();
        assert_eq!(
            spelled(&seen.headers, "x-forwarded-for"),
            ["127.0.0.1"],
            "{what}"
        );
        assert_eq!(
            spelled(&seen.headers, "x-forwarded-proto"),
            ["http"],
            "{what}"
        );
        assert_eq!(
            spelled(&seen.headers, "x-forwarded-host"),
            ["jira.example.com"],
            "{what}"
        );
        for name in ["x-real-ip", "x-forwarded-port"] {
            assert!(spelled(&seen.headers, name).is_empty(), "{what}: {name}");
        }
        assert_no_forged_origin(&seen.headers, what);
        // The path tokengate judged is the path the upstream got.
        assert_eq!(seen.target, path);
    }
}

#[tokio::test]
async fn forwarded_and_path_overrides_are_removed_even_from_a_trusted_proxy() {
    let s = JiraSetup::with(SimConfig::jira(), |c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let token = s.token_for("alice").await;
    let path = probe();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: gw.internal\r\nAuthorization: Bearer {token}\r\n\
         X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: jira.example.com\r\n\
         X-Real-IP: 198.51.100.7\r\nForwarded: for=198.51.100.7;proto=https;host=evil.example\r\n\
         X-Original-URL: /secure/admin\r\nX_Rewrite_URL: /secure/admin\r\nConnection: close\r\n\r\n"
    );
    let (out, _) = exchange(s.gw.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = s.seen_at(&path).unwrap();
    // What a trusted proxy states about the client is kept, the chain extended...
    assert_eq!(
        values(&seen.headers, "x-forwarded-for"),
        ["198.51.100.7, 127.0.0.1"]
    );
    assert_eq!(values(&seen.headers, "x-forwarded-proto"), ["https"]);
    assert_eq!(
        values(&seen.headers, "x-forwarded-host"),
        ["jira.example.com"]
    );
    assert_eq!(values(&seen.headers, "x-real-ip"), ["198.51.100.7"]);
    // ...but Forwarded and path overrides are never passed on.
    assert_no_forged_origin(&seen.headers, "trusted proxy");
    assert_eq!(seen.target, path);
    assert_eq!(seen.user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_username_with_control_characters_never_becomes_a_header() {
    let odd = [
        ("eve\r\nX-Remote-User: admin", "JIRAUSER20001"),
        ("eve\nadmin", "JIRAUSER20002"),
        ("eve\0admin", "JIRAUSER20003"),
        ("eve\tadmin", "JIRAUSER20004"),
        ("eve\u{7f}admin", "JIRAUSER20005"),
        ("eve\u{85}admin", "JIRAUSER20006"),
    ];
    let mut sim = SimConfig::jira();
    for (name, key) in odd {
        // The password avoids ':' so Basic can carry it; the name has none either.
        sim.users
            .push(SimUser::new(&name.replace(':', ""), key, "pw", false));
    }
    let s = JiraSetup::with(sim, |_| {}).await;
    for (name, key) in odd {
        let name = name.replace(':', "");
        // The user asking for a token of their own: such a Basic user name is
        // unreadable, refused like any bad credential...
        let (status, _) = s
            .with_authorization(&basic(&name, "pw"))
            .post("/user/token", json!({"tokenDescription": "odd"}))
            .await;
        assert_eq!(status, 401, "{name:?}");
        // ...and an admin asking for one on their behalf.
        let (status, body) = s
            .as_user("admin", "admin")
            .post(
                "/user/token",
                json!({"tokenDescription": "odd", "tokenForUserKey": key}),
            )
            .await;
        assert_eq!(status, 400, "{name:?}");
        assert!(body["errorMessages"][0].as_str().is_some(), "{body}");
    }
    // No token exists for any of them.
    let (_, all) = s
        .as_user("admin", "admin")
        .get("/user/tokensByFilter?notValidAfter=-1")
        .await;
    assert_eq!(all["total"], 0, "{all}");
    // And no request ever carried an identity header but the gateway's own.
    for seen in s.sim.seen() {
        for v in spelled(&seen.headers, "x-remote-user") {
            assert!(!v.contains("eve"), "{v:?} reached the upstream");
        }
    }
}

#[tokio::test]
async fn a_stored_owner_name_with_control_characters_is_refused_not_forwarded() {
    // Defence in depth: a store written by an older version (or by hand)
    // holding such a name. The request is refused; nothing reaches the upstream.
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&upstream.url(), dir.path());
    let format = tokengate::token::TokenFormat::new("tg");
    let plain = format.generate().unwrap();
    {
        let store = tokengate::store::Store::open(&config.tokens.store_path).unwrap();
        store
            .create(
                tokengate::store::NewToken {
                    hash: plain.hash(),
                    description: "planted".into(),
                    user_key: "JIRAUSER666".into(),
                    user_name: "eve\r\nX-Remote-User: admin".into(),
                    created_by: "JIRAUSER666".into(),
                    created: 1,
                    valid_until: 0,
                    scope: tokengate::store::Scope::ReadWrite,
                    allowed_ips: Default::default(),
                },
                50,
            )
            .await
            .unwrap();
        store.close().await.unwrap();
    }
    let gw = start(config).await;
    let req = format!(
        "GET /planted HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        plain.expose()
    );
    let (out, _) = exchange(gw.addr(), req.as_bytes()).await;
    let status: u16 = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    assert!((500..600).contains(&status), "{out}");
    assert!(!out.contains("admin") && !out.contains("eve"), "{out}");
    assert!(
        upstream.seen().iter().all(|r| r.target != "/planted"),
        "the request was forwarded"
    );
    gw.stop().await;
}

/// A head of `prefix`, the `odd` bytes and the end of the line and head:
/// answered 400, and nothing reaches the upstream.
async fn assert_refused_unforwarded(
    gw: &tokengate::Running,
    upstream: &EchoUpstream,
    prefix: &[u8],
    odd: &[u8],
) {
    let before = upstream.seen().len();
    let mut req = prefix.to_vec();
    req.extend_from_slice(odd);
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let (out, _) = exchange(gw.addr(), &req).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{odd:?}: {out}");
    assert_eq!(upstream.seen().len(), before);
}

#[tokio::test]
async fn request_ids_with_odd_bytes_are_replaced_never_echoed() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |_| {}).await;
    let odd: [&[u8]; 10] = [
        b"a b",
        b"<script>alert(1)</script>",
        b"\xff\xfe\xc3\xa9",
        b"a\tb",
        b"id-1,id-2",
        b"../../etc/passwd",
        b"a%0d%0aSet-Cookie:%20x=1",
        b"\"quoted\"",
        b"",
        b"x;y=z",
    ];
    for (i, id) in odd.iter().enumerate() {
        let path = format!("/rid/{i}");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: h\r\nX-Request-Id: ").into_bytes();
        req.extend_from_slice(id);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let (out, _) = exchange(gw.addr(), &req).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{id:?}: {out}");
        let echoed: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("x-request-id: "))
            .collect();
        assert_eq!(echoed.len(), 1, "{out}");
        let made = echoed[0];
        assert_eq!(made.len(), 32, "{id:?}: {made}");
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        let seen = upstream.seen_at(&path).unwrap();
        assert_eq!(values(&seen.headers, "x-request-id"), [made], "{id:?}");
    }
    // Duplicates: the first plain one is kept, once, both ways.
    let (out, _) = exchange(
        gw.addr(),
        b"GET /rid/dup HTTP/1.1\r\nHost: h\r\nX-Request-Id: ci-1\r\nX-Request-Id: <evil>\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("x-request-id:"))
            .collect::<Vec<_>>(),
        ["x-request-id: ci-1"]
    );
    let seen = upstream.seen_at("/rid/dup").unwrap();
    assert_eq!(values(&seen.headers, "x-request-id"), ["ci-1"]);
    // CR or NUL in it: refused before anything is forwarded.
    for bad in [&b"a\rb"[..], b"a\0b"] {
        assert_refused_unforwarded(
            &gw,
            &upstream,
            b"GET /rid/bad HTTP/1.1\r\nHost: h\r\nX-Request-Id: ",
            bad,
        )
        .await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn odd_bytes_in_host_are_refused_and_never_reach_x_forwarded_host() {
    let upstream = EchoUpstream::start().await;
    let (gw, _dir) = gateway_for(&upstream.url(), |_| {}).await;
    // A Host that is not a host and port is a bad request (RFC 9112 §3.2);
    // trailing whitespace is not part of the value.
    let path = "/host/ok";
    let (out, _) = exchange(
        gw.addr(),
        format!("GET {path} HTTP/1.1\r\nHost: jira.example.com\t\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = upstream.seen_at(path).unwrap();
    assert_eq!(
        values(&seen.headers, "x-forwarded-host"),
        ["jira.example.com"]
    );
    assert_eq!(values(&seen.headers, "host"), [upstream.addr.to_string()]);
    for bad in [&b"jira.example.com\xff"[..], b"a%0d%0ab"] {
        assert_refused_unforwarded(&gw, &upstream, b"GET /host/odd HTTP/1.1\r\nHost: ", bad).await;
    }
    // CR, LF-continuation or NUL in Host: refused, nothing forwarded.
    for bad in [
        &b"jira\rX-Remote-User: admin"[..],
        b"jira\0",
        b"jira\r\n admin",
    ] {
        assert_refused_unforwarded(&gw, &upstream, b"GET /host/bad HTTP/1.1\r\nHost: ", bad).await;
    }
    gw.stop().await;
}
