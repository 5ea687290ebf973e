//! Web chat (SPEC §9.2.2) end to end in headless Chromium, driven over the
//! DevTools protocol by a small client in this file: a real host serving
//! the page and WebSocket, a real runner answering with the scripted
//! provider. Typed message and reply, a question card answered by
//! clicking its button, a file uploaded and read by the agent, the agent's
//! file downloaded by its link, history after a reload, the sign-in
//! checked on every route; a screenshot is saved to `target/web-chat.png`.
//!
//! Issue 14's hardening, each as the attack: a one-time login link that
//! sets an HttpOnly cookie and is spent, the token refused in a URL, a
//! cross-origin WebSocket and upload, a DNS-rebinding `Host`, a form POST
//! to `/api/admin`, an agent's `.html` file, and the security headers on
//! every page and download.
//!
//! Needs Chromium (`apt-get install chromium`; `scripts/deps --test`
//! installs it). Without it the browser test skips with a loud message;
//! set PINCH_TEST_REQUIRE_CHROMIUM=1 to make that a failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);

const SCRIPT: &str = r#"
[[rule]]
contains = "colour"
tool = "ask_user_question"
args = { title = "Paint", question = "Which colour?", options = [{ label = "Red", value = "r" }, { label = "Blue", value = "b" }], timeout_s = 120 }

[[rule]]
after_tool = "ask_user_question"
reply = "you chose: {tool_result}"

[[rule]]
contains = "read the attachment"
tool = "read_file"
args = { path = "{inbox_path}" }

[[rule]]
after_tool = "read_file"
reply = "the file says: {tool_result}"

[[rule]]
contains = "send me the page"
tool = "write_file"
args = { path = "evil.html", content = "<script>fetch('/api/admin')</script>" }

[[rule]]
after_tool = "write_file"
contains = "send me the page"
tool = "send_file"
args = { path = "evil.html", text = "a page" }

[[rule]]
after_tool = "send_file"
contains = "send me the page"
reply = "page sent"

[[rule]]
contains = "send me the report"
tool = "write_file"
args = { path = "report.txt", content = "numbers: 1 2 3" }

[[rule]]
after_tool = "write_file"
tool = "send_file"
args = { path = "report.txt", text = "here it is" }

[[rule]]
after_tool = "send_file"
reply = "report sent"

[[rule]]
contains = "hello"
reply = "hi from the agent"

[[rule]]
contains = "tell a story"
reply = "Once upon a time a tiny crab wrote a reply word by word, and the page showed each word as it came, in **bold** at last."
stream_ms = 250

[[rule]]
contains = "think slowly"
reply = "too late"
delay_ms = 60000

[[rule]]
contains = "markdown please"
reply = '''**bold** and `inline`, [the docs](https://example.org/docs) and ![a chart](https://tracker.example/p.png?leak=1)

```
let x = 1;
```

<img src=x onerror="window.__xss = 1"> [bad](javascript:window.__xss=2) <script>window.__xss = 3</script>'''
"#;

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A browser process killed when the test ends.
struct Browser(std::process::Child);
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal DevTools-protocol client: one page target, calls by id,
/// events ignored.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.ws
            .send(Message::Text(
                json!({"id": id, "method": method, "params": params})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("DevTools answered in time")
                .expect("DevTools open")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page and returns its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy (an exception, e.g. while the page is
    /// still loading, counts as not yet).
    async fn until(&mut self, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (e) {{ return null; }} }})()");
        loop {
            let v = self.eval(&guarded).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.eval("document.body.innerText").await;
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the message box and presses Enter, as a user would.
    async fn type_and_send(&mut self, text: &str) {
        self.eval("document.getElementById('text').focus()").await;
        self.call("Input.insertText", json!({"text": text})).await;
        for t in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": t, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}),
            )
            .await;
        }
    }

    /// A real mouse click in the middle of the element `selector` matches.
    async fn click(&mut self, selector: &str) {
        let r = self
            .eval(&format!("(() => {{ const r = document.querySelector({selector:?}).getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"))
            .await;
        let (x, y) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
        for t in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": t, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }
}

async fn launch(exe: &Path, profile: &Path) -> (Browser, Cdp) {
    let child = std::process::Command::new(exe)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=900,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--remote-debugging-port=0", "about:blank"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let browser = Browser(child);
    let port_file = profile.join("DevToolsActivePort");
    wait_for("Chromium's DevTools port", WAIT, || {
        std::fs::read_to_string(&port_file).is_ok_and(|s| s.lines().count() >= 2)
    });
    let port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await
        .unwrap()
        .json_text()
        .await;
    let page = targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "page")
        .expect("a page target")
        .clone();
    let (ws, _) = tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap())
        .await
        .unwrap();
    (browser, Cdp { ws, next: 0 })
}

trait JsonText {
    async fn json_text(self) -> Value;
}
impl JsonText for reqwest::Response {
    async fn json_text(self) -> Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap()
    }
}

/// A started host with web chat on loopback, and what its tests use.
struct WebHost {
    tmp: tempfile::TempDir,
    data: PathBuf,
    rt: tokio::runtime::Runtime,
    host: pinch_host::HostHandle,
    addr: std::net::SocketAddr,
    token: String,
}

impl WebHost {
    fn start() -> WebHost {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = web_host(tmp.path());
        let data = cfg.data_dir.clone();
        let rt = rt();
        let host = rt.block_on(pinch_host::start(cfg)).unwrap();
        let addr = host.http_addr.unwrap();
        let token = pinch_host::web_token(&data).unwrap();
        WebHost {
            tmp,
            data,
            rt,
            host,
            addr,
            token,
        }
    }
}

fn web_host(tmp: &Path) -> pinch_host::HostConfig {
    let mut cfg = with_script(host_config(tmp, any_sandbox()), SCRIPT);
    cfg.http = Some(pinch_host::config::HttpSettings::local(
        "127.0.0.1:0".parse().unwrap(),
        true,
    ));
    cfg
}

