//! Real mail servers for the email channel's tests: Debian's Dovecot (IMAP,
//! LMTP) and Exim (SMTP with AUTH), children of the test on free loopback
//! ports, set up in a temp dir. Mail to `user@example.test` goes Exim ->
//! LMTP -> Dovecot's maildir `mail/<user>/`, which the tests read as files.
//! Users (IMAP and SMTP AUTH): `pinch`/`pw1`, `alice`/`pw2`; `bob` (`pw3`)
//! has a mailbox and no SMTP AUTH; `oauser` logs in only with SASL
//! XOAUTH2 and the bearer token [`OAUTH_TOKEN`] (what a provider's token
//! endpoint would mint). Needs root.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::wait_for;

// Dovecot's passwd-file; Exim's authenticators check the same pairs.
const USERS: &str = "pinch:{PLAIN}pw1::::::\nalice:{PLAIN}pw2::::::\nbob:{PLAIN}pw3::::::\noauser:{PLAIN}at-mail-1::::::\n";

/// The access token `oauser` logs in with (Dovecot checks it as that
/// user's password through its real XOAUTH2 mechanism; Exim's XOAUTH2
/// authenticator compares the whole SASL message).
pub const OAUTH_TOKEN: &str = "at-mail-1";

const DOVECOT_CONF: &str = r"base_dir = @T@/run
state_dir = @T@/state
log_path = @T@/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login xoauth2
first_valid_uid = 1
mail_location = maildir:@T@/mail/%n
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n @T@/users
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=@T@/mail/%n
}
service imap-login {
  inet_listener imap {
    port = @IMAP@
  }
}
service lmtp {
  inet_listener lmtp {
    port = @LMTP@
  }
}
";

// Plain SMTP only (no STARTTLS: loopback, and no certificate to trust);
// mail for the local domain is accepted with or without AUTH.
const EXIM_CONF: &str = r"primary_hostname = mail.example.test
domainlist local_domains = example.test
spool_directory = @T@/exim
log_file_path = @T@/exim/%slog
daemon_smtp_ports = @SMTP@
local_interfaces = 127.0.0.1
acl_smtp_rcpt = acl_check_rcpt
log_selector = -queue_run
tls_advertise_hosts =
auth_advertise_hosts = *
begin acl
acl_check_rcpt:
  accept domains = +local_domains
  deny message = relay not permitted
begin routers
to_dovecot:
  driver = accept
  domains = +local_domains
  transport = dovecot_lmtp
begin transports
dovecot_lmtp:
  driver = smtp
  protocol = lmtp
  hosts = 127.0.0.1
  port = @LMTP@
  allow_localhost
begin retry
* * F,1m,2s
begin authenticators
plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if or{{and{{eq{$auth2}{pinch}}{eq{$auth3}{pw1}}}}{and{{eq{$auth2}{alice}}{eq{$auth3}{pw2}}}}}}
  server_set_id = $auth2
login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = ${if or{{and{{eq{$auth1}{pinch}}{eq{$auth2}{pw1}}}}{and{{eq{$auth1}{alice}}{eq{$auth2}{pw2}}}}}}
  server_set_id = $auth1
xoauth2:
  driver = plaintext
  public_name = XOAUTH2
  server_prompts = :
  server_condition = ${if eq{$auth1}{user=oauser\x01auth=Bearer at-mail-1\x01\x01}}
  server_set_id = oauser
";

/// Dovecot and Exim, stopped on drop.
pub struct MailServers {
    /// Their configs and logs, Exim's spool, the maildirs (`mail/<user>/`).
    pub dir: tempfile::TempDir,
    pub imap_port: u16,
    /// Plain SMTP (what the tests' senders use).
    pub smtp_port: u16,
    /// With [`MailServers::start_tls`]: SMTP over TLS from the first byte
    /// (IMAP is then TLS-only too), and the servers' self-signed
    /// certificate for `localhost` (a client trusts it as its CA).
    pub smtps_port: u16,
    pub cert_pem: Option<String>,
    children: Vec<Child>,
}

impl MailServers {
    /// Starts Dovecot and Exim on free loopback ports. `None`, with a note,
    /// when they are not installed (scripts/deps --test installs them) or
    /// this is not root; with PINCH_TEST_REQUIRE_MAIL=1 (CI) that panics
    /// instead, so a missing server fails CI rather than skipping its tests.
    pub fn start() -> Option<MailServers> {
        Self::start_with(false)
    }

