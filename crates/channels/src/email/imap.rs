//! The IMAP loop: connect, log in, select, hand every new mail to the host
//! in UID order, then IDLE (or poll) until something changes. Every
//! network step has the stall limit as its deadline: a connection that
//! goes quiet is rebuilt with the shared backoff, never waited on forever.

use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::Session;
use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::kind::Credential;
use crate::platform::Backoff;
use crate::{Ack, AckOutcome, ChannelEvent};

use super::parse::Reader;
use super::{EmailChannel, Endpoint, Tls};

/// The largest mail fetched whole (bytes, as the server counts them): a
/// 25 MiB attachment is about 34 MiB in base64. A larger one is read from
/// its header, and the agent told.
pub const MAX_MAIL: u64 = 48 << 20;
/// Failed fetches of one mail before it is read from its header alone.
const MAX_TRIES: u32 = 3;
/// How long a mail may wait for the host's commit.
const ACK_WAIT: Duration = Duration::from_secs(60);

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}
type Imap = Session<Box<dyn Io>>;

/// A deadline on one network step, its failure named.
async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in {limit:?}")),
    }
}

/// The certificates of a PEM file.
pub fn pem_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))
}

/// TLS over `tcp` to `host`, verified against the web's roots and the
/// configured extra ones.
async fn tls(tcp: TcpStream, host: &str, extra: Option<&[u8]>) -> Result<Box<dyn Io>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in pem_roots(extra.unwrap_or_default())? {
        roots
            .add(c)
            .map_err(|e| format!("ca_file: a certificate rustls cannot use: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a host name: {e}"))?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))?;
    Ok(Box::new(s))
}

/// Opens the connection and reads the greeting (STARTTLS first when asked).
async fn connect(
    e: &Endpoint,
    extra: Option<&[u8]>,
) -> Result<async_imap::Client<Box<dyn Io>>, String> {
    let tcp = TcpStream::connect((e.host.as_str(), e.port))
        .await
        .map_err(|err| format!("connecting to {}:{}: {err}", e.host, e.port))?;
    let stream: Box<dyn Io> = match e.tls {
        Tls::Implicit => tls(tcp, &e.host, extra).await?,
        Tls::None => Box::new(tcp),
        Tls::Starttls => {
            let mut c = async_imap::Client::new(tcp);
            greeting(&mut c).await?;
            c.run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|err| format!("STARTTLS: {err}"))?;
            let tcp = c.into_inner();
            let s = tls(tcp, &e.host, extra).await?;
            return Ok(async_imap::Client::new(s));
        }
    };
    let mut c = async_imap::Client::new(stream);
    greeting(&mut c).await?;
    Ok(c)
}

async fn greeting<T: Io>(c: &mut async_imap::Client<T>) -> Result<(), String> {
    match c.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the server closed the connection before its greeting".into()),
        Err(e) => Err(format!("reading the greeting: {e}")),
    }
}

/// Connects, logs in and selects the mailbox (doctor's check): how many
/// mails it holds.
pub(super) async fn check(cfg: &super::EmailConfig) -> Result<String, String> {
    let limit = cfg.stall.min(Duration::from_secs(20));
    let mut s = login(cfg, limit).await?;
    let mb = within(limit, "selecting the mailbox", s.select(&cfg.mailbox)).await?;
    let _ = within(limit, "logging out", s.logout()).await;
    Ok(format!("{} holds {} mails", cfg.mailbox, mb.exists))
}

/// Connects and logs in (LOGIN with a password, AUTHENTICATE XOAUTH2 with
/// an OAuth token); a refused login names the settings to check.
async fn login(cfg: &super::EmailConfig, limit: Duration) -> Result<Imap, String> {
    let server = format!("{}:{}", cfg.imap.host, cfg.imap.port);
    let cred = within(
        limit,
        "reading the login's credential",
        cfg.credential(&server),
    )
    .await?;
    let client = within(
        limit,
        "connecting",
        connect(&cfg.imap, cfg.ca_pem.as_deref()),
    )
    .await?;
    within(limit, "logging in", async {
        match &cred {
            Credential::Password(p) => client.login(&cfg.username, p).await,
            Credential::Bearer(t) => {
                let x = Xoauth2 {
                    first: Some(xoauth2(&cfg.username, t)),
                };
                client.authenticate("XOAUTH2", x).await
            }
        }
        .map_err(|(e, _)| e)
    })
    .await
    .map_err(|e| format!("{e} ({})", cfg.login_hint()))
}

/// SASL XOAUTH2's one message (Google's and Microsoft's mail servers,
/// Dovecot): the user and the bearer token.
pub(super) fn xoauth2(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

/// Answers the server's first challenge with the XOAUTH2 message, and any
/// later one (the error details a refusing server sends) with nothing, as
/// the mechanism asks, so the server ends the exchange with its NO.
struct Xoauth2 {
    first: Option<String>,
}

impl async_imap::Authenticator for Xoauth2 {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        self.first.take().unwrap_or_default()
    }
}

