//! The token pages in a real headless Chromium, driven over WebDriver
//! (chromedriver, with fantoccini): log in to the simulated Jira, create a
//! token and read it once, use it, revoke it; the admin console; text that
//! looks like HTML stays text; CSRF from another origin; and checks of the
//! served pages: headers, every request the page makes, its weight, narrow
//! screens, the keyboard, and an axe-core accessibility run.
//!
//! Needs `chromium` and `chromium-driver` (Debian) and axe-core's
//! `axe.min.js` at `TOKENGATE_AXE_JS` (`.ci/run` fetches it). Without them
//! the test says SKIPPED in one loud line and passes, unless
//! `TOKENGATE_REQUIRE_BROWSER=1` (CI), where it fails. Every wait is bounded;
//! chromedriver listens on loopback, the gateway and the simulated Jira on
//! port 0, Chromium's profile is a temporary directory.
//!
//! `TOKENGATE_SCREENSHOT=docs/img/tokens-page.png` writes the README's
//! screenshot of the page.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(15);

/// What the test needs from the machine, or why it cannot run.
struct Tools {
    chromedriver: PathBuf,
    chromium: PathBuf,
    axe: PathBuf,
}

fn tools() -> Result<Tools, String> {
    let found = |var: &str, default: &str| {
        let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        path.is_file().then_some(path)
    };
    let chromedriver = found("TOKENGATE_CHROMEDRIVER", "/usr/bin/chromedriver")
        .ok_or("no chromedriver at /usr/bin/chromedriver (or TOKENGATE_CHROMEDRIVER)")?;
    let chromium = found("TOKENGATE_CHROMIUM", "/usr/bin/chromium")
        .ok_or("no chromium at /usr/bin/chromium (or TOKENGATE_CHROMIUM)")?;
    let axe = std::env::var_os("TOKENGATE_AXE_JS")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .ok_or("no axe-core: TOKENGATE_AXE_JS must name axe.min.js (.ci/run fetches it)")?;
    Ok(Tools {
        chromedriver,
        chromium,
        axe,
    })
}

