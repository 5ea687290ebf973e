//! One fetched mail → what the host gets (or why it gets nothing). Pure
//! functions of the bytes and the channel's settings, unit-tested here.
//!
//! Identity: the sender is the `From:` address, lower-cased (never
//! `Reply-To:`, which a sender sets to anything: replies go back to the
//! address the host identified). The conversation (`platform_id`) is that
//! address; the thread is the first `References:` id (the thread's root),
//! else `In-Reply-To:`, else the mail's own `Message-ID:`. The message id
//! is the `Message-ID:` (unique by design; a redelivered mail keeps it),
//! else `imap.<uidvalidity>.<uid>`.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders, PartType};

use crate::{InboundAttachment, InboundEvent, MAX_ATTACHMENT};

use super::CHANNEL_TYPE;

/// A mail the host should not see, and why (logged once per mail).
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not a mail at all (mail-parser found no message).
    Unreadable,
    /// No usable `From:` address.
    NoSender,
    /// Sent by pinch's own address (a copy, or a loop).
    FromSelf,
    /// An automatic message (`Auto-Submitted:` other than `no`, a
    /// delivery report, a mailer daemon): answering those is how mail
    /// loops start (RFC 3834).
    Automatic(String),
    /// `trusted_authserv_id` is set and the mail's own server did not
    /// vouch for its `From:` domain.
    Unauthenticated(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Unreadable => f.write_str("it could not be read as a mail"),
            Skip::NoSender => f.write_str("it has no From: address"),
            Skip::FromSelf => f.write_str("it is from pinch's own address"),
            Skip::Automatic(why) => write!(f, "it is an automatic message ({why})"),
            Skip::Unauthenticated(why) => write!(f, "its sender is not authenticated ({why})"),
        }
    }
}

/// What the parser needs to know about the channel.
pub struct Reader<'a> {
    /// pinch's own address (lower-case).
    pub own: &'a str,
    /// Only mails whose `Authentication-Results:` from this server say the
    /// `From:` domain passed DMARC, or DKIM or SPF aligned with it.
    pub trusted_authserv_id: Option<&'a str>,
}

/// A mail read for the host: the event and what a reply needs.
#[derive(Debug, PartialEq)]
pub struct Incoming {
    pub event: InboundEvent,
    /// The subject as sent (for `Re:` in replies).
    pub subject: String,
    /// The mail's `References:` plus its own id (for the reply's).
    pub references: Vec<String>,
}

/// The most text of one mail handed to the agent (characters); the rest is
/// cut with a note.
pub const MAX_TEXT: usize = 100_000;