    /// [`MailServers::start`] with TLS: IMAP only over TLS (993-style),
    /// SMTP over TLS on [`MailServers::smtps_port`] as well as plain.
    pub fn start_tls() -> Option<MailServers> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Option<MailServers> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let needs = "/usr/sbin/dovecot /usr/sbin/exim /usr/lib/dovecot/imap /usr/lib/dovecot/lmtp";
        if !(root && needs.split(' ').all(|p| Path::new(p).exists())) {
            let why = "Debian's dovecot and exim, run as root, are needed (scripts/deps --test)";
            if std::env::var("PINCH_TEST_REQUIRE_MAIL").as_deref() == Ok("1") {
                panic!("PINCH_TEST_REQUIRE_MAIL=1 but {why}");
            }
            eprintln!("note: {why}: skipping a mail test");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().to_path_buf();
        // Free ports left in TIME_WAIT: bind(0), here or in a parallel test,
        // skips them for a minute; the servers (SO_REUSEADDR) take them.
        let port = || {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            drop((l.accept().unwrap(), c));
            l.local_addr().unwrap().port()
        };
        let (imap, lmtp, smtp, smtps) = (port(), port(), port(), port());
        let vars = [
            ("@IMAP@", imap),
            ("@LMTP@", lmtp),
            ("@SMTPS@", smtps),
            ("@SMTP@", smtp),
        ];
        let fill = |c: &str| {
            let c = c.replace("@T@", t.to_str().unwrap());
            vars.iter()
                .fold(c, |c, (k, v)| c.replace(k, &v.to_string()))
        };
        // tempfile makes it 0700: Dovecot's and Exim's users must get in.
        fs::set_permissions(&t, fs::Permissions::from_mode(0o755)).unwrap();
        for (owner, d) in [("dovecot:dovecot", "mail"), ("Debian-exim:", "exim")] {
            fs::create_dir(t.join(d)).unwrap();
            let st = Command::new("chown").arg(owner).arg(t.join(d)).status();
            assert!(st.unwrap().success(), "chown {owner} {d}");
        }
        fs::write(t.join("users"), USERS).unwrap();
        let (mut dovecot, mut exim) = (DOVECOT_CONF.to_owned(), EXIM_CONF.to_owned());
        let mut cert_pem = None;
        if tls {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            // Readable by Exim's unprivileged user: a test key, nothing else.
            fs::write(t.join("cert.pem"), ck.cert.pem()).unwrap();
            fs::write(t.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
            cert_pem = Some(ck.cert.pem());
            dovecot = dovecot
                .replace(
                    "ssl = no",
                    "ssl = required\nssl_cert = <@T@/cert.pem\nssl_key = <@T@/key.pem",
                )
                .replace(
                    "inet_listener imap {\n    port = @IMAP@\n",
                    "inet_listener imaps {\n    port = @IMAP@\n    ssl = yes\n",
                );
            exim = exim
                .replace("daemon_smtp_ports = @SMTP@", "daemon_smtp_ports = @SMTP@ : @SMTPS@\ntls_on_connect_ports = @SMTPS@")
                .replace("tls_advertise_hosts =\n", "tls_advertise_hosts = *\ntls_certificate = @T@/cert.pem\ntls_privatekey = @T@/key.pem\n");
            assert!(
                dovecot.contains("imaps") && exim.contains("tls_on_connect"),
                "TLS set-up"
            );
        }
        fs::write(t.join("dovecot.conf"), fill(&dovecot)).unwrap();
        fs::write(t.join("exim.conf"), fill(&exim)).unwrap();
        // Readable by Dovecot's auth and Exim's users whatever this
        // process's umask (an in-process host sets it to 077).
        for f in ["users", "dovecot.conf", "exim.conf", "cert.pem", "key.pem"] {
            if t.join(f).exists() {
                fs::set_permissions(t.join(f), fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let spawn = |prog: &str, args: &[&str], out: &str| {
            let out = fs::File::create(t.join(out)).unwrap();
            let (mut c, err) = (Command::new(prog), out.try_clone().unwrap());
            c.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
            c.spawn().unwrap()
        };
        let mut m = MailServers {
            imap_port: imap,
            smtp_port: smtp,
            smtps_port: if tls { smtps } else { 0 },
            cert_pem,
            children: Vec::new(),
            dir: tmp,
        };
        // -F: in the foreground, so it stays our child and Drop can stop it.
        let args = ["-F", "-c", &format!("{}/dovecot.conf", t.display())];
        m.children
            .push(spawn("/usr/sbin/dovecot", &args, "dovecot.out"));
        // -q1s: a delivery Dovecot refused is retried within seconds.
        let args = ["-C", &format!("{}/exim.conf", t.display()), "-bdf", "-q1s"];
        m.children.push(spawn("/usr/sbin/exim", &args, "exim.out"));
        let up = |p: &u16| TcpStream::connect(("127.0.0.1", *p)).is_ok();
        let ports = [imap, lmtp, smtp, if tls { smtps } else { smtp }];
        let all_up = || ports.iter().all(up).then_some(());
        m.until("the mail servers", Duration::from_secs(30), all_up);
        Some(m)
    }

    /// Dovecot's and Exim's logs and output, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in "dovecot.out dovecot.log exim.out exim/paniclog exim/mainlog".split(' ') {
            out += &format!("--- {f}:\n");
            let text = fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            for l in text.lines() {
                // Exim says so at each queue run (-C costs it its root).
                if !l.ends_with("lost privilege for using -C option") {
                    out += &format!("{l}\n");
                }
            }
        }
        out
    }

    /// [`wait_for`] `f`'s value; the timeout's panic shows the servers' logs.
    fn until<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let (deadline, mut got) = (Instant::now() + timeout, None);
        wait_for(what, timeout + Duration::from_secs(5), || {
            got = f();
            let late = got.is_none() && Instant::now() >= deadline;
            assert!(!late, "timed out waiting for {what}\n{}", self.logs());
            got.is_some()
        });
        got.unwrap()
    }

    /// Sends a raw RFC 5322 message over SMTP without AUTH, as a mail
    /// client outside would; panics with the server's answer on refusal.
    pub fn send(&self, from: &str, to: &str, raw: &str) {
        let s = TcpStream::connect(("127.0.0.1", self.smtp_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (mut r, mut w) = (BufReader::new(s.try_clone().unwrap()), s);
        let mut data = String::new();
        for l in raw.lines() {
            // A leading dot is doubled, else "." alone would end the message.
            let dot = if l.starts_with('.') { "." } else { "" };
            data += &format!("{dot}{l}\r\n");
        }
        data.push('.');
        let mut step = |cmd: &str, want: &str| {
            if !cmd.is_empty() {
                w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
            }
            // A reply's lines are "250-…" but for the last, "250 …".
            let mut reply = String::new();
            while r.read_line(&mut reply).unwrap_or(0) > 0
                && reply.lines().last().unwrap().get(3..4) == Some("-")
            {}
            let cmd = if cmd == data { "(the message)" } else { cmd };
            if !reply.starts_with(want) {
                panic!("SMTP {cmd:?}: got {reply:?}\n{}", self.logs());
            }
        };
        step("", "220");
        step("EHLO client.example.test", "250");
        step(&format!("MAIL FROM:<{from}>"), "250");
        step(&format!("RCPT TO:<{to}>"), "250");
        step("DATA", "354");
        step(&data, "250");
        step("QUIT", "221");
    }

    /// `user`'s INBOX, oldest first: (file name, flags if in cur/, text).
    /// A file Dovecot renamed (read, flagged) meanwhile starts it over.
    fn scan(&self, user: &str) -> Vec<(String, Option<String>, String)> {
        let md = self.dir.path().join("mail").join(user);
        'again: loop {
            let mut out = Vec::new();
            for sub in ["new", "cur"] {
                for e in fs::read_dir(md.join(sub)).into_iter().flatten() {
                    let name = e.unwrap().file_name().into_string().unwrap();
                    let Ok(raw) = fs::read(md.join(sub).join(&name)) else {
                        continue 'again;
                    };
                    let raw = String::from_utf8_lossy(&raw).into_owned();
                    let flags = name.split_once(":2,").map_or("", |x| x.1).to_owned();
                    out.push((name, (sub == "cur").then_some(flags), raw));
                }
            }
            // Names are "<seconds>.M<microseconds>P…", numbers unpadded.
            out.sort_by_key(|m| {
                let num = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
                let (s, rest) = m.0.split_once(".M").unwrap_or((&m.0, ""));
                (num(s), num(rest.split('P').next().unwrap()), m.0.clone())
            });
            return out;
        }
    }

    /// The raw messages in `user`'s INBOX (maildir new/, cur/), oldest first.
    pub fn mailbox(&self, user: &str) -> Vec<String> {
        self.scan(user).into_iter().map(|m| m.2).collect()
    }

    /// Waits until `user`'s INBOX has a message `pred` accepts; returns it.
    pub fn wait_mail(&self, user: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let find = || self.mailbox(user).into_iter().find(|m| pred(m));
        self.until(&format!("mail to {user}"), timeout, find)
    }

    /// The maildir flags ("S" is \Seen, "RS" answered and seen…) of the
    /// message in `user`'s INBOX whose raw text contains `needle`; `None`
    /// while it is in new/ (no IMAP client has looked) or not there.
    pub fn maildir_flags(&self, user: &str, needle: &str) -> Option<String> {
        let mut msgs = self.scan(user).into_iter();
        msgs.find(|m| m.2.contains(needle))?.1
    }

    /// Kills this Dovecot's `imap` processes (the logged-in sessions, its
    /// master's children), as a server crash or a dropped connection
    /// would end them; returns how many. A fault for a client to survive.
    pub fn kill_imap_sessions(&self) -> usize {
        let master = self.children[0].id().to_string();
        let mut n = 0;
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let ppid = stat[close + 1..].split_whitespace().nth(1);
            if comm == "imap" && ppid == Some(master.as_str()) {
                let pid: libc::pid_t = stat[..open].trim().parse().unwrap();
                // SAFETY: kill has no memory preconditions.
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    n += 1;
                }
            }
        }
        n
    }
}

impl Drop for MailServers {
    /// SIGTERM (Dovecot's master stops its imap, lmtp, auth…), SIGKILL at 10 s.
    fn drop(&mut self) {
        for c in &self.children {
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
