//! Graph API calls: messages (text, reply buttons and lists, files by
//! media id, templates, reactions), media uploads and downloads. Errors
//! without the token; Graph's 131047 ("re-engagement message": outside the
//! 24-hour window) told apart so the caller can send the template.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::platform::{classify, json_lossy, scrub, split_text, Multipart};
use crate::{Button, DeliverError, OutFile};

use super::payload::MediaInfo;
use super::{WhatsAppChannel, MAX_TEXT};

/// Graph's error code for a free-form message outside the 24-hour window.
pub(super) const RE_ENGAGEMENT: i64 = 131047;
/// Reply buttons per message.
const MAX_BUTTONS: usize = 3;
/// Rows of a list message.
const MAX_ROWS: usize = 10;
const BUTTON_TITLE: usize = 20;
const ROW_TITLE: usize = 24;
const ROW_DESCRIPTION: usize = 72;
/// An interactive message's body text.
const MAX_BODY: usize = 1024;

/// Why a send failed: outside the window, or as the host sorts it.
#[derive(Debug)]
pub(super) enum Fail {
    Window,
    Deliver(DeliverError),
}

impl From<DeliverError> for Fail {
    fn from(e: DeliverError) -> Fail {
        Fail::Deliver(e)
    }
}

/// `s` cut to `max` chars (an ellipsis marks the cut).
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The `interactive` object for a question: reply buttons for up to three
/// options, a list for up to ten; the button ids are the host's callbacks.
pub(super) fn interactive(body: &str, buttons: &[Button]) -> Result<Value, DeliverError> {
    let body = if body.trim().is_empty() {
        "Choose one:"
    } else {
        body
    };
    if buttons.len() <= MAX_BUTTONS {
        let b: Vec<Value> = buttons
            .iter()
            .map(|b| json!({"type": "reply", "reply": {"id": b.callback, "title": cut(&b.label, BUTTON_TITLE)}}))
            .collect();
        return Ok(json!({"type": "button", "body": {"text": body}, "action": {"buttons": b}}));
    }
    if buttons.len() > MAX_ROWS {
        return Err(DeliverError::Permanent(format!(
            "{} options: a WhatsApp list holds at most {MAX_ROWS}",
            buttons.len()
        )));
    }
    let rows: Vec<Value> = buttons
        .iter()
        .map(|b| {
            let mut r = json!({"id": b.callback, "title": cut(&b.label, ROW_TITLE)});
            if b.label.chars().count() > ROW_TITLE {
                r["description"] = cut(&b.label, ROW_DESCRIPTION).into();
            }
            r
        })
        .collect();
    Ok(json!({"type": "list", "body": {"text": body},
        "action": {"button": "Choose", "sections": [{"title": "Options", "rows": rows}]}}))
}

/// A file's type from its name (what the upload declares and how it is
/// sent: `image`, `audio` or `document`).
fn media_kind(name: &str, data: &[u8]) -> (&'static str, &'static str) {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map_or("", |(_, e)| e);
    if data.starts_with(b"OggS") {
        return ("audio/ogg", "audio");
    }
    match ext {
        "jpg" | "jpeg" => ("image/jpeg", "image"),
        "png" => ("image/png", "image"),
        "mp3" => ("audio/mpeg", "audio"),
        "m4a" => ("audio/mp4", "audio"),
        "pdf" => ("application/pdf", "document"),
        "txt" | "md" | "csv" | "log" | "json" => ("text/plain", "document"),
        "doc" => ("application/msword", "document"),
        "docx" => (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "document",
        ),
        "xls" => ("application/vnd.ms-excel", "document"),
        "xlsx" => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "document",
        ),
        "pptx" => (
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "document",
        ),
        // Anything else travels as a document WhatsApp accepts.
        _ => ("text/plain", "document"),
    }
}

