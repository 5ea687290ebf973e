//! A real Matrix homeserver for the Matrix channel's tests: Synapse from
//! its Python package (installed into a venv by `scripts/deps --test`), a
//! child of the test on a free loopback port, with its config, SQLite
//! database and media under a temp dir; no federation, no rate limits.
//! Users are registered through the admin API with the registration
//! shared secret, and the tests' second client speaks plain HTTP to it.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::wait_for;

const SHARED_SECRET: &str = "pinch-test-registration-secret";
/// A signing key for the test homeserver only (saves Synapse generating
/// one at each start).
const SIGNING_KEY: &str = "ed25519 a_test B9ImoiSOt1XMgQzB2tFWTjuoJ4DISuujnkB1WwVW/bA\n";

const CONFIG: &str = r"server_name: localhost
listeners:
  - port: @PORT@
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: @T@/homeserver.db
media_store_path: @T@/media
signing_key_path: @T@/signing.key
registration_shared_secret: @SECRET@
macaroon_secret_key: pinch-test-macaroon
form_secret: pinch-test-form
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
presence:
  enabled: false
url_preview_enabled: false
rc_message: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
  remote: {per_second: 1000, burst_count: 1000}
rc_invites:
  per_room: {per_second: 1000, burst_count: 1000}
  per_user: {per_second: 1000, burst_count: 1000}
  per_issuer: {per_second: 1000, burst_count: 1000}
rc_media_create: {per_second: 1000, burst_count: 1000}
";

/// The venv's Python with Synapse: `PINCH_TEST_SYNAPSE_PYTHON`, else where
/// `scripts/deps --test` puts it.
fn python() -> PathBuf {
    match std::env::var_os("PINCH_TEST_SYNAPSE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/pinch/synapse-venv/bin/python"),
    }
}

/// Synapse, stopped on drop.
pub struct Homeserver {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    rt: tokio::runtime::Runtime,
}

/// A registered user and the token of its own (second) client.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub token: String,
}

impl Homeserver {
    /// Starts Synapse on a free loopback port. `None`, with a note, when it
    /// is not installed; with PINCH_TEST_REQUIRE_MATRIX=1 (CI) that panics
    /// instead, so a missing homeserver fails CI rather than skipping.
    pub fn start() -> Option<Homeserver> {
        let py = python();
        let installed = py.exists()
            && Command::new(&py)
                .args(["-c", "import synapse"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !installed {
            let why = format!(
                "Synapse is needed at {} (scripts/deps --test, or PINCH_TEST_SYNAPSE_PYTHON)",
                py.display()
            );
            if std::env::var("PINCH_TEST_REQUIRE_MATRIX").as_deref() == Ok("1") {
                panic!("PINCH_TEST_REQUIRE_MATRIX=1 but {why}");
            }
            eprintln!("note: {why}: skipping a Matrix test");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            drop((l.accept().unwrap(), c));
            l.local_addr().unwrap().port()
        };
        let cfg = CONFIG
            .replace("@T@", t.to_str().unwrap())
            .replace("@PORT@", &port.to_string())
            .replace("@SECRET@", SHARED_SECRET);
        fs::write(t.join("homeserver.yaml"), cfg).unwrap();
        fs::write(t.join("signing.key"), SIGNING_KEY).unwrap();
        let out = fs::File::create(t.join("synapse.log")).unwrap();
        let child = Command::new(&py)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(t.join("homeserver.yaml"))
            .current_dir(t)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let hs = Homeserver {
            dir: tmp,
            port,
            child,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        wait_for("Synapse to answer", Duration::from_secs(95), || {
            let up = hs.get_anon("/_matrix/client/versions").is_some();
            assert!(
                up || Instant::now() < deadline,
                "Synapse did not start:\n{}",
                hs.logs()
            );
            up
        });
        Some(hs)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Synapse's log, for a failing test's message.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.dir.path().join("synapse.log")).unwrap_or_default()
    }

    fn get_anon(&self, path: &str) -> Option<Value> {
        self.rt.block_on(async {
            let r = reqwest::get(format!("{}{path}", self.url())).await.ok()?;
            r.status().is_success().then_some(())?;
            r.json().await.ok()
        })
    }

    /// Registers `name` through `/_synapse/admin/v1/register` (the nonce,
    /// then the HMAC-SHA1 of the shared secret over it).
    pub fn register(&self, name: &str) -> User {
        let nonce = self.get_anon("/_synapse/admin/v1/register").unwrap()["nonce"]
            .as_str()
            .unwrap()
            .to_owned();
        let pw = format!("{name}-pw");
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            SHARED_SECRET.as_bytes(),
        );
        let msg = [
            nonce.as_bytes(),
            name.as_bytes(),
            pw.as_bytes(),
            &b"notadmin"[..],
        ]
        .join(&0u8);
        let mac = pinch_channels::http::hex(ring::hmac::sign(&key, &msg).as_ref());
        let body =
            json!({"nonce": nonce, "username": name, "password": pw, "admin": false, "mac": mac});
        let v = self.call(
            None,
            reqwest::Method::POST,
            "/_synapse/admin/v1/register",
            Some(body),
        );
        User {
            id: v["user_id"].as_str().unwrap().to_owned(),
            token: v["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// A client-server call as `who`; panics (with Synapse's log) unless it succeeds.
    pub fn call(
        &self,
        who: Option<&User>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, v) = self.try_call(who, method, path, body);
        assert!(status < 300, "{path} answered {status}: {v}");
        v
    }

    /// [`Homeserver::call`] that returns the status instead of panicking.
    pub fn try_call(
        &self,
        who: Option<&User>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let mut r = reqwest::Client::new().request(method, format!("{}{path}", self.url()));
            if let Some(u) = who {
                r = r.bearer_auth(&u.token);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or_default())
        })
    }

    /// `who` creates a room inviting `invite` (a direct one when `direct`).
    pub fn create_room(&self, who: &User, invite: &[&User], direct: bool) -> String {
        let ids: Vec<&str> = invite.iter().map(|u| u.id.as_str()).collect();
        let mut body = json!({"invite": ids, "is_direct": direct});
        body["preset"] = if direct {
            "trusted_private_chat"
        } else {
            "private_chat"
        }
        .into();
        let v = self.call(
            Some(who),
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(body),
        );
        v["room_id"].as_str().unwrap().to_owned()
    }

    /// `who` joins `room` (accepting an invite).
    pub fn join(&self, who: &User, room: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/join", enc(room));
        self.call(Some(who), reqwest::Method::POST, &path, Some(json!({})));
    }

    /// `who` sends an event of `kind` to `room`; its event id.
    pub fn send(&self, who: &User, room: &str, kind: &str, content: Value) -> String {
        let txn = format!(
            "t{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let path = format!("/_matrix/client/v3/rooms/{}/send/{kind}/{txn}", enc(room));
        let v = self.call(Some(who), reqwest::Method::PUT, &path, Some(content));
        v["event_id"].as_str().unwrap().to_owned()
    }

    /// `who` sends a text message; its event id.
    pub fn say(&self, who: &User, room: &str, text: &str) -> String {
        self.send(
            who,
            room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": text}),
        )
    }

    /// The room's events as `who` sees them, oldest first (the newest 200).
    pub fn events(&self, who: &User, room: &str) -> Vec<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200",
            enc(room)
        );
        let v = self.call(Some(who), reqwest::Method::GET, &path, None);
        let mut out: Vec<Value> = v["chunk"].as_array().cloned().unwrap_or_default();
        out.reverse();
        out
    }

