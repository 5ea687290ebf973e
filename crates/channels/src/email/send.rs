//! Outbound mail: a reply built with lettre and sent over SMTP.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls as SmtpTls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::platform::SEND_TIMEOUT;
use crate::{Address, DeliverError, Outgoing};

use super::{EmailChannel, EmailConfig, Tls};

pub struct Smtp(AsyncSmtpTransport<Tokio1Executor>);

impl Smtp {
    /// A transport logging in with `cred` (XOAUTH2 for a bearer token):
    /// made for each mail, so a rotated secret or a refreshed token is used
    /// by the next one (lettre opens a connection per mail anyway).
    pub fn new(cfg: &EmailConfig, cred: &crate::kind::Credential) -> Result<Smtp, String> {
        let e = &cfg.smtp;
        let bad =
            |err: lettre::transport::smtp::Error| format!("[email] smtp_host {:?}: {err}", e.host);
        let b = match e.tls {
            Tls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&e.host).map_err(bad)?,
            Tls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&e.host).map_err(bad)?
            }
            Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.host),
        };
        let b = match (&cfg.ca_pem, e.tls) {
            (Some(pem), Tls::Implicit | Tls::Starttls) => {
                let ca =
                    Certificate::from_pem(pem).map_err(|err| format!("[email] ca_file: {err}"))?;
                let params = TlsParameters::builder(e.host.clone())
                    .add_root_certificate(ca)
                    .build_rustls()
                    .map_err(bad)?;
                b.tls(if e.tls == Tls::Implicit {
                    SmtpTls::Wrapper(params)
                } else {
                    SmtpTls::Required(params)
                })
            }
            _ => b,
        };
        let domain = cfg.address.rsplit('@').next().unwrap_or("localhost");
        let (secret, mechanisms) = match cred {
            crate::kind::Credential::Password(p) => (p, vec![Mechanism::Plain, Mechanism::Login]),
            crate::kind::Credential::Bearer(t) => (t, vec![Mechanism::Xoauth2]),
        };
        Ok(Smtp(
            b.port(e.port)
                .credentials(Credentials::new(cfg.username.clone(), secret.clone()))
                .authentication(mechanisms)
                .hello_name(ClientId::Domain(domain.to_owned()))
                .timeout(Some(SEND_TIMEOUT))
                .build(),
        ))
    }
}

impl Smtp {
    /// Whether the server answers (greeting, EHLO, and TLS when asked).
    pub async fn check(&self, cfg: &EmailConfig) -> Result<(), String> {
        let what = format!("SMTP {}:{}", cfg.smtp.host, cfg.smtp.port);
        match self.0.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{what} does not answer")),
            Err(e) => Err(format!("{what}: {e}")),
        }
    }
}

/// `Re: subject`, unless it already is one.
fn re(subject: &str) -> String {
    let s = subject.trim();
    if s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("re:")) {
        s.to_owned()
    } else {
        format!("Re: {s}")
    }
}

/// The outbound row id as the local part of a Message-ID (RFC 5322
/// `dot-atom-text`; anything else becomes `-`).
pub fn message_id(row: &str, domain: &str) -> String {
    let local: String = row
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("pinch.{}@{domain}", local.trim_matches('.'))
}