impl WhatsAppChannel {
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/{}/{path}", self.cfg.base_url, self.cfg.api_version)
    }

    /// Sends one request with the token; its JSON answer as `T`.
    async fn finish<T: DeserializeOwned>(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, Fail> {
        let token = &self.cfg.token.0;
        let fail = |e: reqwest::Error| {
            Fail::Deliver(DeliverError::Retryable(format!(
                "whatsapp {what}: {}",
                scrub(&e, token)
            )))
        };
        let resp = req.bearer_auth(token).send().await.map_err(fail)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(fail)?;
        let v: Value = json_lossy(&format!("whatsapp {what}"), &body).unwrap_or_default();
        if status.is_success() {
            return serde_json::from_value(v).map_err(|e| {
                Fail::Deliver(DeliverError::Retryable(format!(
                    "whatsapp {what} answered with something pinch cannot read: {e}"
                )))
            });
        }
        let err = &v["error"];
        if err["code"].as_i64() == Some(RE_ENGAGEMENT) {
            return Err(Fail::Window);
        }
        let mut desc = err["message"].as_str().unwrap_or("no message").to_owned();
        if let Some(d) = err["error_data"]["details"].as_str() {
            desc = format!("{desc} ({d})");
        }
        let code = err["code"]
            .as_i64()
            .map_or(String::new(), |c| format!(" [code {c}]"));
        Err(Fail::Deliver(classify(
            status,
            format!("whatsapp {what} answered {status}{code}: {desc}")
                .replace(token.as_str(), "<token>"),
        )))
    }

    /// `POST /{phone_number_id}/messages`; the sent message's `wamid`.
    pub(super) async fn post_message(&self, mut body: Value) -> Result<String, Fail> {
        body["messaging_product"] = "whatsapp".into();
        let req = self
            .client
            .post(self.url(&format!("{}/messages", self.cfg.phone_number_id)))
            .json(&body);
        let v: Value = self.finish("messages", req).await?;
        Ok(v["messages"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Text split at the limit (the first part a reply to `reply_to`), the
    /// last part carrying the buttons; the first message's id.
    pub(super) async fn send_text(
        &self,
        to: &str,
        text: &str,
        reply_to: Option<&str>,
        buttons: &[Button],
    ) -> Result<String, Fail> {
        let mut parts: Vec<String> = split_text(text, MAX_TEXT, |_| 1)
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        // The question rides on the last part if it fits an interactive body.
        let question = if buttons.is_empty() {
            None
        } else if parts.last().is_some_and(|p| p.chars().count() <= MAX_BODY) {
            Some(parts.pop().unwrap_or_default())
        } else {
            Some(String::new())
        };
        let mut bodies: Vec<Value> = parts
            .into_iter()
            .map(|p| json!({"type": "text", "text": {"body": p}}))
            .collect();
        if let Some(q) = question {
            bodies.push(json!({"type": "interactive", "interactive": interactive(&q, buttons)?}));
        }
        let mut first: Option<String> = None;
        for mut b in bodies {
            b["recipient_type"] = "individual".into();
            b["to"] = to.into();
            if let (None, Some(r)) = (&first, reply_to) {
                b["context"] = json!({"message_id": r});
            }
            let id = self.post_message(b).await?;
            first.get_or_insert(id);
        }
        first.ok_or_else(|| Fail::Deliver(DeliverError::Permanent("nothing to send".into())))
    }

    /// Uploads a file and sends it by its media id.
    pub(super) async fn send_file(&self, to: &str, f: &OutFile) -> Result<String, Fail> {
        let data = tokio::fs::read(&f.path)
            .await
            .map_err(|e| DeliverError::Retryable(format!("reading {}: {e}", f.name)))?;
        let (mime, kind) = media_kind(&f.name, &data);
        let (ct, body) = Multipart::default()
            .text("messaging_product", "whatsapp")
            .text("type", mime)
            .file_as("file", &f.name, mime, &data)
            .finish();
        let req = self
            .client
            .post(self.url(&format!("{}/media", self.cfg.phone_number_id)))
            .header("content-type", ct)
            .body(body);
        let v: Value = self.finish("media upload", req).await?;
        let id = v["id"].as_str().unwrap_or_default();
        if id.is_empty() {
            return Err(Fail::Deliver(DeliverError::Retryable(
                "whatsapp media upload answered without an id".into(),
            )));
        }
        let mut media = json!({"id": id});
        if kind == "document" {
            media["filename"] = f.name.clone().into();
        }
        let mut body = json!({"recipient_type": "individual", "to": to, "type": kind});
        body[kind] = media;
        self.post_message(body).await
    }

    /// The configured template (outside the window).
    pub(super) async fn send_template(&self, to: &str) -> Result<String, Fail> {
        let Some((name, lang)) = &self.cfg.template else {
            return Err(Fail::Deliver(DeliverError::Permanent(
                "no template configured".into(),
            )));
        };
        self.post_message(json!({
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": {"name": name, "language": {"code": lang}},
        }))
        .await
    }

    /// Downloads an inbound media file: its URL from Graph, then the bytes
    /// (with the token, capped). `(bytes, size)`; no bytes when it failed
    /// or is too large (the host notes the file).
    pub(super) async fn download(&self, media_id: &str) -> (Option<Vec<u8>>, u64) {
        let seg = crate::platform::url_segment(media_id);
        let info: MediaInfo = match self.finish("media", self.client.get(self.url(&seg))).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(
                    "whatsapp: reading a media file's URL failed, it is noted but not kept: {e:?}"
                );
                return (None, 0);
            }
        };
        let size = info.file_size.unwrap_or_default();
        let Some(url) = info.url.filter(|_| size <= crate::MAX_ATTACHMENT) else {
            return (None, size);
        };
        let token = &self.cfg.token.0;
        match crate::platform::download_capped(self.client.get(url).bearer_auth(token), token).await
        {
            Ok(Some(d)) => {
                let n = d.len() as u64;
                (Some(d), n)
            }
            Ok(None) => (None, size),
            Err(e) => {
                tracing::warn!(
                    "whatsapp: downloading a media file failed, it is noted but not kept: {e}"
                );
                (None, size)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize, label: &str) -> Vec<Button> {
        (0..n)
            .map(|i| Button {
                label: format!("{label}{i}"),
                callback: format!("q:1:{i}"),
            })
            .collect()
    }

    #[test]
    fn three_options_are_buttons_more_are_a_list_and_eleven_are_refused() {
        let v = interactive("Which?", &b(3, "A very long label for a button ")).unwrap();
        assert_eq!(v["type"], "button");
        let buttons = v["action"]["buttons"].as_array().unwrap();
        assert_eq!(buttons.len(), 3);
        assert_eq!(buttons[0]["reply"]["id"], "q:1:0");
        let t = buttons[0]["reply"]["title"].as_str().unwrap();
        assert_eq!(t.chars().count(), 20);
        assert!(t.ends_with('…'));
        let v = interactive("", &b(4, "Option number ")).unwrap();
        assert_eq!(v["type"], "list");
        assert_eq!(v["body"]["text"], "Choose one:");
        let rows = v["action"]["sections"][0]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3], json!({"id": "q:1:3", "title": "Option number 3"}));
        let v = interactive("x", &b(2, "An option label longer than 24 chars ")).unwrap();
        assert_eq!(v["type"], "button");
        let v = interactive("x", &b(5, "An option label longer than 24 chars ")).unwrap();
        let row = &v["action"]["sections"][0]["rows"][0];
        assert_eq!(row["title"].as_str().unwrap().chars().count(), 24);
        assert_eq!(row["description"], "An option label longer than 24 chars 0");
        assert!(interactive("x", &b(11, "o")).is_err());
    }

    #[test]
    fn files_are_typed_by_name_and_content() {
        assert_eq!(media_kind("report.txt", b"x"), ("text/plain", "document"));
        assert_eq!(media_kind("Photo.JPG", b"x"), ("image/jpeg", "image"));
        assert_eq!(media_kind("reply", b"OggS...."), ("audio/ogg", "audio"));
        assert_eq!(
            media_kind("a.pdf", b"%PDF"),
            ("application/pdf", "document")
        );
    }
}
