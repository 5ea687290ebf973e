//! Web API calls: the bot token (or the app-level token for
//! `apps.connections.open`), the answer read into the type the caller asks
//! for (invalid UTF-8 replaced), errors without the token; posting text
//! split at 3000 characters, and the three-step file upload.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::platform::{classify, json_lossy, scrub, split_text};
use crate::{Address, DeliverError};

use super::payload::{Posted, Status, UploadUrl};
use super::{blocks, SlackChannel, MAX_TEXT};

impl SlackChannel {
    pub(super) fn url(&self, method: &str) -> String {
        format!("{}/{method}", self.cfg.base_url.trim_end_matches('/'))
    }

    /// A Web API call with `token`; the answer as `T` when `ok`.
    pub(super) async fn call_with<T: DeserializeOwned + Default>(
        &self,
        token: &str,
        method: &str,
        body: Value,
    ) -> Result<T, DeliverError> {
        let req = self
            .client
            .post(self.url(method))
            .bearer_auth(token)
            .json(&body);
        self.answer(token, method, req).await
    }

    /// Sends `req` and reads Slack's answer: `T` when `ok`, else the
    /// error sorted by what may work later.
    async fn answer<T: DeserializeOwned + Default>(
        &self,
        token: &str,
        method: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, DeliverError> {
        let fail = |e: reqwest::Error| {
            DeliverError::Retryable(format!("slack {method}: {}", scrub(&e, token)))
        };
        let resp = req.send().await.map_err(fail)?;
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let v: Value = json_lossy(&format!("slack {method}"), &body).unwrap_or_default();
        let s: Status = serde_json::from_value(v.clone()).unwrap_or_default();
        if status.is_success() && s.ok {
            return Ok(serde_json::from_value(v).unwrap_or_default());
        }
        let err = s.error.unwrap_or_else(|| "no error given".into());
        let what = format!("slack {method} answered {status}: {err}");
        if !status.is_success() {
            return Err(classify(status, what));
        }
        Err(match err.as_str() {
            "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout" => DeliverError::Retryable(what),
            _ => DeliverError::Permanent(what),
        })
    }

    pub(super) async fn call<T: DeserializeOwned + Default>(
        &self,
        method: &str,
        body: Value,
    ) -> Result<T, DeliverError> {
        self.call_with(&self.cfg.bot_token.0, method, body).await
    }

    pub(super) async fn post_text(
        &self,
        to: &Address,
        text: &str,
        buttons: &[crate::Button],
    ) -> Result<Option<String>, DeliverError> {
        let parts = split_text(text, MAX_TEXT, |_| 1);
        let n = parts.len();
        let mut first = None;
        for (i, p) in parts.into_iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let mut body = json!({"channel": to.platform_id, "text": p, "unfurl_links": false});
            if let Some(t) = &to.thread_id {
                body["thread_ts"] = t.as_str().into();
            }
            if i + 1 == n && !buttons.is_empty() {
                body["blocks"] = blocks(&p, buttons);
            }
            let r: Posted = self.call("chat.postMessage", body).await?;
            first = first.or(r.ts);
        }
        Ok(first)
    }

    pub(super) async fn upload(
        &self,
        to: &Address,
        name: &str,
        data: Vec<u8>,
    ) -> Result<(), DeliverError> {
        let len = data.len().to_string();
        let form = [("filename", name), ("length", len.as_str())];
        let token = &self.cfg.bot_token.0;
        let req = self
            .client
            .post(self.url("files.getUploadURLExternal"))
            .bearer_auth(token)
            .form(&form);
        let v: UploadUrl = self
            .answer(token, "files.getUploadURLExternal", req)
            .await?;
        let (Some(url), Some(file_id)) = (v.upload_url, v.file_id) else {
            return Err(DeliverError::Retryable(
                "slack files.getUploadURLExternal gave no upload_url".into(),
            ));
        };
        let up =
            self.client.post(url).body(data).send().await.map_err(|e| {
                DeliverError::Retryable(format!("slack upload: {}", scrub(&e, token)))
            })?;
        if !up.status().is_success() {
            return Err(classify(
                up.status(),
                format!("slack upload answered {}", up.status()),
            ));
        }
        let mut body =
            json!({"files": [{"id": file_id, "title": name}], "channel_id": to.platform_id});
        if let Some(t) = &to.thread_id {
            body["thread_ts"] = t.as_str().into();
        }
        self.call::<Value>("files.completeUploadExternal", body)
            .await
            .map(|_| ())
    }
}