impl Reader<'_> {
    /// Reads `raw`: the whole mail, or only its header when `header_only`
    /// says why (the agent is told that, in place of the body).
    pub fn read(
        &self,
        raw: &[u8],
        uid: (u32, u32),
        header_only: Option<&str>,
    ) -> Result<Incoming, Skip> {
        let msg = MessageParser::default()
            .parse(raw)
            .ok_or(Skip::Unreadable)?;
        let from = msg.from().and_then(|f| f.first());
        let addr = from
            .and_then(|m| m.address())
            .map(|a| a.trim().to_ascii_lowercase())
            .filter(|a| a.contains('@') && !a.contains(char::is_whitespace))
            .ok_or(Skip::NoSender)?;
        if addr == self.own {
            return Err(Skip::FromSelf);
        }
        if let Some(a) = msg
            .header("Auto-Submitted")
            .and_then(|h| h.as_text())
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|a| !a.starts_with("no"))
        {
            return Err(Skip::Automatic(format!("Auto-Submitted: {a}")));
        }
        if msg.is_content_type("multipart", "report") {
            return Err(Skip::Automatic("a delivery or read report".into()));
        }
        let local = addr.split('@').next().unwrap_or_default();
        if local == "mailer-daemon" || local == "postmaster" {
            return Err(Skip::Automatic(format!("from {addr}")));
        }
        if let Some(id) = self.trusted_authserv_id {
            let domain = addr.rsplit('@').next().unwrap_or_default();
            let results: Vec<String> = msg
                .header_values("Authentication-Results")
                .filter_map(|h| h.as_text().map(str::to_owned))
                .collect();
            authenticated(&results, id, domain).map_err(Skip::Unauthenticated)?;
        }

        let own_id = msg.message_id().map(id_of).filter(|s| !s.is_empty());
        let mut references = ids(msg.references());
        let reply_to = ids(msg.in_reply_to()).into_iter().next();
        if references.is_empty() {
            references.extend(reply_to.clone());
        }
        // A reply's subject is its thread's: the text is what the sender
        // wrote (a bare "2" answers a numbered question).
        let starts_thread = references.is_empty();
        let mail_id = own_id
            .clone()
            .unwrap_or_else(|| format!("imap.{}.{}", uid.0, uid.1));
        let thread = references
            .first()
            .cloned()
            .unwrap_or_else(|| mail_id.clone());
        references.push(mail_id.clone());
        // Quoted history is cut only from a reply to pinch's own mail
        // (there it is pinch's words again); a user quoting someone else
        // means the agent to read it.
        let domain = self.own.rsplit('@').next().unwrap_or_default();
        let answers_pinch = reply_to
            .as_deref()
            .is_some_and(|p| p.starts_with("pinch.") && p.ends_with(&format!("@{domain}")));

        let subject = msg.subject().unwrap_or_default().trim().to_owned();
        let mut body = match header_only {
            Some(why) => format!("({why}; only its header was read.)"),
            None => body_text(&msg, answers_pinch),
        };
        let mut attachments = Vec::new();
        for part in msg.attachments() {
            let data: &[u8] = match &part.body {
                PartType::Message(inner) if part.attachment_name().is_none() => {
                    // A forwarded mail: its text is what the user means.
                    body.push_str(&format!(
                        "\n\n---------- Forwarded message ----------\nFrom: {}\nSubject: {}\n\n{}",
                        inner
                            .from()
                            .and_then(|f| f.first())
                            .and_then(|m| m.address())
                            .unwrap_or("?"),
                        inner.subject().unwrap_or_default(),
                        body_text(inner, false)
                    ));
                    continue;
                }
                PartType::Message(inner) => inner.raw_message(),
                PartType::Multipart(_) => continue,
                _ => part.contents(),
            };
            let size = data.len() as u64;
            let name = part
                .attachment_name()
                .map(plain_name)
                .unwrap_or_else(|| format!("attachment-{}", attachments.len() + 1));
            let mime = part.content_type().map(|c| match c.subtype() {
                Some(s) => format!("{}/{s}", c.ctype()),
                None => c.ctype().to_owned(),
            });
            attachments.push(InboundAttachment {
                name,
                mime,
                size,
                data: (size <= MAX_ATTACHMENT).then(|| data.to_vec()),
            });
        }
        if body.chars().count() > MAX_TEXT {
            body = body.chars().take(MAX_TEXT).collect();
            body.push_str("\n(the rest of this mail was cut: it is longer than pinch reads)");
        }
        let text = if subject.is_empty() || !starts_thread {
            body
        } else {
            format!("Subject: {subject}\n\n{body}")
        };
        Ok(Incoming {
            event: InboundEvent {
                channel_type: CHANNEL_TYPE.into(),
                platform_id: addr.clone(),
                thread_id: Some(thread),
                message_id: message_key(&addr, &mail_id),
                sender_id: addr,
                sender_name: from
                    .and_then(|m| m.name())
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty()),
                text,
                is_mention: true,
                is_group: false,
                attachments,
                ..Default::default()
            },
            subject,
            references,
        })
    }
}

/// The mail's text: its plain-text part when it has one, else its HTML
/// turned into text (pinch-web's converter, depth-guarded), with the
/// quoted history of a reply removed.
fn body_text(msg: &mail_parser::Message, strip: bool) -> String {
    let mut text = String::new();
    for part in msg.text_bodies() {
        let piece = match &part.body {
            PartType::Text(t) => t.to_string(),
            PartType::Html(h) => pinch_web::html_to_text(h),
            _ => continue,
        };
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&piece);
    }
    let text = text.replace("\r\n", "\n");
    if strip {
        strip_quoted(&text).trim().to_owned()
    } else {
        text.trim().to_owned()
    }
}

/// The longest message id kept (RFC 5322 lines are at most 998 bytes; real
/// ids are under 100). A longer one is treated as absent.
pub const MAX_ID: usize = 250;
/// `References:` ids kept: the root and the newest ones (what threading
/// needs; a sender can write millions).
const MAX_REFS: usize = 20;

/// A message id without its angle brackets; empty when it is too long or
/// holds whitespace or control characters.
fn id_of(s: &str) -> String {
    let id = s.trim().trim_matches(['<', '>']);
    if id.len() > MAX_ID || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        String::new()
    } else {
        id.to_owned()
    }
}