impl EmailChannel {
    /// Runs until the channel is closed: one session after another, the
    /// backoff between failures.
    pub(super) async fn run(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        while !self.closed() {
            match self.session(&mut backoff).await {
                Ok(()) => return,
                Err(e) => {
                    let wait = backoff.failed();
                    tracing::warn!(
                        "email: IMAP {}:{}: {e}; connecting again in {wait:?}",
                        self.cfg.imap.host,
                        self.cfg.imap.port
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.wake.notified() => {}
                    }
                }
            }
        }
    }

    /// One connection: log in, select, then new mail and IDLE in turn.
    async fn session(&self, backoff: &mut Backoff) -> Result<(), String> {
        let limit = self.cfg.stall;
        let mut s = login(&self.cfg, limit).await?;
        let mb = within(limit, "selecting the mailbox", s.select(&self.cfg.mailbox)).await?;
        let caps = within(limit, "asking for capabilities", s.capabilities()).await?;
        let idle = self.cfg.idle && caps.has_str("IDLE");
        backoff.connected();
        let validity = mb.uid_validity.unwrap_or(0);
        let account = format!(
            "{}@{}:{}/{}",
            self.cfg.username, self.cfg.imap.host, self.cfg.imap.port, self.cfg.mailbox
        );
        {
            let mut st = self.state.lock().await;
            if st.uid_validity != Some(validity) || st.account.as_deref() != Some(account.as_str())
            {
                let start = match mb.uid_next {
                    Some(n) => n.saturating_sub(1),
                    None => within(limit, "searching", s.uid_search("ALL"))
                        .await?
                        .into_iter()
                        .max()
                        .unwrap_or(0),
                };
                match st.uid_validity {
                    None => tracing::info!(
                        "email: first start on {}: mail from UID {} on is the agent's; what is already there is left alone",
                        self.cfg.mailbox,
                        start + 1
                    ),
                    Some(_) if st.account.as_deref() != Some(account.as_str()) => tracing::warn!(
                        "email: the mailbox is now {account} (was {}): starting after its newest mail",
                        st.account.as_deref().unwrap_or("unnamed")
                    ),
                    Some(old) => tracing::warn!(
                        "email: {}'s UIDVALIDITY changed ({old} → {validity}): the server renumbered it; starting after its newest mail",
                        self.cfg.mailbox
                    ),
                }
                st.uid_validity = Some(validity);
                st.account = Some(account.clone());
                st.last_uid = start;
                self.save(&st);
            }
        }
        tracing::info!(
            idle,
            "email: connected to {}:{} ({})",
            self.cfg.imap.host,
            self.cfg.imap.port,
            self.cfg.mailbox
        );
        loop {
            self.fetch_new(&mut s, validity).await?;
            backoff.progress();
            while s.unsolicited_responses.try_recv().is_ok() {}
            if self.closed() {
                let _ = within(limit, "logging out", s.logout()).await;
                return Ok(());
            }
            s = if idle {
                self.idle(s).await?
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(self.cfg.poll) => {}
                    _ = self.wake.notified() => {}
                }
                within(limit, "NOOP", s.noop()).await?;
                s
            };
        }
    }

    /// IDLE until the server reports a change or the stall limit nears
    /// (then DONE, whose answer proves the connection alive).
    async fn idle(&self, s: Imap) -> Result<Imap, String> {
        let limit = self.cfg.stall;
        let mut h = s.idle();
        within(limit, "starting IDLE", h.init()).await?;
        {
            let (wait, _stop) = h.wait_with_timeout(limit.mul_f64(0.9));
            tokio::select! {
                r = wait => match r {
                    Ok(IdleResponse::NewData(_)) | Ok(IdleResponse::Timeout) | Ok(IdleResponse::ManualInterrupt) => {}
                    Err(e) => return Err(format!("IDLE: {e}")),
                },
                _ = self.wake.notified() => {}
            }
        }
        within(limit, "ending IDLE", h.done()).await
    }

    /// Hands every mail after the mark to the host, in UID order, moving
    /// the mark after each commit.
    async fn fetch_new(&self, s: &mut Imap, validity: u32) -> Result<(), String> {
        let limit = self.cfg.stall;
        let last = self.state.lock().await.last_uid;
        let found = within(
            limit,
            "searching for new mail",
            s.uid_search(format!("UID {}:*", last.saturating_add(1))),
        )
        .await?;
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > last).collect();
        uids.sort_unstable();
        for uid in uids {
            let size = fetch(s, limit, uid, "(UID RFC822.SIZE)", |f| f.size.is_some())
                .await?
                .and_then(|f| f.size)
                .map(u64::from);
            let Some(size) = size else {
                // Expunged meanwhile: nothing to hand over.
                self.mark(uid).await;
                continue;
            };
            let mut header_only = (size > MAX_MAIL).then(|| {
                format!(
                    "This mail is {} MiB, more than pinch reads. Ask the sender for a smaller one or a link",
                    size >> 20
                )
            });
            let tries = self.tries(uid, 0).await;
            if header_only.is_none() && tries >= MAX_TRIES {
                header_only = Some(format!(
                    "pinch could not fetch this mail whole in {MAX_TRIES} tries (the connection kept failing)"
                ));
            }
            // A whole mail gets its deadline per size: a slow link is not
            // a stall (1 s per 64 KiB over the stall limit).
            let (query, deadline) = match header_only {
                Some(_) => ("(UID BODY.PEEK[HEADER])", limit),
                None => (
                    "(UID BODY.PEEK[])",
                    limit + Duration::from_secs(size / (64 << 10)),
                ),
            };
            let whole = header_only.is_none();
            let got = fetch(s, deadline, uid, query, |f| {
                if whole {
                    f.body().is_some()
                } else {
                    f.header().is_some()
                }
            })
            .await;
            let f = match got {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.mark(uid).await;
                    continue;
                }
                Err(e) => {
                    if whole {
                        self.tries(uid, 1).await;
                    }
                    return Err(e);
                }
            };
            let raw = if whole { f.body() } else { f.header() }
                .unwrap_or_default()
                .to_vec();
            drop(f);
            let handled = self
                .hand_over(&raw, validity, uid, header_only.as_deref())
                .await?;
            if handled {
                let seen = async {
                    s.uid_store(uid.to_string(), "+FLAGS.SILENT (\\Seen)")
                        .await?
                        .collect::<Vec<_>>()
                        .await;
                    Ok::<_, async_imap::error::Error>(())
                };
                if let Err(e) = within(limit, "flagging a mail as seen", seen).await {
                    // The mark moves anyway: the mail is stored.
                    tracing::warn!("email: UID {uid}: {e}");
                }
            }
            self.mark(uid).await;
        }
        Ok(())
    }

    /// Failed fetches of `uid` so far, after adding `add` (another UID
    /// starts the count again).
    async fn tries(&self, uid: u32, add: u32) -> u32 {
        let mut t = self.tries.lock().await;
        if t.0 != uid {
            *t = (uid, 0);
        }
        t.1 += add;
        t.1
    }

    /// Moves the mark to `uid`.
    async fn mark(&self, uid: u32) {
        let mut st = self.state.lock().await;
        if uid > st.last_uid {
            st.last_uid = uid;
            self.save(&st);
        }
    }

    /// One mail to the host; `Ok(true)` once committed, `Ok(false)` when it
    /// is not for the agent (skipped, with the reason logged), `Err` when
    /// the host did not store it (the mail is read again later).
    async fn hand_over(
        &self,
        raw: &[u8],
        validity: u32,
        uid: u32,
        header_only: Option<&str>,
    ) -> Result<bool, String> {
        let reader = Reader {
            own: &self.cfg.address,
            trusted_authserv_id: self.cfg.trusted_authserv_id.as_deref(),
        };
        let mut inc = match reader.read(raw, (validity, uid), header_only) {
            Ok(i) => i,
            Err(skip) => {
                tracing::info!("email: UID {uid} left in the mailbox unread by the agent: {skip}");
                return Ok(false);
            }
        };
        {
            let mut st = self.state.lock().await;
            match inc.event.thread_id.clone() {
                // A reply to a card or notice: no thread, as the card had.
                Some(t) if st.is_root(&t) => inc.event.thread_id = None,
                Some(t) => st.note(&t, &inc.subject, &inc.references),
                None => {}
            }
        }
        let mid = inc.event.message_id.clone();
        let (ack, rx) = Ack::new();
        self.events
            .send(ChannelEvent::Message(inc.event, ack))
            .await
            .map_err(|_| "the host has stopped".to_owned())?;
        match tokio::time::timeout(ACK_WAIT, rx).await {
            Ok(Ok(AckOutcome::Stored { .. })) => Ok(true),
            Ok(Ok(AckOutcome::Failed(e))) => {
                Err(format!("the host could not store mail {mid:?}: {e}"))
            }
            Ok(Err(_)) => Err(format!("the host dropped mail {mid:?} unanswered")),
            Err(_) => Err(format!(
                "the host did not store mail {mid:?} within {ACK_WAIT:?}"
            )),
        }
    }
}

/// `UID FETCH uid query`: the answer for `uid` that has what was asked
/// (`has`), `None` when the server answered nothing for it (expunged); an
/// answer without it (a flag update racing the fetch, a NIL body) is an
/// error, so the mail is fetched again rather than read as empty.
async fn fetch(
    s: &mut Imap,
    limit: Duration,
    uid: u32,
    query: &str,
    has: impl Fn(&async_imap::types::Fetch) -> bool,
) -> Result<Option<async_imap::types::Fetch>, String> {
    let (found, any) = within(limit, "fetching a mail", async {
        let (mut found, mut any) = (None, false);
        let mut st = s.uid_fetch(uid.to_string(), query).await?;
        while let Some(f) = st.next().await {
            let f = f?;
            if f.uid == Some(uid) {
                any = true;
                if found.is_none() && has(&f) {
                    found = Some(f);
                }
            }
        }
        Ok::<_, async_imap::error::Error>((found, any))
    })
    .await?;
    match (found, any) {
        (Some(f), _) => Ok(Some(f)),
        (None, false) => Ok(None),
        (None, true) => Err(format!(
            "the server answered {query} for UID {uid} without it"
        )),
    }
}