/// chromedriver on a free loopback port, stopped (with its browsers) on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(path: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A process group of its own, so that the browsers it starts end with it.
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        loop {
            let ready = client()
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return driver;
            }
            assert!(started.elapsed() < WAIT, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Its process group: chromedriver and the browsers it started.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with a profile of its own.
async fn browser(driver: &Driver, chromium: &Path, profile: &Path, dark: bool) -> Client {
    let mut args = vec![
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--no-first-run".into(),
        "--window-size=1100,800".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    if dark {
        args.push("--blink-settings=preferredColorScheme=0".into());
    }
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": chromium, "args": args},
        "unhandledPromptBehavior": "ignore",
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// The browser and the gateway it talks to, with a few words for each step.
struct Page<'a> {
    c: Client,
    s: &'a JiraSetup,
    driver: String,
}

impl Page<'_> {
    /// Lets the test read the clipboard on the current page's origin
    /// (WebDriver's permissions extension): the page itself only writes it,
    /// after a click.
    async fn grant_clipboard_read(&self) {
        let session = self.c.session_id().await.unwrap().unwrap();
        let granted = client()
            .post(format!("{}/session/{session}/permissions", self.driver))
            .json(&json!({"descriptor": {"name": "clipboard-read"}, "state": "granted"}))
            .send()
            .await
            .unwrap();
        assert_eq!(granted.status(), 200, "clipboard-read granted");
    }

    async fn goto(&self, path: &str) {
        self.c.goto(&self.s.url(path)).await.unwrap();
    }

    async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Runs `body` (which calls `done(value)`) in the page and waits for it.
    async fn js_async(&self, body: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1]; {body}");
        self.c.execute_async(&script, vec![]).await.unwrap()
    }

    /// Waits until `condition` (a JS expression) is true.
    async fn until(&self, condition: &str, what: &str) {
        let started = Instant::now();
        loop {
            let ok = self
                .c
                .execute(&format!("return !!({condition});"), vec![])
                .await
                .is_ok_and(|v| v == Value::Bool(true));
            if ok {
                return;
            }
            assert!(started.elapsed() < WAIT, "waited for {what}: {condition}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let e = self.c.wait().at_most(WAIT).for_element(Locator::Css(css));
        e.await.unwrap().text().await.unwrap()
    }

    async fn click(&self, css: &str) {
        let e = self.c.wait().at_most(WAIT).for_element(Locator::Css(css));
        e.await.unwrap().click().await.unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.c.wait().at_most(WAIT).for_element(Locator::Css(css));
        let e = e.await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Logs in on the simulated Jira's login page the browser is on.
    async fn log_in(&self, user: &str) {
        self.until(
            "location.pathname === '/login.jsp'",
            "the simulated Jira's login page",
        )
        .await;
        self.type_into("#login-form-username", user).await;
        self.type_into("#login-form-password", user).await;
        self.click("#login-form-submit").await;
    }

    /// Confirms the page's dialog.
    async fn confirm(&self) {
        self.until("document.getElementById('confirm').open", "the dialog")
            .await;
        self.click("#confirm-ok").await;
        self.until(
            "!document.getElementById('confirm').open",
            "the dialog to close",
        )
        .await;
    }

    async fn no_alert(&self) {
        let alert = self.c.get_alert_text().await;
        assert!(alert.is_err(), "an alert opened: {alert:?}");
    }

    /// The number of rows of the table `css`.
    async fn rows(&self, css: &str) -> u64 {
        self.js(&format!(
            "return document.querySelectorAll('{css} tbody tr').length;"
        ))
        .await
        .as_u64()
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_pages_in_a_real_browser() {
    let tools = match tools() {
        Ok(t) => t,
        Err(why) if std::env::var("TOKENGATE_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("TOKENGATE_REQUIRE_BROWSER=1 but {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED: tests/browser.rs did not run ({why}): install chromium chromium-driver to run the browser tests (and set TOKENGATE_AXE_JS; see docs/testing.md)"
            );
            return;
        }
    };
    let s = JiraSetup::with_admin().await;
    let driver = Driver::start(&tools.chromedriver).await;
    let profile = tempfile::tempdir().unwrap();
    let page = Page {
        c: browser(&driver, &tools.chromium, profile.path(), false).await,
        s: &s,
        driver: driver.url.clone(),
    };

    eprintln!("scenario: no session, log in, and back to the page");
    let alice_token = no_session_logs_in_and_comes_back(&page).await;
    eprintln!("scenario: create, read once, use, revoke");
    create_read_once_use_and_revoke(&page, &alice_token).await;
    eprintln!("scenario: allowed IPs and rotation");
    allowed_ips_and_rotation(&page).await;
    eprintln!("scenario: bad input gets the API's message next to the field");
    bad_input_gets_the_apis_message(&page).await;
    eprintln!("scenario: a description that looks like HTML is text");
    html_in_a_description_is_text(&page).await;
    eprintln!("scenario: rename, revoke all");
    rename_and_revoke_all(&page).await;
    eprintln!("scenario: the keyboard, the copy button, the focus ring");
    let axe = std::fs::read_to_string(&tools.axe).unwrap();
    keyboard_and_copy(&page, &axe).await;
    eprintln!("scenario: CSRF: a fetch without the header, a form of another origin");
    csrf_is_refused(&page).await;
    eprintln!("scenario: what the page loads, its weight, its headers");
    what_the_page_loads(&page).await;
    eprintln!("scenario: narrow screens");
    narrow_screens(&page).await;
    eprintln!("scenario: axe-core, light");
    accessibility(&page, &axe, "light").await;
    eprintln!("scenario: a non-admin gets 403 on the admin page");
    non_admin_gets_403(&page).await;
    eprintln!("scenario: the admin console");
    admin_console(&page).await;
    accessibility(&page, &axe, "light, admin").await;
    if let Some(path) = std::env::var_os("TOKENGATE_SCREENSHOT") {
        screenshot(&page, Path::new(&path)).await;
    }
    page.c.close().await.unwrap();

    eprintln!("scenario: axe-core, dark");
    let dark_profile = tempfile::tempdir().unwrap();
    let dark = Page {
        c: browser(&driver, &tools.chromium, dark_profile.path(), true).await,
        s: &s,
        driver: driver.url.clone(),
    };
    dark.goto("/tokengate/").await;
    dark.log_in("alice").await;
    dark.until(
        "document.getElementById('who').textContent !== ''",
        "the page",
    )
    .await;
    assert_eq!(
        dark.js("return matchMedia('(prefers-color-scheme: dark)').matches;")
            .await,
        true,
        "the dark scheme is on"
    );
    accessibility(&dark, &axe, "dark").await;
    dark.c.close().await.unwrap();
    drop(driver);
}

/// No session: the page sends the browser to the login page, and the login
/// page back to the page. Answers a token of alice made by the API, for later.
async fn no_session_logs_in_and_comes_back(p: &Page<'_>) -> String {
    p.goto("/tokengate/").await;
    let url = p.c.current_url().await.unwrap();
    assert_eq!(url.path(), "/login.jsp");
    assert_eq!(url.query(), Some("os_destination=%2Ftokengate%2F"));
    p.log_in("alice").await;
    p.until("location.pathname === '/tokengate/'", "back on the page")
        .await;
    p.until(
        "document.getElementById('who').textContent === 'Logged in as alice'",
        "the user's name",
    )
    .await;
    p.until("!document.getElementById('empty').hidden", "the empty list")
        .await;
    p.s.token_for("alice").await
}

async fn create_read_once_use_and_revoke(p: &Page<'_>, other: &str) {
    // The token made by the API is listed, and not shown.
    p.goto("/tokengate/").await;
    p.until(
        "document.querySelectorAll('#tokens tbody tr').length === 1",
        "the list",
    )
    .await;
    assert!(!p.c.source().await.unwrap().contains(other));
    p.type_into("#description", "CI nightly").await;
    p.click("#create button[type=submit]").await;
    p.until(
        "!document.getElementById('new-token').hidden",
        "the new token",
    )
    .await;
    let token = p.text("#new-value").await;
    // (Compared without printing: a token in a panic message aborts the run.)
    assert!(token.starts_with("tg_") && token.len() == 39, "a token");
    let bearer = p.text("#curl-bearer").await;
    let expected = format!(
        "curl -H 'Authorization: Bearer {token}' {}/rest/api/2/myself",
        p.s.base
    );
    assert!(bearer == expected, "the Bearer line");
    let expected = format!("curl -u alice:{token} {}/rest/api/2/myself", p.s.base);
    assert!(p.text("#curl-basic").await == expected, "the Basic line");
    // It works through the gateway.
    let me = p.s.with_token(&token).myself().await;
    assert_eq!(me.status(), 200);
    // Never in the URL, a cookie or the browser's storage.
    let kept = p
        .js("return [location.href, document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage), document.referrer].join(' ');")
        .await;
    assert!(!kept.as_str().unwrap().contains(&token));
    for cookie in p.c.get_all_cookies().await.unwrap() {
        assert!(!cookie.value().contains(&token), "{}", cookie.name());
    }
    // "Done" forgets it; a reload does not show it again.
    p.click("#new-done").await;
    p.until(
        "document.getElementById('new-token').hidden",
        "the panel to close",
    )
    .await;
    assert!(!p.c.source().await.unwrap().contains(&token));
    p.c.refresh().await.unwrap();
    p.until(
        "document.querySelectorAll('#tokens tbody tr').length === 2",
        "the list",
    )
    .await;
    assert!(!p.c.source().await.unwrap().contains(&token));
    assert!(
        p.js("return document.getElementById('new-token').hidden;")
            .await
            == true
    );
    assert!(p.text("#tokens").await.contains("CI nightly"));
    // Revoke it, with confirmation: the gateway refuses it at once.
    let row = "#tokens tbody tr:last-child";
    assert!(p.text(row).await.contains("CI nightly"));
    p.click(&format!("{row} button[data-action=revoke]")).await;
    p.confirm().await;
    p.until(
        "document.querySelectorAll('#tokens tbody tr').length === 1",
        "the row to go",
    )
    .await;
    assert_eq!(p.s.with_token(&token).myself().await.status(), 401);
    assert_eq!(
        p.s.with_token(other).myself().await.status(),
        200,
        "the other stays"
    );
    // Cancelled, nothing happens.
    p.click("#tokens tbody tr button[data-action=revoke]").await;
    p.until("document.getElementById('confirm').open", "the dialog")
        .await;
    p.click("#confirm-cancel").await;
    assert_eq!(p.rows("#tokens").await, 1);
    assert_eq!(p.s.with_token(other).myself().await.status(), 200);
}

/// A token limited to 127.0.0.2, made on the page, works from there only;
/// rotated on the page, its old secret stops and the new one works.
async fn allowed_ips_and_rotation(p: &Page<'_>) {
    p.goto("/tokengate/").await;
    p.until(
        "document.querySelectorAll('#tokens tbody tr').length === 1",
        "the list",
    )
    .await;
    p.until(
        "!document.getElementById('allowed-ips-field').hidden",
        "the allowed IPs field",
    )
    .await;
    p.type_into("#description", "pinned").await;
    p.type_into("#allowed-ips", "127.0.0.2").await;
    p.click("#create button[type=submit]").await;
    p.until(
        "!document.getElementById('new-token').hidden",
        "the new token",
    )
    .await;
    let first = p.text("#new-value").await;
    let from_2 = reqwest::Client::builder()
        .no_proxy()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let status = |token: String, http: Option<reqwest::Client>| async move {
        let caller = p.s.with_token(&token);
        let caller = match http {
            Some(h) => caller.over(h),
            None => caller,
        };
        caller.myself().await.status()
    };
    assert_eq!(status(first.clone(), None).await, 401, "from 127.0.0.1");
    assert_eq!(status(first.clone(), Some(from_2.clone())).await, 200);
    p.click("#new-done").await;
    p.until(
        "document.querySelectorAll('#tokens tbody tr').length === 2",
        "the list",
    )
    .await;
    let row = "#tokens tbody tr:last-child";
    assert!(
        p.text(row).await.contains("127.0.0.2/32"),
        "the list shows it"
    );
    // Rotated: a new secret for the same token, the old one refused at once.
    p.click(&format!("{row} button[data-action=rotate]")).await;
    p.confirm().await;
    p.until(
        "!document.getElementById('new-token').hidden",
        "the rotated token",
    )
    .await;
    let second = p.text("#new-value").await;
    assert!(second.starts_with("tg_") && second != first, "a new secret");
    assert_eq!(
        status(first, Some(from_2.clone())).await,
        401,
        "the old secret"
    );
    assert_eq!(status(second, Some(from_2)).await, 200, "the new secret");
    p.click("#new-done").await;
    // Gone again, for the scenarios after this one.
    p.click(&format!("{row} button[data-action=revoke]")).await;
    p.confirm().await;
    p.until(
        "document.querySelectorAll('#tokens tbody tr').length === 1",
        "the row to go",
    )
    .await;
}

async fn bad_input_gets_the_apis_message(p: &Page<'_>) {
    p.goto("/tokengate/").await;
    p.until(
        "document.getElementById('who').textContent !== ''",
        "the page",
    )
    .await;
    p.type_into("#description", "   ").await;
    p.click("#create button[type=submit]").await;
    p.until(
        "document.getElementById('description-error').textContent !== ''",
        "the description's error",
    )
    .await;
    assert_eq!(p.text("#description-error").await, "must not be empty");
    assert_eq!(
        p.js("return document.getElementById('description').getAttribute('aria-invalid');")
            .await,
        "true"
    );
    p.type_into("#description", "too long").await;
    p.type_into("#validity", "99").await;
    p.click("#create button[type=submit]").await;
    p.until(
        "document.getElementById('validity-error').textContent !== ''",
        "the validity's error",
    )
    .await;
    assert_eq!(
        p.text("#validity-error").await,
        "the maximum validity is 12 months"
    );
    assert_eq!(
        p.text("#description-error").await,
        "",
        "the old error is gone"
    );
    let long = "x".repeat(256);
    p.type_into("#validity", "1").await;
    p.type_into("#description", &long).await;
    p.click("#create button[type=submit]").await;
    p.until(
        "document.getElementById('description-error').textContent !== ''",
        "the description's error",
    )
    .await;
    assert_eq!(
        p.text("#description-error").await,
        "must be at most 255 characters"
    );
    assert!(
        p.js("return document.getElementById('new-token').hidden;")
            .await
            == true
    );
}

async fn html_in_a_description_is_text(p: &Page<'_>) {
    let html = "<img src=x onerror=alert(1)>";
    p.goto("/tokengate/").await;
    p.until(
        "document.getElementById('who').textContent !== ''",
        "the page",
    )
    .await;
    p.type_into("#description", html).await;
    p.type_into("#validity", "6").await;
    p.click("#create button[type=submit]").await;
    p.until(
        "!document.getElementById('new-token').hidden",
        "the new token",
    )
    .await;
    p.click("#new-done").await;
    p.c.refresh().await.unwrap();
    p.until(
        "[...document.querySelectorAll('#tokens .description')].some(d => d.textContent === '<img src=x onerror=alert(1)>')",
        "the description as text",
    )
    .await;
    assert_eq!(
        p.js("return document.querySelectorAll('img').length;")
            .await,
        0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.no_alert().await;
    // Renaming shows it in an input, as text too.
    p.click("#tokens tbody tr:last-child button[data-action=edit]")
        .await;
    p.until(
        "document.querySelector('#tokens form.rename input')",
        "the rename form",
    )
    .await;
    assert_eq!(
        p.js("return document.querySelector('#tokens form.rename input').value;")
            .await,
        html
    );
    assert_eq!(
        p.js("return document.querySelectorAll('img').length;")
            .await,
        0
    );
    p.no_alert().await;
}

async fn rename_and_revoke_all(p: &Page<'_>) {
    p.goto("/tokengate/").await;
    p.until(
        "document.querySelectorAll('#tokens tbody tr').length === 2",
        "the list",
    )
    .await;
    let row = "#tokens tbody tr:last-child";
    p.click(&format!("{row} button[data-action=edit]")).await;
    p.type_into(&format!("{row} form.rename input"), "").await;
    p.click(&format!("{row} form.rename button[type=submit]"))
        .await;
    p.until(
        &format!("document.querySelector('{row} [data-error-for=tokenDescription]')?.textContent === 'must not be empty'"),
        "the rename's error",
    )
    .await;
    p.type_into(&format!("{row} form.rename input"), "renamed on the page")
        .await;
    p.click(&format!("{row} form.rename button[type=submit]"))
        .await;
    p.until(
        &format!(
            "document.querySelector('{row} .description')?.textContent === 'renamed on the page'"
        ),
        "the new description",
    )
    .await;
    let (_, list) = p.s.as_user("alice", "alice").get("/user/token").await;
    assert!(list.to_string().contains("renamed on the page"));
    p.click("#revoke-all").await;
    p.confirm().await;
    p.until("!document.getElementById('empty').hidden", "an empty list")
        .await;
    let (_, list) = p.s.as_user("alice", "alice").get("/user/token").await;
    assert_eq!(list, json!([]));
}

async fn keyboard_and_copy(p: &Page<'_>, axe: &str) {
    p.goto("/tokengate/").await;
    p.until(
        "document.getElementById('who').textContent !== ''",
        "the page",
    )
    .await;
    // The first Tab reaches the skip link, with a visible focus ring.
    let body = p.c.find(Locator::Css("body")).await.unwrap();
    body.send_keys("\u{E004}").await.unwrap();
    assert_eq!(
        p.js("return document.activeElement.textContent;").await,
        "Skip to content"
    );
    // A whole creation by keyboard: type, Enter.
    let description = p.c.find(Locator::Css("#description")).await.unwrap();
    description.click().await.unwrap();
    description
        .send_keys("typed with the keyboard\u{E007}")
        .await
        .unwrap();
    p.until(
        "!document.getElementById('new-token').hidden",
        "the new token",
    )
    .await;
    assert_eq!(
        p.js("return document.activeElement.id;").await,
        "new-token",
        "focus moves to the new token"
    );
    accessibility(p, axe, "light, a new token shown").await;
    // Tab to the first Copy button: its focus ring shows, Enter copies.
    let panel = p.c.active_element().await.unwrap();
    panel.send_keys("\u{E004}").await.unwrap();
    let focused = p
        .js("const e = document.activeElement; const s = getComputedStyle(e); return [e.dataset.copy, s.outlineStyle, s.outlineWidth];")
        .await;
    assert_eq!(focused, json!(["new-value", "solid", "2px"]));
    p.c.active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    p.until(
        "document.getElementById('live').textContent !== ''",
        "the live region",
    )
    .await;
    let said = p.text("#live").await;
    p.grant_clipboard_read().await;
    let copied = p
        .js_async("navigator.clipboard.readText().then(done, e => done('no: ' + e));")
        .await;
    assert!(
        said == "Copied" || said.starts_with("Selected"),
        "the live region says {said:?}"
    );
    if said == "Copied" {
        let shown = Value::String(p.text("#new-value").await);
        assert!(
            copied == shown,
            "the clipboard holds the token: {:?}",
            copied.as_str().filter(|c| c.starts_with("no:"))
        );
    }
    eprintln!("  the live region said {said:?}");
    // Escape closes the dialog and focus goes back to its button.
    p.click("#new-done").await;
    p.click("#revoke-all").await;
    p.until("document.getElementById('confirm').open", "the dialog")
        .await;
    accessibility(p, axe, "light, the dialog open").await;
    p.c.active_element()
        .await
        .unwrap()
        .send_keys("\u{E00C}")
        .await
        .unwrap();
    p.until(
        "!document.getElementById('confirm').open",
        "Escape to close it",
    )
    .await;
    assert_eq!(
        p.js("return document.activeElement.id;").await,
        "revoke-all"
    );
    assert_eq!(p.rows("#tokens").await, 1);
}

/// A page of another origin: a form that posts JSON-looking text to the API.
async fn evil_site(target: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let html = format!(
        r#"<!doctype html><html lang="en"><head><title>Win a prize</title></head><body>
<form method="post" enctype="text/plain" action="{target}">
<input type="hidden" name='{{"tokenDescription":"made by another site","x":"' value='"}}'>
<button id="go">Claim</button></form></body></html>"#
    );
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(WAIT, socket.read(&mut buf)).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    base
}

async fn csrf_is_refused(p: &Page<'_>) {
    p.goto("/tokengate/").await;
    p.until(
        "document.getElementById('who').textContent !== ''",
        "the page",
    )
    .await;
    let before = p.s.as_user("alice", "alice").get("/user/token").await.1;
    // The page's own origin, but no X-Atlassian-Token.
    let answer = p
        .js_async(&format!(
            "fetch('{API}/user/token', {{method: 'POST', credentials: 'same-origin', headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{tokenDescription: 'no header'}})}}).then(r => r.text().then(t => done([r.status, t])));"
        ))
        .await;
    assert_eq!(
        answer,
        json!([
            403,
            "{\"errorMessages\":[\"XSRF check failed\"],\"errors\":{}}"
        ])
    );
    // With the header the same call works: the session is alice's.
    let answer = p
        .js_async(&format!(
            "fetch('{API}/user/token/', {{credentials: 'same-origin', headers: {{'X-Atlassian-Token': 'no-check'}}}}).then(r => done(r.status));"
        ))
        .await;
    assert_eq!(answer, 200);
    // A form on another origin (same site: the browser sends the cookie).
    let evil = evil_site(p.s.api("/user/token")).await;
    p.c.goto(&format!("{evil}/")).await.unwrap();
    p.click("#go").await;
    p.until(
        "document.body.textContent.includes('XSRF check failed')",
        "the refusal",
    )
    .await;
    let after = p.s.as_user("alice", "alice").get("/user/token").await.1;
    assert_eq!(before, after, "nothing was created");
    let seen = p.s.sim.seen();
    assert!(seen.iter().all(|r| !r.target.contains("apitokenauth")));
}

async fn what_the_page_loads(p: &Page<'_>) {
    let metrics_before = request_counts(p.s).await;
    p.goto("/tokengate/").await;
    p.until(
        "document.querySelectorAll('#tokens tbody tr').length > 0",
        "the list",
    )
    .await;
    let loaded = p
        .js("return [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')].map(e => [e.name, e.transferSize]);")
        .await;
    let loaded = loaded.as_array().unwrap();
    let names: Vec<&str> = loaded.iter().map(|e| e[0].as_str().unwrap()).collect();
    for name in &names {
        assert!(
            name.starts_with(&format!("{}/", p.s.base)),
            "a request to another origin: {name}"
        );
    }
    for part in [
        "/tokengate/",
        "tokengate.css",
        "tokens.js",
        "common.js",
        "/context",
        "/user/token",
    ] {
        assert!(
            names.iter().any(|n| n.contains(part)),
            "{part} in {names:?}"
        );
    }
    // The weight: every body the page loaded, as a first visit gets them
    // (here the files were revalidated by their ETags: what moved is less).
    let cookie = p.c.get_named_cookie("JSESSIONID").await.unwrap();
    let cookie = format!("JSESSIONID={}", cookie.value());
    let mut weight = 0;
    for name in &names {
        let body = client()
            .get(*name)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        weight += body.len();
    }
    let transfer: u64 = loaded.iter().map(|e| e[1].as_u64().unwrap()).sum();
    eprintln!(
        "  the page: {} requests, {weight} bytes of bodies on a first visit, {transfer} bytes moved on this one",
        loaded.len()
    );
    assert!(weight <= 100_000, "the page weighs {weight} bytes");
    // The gateway's side: everything it served for the page was its own
    // pages and API, nothing went to the upstream's routes.
    let after = request_counts(p.s).await;
    let delta =
        |route: &str| after.get(route).unwrap_or(&0) - metrics_before.get(route).unwrap_or(&0);
    assert_eq!(delta("proxy"), 0, "nothing forwarded for the page");
    assert!(delta("pages") >= 2 && delta("api") >= 1, "{after:?}");
    // The headers of the page, asked with the browser's own session.
    let cookie = p.c.get_named_cookie("JSESSIONID").await.unwrap();
    let resp =
        p.s.anonymous()
            .header("cookie", format!("JSESSIONID={}", cookie.value()))
            .fetch("/tokengate/")
            .await;
    let h = resp.headers();
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; frame-ancestors 'none'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
}

/// `tokengate_requests_total` by route, from the admin listener.
async fn request_counts(s: &JiraSetup) -> std::collections::HashMap<String, u64> {
    let text = s.metrics_text().await;
    let mut counts = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("tokengate_requests_total{"))
    {
        let route = line
            .split("route=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *counts.entry(route.to_string()).or_insert(0) += n as u64;
    }
    counts
}

async fn narrow_screens(p: &Page<'_>) {
    p.c.set_window_size(360, 800).await.unwrap();
    for path in ["/tokengate/"] {
        p.goto(path).await;
        p.until(
            "document.querySelectorAll('#tokens tbody tr').length > 0",
            "the list",
        )
        .await;
        let widths = p
            .js("return [document.documentElement.scrollWidth, window.innerWidth];")
            .await;
        let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(inner <= 400, "the window is narrow: {inner}");
        assert!(
            scroll <= inner,
            "{path} scrolls sideways at {inner} px: {scroll}"
        );
    }
    p.c.set_window_size(1100, 800).await.unwrap();
}

/// axe-core on the page the browser is on (and on the tokens page with a
/// new token shown): no serious or critical violation.
async fn accessibility(p: &Page<'_>, axe: &str, label: &str) {
    let url = p.c.current_url().await.unwrap();
    if !url.path().starts_with("/tokengate/") {
        p.goto("/tokengate/").await;
    }
    p.until(
        "document.getElementById('who')?.textContent !== ''",
        "the page",
    )
    .await;
    p.c.execute(&format!("{axe}\n;return true;"), vec![])
        .await
        .unwrap();
    let version = p.js("return axe.version;").await;
    let found = p
        .js_async("axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))), e => done(String(e)));")
        .await;
    let violations = found
        .as_array()
        .unwrap_or_else(|| panic!("axe failed: {found}"));
    let path = p.c.current_url().await.unwrap().path().to_string();
    eprintln!(
        "  axe-core {version} on {path} ({label}): {} violations {}",
        violations.len(),
        serde_json::to_string(violations).unwrap()
    );
    let serious: Vec<_> = violations
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    assert!(
        serious.is_empty(),
        "axe-core on {path} ({label}): {serious:?}"
    );
}

async fn non_admin_gets_403(p: &Page<'_>) {
    p.goto("/tokengate/admin").await;
    p.until(
        "document.querySelector('h1')?.textContent === 'Administrators only'",
        "the refusal",
    )
    .await;
    assert_eq!(
        p.js("return performance.getEntriesByType('navigation')[0].responseStatus;")
            .await,
        403
    );
    let (status, _) =
        p.s.as_user("alice", "alice")
            .get("/user/tokensByFilter")
            .await;
    assert_eq!(status, 403);
}

async fn admin_console(p: &Page<'_>) {
    let s = p.s;
    let bob = s.as_user("bob", "bob");
    let mut bob_tokens = Vec::new();
    for description in ["bob laptop", "bob CI deploy", "bob CI tests"] {
        let v = bob
            .create_token(json!({"tokenDescription": description}))
            .await;
        bob_tokens.push(v["plainTextToken"].as_str().unwrap().to_string());
    }
    for i in 0..11 {
        s.as_user("alice", "alice")
            .create_token(json!({"tokenDescription": format!("alice batch {i}")}))
            .await;
    }
    // Log out (the browser forgets the session), log in as admin.
    p.c.delete_all_cookies().await.unwrap();
    p.goto("/tokengate/admin").await;
    p.log_in("admin").await;
    p.until("location.pathname === '/tokengate/admin'", "the admin page")
        .await;
    p.until(
        "document.querySelectorAll('#all tbody tr').length > 0",
        "every token",
    )
    .await;
    // Filter by user and description.
    p.type_into("#user-filter", BOB_KEY).await;
    p.type_into("#description-filter", "ci").await;
    p.click("#filter button[type=submit]").await;
    p.until(
        "document.querySelectorAll('#all tbody tr').length === 2",
        "bob's CI tokens",
    )
    .await;
    let table = p.text("#all tbody").await;
    assert!(table.contains("bob CI deploy") && table.contains("bob CI tests"));
    assert!(!table.contains("bob laptop"));
    // Revoke one of bob's.
    p.click("#all tbody tr:first-child button[data-action=revoke]")
        .await;
    p.confirm().await;
    p.until(
        "document.querySelectorAll('#all tbody tr').length === 1",
        "one left",
    )
    .await;
    assert_eq!(s.with_token(&bob_tokens[1]).myself().await.status(), 401);
    assert_eq!(s.with_token(&bob_tokens[2]).myself().await.status(), 200);
    // Pages: alice's 11 at 10 a page.
    p.type_into("#user-filter", ALICE_KEY).await;
    p.type_into("#description-filter", "batch").await;
    p.c.find(Locator::Css("#limit"))
        .await
        .unwrap()
        .select_by_value("10")
        .await
        .unwrap();
    p.click("#filter button[type=submit]").await;
    p.until(
        "document.getElementById('page-of').textContent === 'Page 1 of 2'",
        "two pages",
    )
    .await;
    assert_eq!(p.rows("#all").await, 10);
    p.click("#next").await;
    p.until(
        "document.getElementById('page-of').textContent === 'Page 2 of 2'",
        "page 2",
    )
    .await;
    assert_eq!(p.rows("#all").await, 1);
    assert!(
        p.js("return document.getElementById('next').disabled;")
            .await
            == true
    );
    p.click("#prev").await;
    p.until(
        "document.getElementById('page-of').textContent === 'Page 1 of 2'",
        "page 1",
    )
    .await;
    // Create a token for bob; an unknown user is named next to the field.
    p.type_into("#for-user", "JIRAUSER99999").await;
    p.type_into("#description", "made by admin").await;
    p.click("#create button[type=submit]").await;
    p.until(
        "document.getElementById('for-user-error').textContent !== ''",
        "the user's error",
    )
    .await;
    assert_eq!(
        p.text("#for-user-error").await,
        "no user with the key \"JIRAUSER99999\""
    );
    p.type_into("#for-user", BOB_KEY).await;
    p.click("#create button[type=submit]").await;
    p.until(
        "!document.getElementById('new-token').hidden",
        "bob's new token",
    )
    .await;
    let for_bob = p.text("#new-value").await;
    let me: Value = s.with_token(&for_bob).myself().await.json().await.unwrap();
    assert_eq!(me["name"], "bob");
    p.click("#new-done").await;
    // Clear bob's lockout.
    for _ in 0..3 {
        s.as_user("bob", "wrong").get("/user/token").await;
    }
    let (status, _) = bob.get("/user/token").await;
    assert_eq!(status, 403, "bob is locked out");
    p.type_into("#tool-user", BOB_KEY).await;
    p.click("#user-tools button[value=unlock]").await;
    p.until(
        "!document.getElementById('tool-done').hidden",
        "the lockout cleared",
    )
    .await;
    let (status, _) = bob.get("/user/token").await;
    assert_eq!(status, 200, "bob may log in again");
}

async fn screenshot(p: &Page<'_>, path: &Path) {
    p.c.delete_all_cookies().await.unwrap();
    p.goto("/tokengate/").await;
    p.log_in("bob").await;
    p.until(
        "document.querySelectorAll('#tokens tbody tr').length >= 3",
        "bob's tokens",
    )
    .await;
    p.type_into("#description", "Deploy pipeline").await;
    p.click("#read-only").await;
    p.click("#create button[type=submit]").await;
    p.until(
        "!document.getElementById('new-token').hidden",
        "the new token",
    )
    .await;
    p.js("document.activeElement.blur(); window.scrollTo(0, 0);")
        .await;
    p.c.set_window_size(1000, 1180).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = p.c.screenshot().await.unwrap();
    std::fs::write(path, &png).unwrap();
    eprintln!("  wrote {} ({} bytes)", path.display(), png.len());
}