    /// Events in `room` sent by `sender` that `pred` accepts.
    pub fn events_from(
        &self,
        who: &User,
        room: &str,
        sender: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        self.events(who, room)
            .into_iter()
            .filter(|e| e["sender"] == sender && pred(e))
            .collect()
    }

    /// Waits for an event from `sender` in `room` that `pred` accepts.
    pub fn wait_event(
        &self,
        who: &User,
        room: &str,
        sender: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut found = None;
        let deadline = Instant::now() + super::platform::WAIT;
        wait_for(what, super::platform::WAIT + Duration::from_secs(5), || {
            found = self
                .events_from(who, room, sender, &pred)
                .into_iter()
                .next();
            assert!(
                found.is_some() || Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            found.is_some()
        });
        found.unwrap()
    }

    /// `user`'s membership of `room` as `who` sees it (`join`, `invite`, `leave`…).
    pub fn membership(&self, who: &User, room: &str, user: &str) -> Option<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(room),
            enc(user)
        );
        let (status, v) = self.try_call(Some(who), reqwest::Method::GET, &path, None);
        (status == 200).then(|| v["membership"].as_str().unwrap_or_default().to_owned())
    }

    /// Uploads a file as `who`; its `mxc://` URI.
    pub fn upload(&self, who: &User, name: &str, data: &[u8]) -> String {
        self.rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!(
                    "{}/_matrix/media/v3/upload?filename={name}",
                    self.url()
                ))
                .bearer_auth(&who.token)
                .header("content-type", "text/plain")
                .body(data.to_vec())
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["content_uri"].as_str().unwrap().to_owned()
        })
    }

    /// Downloads an `mxc://` URI as `who` (authenticated media).
    pub fn download(&self, who: &User, mxc: &str) -> Vec<u8> {
        let tail = mxc.strip_prefix("mxc://").unwrap();
        self.rt.block_on(async {
            let r = reqwest::Client::new()
                .get(format!(
                    "{}/_matrix/client/v1/media/download/{tail}",
                    self.url()
                ))
                .bearer_auth(&who.token)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "download {mxc}: {}", r.status());
            r.bytes().await.unwrap().to_vec()
        })
    }
}

/// A room or user id as a URL path segment.
pub fn enc(s: &str) -> String {
    pinch_channels::platform::url_segment(s)
}

impl Drop for Homeserver {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
