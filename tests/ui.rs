//! The token pages over HTTP, without a browser (tests/browser.rs drives a
//! real one): where they are and what is never forwarded, the login
//! redirect, the headers of every answer, the browser session as an
//! identity on the management API and its CSRF rule, admins only on the
//! admin page, and the simulated Jira's login page.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    let _ = client();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(s: &JiraSetup, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = no_redirects().get(s.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

// ---- where the pages are ------------------------------------------------------

#[tokio::test]
async fn no_session_sends_the_browser_to_the_login_page_and_back() {
    let s = JiraSetup::jira().await;
    for (page, back) in [
        ("/tokengate/", "%2Ftokengate%2F"),
        ("/tokengate/admin", "%2Ftokengate%2Fadmin"),
    ] {
        let resp = get(&s, page, None).await;
        assert_eq!(resp.status(), 302, "{page}");
        assert_eq!(
            header(&resp, "location"),
            format!("{}/login.jsp?os_destination={back}", s.base)
        );
        assert_eq!(header(&resp, "cache-control"), "no-store");
    }
    // A cookie the upstream does not know is no session either.
    let resp = get(&s, "/tokengate/", Some("JSESSIONID=0123456789abcdef")).await;
    assert_eq!(resp.status(), 302);
    // The login page sends the browser back where it was going, logged in.
    let login = no_redirects()
        .post(s.url("/login.jsp"))
        .form_fields(&[
            ("os_username", "alice"),
            ("os_password", "alice"),
            ("os_destination", "/tokengate/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 302);
    assert_eq!(header(&login, "location"), "/tokengate/");
    let cookie = header(&login, "set-cookie").split(';').next().unwrap();
    let page = get(&s, "/tokengate/", Some(cookie)).await;
    assert_eq!(page.status(), 200);
    assert!(header(&page, "content-type").starts_with("text/html"));
}

#[tokio::test]
async fn confluence_logs_in_on_login_action_and_knows_the_session() {
    let s = JiraSetup::confluence().await;
    let resp = get(&s, "/tokengate/", None).await;
    assert_eq!(
        header(&resp, "location"),
        format!("{}/login.action?os_destination=%2Ftokengate%2F", s.base)
    );
    let bob = s.in_browser("bob").await;
    let (status, v) = bob.get("/user/token").await;
    assert_eq!((status, v), (StatusCode::OK, json!([])));
    let ctx = bob.fetch("/tokengate/context").await;
    let ctx: Value = ctx.json().await.unwrap();
    assert_eq!(ctx["user"]["name"], "bob");
    assert_eq!(ctx["product"], "confluence");
    assert_eq!(ctx["whoAmI"], "/rest/api/user/current");
}

#[tokio::test]
async fn the_public_url_is_the_base_of_the_login_address() {
    let s = JiraSetup::jira_with(|c| c.server.public_url = "https://jira.example.com".into()).await;
    let resp = get(&s, "/tokengate/admin", None).await;
    assert_eq!(
        header(&resp, "location"),
        "https://jira.example.com/login.jsp?os_destination=%2Ftokengate%2Fadmin"
    );
}

#[tokio::test]
async fn nothing_under_the_pages_path_is_forwarded_in_any_spelling() {
    let s = JiraSetup::jira().await;
    let cookie = s.session("alice").await;
    s.sim.clear_seen();
    for path in [
        "/tokengate",
        "/tokengate/",
        "/tokengate/admin",
        "/tokengate/context",
        "/tokengate/assets/tokens.js",
        "/tokengate/no-such-page",
        "/TokenGate/",
        "/x/../tokengate/",
        "/tokengate;a=b/",
        "/%74okengate/",
    ] {
        let resp = get(&s, path, Some(&cookie)).await;
        assert!(
            resp.status() != 502 && resp.status() != 500,
            "{path}: {}",
            resp.status()
        );
        assert!(
            resp.headers().contains_key("content-security-policy"),
            "{path} is a page"
        );
    }
    // The simulated Jira was asked who the session is, and saw no page.
    for seen in s.sim.seen() {
        assert!(
            !seen.target.to_lowercase().contains("okengate"),
            "forwarded: {}",
            seen.target
        );
    }
    assert!(s.seen_at("/rest/api/2/myself").is_some());
    assert_eq!(get(&s, "/tokengate", None).await.status(), 302);
    assert_eq!(
        header(&get(&s, "/tokengate", None).await, "location"),
        "/tokengate/"
    );
    assert_eq!(get(&s, "/tokengate/nope", None).await.status(), 404);
    assert_eq!(
        header(&get(&s, "/tokengate/admin/", None).await, "location"),
        "/tokengate/admin"
    );
}

#[tokio::test]
async fn pages_that_are_off_are_the_upstreams_business() {
    let s = JiraSetup::jira_with(|c| c.ui.enabled = false).await;
    let resp = get(&s, "/tokengate/", None).await;
    assert_eq!(resp.status(), 404, "the simulated Jira's own 404");
    assert!(!resp.headers().contains_key("content-security-policy"));
    assert!(s.seen_at("/tokengate/").is_some());
    // Sessions are read for the pages' sake: without them the API takes
    // Authorization only, as it did before.
    let (status, _) = s.in_browser("alice").await.get("/user/token").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn another_path_moves_the_pages() {
    let s = JiraSetup::jira_with(|c| c.ui.path = "/x/api-tokens/".into()).await;
    let cookie = s.session("alice").await;
    assert_eq!(get(&s, "/x/api-tokens/", Some(&cookie)).await.status(), 200);
    assert_eq!(
        header(&get(&s, "/x/api-tokens/admin", None).await, "location"),
        format!(
            "{}/login.jsp?os_destination=%2Fx%2Fapi-tokens%2Fadmin",
            s.base
        )
    );
    assert_eq!(
        get(&s, "/tokengate/", Some(&cookie)).await.status(),
        404,
        "forwarded to the simulated Jira"
    );
}

// ---- what every answer carries --------------------------------------------------

#[tokio::test]
async fn every_page_has_the_csp_nosniff_and_no_store() {
    let s = JiraSetup::jira().await;
    let cookie = s.session("admin").await;
    for path in [
        "/tokengate/",
        "/tokengate/admin",
        "/tokengate/context",
        "/tokengate/nope",
    ] {
        let resp = get(&s, path, Some(&cookie)).await;
        assert_eq!(
            header(&resp, "content-security-policy"),
            "default-src 'self'; frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        assert_eq!(header(&resp, "x-frame-options"), "DENY");
        assert_eq!(header(&resp, "cache-control"), "no-store", "{path}");
    }
    let page = get(&s, "/tokengate/", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("<script type=\"module\" src=\"assets/tokens.js\"></script>"));
    // The API's answers hold tokens: never stored either.
    let create = s
        .as_user("alice", "alice")
        .api(Method::POST, "/user/token")
        .json(&json!({"tokenDescription": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&create, "cache-control"), "no-store");
    assert_eq!(header(&create, "x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn assets_have_a_strong_etag_and_answer_304_to_it() {
    let s = JiraSetup::jira().await;
    for (name, kind) in [
        ("tokengate.css", "text/css"),
        ("common.js", "text/javascript"),
        ("tokens.js", "text/javascript"),
        ("admin.js", "text/javascript"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let path = format!("/tokengate/assets/{name}");
        // No session needed: the files hold nothing of anyone's.
        let resp = get(&s, &path, None).await;
        assert_eq!(resp.status(), 200, "{name}");
        assert!(header(&resp, "content-type").starts_with(kind), "{name}");
        assert_eq!(header(&resp, "cache-control"), "no-cache");
        let etag = header(&resp, "etag").to_string();
        assert!(
            etag.starts_with('"') && etag.len() == 34,
            "a strong ETag: {etag}"
        );
        assert!(header(&resp, "content-security-policy").starts_with("default-src 'self'"));
        let again = no_redirects()
            .get(s.url(&path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{name}");
        assert_eq!(header(&again, "etag"), etag);
        assert!(again.bytes().await.unwrap().is_empty());
        let other = no_redirects()
            .get(s.url(&path))
            .header("if-none-match", "\"something-else\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 200);
    }
    for nothing in [
        "/tokengate/assets/nope.js",
        "/tokengate/assets/",
        "/tokengate/tokens.html",
    ] {
        assert_eq!(get(&s, nothing, None).await.status(), 404, "{nothing}");
    }
}

#[tokio::test]
async fn pages_answer_get_and_head_only() {
    let s = JiraSetup::jira().await;
    let resp = no_redirects()
        .post(s.url("/tokengate/"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(header(&resp, "allow"), "GET, HEAD");
    let head = no_redirects()
        .head(s.url("/tokengate/assets/common.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
}

// ---- who is calling -------------------------------------------------------------

#[tokio::test]
async fn the_context_says_who_is_logged_in_and_the_token_rules() {
    let s = JiraSetup::jira_with(|c| {
        c.tokens.max_validity_months = 3;
        c.tokens.default_validity_months = 2;
    })
    .await;
    let alice = s.in_browser("alice").await;
    let v: Value = alice
        .fetch("/tokengate/context")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["user"],
        json!({"key": ALICE_KEY, "name": "alice", "admin": false})
    );
    assert_eq!(v["tokens"]["maxValidityMonths"], 3);
    assert_eq!(v["tokens"]["defaultValidityMonths"], 2);
    assert_eq!(v["baseUrl"], s.base);
    assert_eq!(v["apiRoot"], API);
    assert_eq!(v["whoAmI"], "/rest/api/2/myself");
    let admin = s.in_browser("admin").await;
    let v: Value = admin
        .fetch("/tokengate/context")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["user"]["admin"], true);
    // Without a session the context is a 401, for the script to reload the page.
    let resp = s.anonymous().fetch("/tokengate/context").await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn the_admin_page_and_its_api_are_for_administrators_only() {
    let s = JiraSetup::jira().await;
    let alice = s.in_browser("alice").await;
    let page = alice.fetch("/tokengate/admin").await;
    assert_eq!(page.status(), 403);
    assert!(page.text().await.unwrap().contains("Administrators only"));
    let (status, v) = alice.get("/user/tokensByFilter").await;
    assert_eq!(status, 403);
    assert_eq!(error_message(&v), "Only system administrators may do this");
    let admin = s.in_browser("admin").await;
    assert_eq!(admin.fetch("/tokengate/admin").await.status(), 200);
    let (status, _) = admin.get("/user/tokensByFilter").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_api_takes_the_browser_session_and_asks_the_upstream_once() {
    let s = JiraSetup::jira().await;
    let cookie = s.session("alice").await;
    let alice = s.anonymous().header("cookie", cookie.clone());
    s.sim.clear_seen();
    let (status, created) = alice
        .api(Method::POST, "/user/token")
        .header("x-atlassian-token", "no-check")
        .json(&json!({"tokenDescription": "from the page"}))
        .json_answer()
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["tokenForUserKey"], ALICE_KEY);
    let (_, list) = alice.get("/user/token").await;
    assert_eq!(list[0]["description"], "from the page");
    // The session was asked about once (who, then admin status) and cached,
    // under a hash of the cookie: the cookie itself went nowhere else.
    let asked: Vec<_> = s.sim.seen();
    assert_eq!(
        asked
            .iter()
            .filter(|r| r.target == "/rest/api/2/myself")
            .count(),
        1,
        "{:?}",
        asked.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert!(
        asked
            .iter()
            .all(|r| values(&r.headers, "cookie") == [cookie.clone()])
    );
    // The token works; the session was not turned into anything else.
    let me = s
        .with_token(created["plainTextToken"].as_str().unwrap())
        .myself()
        .await;
    assert_eq!(me.status(), 200);
}

#[tokio::test]
async fn an_authorization_header_goes_before_the_cookie() {
    let s = JiraSetup::jira().await;
    let cookie = s.session("alice").await;
    let bob_token = s.token_for("bob").await;
    let (status, list) = s
        .with_token(&bob_token)
        .header("cookie", cookie.clone())
        .get("/user/token")
        .await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["description"], "token of bob");
    // A bad credential is refused, never made up for by the session.
    let (status, _) = s
        .with_token(UNKNOWN_TOKEN)
        .header("cookie", cookie.clone())
        .get("/user/token")
        .await;
    assert_eq!(status, 401);
    let (status, _) = s
        .as_user("alice", "wrong")
        .header("cookie", cookie.clone())
        .get("/user/token")
        .await;
    assert_eq!(status, 401);
    // With a token, no CSRF header is needed: a form cannot send one.
    let (status, _) = s
        .with_token(&bob_token)
        .header("cookie", cookie)
        .header("origin", "http://evil.example.com")
        .post("/user/token", json!({"tokenDescription": "scripted"}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_unknown_session_is_no_credential_and_no_failed_attempt() {
    let s = JiraSetup::jira().await;
    for i in 0..6 {
        let (status, v) = s
            .anonymous()
            .header("cookie", format!("JSESSIONID=nope{i}"))
            .get("/user/token")
            .await;
        assert_eq!(status, 401, "{v}");
        assert_eq!(
            error_message(&v),
            "Not logged in: the session has ended or is not known; log in again"
        );
    }
    // No password prompt for a browser: no challenge with a session refused.
    let resp = s
        .anonymous()
        .header("cookie", "JSESSIONID=nope")
        .fetch(&format!("{API}/user/token"))
        .await;
    assert!(!resp.headers().contains_key("www-authenticate"));
    let resp = s.anonymous().fetch("/tokengate/context").await;
    assert_eq!(resp.status(), 401);
    assert!(!resp.headers().contains_key("www-authenticate"));
    // Without any cookie, the API still challenges as before.
    let resp = s.anonymous().fetch(&format!("{API}/user/token")).await;
    assert!(resp.headers().contains_key("www-authenticate"));
    // Nobody was locked out or throttled by it.
    let (status, _) = s.in_browser("alice").await.get("/user/token").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_proxy_path_leaves_the_cookie_to_the_upstream() {
    let s = JiraSetup::jira().await;
    let cookie = s.session("alice").await;
    s.sim.clear_seen();
    let resp = s
        .anonymous()
        .header("cookie", cookie.clone())
        .myself()
        .await;
    assert_eq!(resp.status(), 200);
    let seen = s.sim.seen();
    assert_eq!(seen.len(), 1, "forwarded once, no identity look-up of ours");
    assert_eq!(values(&seen[0].headers, "cookie"), [cookie]);
    assert_eq!(seen[0].user.as_deref(), Some("alice"));
}

// ---- CSRF -----------------------------------------------------------------------

#[tokio::test]
async fn a_session_changes_something_only_from_a_page_of_this_origin() {
    let s = JiraSetup::jira().await;
    let alice = s.in_browser("alice").await;
    let create = |caller: Caller| async move {
        caller
            .api(Method::POST, "/user/token")
            .json(&json!({"tokenDescription": "t"}))
            .json_answer()
            .await
    };
    // No X-Atlassian-Token: what a form on another site could send.
    let (status, v) = create(alice.clone()).await;
    assert_eq!(status, 403);
    assert_eq!(
        v,
        json!({"errorMessages": ["XSRF check failed"], "errors": {}})
    );
    // The header, but a page of another origin.
    for origin in [
        "http://evil.example.com",
        "null",
        &s.base.replace("127.0.0.1", "localhost"),
    ] {
        let (status, _) = create(
            alice
                .clone()
                .header("x-atlassian-token", "no-check")
                .header("origin", origin),
        )
        .await;
        assert_eq!(status, 403, "{origin}");
    }
    // The wrong value of the header.
    let (status, _) = create(alice.clone().header("x-atlassian-token", "nocheck")).await;
    assert_eq!(status, 403);
    // The header and this origin, or no Origin at all: the page's own calls.
    let ours = alice.clone().header("x-atlassian-token", "no-check");
    let (status, v) = create(ours.clone().header("origin", &s.base)).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = create(ours.clone()).await;
    assert_eq!(status, 200);
    let id = v["id"].as_u64().unwrap();
    // Every method that changes something, not only POST.
    let (status, _) = alice
        .api(Method::PATCH, &format!("/user/token/{id}"))
        .json(&json!({"tokenDescription": "u"}))
        .json_answer()
        .await;
    assert_eq!(status, 403);
    let (status, _) = alice.delete(&format!("/user/token/{id}")).await;
    assert_eq!(status, 403);
    let (status, _) = ours.delete(&format!("/user/token/{id}")).await;
    assert_eq!(status, 200);
    // Reading needs nothing more than the session.
    let (status, _) = alice.get("/user/token").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn behind_a_public_url_its_origin_is_the_one() {
    let s =
        JiraSetup::jira_with(|c| c.server.public_url = "https://jira.example.com/".into()).await;
    let ours = s
        .in_browser("alice")
        .await
        .header("x-atlassian-token", "no-check");
    let (status, _) = ours
        .clone()
        .header("origin", "https://jira.example.com")
        .post("/user/token", json!({"tokenDescription": "t"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = ours
        .header("origin", &s.base)
        .post("/user/token", json!({"tokenDescription": "t"}))
        .await;
    assert_eq!(
        status, 403,
        "the address tokengate listens on is not the public one"
    );
}

#[tokio::test]
async fn a_cross_origin_preflight_is_not_answered_with_permission() {
    let s = JiraSetup::jira().await;
    let resp = s
        .anonymous()
        .api(Method::OPTIONS, "/user/token")
        .header("origin", "http://evil.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-atlassian-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
}

// ---- the simulated Jira's login page --------------------------------------------

#[tokio::test]
async fn the_simulated_login_page_refuses_a_wrong_password_and_other_sites() {
    let s = JiraSetup::jira().await;
    let form = get(&s, "/login.jsp?os_destination=%2Ftokengate%2F", None).await;
    assert_eq!(form.status(), 200);
    let html = form.text().await.unwrap();
    assert!(
        html.contains("name=\"os_destination\" value=\"/tokengate/\""),
        "{html}"
    );
    let post = |user: &'static str, password: &'static str, dest: &'static str| {
        no_redirects()
            .post(s.url("/login.jsp"))
            .form_fields(&[
                ("os_username", user),
                ("os_password", password),
                ("os_destination", dest),
            ])
            .send()
    };
    let wrong = post("alice", "bob", "/tokengate/").await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(!wrong.headers().contains_key("set-cookie"));
    assert!(wrong.text().await.unwrap().contains("incorrect"));
    for elsewhere in ["https://evil.example.com/", "//evil.example.com/"] {
        let resp = post("alice", "alice", elsewhere).await.unwrap();
        assert_eq!(header(&resp, "location"), "/", "{elsewhere}");
    }
}