/// The message ids of `References:` or `In-Reply-To:`: the first and the
/// newest [`MAX_REFS`], each bounded.
fn ids(v: &HeaderValue) -> Vec<String> {
    let all: Vec<&str> = match v {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    let keep: Vec<&str> = if all.len() > MAX_REFS {
        std::iter::once(all[0])
            .chain(all[all.len() - (MAX_REFS - 1)..].iter().copied())
            .collect()
    } else {
        all
    };
    keep.into_iter()
        .map(id_of)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The host's message id of a mail: the channel and a hash of the sender
/// before the mail's `Message-ID:`, so no mail can take the id of another
/// sender's mail or of another channel's message (the host stores an id
/// once). Fixed length before the raw id: see [`raw_id`].
pub fn message_key(sender: &str, mail_id: &str) -> String {
    let h = ring::digest::digest(&ring::digest::SHA256, sender.as_bytes());
    let hex: String = h.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("email.{hex}.{mail_id}")
}

/// The `Message-ID:` inside a [`message_key`] (any other id as it is).
pub fn raw_id(key: &str) -> &str {
    match key.strip_prefix("email.") {
        Some(rest) if rest.len() > 17 && rest.as_bytes()[16] == b'.' => &rest[17..],
        _ => key,
    }
}

/// A reply without the quoted mail under it: the trailing run of `>`
/// lines (and blank lines), and the `On … wrote:` line that introduces
/// it. Quotes inside the text (answers between quoted lines) are kept.
pub fn strip_quoted(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    while end > 0 && (lines[end - 1].trim().is_empty() || lines[end - 1].starts_with('>')) {
        end -= 1;
    }
    let quoted = lines[end..].iter().any(|l| l.starts_with('>'));
    if !quoted {
        return text.to_owned();
    }
    if end > 0 && lines[end - 1].trim_end().ends_with("wrote:") {
        end -= 1;
    }
    let kept = lines[..end].join("\n");
    if kept.trim().is_empty() {
        // Nothing but a quote: keep it rather than hand over nothing.
        return text.to_owned();
    }
    kept
}

/// An attachment's name as a plain file name (no directories, no control
/// characters, not empty).
fn plain_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .to_owned();
    if clean.is_empty() {
        "attachment".into()
    } else {
        clean
    }
}

/// Whether `Authentication-Results:` headers from the server `authserv`
/// vouch for `domain`: `dmarc=pass` with `header.from=domain`, or
/// `dkim=pass` with `header.d=domain`, or `spf=pass` with
/// `smtp.mailfrom` in `domain`. Headers from other servers are ignored
/// (anyone can write one into a mail). The reason on failure.
pub fn authenticated(headers: &[String], authserv: &str, domain: &str) -> Result<(), String> {
    let mut seen = false;
    for h in headers {
        let h = without_comments(&h.replace(['\r', '\n'], " "));
        let mut parts = h.split(';');
        let id = parts
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if !id.eq_ignore_ascii_case(authserv) {
            continue;
        }
        seen = true;
        for result in parts {
            let words: Vec<String> = result
                .split_whitespace()
                .map(|w| w.to_ascii_lowercase())
                .collect();
            let prop = |key: &str| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix(key).map(|v| v.trim_matches('"').to_owned()))
            };
            let Some(method) = words.first() else {
                continue;
            };
            let ok = match method.as_str() {
                "dmarc=pass" => prop("header.from=").is_some_and(|d| d == domain),
                "dkim=pass" => prop("header.d=").is_some_and(|d| d == domain),
                "spf=pass" => prop("smtp.mailfrom=")
                    .is_some_and(|m| m.rsplit('@').next().is_some_and(|d| d == domain)),
                _ => false,
            };
            if ok {
                return Ok(());
            }
        }
    }
    Err(if seen {
        format!("{authserv} did not find DMARC, DKIM or SPF passing for {domain}")
    } else {
        format!("no Authentication-Results from {authserv}")
    })
}

