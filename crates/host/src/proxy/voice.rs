//! `POST /_pinch/voice/transcribe` (decision 0046): a voice note's bytes,
//! with its `Content-Type` and `X-Pinch-File-Name`, transcribed by the
//! owner's endpoint through [`pinch_web::Web::transcribe`]; the answer is
//! `{"text": …}` or `{"error": …}`. The sandbox is hostile, so everything
//! that can refuse a request is decided before its body is read: the
//! group's policy, the type, the group's rate, one note at a time per
//! session, and a turn among the host's few transcriptions (which bounds
//! the audio held in memory). A refused body is read and dropped before
//! the answer, since the runner is still writing it.

use super::web::{error, read_body, write_answer, FileHead, NO_WEB};
use super::*;

type Refusal = (u16, serde_json::Value);

pub(super) async fn answer(
    mut c: UnixStream,
    len: u64,
    early: &[u8],
    file: FileHead,
    ctx: &Ctx,
) -> std::io::Result<()> {
    let lim = &ctx.limits;
    let media_type = file
        .media_type
        .unwrap_or_else(|| "application/octet-stream".into());
    let admitted = admit(&media_type, ctx).await;
    let (access, turns) = match admitted {
        Ok(a) => a,
        Err((code, json)) => {
            let rest = len.saturating_sub(early.len() as u64);
            let (mut src, mut sink) = ((&mut c).take(rest), tokio::io::sink());
            match tokio::time::timeout(lim.idle_timeout, tokio::io::copy(&mut src, &mut sink)).await
            {
                Ok(r) => r?,
                Err(_) => return Err(timed_out("reading a refused voice note")),
            };
            return write_answer(&mut c, code, &json, lim).await;
        }
    };
    // `decide` capped `len` at the route's maximum (25 MB).
    let body = read_body(&mut c, len, early, lim, "a voice note").await?;
    let name = file.name.unwrap_or_else(|| "audio".into());
    let (bytes, started) = (body.len(), Instant::now());
    let r = access.web.transcribe(&name, &media_type, body).await;
    // The turns are for the endpoint's work, not for the answer's write.
    drop(turns);
    let ms = started.elapsed().as_millis() as u64;
    let sid = ctx.session_id.as_str();
    let (code, json) = match r {
        Ok(text) => {
            tracing::info!(
                session_id = sid,
                bytes,
                chars = text.chars().count(),
                ms,
                "voice note transcribed"
            );
            (200, serde_json::json!({ "text": text }))
        }
        Err(e) => {
            tracing::warn!(
                session_id = sid,
                bytes,
                ms,
                "transcribing a voice note: {e}"
            );
            error(e.status(), e.to_string())
        }
    };
    write_answer(&mut c, code, &json, lim).await
}

/// The session's access and its turns (its own, then one of the host's),
/// or the refusal.
async fn admit<'a>(
    media_type: &str,
    ctx: &'a Ctx,
) -> Result<(&'a WebAccess, (OwnedSemaphorePermit, OwnedSemaphorePermit)), Refusal> {
    let Some(access) = ctx.web.as_deref() else {
        return Err(error(403, NO_WEB.into()));
    };
    let policy = access.policy.as_ref().map_err(|why| {
        error(
            403,
            format!("refused: this agent group's web policy is invalid: {why}"),
        )
    })?;
    let wait = access
        .web
        .voice_admit(&access.group, policy, media_type)
        .map_err(|e| error(e.status(), e.to_string()))?;
    let own = access.voice_busy.clone().try_acquire_owned().map_err(|_| {
        error(
            429,
            "this session is already having a voice note transcribed; send the next when it is done".into(),
        )
    })?;
    let host = access.web.voice_slot(wait).await.ok_or_else(|| {
        error(
            503,
            format!(
                "the host is transcribing {} other voice notes and none finished within {} s; try again later",
                pinch_web::voice::IN_FLIGHT,
                wait.as_secs()
            ),
        )
    })?;
    Ok((access, (own, host)))
}