/// Asserts the headers every response must carry (issue 14).
fn assert_hardened(what: &str, h: &reqwest::header::HeaderMap) {
    let get = |k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let csp = get("content-security-policy");
    assert!(
        csp.contains("frame-ancestors 'none'"),
        "{what}: CSP {csp:?}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: CSP {csp:?}"
    );
    assert!(csp.contains("default-src 'none'"), "{what}: CSP {csp:?}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
}

/// Redeems a one-time login link the way a browser does; the cookie to send.
async fn sign_in(data: &Path, addr: std::net::SocketAddr) -> String {
    let url = pinch_host::web_login_url(data, addr, "/").unwrap();
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let set = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    set.split(';').next().unwrap().to_owned()
}

/// The status a WebSocket upgrade gets with these extra headers (101 = open).
async fn ws_status(addr: std::net::SocketAddr, headers: &[(&'static str, &str)]) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, r)) => {
            drop(ws);
            r.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("the upgrade failed otherwise: {e}"),
    }
}

#[test]
fn every_route_needs_the_token() {
    let WebHost {
        tmp: _tmp,
        data,
        rt,
        host,
        addr,
        token,
    } = WebHost::start();
    assert!(addr.ip().is_loopback());
    let mode = std::fs::metadata(data.join("web-token"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    rt.block_on(async {
        let c = reqwest::Client::new();
        for path in ["/", "/ws", "/files/00/x", "/dashboard", "/api/audit"] {
            for q in ["", "?token=wrong", "?login=1.2.3"] {
                let r = c
                    .get(format!("http://{addr}{path}{q}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 401, "{path}{q}");
                assert_hardened(&format!("401 of {path}{q}"), r.headers());
                assert!(r.text().await.unwrap().contains("pinch admin web-token"));
            }
            // The real token in a URL is refused too: it would stay in history and logs.
            let r = c
                .get(format!("http://{addr}{path}?token={token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401, "{path}?token=<the token>");
            assert!(r
                .text()
                .await
                .unwrap()
                .contains("no longer accepted in a URL"));
        }
        let r = c
            .post(format!("http://{addr}/upload?name=a.txt"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        // A bearer header works (API clients).
        let r = c
            .get(format!("http://{addr}/"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_hardened("/", r.headers());
        let page = r.text().await.unwrap();
        assert!(page.contains("<title>pinch</title>"));
        assert!(
            !page.contains("<script>") && !page.contains("<style>"),
            "no inline script or style: the CSP forbids them"
        );
        // The page's script and style, and the dashboard, carry the headers too.
        for path in [
            "/chat.js",
            "/chat.css",
            "/dashboard.js",
            "/metrics",
            "/no-such-page",
        ] {
            let r = c.get(format!("http://{addr}{path}")).send().await.unwrap();
            assert_hardened(path, r.headers());
        }
        let r = c
            .get(format!("http://{addr}/dashboard"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_hardened("/dashboard", r.headers());
    });
    // `pinch admin web-token` prints the same token.
    let out = std::process::Command::new(PINCH)
        .args(["admin", "web-token", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), token);
    // `pinch admin web-link` and `dashboard-link` mint one-time links without asking the host
    // (for the configured listen, the default here): each signs a browser in once.
    for (verb, path) in [("web-link", "/"), ("dashboard-link", "/dashboard")] {
        let out = std::process::Command::new(PINCH)
            .args(["admin", verb, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let prefix = format!("http://127.0.0.1:7878{path}?login=");
        assert!(
            link.starts_with(&prefix) && !link.contains(&token),
            "{link}"
        );
        let here = link.replace("127.0.0.1:7878", &addr.to_string());
        let (first, second) = rt.block_on(async {
            let a = reqwest::get(&here).await.unwrap();
            let cookie = a
                .headers()
                .get("set-cookie")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                a.status().as_u16(),
                (cookie, reqwest::get(&here).await.unwrap().status().as_u16()),
            )
        });
        assert_eq!(first, 200, "{verb}");
        assert!(
            second.0.is_some_and(|c| c.starts_with("pinch_session=")),
            "{verb}"
        );
        assert_eq!(second.1, 401, "{verb}: the link is spent");
    }
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn chat_in_headless_chromium_messages_cards_files_history_screenshot() {
    let Some(exe) = chromium() else {
        let msg = "\n\n!!!!! SKIPPED: web chat browser test needs Chromium (apt-get install -y chromium, or scripts/deps --test) !!!!!\n";
        if std::env::var("PINCH_TEST_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("{msg}");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = web_host(tmp.path());
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let addr = host.http_addr.unwrap();
    let url = pinch_host::web_login_url(&data, addr, "/").unwrap();
    let profile = tmp.path().join("chromium");
    std::fs::create_dir_all(&profile).unwrap();
    rt.block_on(async {
        let (_browser, mut cdp) = launch(&exe, &profile).await;
        cdp.call("Page.enable", json!({})).await;
        cdp.call("Page.navigate", json!({"url": url})).await;
        cdp.until("the page connected", "document.getElementById('status').textContent.startsWith('connected as tester')").await;
        cdp.until("the welcome line of an empty chat", "!!document.querySelector('.notice.welcome') && document.querySelector('.notice.welcome').textContent.startsWith('No messages yet')").await;
        // The login link was spent on the way in: the address bar holds no
        // code, the cookie is invisible to scripts (HttpOnly).
        let here = cdp.eval("location.href").await;
        assert_eq!(here, json!(format!("http://{addr}/")), "the code is gone from the URL");
        assert_eq!(cdp.eval("document.cookie").await, json!(""), "the session cookie is HttpOnly");
        let again = reqwest::get(&url).await.unwrap();
        assert_eq!(again.status().as_u16(), 401, "the link works once");
        assert!(again.text().await.unwrap().contains("already used"));

        // Markdown rendered on the server and sanitised; the page runs no
        // script a reply carries, fetches no image it names, and links open
        // in a new tab without an opener.
        cdp.type_and_send("markdown please").await;
        cdp.until("the rendered reply", "!!document.querySelector('.msg.agent strong')").await;
        let seen = cdp.eval("(() => { const m = document.querySelector('.msg.agent'); const a = m.querySelector('a[href=\"https://example.org/docs\"]'); return { strong: m.querySelector('strong').textContent, code: m.querySelector('pre code').textContent, copy: !!m.querySelector('pre button.copy'), target: a && a.target, rel: a && a.rel, imgs: m.querySelectorAll('img').length, chart: !!m.querySelector('a[href^=\"https://tracker.example/\"]'), js: m.querySelectorAll('a[href^=\"javascript\"]').length, scripts: m.querySelectorAll('script').length, xss: window.__xss === undefined, shown: m.textContent.includes('<img src=x') } })()").await;
        assert_eq!(
            seen,
            json!({"strong": "bold", "code": "let x = 1;\n", "copy": true, "target": "_blank", "rel": "noopener noreferrer nofollow",
                   "imgs": 0, "chart": true, "js": 0, "scripts": 0, "xss": true, "shown": true}),
            "the rendered reply"
        );

        // A typed message and the agent's reply.
        cdp.type_and_send("hello there").await;
        cdp.until("the reply", "[...document.querySelectorAll('.msg.agent')].some(e => e.querySelector('.text').textContent === 'hi from the agent')").await;
        cdp.until("the message accepted", "document.querySelectorAll('.msg.user.pending').length === 0 && document.querySelectorAll('.msg.user').length === 2").await;

        // A question card: buttons, a real click, the agent gets the answer.
        cdp.type_and_send("pick a colour").await;
        cdp.until("the card's buttons", "document.querySelectorAll('.buttons button').length === 2").await;
        let labels = cdp.eval("[...document.querySelectorAll('.buttons button')].map(b => b.textContent)").await;
        assert_eq!(labels, json!(["Red", "Blue"]));
        cdp.click(".buttons button:nth-child(2)").await;
        let chose = cdp.until("the answer reaching the agent", "[...document.querySelectorAll('.msg.agent')].map(e => e.querySelector('.text').textContent).find(t => t.startsWith('you chose:'))").await;
        assert!(chose.as_str().unwrap().contains('b') || chose.as_str().unwrap().contains("Blue"), "{chose}");

        // A file up (uploaded over HTTP with the token), read by the agent.
        cdp.eval(
            "(() => { const dt = new DataTransfer(); dt.items.add(new File(['the secret word is plum'], 'notes.txt', {type: 'text/plain'})); \
             document.getElementById('file').files = dt.files; document.getElementById('file').dispatchEvent(new Event('change')); })()",
        )
        .await;
        cdp.type_and_send("read the attachment").await;
        cdp.until("the agent reading the upload", "[...document.querySelectorAll('.msg.agent')].some(e => e.querySelector('.text').textContent.includes('the secret word is plum'))").await;

        // A file down: the agent's file arrives as a link that downloads it
        // (with the browser's cookie; without it, 401).
        cdp.type_and_send("send me the report").await;
        let href = cdp.until("the file link", "(document.querySelector('.msg.agent .files a') || {}).href").await;
        let href = href.as_str().unwrap();
        assert!(!href.contains("token"), "{href}");
        let body = cdp.eval(&format!("fetch({href:?}).then(r => r.text())")).await;
        assert_eq!(body, json!("numbers: 1 2 3"));
        assert_eq!(reqwest::get(href).await.unwrap().status().as_u16(), 401);
        cdp.until("the final answer", "[...document.querySelectorAll('.msg.agent')].some(e => e.querySelector('.text').textContent === 'report sent')").await;

        // The screenshot: the conversation with the answered card and the file link.
        let shot = cdp.call("Page.captureScreenshot", json!({"format": "png"})).await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        let path = target_dir().join("web-chat.png");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &png).unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(&written[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
        assert!(written.len() > 10_000, "a page with content, not a blank image ({} bytes)", written.len());
        eprintln!("screenshot: {}", path.display());

        // History: a reload shows the conversation from the session DBs.
        cdp.call("Page.reload", json!({})).await;
        cdp.until("the history after a reload", "[...document.querySelectorAll('.msg.user')].some(e => e.querySelector('.text').textContent.startsWith('hello there')) && [...document.querySelectorAll('.msg.agent')].some(e => e.querySelector('.text').textContent === 'hi from the agent')").await;
        cdp.until("the whole history", "document.querySelectorAll('.msg').length >= 8").await;
        // Times in the browser's zone, from the stored UTC times.
        let stamps = cdp.eval("[...document.querySelectorAll('.msg')].every(m => { const t = m.querySelector('time'); return t && !isNaN(Date.parse(t.dateTime)) && /\\d/.test(t.textContent); }) && !document.querySelector('.welcome')").await;
        assert_eq!(stamps, json!(true), "every message has its time, the welcome line is gone");
        cdp.until("the history's Markdown rendered", "!!document.querySelector('.msg.agent strong') && document.querySelectorAll('.msg.agent img').length === 0 && window.__xss === undefined").await;
        // What the live view showed stays: the agent's file as a link that
        // still downloads, the answered card with its answer.
        let kept = cdp.until("the file link in the history", "(document.querySelector('.msg.agent .files a') || {}).href").await;
        let kept = cdp.eval(&format!("fetch({:?}).then(r => r.text())", kept.as_str().unwrap())).await;
        assert_eq!(kept, json!("numbers: 1 2 3"));
        cdp.until("the card's answer in the history", "[...document.querySelectorAll('.msg.agent .answer')].some(a => a.textContent === 'answered: Blue')").await;
        // A card still waiting keeps its buttons across a reload, and they work.
        cdp.type_and_send("another colour").await;
        cdp.until("the second card", "document.querySelectorAll('.msg.agent .buttons button:not(:disabled)').length === 2").await;
        cdp.call("Page.reload", json!({})).await;
        cdp.until("the waiting card's buttons after a reload", "document.querySelectorAll('.msg.agent .buttons button').length === 2").await;
        cdp.click(".msg.agent .buttons button:nth-child(1)").await;
        cdp.until("the answer from the reloaded card", "[...document.querySelectorAll('.msg.agent')].filter(e => e.querySelector('.text').textContent.startsWith('you chose:')).length === 2").await;

        // `/help` is answered by the host: shown as that, not as a failure.
        cdp.type_and_send("/help").await;
        cdp.until("the host's answer to /help", "[...document.querySelectorAll('.notice.handled')].some(n => n.textContent.includes('answered by the host'))").await;
        let help = cdp.eval("(() => { const mine = [...document.querySelectorAll('.msg.user')].pop(); return { failed: mine.classList.contains('failed'), pending: mine.classList.contains('pending'), handled: mine.classList.contains('handled'), undelivered: [...document.querySelectorAll('.notice')].some(n => n.textContent.startsWith('not delivered')) } })()").await;
        assert_eq!(help, json!({"failed": false, "pending": false, "handled": true, "undelivered": false}), "/help");

        // The header names the agent and its model (decision 0048).
        let about = cdp.eval("document.getElementById('about').textContent").await;
        assert!(about.as_str().unwrap().starts_with("agent `main` · the scripted provider"), "{about}");

        // A streamed reply: the working bar says what the agent does, the
        // text shows while the model writes it (no final row yet), then the
        // final reply replaces the draft: one bubble.
        cdp.type_and_send("tell a story").await;
        cdp.until("the working bar", "!document.getElementById('working').hidden && ['thinking', 'working'].includes(document.getElementById('work-state').textContent)").await;
        let partial = cdp.until("a draft with some words", "(() => { const d = document.querySelector('.msg.agent.draft .text'); return d && d.textContent.length > 8 && !d.textContent.includes('*') && d.textContent; })()").await;
        let partial = partial.as_str().unwrap().to_owned();
        let story = "Once upon a time a tiny crab wrote a reply word by word, and the page showed each word as it came, in bold at last.";
        assert!(partial.len() < story.len() && story.starts_with(partial.trim_end()), "{partial:?}");
        let finals = cdp.eval(&format!("[...document.querySelectorAll('.msg.agent:not(.draft)')].filter(e => e.querySelector('.text').textContent === {story:?}).length")).await;
        assert_eq!(finals, json!(0), "the draft shows before the final reply exists");
        let shot = cdp.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::write(target_dir().join("web-chat-streaming.png"), &png).unwrap();
        cdp.until("the final reply in place of the draft", &format!("!document.querySelector('.msg.agent.draft') && [...document.querySelectorAll('.msg.agent')].filter(e => e.querySelector('.text').textContent === {story:?}).length === 1 && !!document.querySelector('.msg.agent:last-of-type strong')")).await;
        cdp.until("the working bar gone", "document.getElementById('working').hidden").await;

        // Stop: a turn that would think for a minute is cancelled at once.
        cdp.type_and_send("think slowly").await;
        cdp.until("the working bar with its seconds", "!document.getElementById('working').hidden && /^\\d+ s$/.test(document.getElementById('work-time').textContent)").await;
        cdp.click("#stop").await;
        cdp.until("the stop told", "[...document.querySelectorAll('.notice')].some(n => n.textContent.startsWith('Stopped.'))").await;
        cdp.until("the working bar gone after Stop", "document.getElementById('working').hidden").await;
        let late = cdp.eval("[...document.querySelectorAll('.msg.agent')].some(e => e.textContent.includes('too late'))").await;
        assert_eq!(late, json!(false));

        // Up edits the last message: the correction reaches the agent marked
        // as one, and replaces the message here and in the history.
        let answers = "[...document.querySelectorAll('.msg.agent')].filter(e => e.querySelector('.text').textContent === 'hi from the agent').length";
        let before = cdp.eval(answers).await.as_i64().unwrap();
        cdp.type_and_send("hello, with a typo").await;
        cdp.until("the answer to the typo", &format!("{answers} === {}", before + 1)).await;
        cdp.until("the message accepted", "document.querySelectorAll('.msg.user.pending').length === 0").await;
        cdp.eval("document.getElementById('text').focus()").await;
        for t in ["keyDown", "keyUp"] {
            cdp.call("Input.dispatchKeyEvent", json!({"type": t, "key": "ArrowUp", "code": "ArrowUp", "windowsVirtualKeyCode": 38})).await;
        }
        let recalled = cdp.eval("[document.getElementById('text').value, document.getElementById('editing').hidden]").await;
        assert_eq!(recalled, json!(["hello, with a typo", false]), "Up recalls the last message");
        cdp.eval("document.getElementById('text').value = ''").await;
        cdp.type_and_send("hello, fixed now").await;
        cdp.until("the correction in place", "(() => { const m = [...document.querySelectorAll('.msg.user')].pop(); return m.querySelector('.text').textContent === 'hello, fixed now' && !!m.querySelector('.edited'); })()").await;
        cdp.until("the agent's answer to the correction", &format!("{answers} === {}", before + 2)).await;
        let typo = cdp.eval("[...document.querySelectorAll('.msg.user')].filter(e => e.querySelector('.text').textContent.includes('typo')).length").await;
        assert_eq!(typo, json!(0));
        let stored: Vec<String> = {
            let mut found = Vec::new();
            for s in host.sessions().await {
                let c = inbound(&s.dir);
                let mut st = c.prepare("SELECT content FROM messages_in WHERE content LIKE '%edit_of%'").unwrap();
                found.extend(st.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap));
            }
            found
        };
        assert_eq!(stored.len(), 1, "{stored:?}");
        let v: Value = serde_json::from_str(&stored[0]).unwrap();
        assert_eq!(v["text"], "hello, fixed now");
        assert!(v["edit_of"].as_str().unwrap().starts_with("web-tester-"), "{v}");
        cdp.call("Page.reload", json!({})).await;
        cdp.until("the correction in the history", "[...document.querySelectorAll('.msg.user')].some(m => m.querySelector('.text').textContent === 'hello, fixed now' && !!m.querySelector('.edited')) && ![...document.querySelectorAll('.msg.user')].some(m => m.textContent.includes('typo'))").await;
        assert_eq!(cdp.eval("document.getElementById('convs').hidden").await, json!(true), "one conversation: no list");

        // A second conversation (`?user=`): the page lists both, this one marked.
        let token = pinch_host::web_token(&data).unwrap();
        let mut other = crate::common::web_socket(addr, &token, "trip-planning").await;
        other.send(Message::Text(json!({"type": "message", "text": "hello from the other tab", "client_id": "o1"}).to_string().into())).await.unwrap();
        let mut listed = false;
        for _ in 0..50 {
            cdp.call("Page.reload", json!({})).await;
            cdp.until("the page connected", "document.getElementById('status').textContent.startsWith('connected as tester')").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if cdp.eval("!document.getElementById('convs').hidden").await == json!(true) {
                listed = true;
                break;
            }
        }
        assert!(listed, "the list appears once there are two conversations");
        let convs = cdp.eval("[...document.querySelectorAll('#convs a')].map(a => [a.textContent, a.getAttribute('href'), a.getAttribute('aria-current')])").await;
        let convs = convs.as_array().unwrap();
        assert_eq!(convs.len(), 2, "{convs:?}");
        assert!(convs.contains(&json!(["web chat", "/", "page"])), "{convs:?}");
        assert!(convs.contains(&json!(["trip-planning", "/?user=trip-planning", null])), "{convs:?}");

    });
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn pinch_chat_web_prints_a_working_url_and_stops_on_sigterm() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let mut d = Daemon(
        std::process::Command::new(PINCH)
            .args([
                "chat",
                "--web",
                "--provider",
                "scripted",
                "--sandbox",
                "process",
                "--data-dir",
            ])
            .arg(tmp.path().join("data"))
            .arg("--config")
            .arg(&cfg)
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(d.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let token = pinch_host::web_token(&tmp.path().join("data")).unwrap();
    let link = line.trim();
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{port}/?login=")),
        "{link}"
    );
    assert!(
        !link.contains(&token),
        "the long-lived token is never in the link"
    );
    let rt = rt();
    rt.block_on(async {
        // The link signs a browser in once: a cookie, then on to the page.
        let r = reqwest::get(link).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let cookie = r
            .headers()
            .get("set-cookie")
            .expect("a session cookie")
            .to_str()
            .unwrap()
            .to_owned();
        for attr in ["pinch_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attr), "{attr} in {cookie}");
        }
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("http-equiv=\"refresh\" content=\"0; url=/\""),
            "on to the page without the code"
        );
        let session = cookie.split(';').next().unwrap().to_owned();
        let page = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status().as_u16(), 200, "the cookie signs in");
        let r = reqwest::get(link).await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "the link is spent");
        assert!(r.text().await.unwrap().contains("already used"));
    });
    // SAFETY: kill(2) on our own, not yet reaped, child.
    unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) };
    let st = d.0.wait().unwrap();
    assert!(st.success(), "{st:?}");
    // The port is free again.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

/// A WebSocket client speaking the page's protocol (no browser needed).
struct Tab {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Tab {
    async fn open(addr: std::net::SocketAddr, token: &str, user: &str) -> Tab {
        let mut t = Tab {
            ws: crate::common::web_socket(addr, token, user).await,
        };
        assert_eq!(t.next().await["type"], "hello");
        assert_eq!(t.next().await["type"], "history");
        t
    }
    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }
    /// The next frame that is not the live view's (`working`, `draft`,
    /// `idle`: advisory, decision 0048) or the conversations list.
    async fn next(&mut self) -> Value {
        loop {
            let v = self.next_any().await;
            if !["working", "draft", "idle", "conversations"]
                .contains(&v["type"].as_str().unwrap_or(""))
            {
                return v;
            }
        }
    }
    async fn next_any(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .unwrap();
            if let Message::Text(t) = m {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }
    async fn until(&mut self, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let v = tokio::time::timeout(WAIT, self.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            if f(&v) {
                return v;
            }
        }
    }
}

/// A frame whose text is not valid UTF-8 (a WebSocket text frame must be
/// UTF-8, so raw bytes come as a binary frame): the message is delivered
/// with U+FFFD and answered, the replacement logged, and the same socket
/// carries the next message.
#[test]
fn a_frame_with_invalid_utf8_is_replaced_and_the_socket_goes_on() {
    let WebHost {
        tmp: _tmp,
        data: _,
        rt,
        host,
        addr,
        token,
    } = WebHost::start();
    rt.block_on(async {
        let mut tab = Tab::open(addr, &token, "tester").await;
        let frame = json!({"type": "message", "text": "mojibake caf<bad> ok", "client_id": "u1"})
            .to_string()
            .replace("<bad>", "\u{1}");
        let mut bytes = frame.into_bytes();
        // The placeholder byte becomes a lone 0xFF and a cut-short sequence.
        let at = bytes.iter().position(|b| *b == 1).expect("the placeholder");
        bytes.splice(at..=at, [0xFF, 0xC3]);
        assert!(std::str::from_utf8(&bytes).is_err());
        tab.ws.send(Message::Binary(bytes.into())).await.unwrap();
        let a = tab
            .until("the acceptance", |v| v["client_id"] == "u1")
            .await;
        assert_eq!(a["type"], "accepted", "{a}");
        let reply = tab
            .until("the echo", |v| {
                v["type"] == "message" && v["text"].as_str().is_some_and(|t| t.contains("mojibake"))
            })
            .await;
        assert!(
            reply["text"]
                .as_str()
                .unwrap()
                .contains("caf\u{FFFD}\u{FFFD} ok"),
            "{reply}"
        );
        // The barrier, on the same socket.
        tab.send(json!({"type": "message", "text": "the barrier", "client_id": "u2"}))
            .await;
        let r = tab
            .until("the barrier's answer", |v| {
                v["type"] == "message"
                    && v["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("the barrier"))
            })
            .await;
        assert!(
            r["text"].as_str().unwrap().starts_with("Hello from pinch!"),
            "{r}"
        );
    });
    rt.block_on(host.shutdown()).unwrap();
}

/// A reply delivered while a new tab's history is being read reaches that
/// tab once: in the history (the ledger recorded it) and not again live,
/// while a reply not in the history still arrives live, and replies after
/// the history go straight through. The adapter runs on its own listener;
/// the test answers its events as the host would, so the race is made on
/// purpose rather than hoped for.
#[test]
fn a_reply_delivered_while_the_history_is_read_reaches_a_new_tab_once() {
    use pinch_channels::{Address, Channel, ChannelEvent, HistoryItem, Outgoing};
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let (tx, mut events) = tokio::sync::mpsc::channel::<ChannelEvent>(16);
        let token = "t".repeat(43);
        let auth = pinch_channels::http::WebAuth::new(token.clone());
        let web =
            pinch_channels::web::WebChannel::new(auth, tmp.path().join("web"), "tester".into(), tx)
                .unwrap();
        let listener = pinch_channels::http::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = pinch_channels::http::serve(listener, web.router(), Vec::new()).unwrap();
        let to = Address {
            channel_type: pinch_channels::web::CHANNEL_TYPE.into(),
            platform_id: "tester".into(),
            thread_id: None,
        };
        let reply = |id: &str| Outgoing {
            id: id.into(),
            text: format!("reply {id}"),
            in_reply_to: None,
            buttons: Vec::new(),
            files: Vec::new(),
        };
        let mut tab = Tab {
            ws: crate::common::web_socket(addr, &token, "tester").await,
        };
        assert_eq!(tab.next().await["type"], "hello");
        // The tab asks for its history; while it is read, two replies are
        // delivered: `in-both` is recorded before the read (so it is in the
        // history too), `after-read` is not.
        let Some(ChannelEvent::History { reply: answer, .. }) = events.recv().await else {
            panic!("the tab asks for its history");
        };
        web.deliver(&to, &reply("in-both"))
            .await
            .expect("the tab is registered");
        web.deliver(&to, &reply("after-read")).await.unwrap();
        let item = HistoryItem {
            id: "in-both".into(),
            from: "agent".into(),
            sender: None,
            text: "reply in-both".into(),
            at: "2026-12-05 06:00:00".into(),
            ..Default::default()
        };
        answer.send(vec![item]).unwrap();
        let h = tab.next().await;
        assert_eq!(h["type"], "history", "{h}");
        assert_eq!(h["items"][0]["id"], "in-both", "{h}");
        let live = tab.next().await;
        assert_eq!(
            live["id"], "after-read",
            "the reply missing from the history comes live: {live}"
        );
        web.deliver(&to, &reply("later")).await.unwrap();
        // A delivery of an id the history showed, after the history: a new
        // delivery (an edit or a resend), so it goes through.
        web.deliver(&to, &reply("in-both")).await.unwrap();
        let ids =
            [tab.next().await, tab.next().await].map(|v| v["id"].as_str().unwrap().to_owned());
        assert_eq!(
            ids,
            ["later", "in-both"],
            "frames after the history go straight through"
        );
        server.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_new_web_user_brings_the_owner_an_approval_card_with_buttons() {
    let WebHost {
        tmp: _tmp,
        data: _,
        rt,
        host,
        addr,
        token,
    } = WebHost::start();
    rt.block_on(async {
        // The owner's tab is open; bob, a new browser user, says something.
        let mut owner = Tab::open(addr, &token, "tester").await;
        let mut bob = Tab::open(addr, &token, "bob").await;
        bob.send(json!({"type": "message", "text": "hi pinch", "client_id": "b1"}))
            .await;
        let r = bob.until("bob's answer", |v| v["client_id"] == "b1").await;
        // Held for the owner's approval: news, not a failure.
        assert_eq!(r["type"], "handled", "{r}");
        assert!(
            r["note"].as_str().unwrap().contains("owner has been asked"),
            "{r}"
        );
        // bob's next tab keeps the message, as held (not failed, not lost).
        let mut again = Tab {
            ws: crate::common::web_socket(addr, &token, "bob").await,
        };
        assert_eq!(again.next().await["type"], "hello");
        let h = again.next().await;
        assert_eq!(h["type"], "history", "{h}");
        assert_eq!(
            (
                &h["items"][0]["text"],
                &h["items"][0]["held"],
                &h["items"][0]["from"]
            ),
            (&json!("hi pinch"), &json!(true), &json!("user")),
            "{h}"
        );
        // The registration card reaches the owner's web conversation as buttons.
        let card = owner
            .until("the card", |v| {
                v["type"] == "message"
                    && v["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("Approval needed"))
            })
            .await;
        let buttons = card["buttons"].as_array().unwrap().clone();
        assert!(buttons.len() >= 2, "{card}");
        let reject = buttons
            .iter()
            .find(|b| b["label"] == "Reject")
            .expect("a Reject button");
        // A click goes back as a Click and is decided.
        owner
            .send(json!({"type": "click", "callback": reject["callback"]}))
            .await;
        let n = owner.until("the decision", |v| v["type"] == "notice").await;
        assert!(n["text"].as_str().unwrap().starts_with("Rejected"), "{n}");
    });
    rt.block_on(host.shutdown()).unwrap();
}

/// The owner has no tab open when a new web user asks to talk: the card
/// waits (it was logged as undeliverable and never shown) and reaches the
/// owner's first tab once, with its buttons; a second tab gets no copy.
#[test]
fn an_approval_card_waits_for_the_owner_to_open_a_tab() {
    let WebHost {
        tmp: _tmp,
        data,
        rt,
        host,
        addr,
        token,
    } = WebHost::start();
    rt.block_on(async {
        let mut bob = Tab::open(addr, &token, "bob").await;
        bob.send(json!({"type": "message", "text": "hi pinch", "client_id": "b1"}))
            .await;
        let r = bob.until("bob's answer", |v| v["client_id"] == "b1").await;
        assert_eq!(r["type"], "handled", "{r}");
        // The card is addressed to the owner's web conversation and waits.
        let central = data.join("pinch.db");
        wait_for("the card addressed", Duration::from_secs(30), || {
            pinch_proto::rusqlite::Connection::open(&central)
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM pending_approvals WHERE status = 'pending'
                       AND channel_type = 'web' AND platform_id = 'tester' AND card_sent_at IS NULL",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                == 1
        });
        let is_card = |v: &Value| {
            v["type"] == "message"
                && v["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Approval needed"))
        };
        let mut owner = Tab::open(addr, &token, "tester").await;
        let card = owner.until("the waiting card", is_card).await;
        let buttons = card["buttons"].as_array().unwrap().clone();
        let connect = buttons
            .iter()
            .find(|b| b["label"] == "Connect to main")
            .unwrap_or_else(|| panic!("a Connect button: {card}"))
            .clone();
        let mut second = Tab::open(addr, &token, "tester").await;
        owner
            .send(json!({"type": "click", "callback": connect["callback"]}))
            .await;
        let n = owner.until("the decision", |v| v["type"] == "notice").await;
        let said = n["text"].as_str().unwrap();
        assert!(said.contains("main") && !said.starts_with("Rejected"), "{n}");
        // bob's held message is answered.
        let reply = bob
            .until("bob's reply", |v| v["type"] == "message")
            .await;
        assert!(
            reply["text"].as_str().unwrap().contains("hi pinch"),
            "{reply}"
        );
        // The second tab sees the decision, and no card before it.
        let mut before = Vec::new();
        second
            .until("the decision in the second tab", |v| {
                before.push(v.clone());
                v["type"] == "notice"
            })
            .await;
        assert!(!before.iter().any(is_card), "no second card: {before:?}");
    });
    rt.block_on(host.shutdown()).unwrap();
}

/// The dashboard (issue 8) in headless Chromium, behind the web token: a
/// crash-looping session shows as quarantined with its reason; once the
/// cause is fixed, the page's "Lift quarantine" button (a real click)
/// resumes it and the held message is answered. The API refuses commands
/// outside the page's needs. Saves `target/dashboard.png`.
#[test]
fn the_dashboard_shows_a_quarantine_and_lifts_it() {
    let tmp = tempfile::tempdir().unwrap();
    // A runner that crashes while the marker exists, then works.
    let marker = tmp.path().join("crash");
    std::fs::write(&marker, "").unwrap();
    let wrapper = tmp.path().join("runner.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -e {} ] && exit 1\nexec {} \"$@\"\n",
            marker.display(),
            PINCH
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = with_script(
        host_config(tmp.path(), pinch_host::sandbox::Choice::Process),
        SCRIPT,
    );
    cfg.http = Some(pinch_host::config::HttpSettings::local(
        "127.0.0.1:0".parse().unwrap(),
        true,
    ));
    cfg.runner_exe = wrapper;
    cfg.budget.delays = vec![Duration::ZERO, Duration::from_millis(50)];
    cfg.boot_breaker = false;
    // The charts sample often, so a short test draws them.
    cfg.metrics_sample = Duration::from_millis(200);
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let addr = host.http_addr.unwrap();
    let token = pinch_host::web_token(&data).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let held = c.say("hello there", "q1");
    let api = |cmd: &str, t: &str| {
        let (cmd, t) = (cmd.to_owned(), t.to_owned());
        rt.block_on(async move {
            let r = reqwest::Client::new()
                .post(format!("http://{addr}/api/admin"))
                .bearer_auth(t)
                .header("content-type", "application/json")
                .body(json!({"command": cmd}).to_string())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    wait_for("the session is quarantined", WAIT, || {
        api("sessions-list", &token)
            .1
            .contains("quarantined_at\":\"2")
    });
    assert_eq!(api("sessions-list", "wrong-token").0, 401);
    let (code, body) = api("groups-delete", &token);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("does not run groups-delete"), "{body}");
    let page = rt.block_on(async {
        reqwest::get(format!("http://{addr}/dashboard"))
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(page, 401);
    let Some(exe) = chromium() else {
        let msg = "\n\n!!!!! SKIPPED: the dashboard's browser half needs Chromium (apt-get install -y chromium) !!!!!\n";
        if std::env::var("PINCH_TEST_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("{msg}");
        rt.block_on(host.shutdown()).unwrap();
        return;
    };
    let profile = tmp.path().join("chromium");
    std::fs::create_dir_all(&profile).unwrap();
    rt.block_on(async {
        let (_browser, mut cdp) = launch(&exe, &profile).await;
        cdp.call("Page.enable", json!({})).await;
        cdp.call("Page.navigate", json!({"url": pinch_host::web_login_url(&data, addr, "/dashboard").unwrap()})).await;
        cdp.until("the quarantined session", "document.querySelector('#sessions .q') && document.querySelector('[data-lift]')").await;
        let reason = cdp.eval("document.getElementById('sessions').innerText").await;
        assert!(reason.as_str().unwrap().contains("failed"), "the reason is shown: {reason}");
        // Fix the cause, then lift the quarantine from the page.
        std::fs::remove_file(&marker).unwrap();
        cdp.click("[data-lift]").await;
        cdp.until("the quarantine lifted", "!document.querySelector('#sessions .q') && document.querySelectorAll('#sessions tr').length === 2").await;
        // The charts, drawn from the sampled counters: the crashes as
        // exits and spawns, the messages. (The reply waits for this test's
        // CLI client to take it, below; its latency is checked in
        // `metrics.rs`.)
        cdp.until("the runner chart with the crashes", "!!document.querySelector('#chart-runners polyline.s1') && !!document.querySelector('#chart-runners polyline.s0')").await;
        cdp.until("the traffic chart", "!!document.querySelector('#chart-traffic polyline.s0') && !!document.querySelector('#chart-traffic polyline.s1')").await;
        let legend = cdp.eval("document.querySelector('#chart-traffic .legend').textContent").await;
        assert!(legend.as_str().unwrap().contains("messages") && legend.as_str().unwrap().contains("replies"), "{legend}");
        // A session's detail: its last exit and cause, its turns, its log.
        cdp.click("#sessions tr.pick td").await;
        let d = cdp.until("the session's detail", "(() => { const d = document.getElementById('detail'); return !document.getElementById('detail-box').hidden && d.querySelector('pre') && d.innerText; })()").await;
        let d = d.as_str().unwrap();
        assert!(d.contains("Last exit") && d.contains("exit code 1"), "{d}");
        assert!(d.contains("Tool calls") && d.contains("Runner log"), "{d}");
        cdp.until("the last turns", "document.getElementById('detail').innerText.includes('hi from the agent')").await;
        let shot = cdp.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true})).await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        let path = target_dir().join("dashboard.png");
        std::fs::write(&path, &png).unwrap();
        assert!(png.len() > 5_000, "a page with content");
    });
    // The held message is answered once the session runs again.
    let replies = c.until_settled(&held);
    assert!(
        replies.iter().any(|t| t == "hi from the agent"),
        "{replies:?}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// Issue 14, as an attacker would try it against a signed-in owner: a page
/// on another site opening the WebSocket or uploading with the owner's
/// cookie, a DNS-rebinding name for our address, a cross-site form POST
/// to `/api/admin`; and an agent sending an `.html` file that must never
/// render as our origin.
#[test]
fn cross_origin_rebinding_form_posts_and_agent_html_are_refused() {
    let WebHost {
        tmp: _tmp,
        data,
        rt,
        host,
        addr,
        token,
    } = WebHost::start();
    rt.block_on(async {
        let cookie = sign_in(&data, addr).await;
        let me = format!("http://{addr}");
        let rebound = format!("rebind.evil.example:{}", addr.port());

        // The WebSocket: another site's page, or our address under another name, is refused.
        assert_eq!(
            ws_status(
                addr,
                &[("cookie", &cookie), ("origin", "http://evil.example")]
            )
            .await,
            403
        );
        assert_eq!(
            ws_status(addr, &[("cookie", &cookie), ("origin", "null")]).await,
            403
        );
        assert_eq!(
            ws_status(addr, &[("cookie", &cookie), ("host", &rebound)]).await,
            403
        );
        assert_eq!(
            ws_status(addr, &[("cookie", &cookie), ("origin", &me)]).await,
            101,
            "our own page connects"
        );

        let c = reqwest::Client::new();
        let post = |path: &str, origin: &str, host: Option<&str>, ctype: &str, body: &str| {
            let mut r = c
                .post(format!("{me}{path}"))
                .header("cookie", &cookie)
                .header("origin", origin)
                .header("content-type", ctype)
                .body(body.to_owned());
            if let Some(h) = host {
                r = r.header("host", h);
            }
            async move {
                let r = r.send().await.unwrap();
                let st = r.status().as_u16();
                assert_hardened(&format!("POST {}", r.url()), r.headers());
                (st, r.text().await.unwrap())
            }
        };
        // An upload from another site's page.
        let (st, msg) = post(
            "/upload?name=a.txt",
            "http://evil.example",
            None,
            "text/plain",
            "x",
        )
        .await;
        assert_eq!(st, 403, "{msg}");
        assert!(msg.contains("cross-origin"), "{msg}");
        let (st, msg) = post("/upload?name=a.txt", &me, None, "text/plain", "x").await;
        assert_eq!(st, 200, "the same origin uploads: {msg}");

        // /api/admin: a form can only send these types; each is refused 415, even from our origin.
        let call = r#"{"command":"sessions-list"}"#;
        for ctype in [
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data; boundary=x",
        ] {
            let (st, msg) = post("/api/admin", &me, None, ctype, call).await;
            assert_eq!(st, 415, "{ctype}: {msg}");
            assert!(msg.contains("application/json"), "{msg}");
        }
        let (st, msg) = post(
            "/api/admin",
            "http://evil.example",
            None,
            "application/json",
            call,
        )
        .await;
        assert_eq!(st, 403, "{msg}");
        let (st, msg) = post("/api/admin", &me, Some(&rebound), "application/json", call).await;
        assert_eq!(st, 403, "{msg}");
        assert!(
            msg.contains("[http] hosts"),
            "the refusal names the fix: {msg}"
        );
        let (st, msg) = post(
            "/api/admin",
            &me,
            None,
            "application/json; charset=utf-8",
            call,
        )
        .await;
        assert_eq!(st, 200, "{msg}");
        assert!(msg.contains("\"ok\":true"), "{msg}");

        // Reads under a rebound name are refused too (the metrics are open on loopback).
        for path in ["/", "/metrics", "/dashboard"] {
            let r = c
                .get(format!("{me}{path}"))
                .header("cookie", &cookie)
                .header("host", &rebound)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 403, "{path}");
        }

        // The agent sends an HTML page: it downloads, never renders here.
        let mut tab = Tab::open(addr, &token, "tester").await;
        tab.send(json!({"type": "message", "text": "send me the page", "client_id": "p1"}))
            .await;
        let m = tab
            .until("the file", |v| {
                v["type"] == "message" && v["files"].as_array().is_some_and(|f| !f.is_empty())
            })
            .await;
        let url = m["files"][0]["url"].as_str().unwrap().to_owned();
        assert!(url.ends_with("/evil.html"), "{url}");
        let r = c
            .get(format!("{me}{url}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_hardened(&url, r.headers());
        let h = |k: &str| r.headers().get(k).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("content-type"), "application/octet-stream");
        assert!(
            h("content-disposition").starts_with("attachment; filename*=UTF-8''evil.html"),
            "{}",
            h("content-disposition")
        );
        assert!(
            h("content-security-policy").contains("sandbox"),
            "{}",
            h("content-security-policy")
        );
        assert_eq!(
            r.text().await.unwrap(),
            "<script>fetch('/api/admin')</script>"
        );
    });
    rt.block_on(host.shutdown()).unwrap();
}

/// Issue 14: pinch has no TLS of its own, so a listener other machines can
/// reach is refused at start unless the owner says the network is trusted.
#[test]
fn a_non_loopback_listener_is_refused_without_the_override() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        "[web]\nenabled = true\n[http]\nlisten = \"0.0.0.0:0\"\n",
    )
    .unwrap();
    for cmd in [&["host"][..], &["chat", "--web"][..]] {
        let out = std::process::Command::new(PINCH)
            .args(cmd)
            .args([
                "--provider",
                "scripted",
                "--sandbox",
                "process",
                "--data-dir",
            ])
            .arg(tmp.path().join("data"))
            .arg("--config")
            .arg(&cfg)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{cmd:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("[http] listen = \"0.0.0.0:0\"")
                && err.contains("[http] allow_plaintext_remote = true"),
            "{cmd:?}: {err}"
        );
        assert!(
            out.stdout.is_empty(),
            "no link printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// Issue 18: `pinch host` with web chat on says where it is and how a
/// browser signs in, never the token itself (the line may go to a
/// journal).
#[test]
fn pinch_host_prints_where_web_chat_is() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        "[web]\nenabled = true\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let mut child = std::process::Command::new(PINCH)
        .args([
            "host",
            "--provider",
            "scripted",
            "--sandbox",
            "process",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(l) if l.contains("web chat at") => break l,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("no web chat line: {e}");
            }
        }
    };
    // SAFETY: a plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(
        line.contains("web chat at http://127.0.0.1:")
            && !line.contains("127.0.0.1:0/")
            && line.contains("pinch admin web-link"),
        "{line}"
    );
    let token = std::fs::read_to_string(data.join("web-token")).unwrap();
    assert!(!line.contains(token.trim()), "{line}");
}