/// A header value with its RFC 5322 comments (nested parentheses) and
/// quoted strings blanked: an address a server echoes inside a comment
/// (`(sender "a;dkim=pass"@evil)`) must not read as a result.
fn without_comments(h: &str) -> String {
    let (mut out, mut depth, mut quoted, mut escaped) = (String::new(), 0u32, false, false);
    for c in h.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(' ');
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                out.push(' ');
            }
            _ if quoted || depth > 0 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Reader<'static> {
        Reader {
            own: "pinch@example.test",
            trusted_authserv_id: None,
        }
    }

    fn mail(headers: &str, body: &str) -> Vec<u8> {
        format!("{headers}\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn a_reply_in_a_thread_names_its_root_and_keeps_its_references() {
        let raw = mail(
            "From: Ann <Ann@Example.TEST>\r\nTo: pinch@example.test\r\nSubject: Re: plans\r\nMessage-ID: <m3@x>\r\nIn-Reply-To: <pinch.r2@example.test>\r\nReferences: <m1@x> <pinch.r2@example.test>",
            "yes please\r\n\r\nOn Mon, pinch wrote:\r\n> shall I?\r\n> \r\n",
        );
        let i = reader().read(&raw, (7, 42), None).unwrap();
        assert_eq!(i.event.platform_id, "ann@example.test");
        assert_eq!(i.event.sender_id, "ann@example.test");
        assert_eq!(i.event.sender_name.as_deref(), Some("Ann"));
        assert_eq!(i.event.thread_id.as_deref(), Some("m1@x"));
        assert_eq!(i.event.message_id, message_key("ann@example.test", "m3@x"));
        assert_eq!(raw_id(&i.event.message_id), "m3@x");
        assert_eq!(i.event.text, "yes please");
        assert_eq!(i.references, ["m1@x", "pinch.r2@example.test", "m3@x"]);
        assert_eq!(i.subject, "Re: plans");
        assert!(i.event.is_mention && !i.event.is_group);
    }

    #[test]
    fn a_mail_without_ids_gets_one_from_its_uid_and_starts_a_thread() {
        let raw = mail("From: b@example.test\r\nSubject: hi", "hello");
        let i = reader().read(&raw, (7, 42), None).unwrap();
        assert_eq!(raw_id(&i.event.message_id), "imap.7.42");
        assert_eq!(i.event.thread_id.as_deref(), Some("imap.7.42"));
    }

    #[test]
    fn html_only_mail_becomes_text_and_attachments_come_along() {
        let raw = "From: c@example.test\r\nSubject: page\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<html><body><h1>Title</h1><p>Some <b>bold</b> <a href=\"https://e.test/\">link</a></p><script>evil()</script></body></html>\r\n--b\r\nContent-Type: text/plain; name=\"../../etc/notes.txt\"\r\nContent-Disposition: attachment; filename=\"../../etc/notes.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gZmlsZQ==\r\n--b--\r\n";
        let i = reader().read(raw.as_bytes(), (1, 1), None).unwrap();
        assert!(i.event.text.contains("Title"), "{}", i.event.text);
        assert!(i.event.text.contains("**bold**"), "{}", i.event.text);
        assert!(i.event.text.contains("https://e.test/"), "{}", i.event.text);
        assert!(!i.event.text.contains("evil"), "{}", i.event.text);
        assert!(!i.event.text.contains("hello file"), "{}", i.event.text);
        assert_eq!(i.event.attachments.len(), 1);
        let a = &i.event.attachments[0];
        assert_eq!(a.name, "notes.txt");
        assert_eq!(a.data.as_deref(), Some(&b"hello file"[..]));
        assert_eq!(a.size, 10);
    }

    #[test]
    fn automatic_mail_and_own_mail_are_skipped_with_the_reason() {
        let r = reader();
        let auto = mail(
            "From: d@example.test\r\nAuto-Submitted: auto-replied",
            "away",
        );
        assert!(matches!(
            r.read(&auto, (1, 1), None),
            Err(Skip::Automatic(_))
        ));
        let human = mail("From: d@example.test\r\nAuto-Submitted: no", "here");
        assert!(r.read(&human, (1, 1), None).is_ok());
        let daemon = mail("From: MAILER-DAEMON@example.test", "bounce");
        assert!(matches!(
            r.read(&daemon, (1, 1), None),
            Err(Skip::Automatic(_))
        ));
        let own = mail("From: PINCH@example.test", "me");
        assert_eq!(r.read(&own, (1, 1), None), Err(Skip::FromSelf));
        let none = mail("Subject: x", "no sender");
        assert_eq!(r.read(&none, (1, 1), None), Err(Skip::NoSender));
    }

    #[test]
    fn a_too_big_mail_is_read_from_its_header_with_a_note() {
        let raw = mail("From: e@example.test\r\nSubject: huge", "");
        let i = reader()
            .read(&raw, (1, 1), Some("This mail is 90 MiB"))
            .unwrap();
        assert!(
            i.event.text.contains("90 MiB") && i.event.text.contains("only its header"),
            "{}",
            i.event.text
        );
    }

    #[test]
    fn ids_are_keyed_by_sender_bounded_and_quotes_kept_unless_answering_pinch() {
        let (a, b) = (message_key("a@x", "1@y"), message_key("b@x", "1@y"));
        assert_ne!(a, b, "one sender cannot take another's id");
        assert_eq!((raw_id(&a), raw_id(&b)), ("1@y", "1@y"));
        assert_eq!(raw_id("42.101"), "42.101");
        assert_ne!(message_key("a@x", "42.101"), "42.101");
        // A quote in a mail that answers someone else is the agent's to read.
        let raw = mail(
            "From: c@example.test\r\nMessage-ID: <c2@x>\r\nIn-Reply-To: <bob1@x>",
            "Handle this?\r\n\r\nOn Mon, Bob wrote:\r\n> Please send the invoice\r\n",
        );
        let i = reader().read(&raw, (1, 1), None).unwrap();
        assert!(
            i.event.text.contains("Please send the invoice"),
            "{}",
            i.event.text
        );
        // Millions of references and a huge id cost nothing kept.
        let mut refs = String::from("References: <root@x>");
        for n in 0..50_000 {
            refs.push_str(&format!(" <{n}@x>"));
        }
        let huge = "h".repeat(10_000);
        let raw = mail(
            &format!("From: c@example.test\r\nMessage-ID: <{huge}@x>\r\n{refs}"),
            "hi",
        );
        let i = reader().read(&raw, (3, 9), None).unwrap();
        assert!(i.references.len() <= MAX_REFS + 1, "{}", i.references.len());
        assert_eq!(i.references[0], "root@x");
        assert_eq!(
            raw_id(&i.event.message_id),
            "imap.3.9",
            "a huge id is no id"
        );
    }

    #[test]
    fn quotes_are_cut_only_at_the_end() {
        assert_eq!(strip_quoted("a\n> q\nb\n> r"), "a\n> q\nb");
        assert_eq!(strip_quoted("a\nOn x, y wrote:\n> q\n"), "a");
        assert_eq!(strip_quoted("> only\n> quote"), "> only\n> quote");
        assert_eq!(strip_quoted("no quote"), "no quote");
        assert_eq!(strip_quoted("\n\nOn x wrote:\n> q"), "\n\nOn x wrote:\n> q");
    }

    #[test]
    fn only_the_trusted_server_vouches_for_a_sender() {
        let ok = vec!["mx.example.test; dkim=pass header.d=example.test; spf=fail".to_owned()];
        assert!(authenticated(&ok, "mx.example.test", "example.test").is_ok());
        let dmarc =
            vec!["mx.example.test 1; dmarc=pass (p=none) header.from=example.test".to_owned()];
        assert!(authenticated(&dmarc, "mx.example.test", "example.test").is_ok());
        let spf = vec!["mx.example.test; spf=pass smtp.mailfrom=bob@example.test".to_owned()];
        assert!(authenticated(&spf, "MX.example.test", "example.test").is_ok());
        // Forged by the sender: another server's name.
        let forged = vec!["evil.test; dkim=pass header.d=example.test".to_owned()];
        let e = authenticated(&forged, "mx.example.test", "example.test").unwrap_err();
        assert!(e.contains("no Authentication-Results"), "{e}");
        // Aligned with another domain.
        let other = vec!["mx.example.test; dkim=pass header.d=evil.test".to_owned()];
        assert!(authenticated(&other, "mx.example.test", "example.test").is_err());
        // A result smuggled into a comment or a quoted address is no result.
        let smuggled = vec![r#"mx.example.test; spf=fail (sender "a; dmarc=pass header.from=example.test x"@evil.test) smtp.mailfrom=evil.test; dkim=none (x; dkim=pass header.d=example.test)"#.to_owned()];
        assert!(authenticated(&smuggled, "mx.example.test", "example.test").is_err());

        let r = Reader {
            own: "pinch@example.test",
            trusted_authserv_id: Some("mx.example.test"),
        };
        let raw = mail(
            "Authentication-Results: mx.example.test; dkim=pass header.d=example.test\r\nFrom: f@example.test",
            "hi",
        );
        assert!(r.read(&raw, (1, 1), None).is_ok());
        let raw = mail("From: f@example.test", "hi");
        assert!(matches!(
            r.read(&raw, (1, 1), None),
            Err(Skip::Unauthenticated(_))
        ));
    }
}