fn angle(ids: &[String]) -> String {
    ids.iter()
        .map(|i| format!("<{i}>"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl EmailChannel {
    /// Sends `msg` to the conversation's address, threaded when the thread
    /// is known; the platform id is the mail's Message-ID.
    pub(super) async fn send(&self, to: &Address, msg: &Outgoing) -> Result<String, DeliverError> {
        let perm = DeliverError::Permanent;
        let rcpt: Mailbox = to
            .platform_id
            .parse()
            .map_err(|e| perm(format!("{:?} is not a mail address: {e}", to.platform_id)))?;
        let own: Mailbox = match &self.cfg.name {
            Some(n) => format!("{n} <{}>", self.cfg.address),
            None => self.cfg.address.clone(),
        }
        .parse()
        .map_err(|e| perm(format!("[email] address {:?}: {e}", self.cfg.address)))?;
        let domain = self.cfg.address.rsplit('@').next().unwrap_or("localhost");
        let id = message_id(&msg.id, domain);
        let (subject, refs) = {
            let st = self.state.lock().await;
            match to.thread_id.as_deref().and_then(|t| st.thread(t)) {
                Some(t) => (re(&t.subject), t.references.clone()),
                None => (
                    self.cfg.name.clone().unwrap_or_else(|| "pinch".into()),
                    Vec::new(),
                ),
            }
        };
        let parent = msg
            .in_reply_to
            .as_deref()
            .map(|k| super::parse::raw_id(k).to_owned())
            .or_else(|| refs.last().cloned());
        let mut refs = refs;
        if let Some(p) = parent.as_ref().filter(|p| !refs.contains(p)) {
            refs.push(p.clone());
        }
        let mut b = Message::builder()
            .from(own)
            .to(rcpt)
            .subject(subject)
            .message_id(Some(format!("<{id}>")))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-replied".into(),
            ));
        if let Some(p) = &parent {
            b = b.in_reply_to(format!("<{p}>"));
        }
        if !refs.is_empty() {
            b = b.references(angle(&refs));
        }
        let text = SinglePart::plain(msg.text.clone());
        let mail = if msg.files.is_empty() {
            b.singlepart(text)
        } else {
            let mut parts = MultiPart::mixed().singlepart(text);
            for f in &msg.files {
                let bytes =
                    std::fs::read(&f.path).map_err(|e| perm(format!("reading {}: {e}", f.name)))?;
                let ct = ContentType::parse(mime_of(&f.name))
                    .unwrap_or(ContentType::parse("application/octet-stream").expect("valid"));
                parts = parts.singlepart(Attachment::new(f.name.clone()).body(bytes, ct));
            }
            b.multipart(parts)
        }
        .map_err(|e| perm(format!("building the mail: {e}")))?;
        let server = format!("{}:{}", self.cfg.smtp.host, self.cfg.smtp.port);
        let cred = self.cfg.credential(&server).await.map_err(|e| {
            DeliverError::Retryable(format!("SMTP {server}: the login's credential: {e}"))
        })?;
        let smtp = Smtp::new(&self.cfg, &cred).map_err(DeliverError::Retryable)?;
        smtp.0.send(mail).await.map_err(|e| {
            let what = format!("SMTP {}:{}: {e}", self.cfg.smtp.host, self.cfg.smtp.port);
            // A refused login (530, 534, 535) is the channel's fault, not
            // the message's: it may work once the password is fixed.
            let login = e
                .status()
                .is_some_and(|c| matches!(u16::from(c), 530 | 534 | 535));
            if login {
                DeliverError::Retryable(format!("{what} ({})", self.cfg.login_hint()))
            } else if e.is_permanent() {
                DeliverError::Permanent(what)
            } else {
                DeliverError::Retryable(what)
            }
        })?;
        let mut st = self.state.lock().await;
        match &to.thread_id {
            Some(t) => st.note(t, "", std::slice::from_ref(&id)),
            None => st.note_root(&id),
        }
        self.save(&st);
        Ok(id)
    }
}

/// A content type for a file name (the common ones; else octet-stream).
fn mime_of(name: &str) -> &'static str {
    let ext = name
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "md" | "log" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_subjects_are_well_formed() {
        assert_eq!(message_id("abc-1", "x.test"), "pinch.abc-1@x.test");
        assert_eq!(message_id("a b<c>", "x.test"), "pinch.a-b-c-@x.test");
        assert_eq!(re("plans"), "Re: plans");
        assert_eq!(re("RE: plans"), "RE: plans");
        assert_eq!(re("Привет"), "Re: Привет");
        assert_eq!(re("🎉 party"), "Re: 🎉 party");
        assert_eq!(re("ab"), "Re: ab");
        assert_eq!(angle(&["a@x".into(), "b@x".into()]), "<a@x> <b@x>");
        assert_eq!(mime_of("r.PDF"), "application/pdf");
        assert_eq!(mime_of("noext"), "application/octet-stream");
    }
}
