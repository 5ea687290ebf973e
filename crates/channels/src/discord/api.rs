//! REST calls: each request signed with the bot token, its answer read
//! into the type the caller asks for (invalid UTF-8 replaced), errors
//! without the token; posting text split at 2000 characters with a nonce.

use serde::de::DeserializeOwned;
use serde_json::json;

use crate::platform::{classify, json_lossy, scrub, split_text};
use crate::{Address, DeliverError};

use super::payload::{Created, ErrorBody};
use super::{components, nonce, target, DiscordChannel, MAX_TEXT};

impl DiscordChannel {
    pub(super) fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(
                method,
                format!("{}{path}", self.cfg.base_url.trim_end_matches('/')),
            )
            .header("authorization", format!("Bot {}", self.cfg.token.0))
            .header("user-agent", "DiscordBot (https://github.com/pinch, 0.1)")
    }

    /// Sends `req`; the answer as `T` on success (an empty or unreadable
    /// body reads as `T`'s JSON `null`, for calls answered 204).
    pub(super) async fn send<T: DeserializeOwned + Default>(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, DeliverError> {
        let token = &self.cfg.token.0;
        let fail = |e: reqwest::Error| {
            DeliverError::Retryable(format!("discord {what}: {}", scrub(&e, token)))
        };
        let resp = req.send().await.map_err(fail)?;
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let label = format!("discord {what}");
        if status.is_success() {
            return Ok(json_lossy(&label, &body).unwrap_or_default());
        }
        let msg: ErrorBody = json_lossy(&label, &body).unwrap_or_default();
        let desc = msg
            .message
            .as_deref()
            .unwrap_or("no message")
            .replace(token.as_str(), "<token>");
        Err(classify(
            status,
            format!("discord {what} answered {status}: {desc}"),
        ))
    }

    pub(super) async fn post_text(
        &self,
        to: &Address,
        id: &str,
        text: &str,
        reply_to: Option<&str>,
        buttons: &[crate::Button],
    ) -> Result<Option<String>, DeliverError> {
        let target = target(to);
        let parts = split_text(text, MAX_TEXT, |_| 1);
        let n = parts.len();
        let mut first = None;
        for (i, p) in parts.into_iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let mut body = json!({"content": p, "nonce": nonce(id, i), "enforce_nonce": true, "allowed_mentions": {"parse": []}});
            if let (0, Some(r)) = (i, reply_to) {
                body["message_reference"] = json!({"message_id": r, "fail_if_not_exists": false});
            }
            if i + 1 == n && !buttons.is_empty() {
                body["components"] = components(buttons);
            }
            let r: Created = self
                .send(
                    "POST message",
                    self.req(
                        reqwest::Method::POST,
                        &format!("/channels/{target}/messages"),
                    )
                    .json(&body),
                )
                .await?;
            first = first.or(r.id);
        }
        Ok(first)
    }
}
