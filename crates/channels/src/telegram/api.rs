//! Bot API calls: one method at a time, the answer read into the type the
//! caller asks for (invalid UTF-8 replaced), errors without the token;
//! `getMe` once, `getFile` downloads and `sendMessage` with splitting.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::platform::{classify, json_lossy, scrub, split_text};
use crate::{Address, DeliverError};

use super::payload::{Answer, FileInfo, Me, Sent};
use super::{chat_id, keyboard, msg_id, thread, TelegramChannel, MAX_TEXT};

impl TelegramChannel {
    pub(super) fn url(&self, method: &str) -> String {
        format!(
            "{}/bot{}/{method}",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.token.0
        )
    }

    pub(super) fn http(&self) -> reqwest::Client {
        self.client.lock().unwrap().clone()
    }

    pub(super) fn rebuild_client(&self) {
        if let Ok(c) = crate::platform::client(crate::platform::SEND_TIMEOUT) {
            *self.client.lock().unwrap() = c;
        }
    }

    /// One Bot API call; its `result` as `T` on success.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        body: Value,
    ) -> Result<T, DeliverError> {
        let req = self.http().post(self.url(method)).json(&body);
        self.finish(method, req).await
    }

    pub(super) async fn finish<T: DeserializeOwned>(
        &self,
        method: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, DeliverError> {
        let token = &self.cfg.token.0;
        let fail = |e: reqwest::Error| {
            DeliverError::Retryable(format!("telegram {method}: {}", scrub(&e, token)))
        };
        let resp = req.send().await.map_err(fail)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(fail)?;
        let answer: Answer<Value> =
            json_lossy(&format!("telegram {method}"), &body).unwrap_or_default();
        if status.is_success() && answer.ok {
            return serde_json::from_value(answer.result.unwrap_or_default()).map_err(|e| {
                DeliverError::Retryable(format!(
                    "telegram {method} answered with a result pinch cannot read: {e}"
                ))
            });
        }
        let desc = answer
            .description
            .as_deref()
            .unwrap_or("no description")
            .replace(token.as_str(), "<token>");
        Err(classify(
            status,
            format!("telegram {method} answered {status}: {desc}"),
        ))
    }

    pub(super) async fn me(&self) -> Result<&Me, DeliverError> {
        self.me
            .get_or_try_init(|| async { self.call::<Me>("getMe", json!({})).await })
            .await
    }

    pub(super) async fn download(&self, file_id: &str) -> Option<Vec<u8>> {
        let r: FileInfo = match self.call("getFile", json!({"file_id": file_id})).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("telegram: getFile failed, the file is noted but not kept: {e}");
                return None;
            }
        };
        let path = r.file_path?;
        let url = format!(
            "{}/file/bot{}/{path}",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.token.0
        );
        match crate::platform::download_capped(self.http().get(url), &self.cfg.token.0).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    "telegram: downloading a file failed, it is noted but not kept: {e}"
                );
                None
            }
        }
    }

    pub(super) async fn send_text(
        &self,
        to: &Address,
        text: &str,
        reply_to: Option<&str>,
        buttons: &[crate::Button],
    ) -> Result<Option<i64>, DeliverError> {
        let parts = split_text(text, MAX_TEXT, char::len_utf16);
        let n = parts.len();
        let mut first = None;
        for (i, p) in parts.into_iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let mut body = json!({"chat_id": chat_id(&to.platform_id), "text": p});
            thread(&mut body, to);
            if let (0, Some(r)) = (i, reply_to.and_then(msg_id)) {
                body["reply_parameters"] =
                    json!({"message_id": r, "allow_sending_without_reply": true});
            }
            if i + 1 == n && !buttons.is_empty() {
                body["reply_markup"] = keyboard(buttons)?;
            }
            let r: Sent = self.call("sendMessage", body).await?;
            first = first.or(r.message_id);
        }
        Ok(first)
    }
}
