//! `POST /_pinch/voice/transcribe` (decision 0046), `{"path":
//! "/workspace/inbox/<message>/<file>"}`: the host transcribes a file a
//! person sent — one it saved itself in the session's inbox, which the
//! sandbox sees read-only — with the owner's endpoint
//! ([`pinch_web::Web::transcribe`]); the answer is `{"text": …}` or
//! `{"error": …}`. The sandbox names a file and never sends audio, so the
//! owner's key pays only for what people sent: each file once per
//! session (the transcript is kept by the file's inode), within the
//! group's rate; files another agent sent (`a2a-*`) are refused. The file is
//! opened beneath the inbox's descriptor (no link, no FIFO, at most
//! 25 MB), and read only with a turn among the host's few transcriptions
//! (which bounds the audio held in memory) and the session's one.

use std::io::Read;

use super::body::{error, read_body, write_answer, write_bytes};
use super::web::NO_WEB;
use super::*;

type Refusal = (u16, serde_json::Value);

/// Transcripts a session keeps (a retried turn asks again).
const KEPT: usize = 64;

#[derive(serde::Deserialize)]
struct TranscribeRequest {
    path: String,
}

pub(super) async fn answer(
    mut c: UnixStream,
    len: u64,
    early: &[u8],
    ctx: &Ctx,
) -> std::io::Result<()> {
    let lim = &ctx.limits;
    // `decide` capped `len` at the route's maximum (64 KiB of JSON).
    let body = read_body(&mut c, len, early, lim, "a transcription request").await?;
    let (code, json) = match transcribe(&body, ctx).await {
        Ok(text) => (200, serde_json::json!({ "text": text })),
        Err(refusal) => refusal,
    };
    write_answer(&mut c, code, &json, lim).await
}

async fn transcribe(body: &[u8], ctx: &Ctx) -> Result<String, Refusal> {
    let Some(access) = ctx.web.as_deref() else {
        return Err(error(403, NO_WEB.into()));
    };
    let policy = access.policy.as_ref().map_err(|why| {
        error(
            403,
            format!("refused: this agent group's web policy is invalid: {why}"),
        )
    })?;
    let req: TranscribeRequest = serde_json::from_slice(body).map_err(|e| {
        error(
            400,
            format!(r#"the request must be JSON {{"path": "/workspace/inbox/…"}} ({e})"#),
        )
    })?;
    let rel = req
        .path
        .strip_prefix("/workspace/inbox/")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            error(
                403,
                format!(
                    "{:?} is not a file in /workspace/inbox: only files people sent are transcribed",
                    req.path.chars().take(200).collect::<String>()
                ),
            )
        })?
        .to_owned();
    access
        .web
        .voice_allowed(&access.group, policy)
        .map_err(|e| error(e.status(), e.to_string()))?;
    // Files other agents sent (a2a) are not people's: an agent could send
    // itself audio to spend the owner's key.
    // Judged by the first folder name however the path is spelt
    // (`./a2a-…/`, `a2a-…//x`): the opener below reads those alike.
    let folder = std::path::Path::new(&rel)
        .components()
        .find_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        });
    if folder.is_some_and(|f| f.starts_with("a2a-")) {
        return Err(error(
            403,
            format!("{rel:?} came from another agent: only files people sent are transcribed"),
        ));
    }
    // Opened first (cheap, nothing read) so a file is known by its inode
    // however its path is spelt.
    let inbox = access.inbox.clone();
    let rel2 = rel.clone();
    let file = tokio::task::spawn_blocking(move || open_inbox(&inbox, &rel2))
        .await
        .map_err(|e| error(500, format!("internal error opening the file: {e}")))?
        .map_err(|why| error(403, why))?;
    let id = {
        use std::os::unix::fs::MetadataExt;
        let md = file.metadata().map_err(|e| {
            error(
                403,
                format!("{rel:?} cannot be read from the inbox ({})", e.kind()),
            )
        })?;
        (md.dev(), md.ino())
    };
    if let Some(text) = access.kept(id) {
        return Ok(text);
    }
    let wait = access
        .web
        .voice_admit(&access.group, policy)
        .map_err(|e| error(e.status(), e.to_string()))?;
    let _own = access.voice_busy.clone().try_acquire_owned().map_err(|_| {
        error(
            429,
            "this session is already having a voice note transcribed; ask for the next when it is done".into(),
        )
    })?;
    let turn = access.web.voice_slot(wait).await.ok_or_else(|| {
        error(
            503,
            format!(
                "the host is transcribing {} other voice notes and none finished within {} s; try again later",
                pinch_web::voice::IN_FLIGHT,
                wait.as_secs()
            ),
        )
    })?;
    let rel2 = rel.clone();
    let audio = tokio::task::spawn_blocking(move || read_all(file, &rel2))
        .await
        .map_err(|e| error(500, format!("internal error reading the file: {e}")))?
        .map_err(|why| error(403, why))?;
    let name = rel.rsplit('/').next().unwrap_or(&rel).to_owned();
    let media_type = pinch_web::voice::media_type_of(&name, &audio).ok_or_else(|| {
        error(
            415,
            format!("{rel:?} is not an audio file a transcription endpoint takes"),
        )
    })?;
    let (bytes, started) = (audio.len(), Instant::now());
    let r = access.web.transcribe(&name, media_type, audio).await;
    drop(turn);
    let ms = started.elapsed().as_millis() as u64;
    let sid = ctx.session_id.as_str();
    match r {
        Ok(text) => {
            tracing::info!(
                session_id = sid,
                bytes,
                chars = text.chars().count(),
                ms,
                "voice note transcribed"
            );
            access.keep(id, &text);
            Ok(text)
        }
        Err(e) => {
            tracing::warn!(
                session_id = sid,
                bytes,
                ms,
                "transcribing a voice note: {e}"
            );
            Err(error(e.status(), e.to_string()))
        }
    }
}

/// `POST /_pinch/voice/speak` `{"text": …}`: the text spoken by the
/// owner's speech endpoint, answered as `audio/ogg` (or `{"error": …}`).
pub(super) async fn answer_speak(
    mut c: UnixStream,
    len: u64,
    early: &[u8],
    ctx: &Ctx,
) -> std::io::Result<()> {
    #[derive(serde::Deserialize)]
    struct SpeakRequest {
        text: String,
    }
    let lim = &ctx.limits;
    let body = read_body(&mut c, len, early, lim, "a speech request").await?;
    let Some(access) = ctx.web.as_deref() else {
        return write_answer(&mut c, 403, &error(403, NO_WEB.into()).1, lim).await;
    };
    let spoken = async {
        let policy = access.policy.as_ref().map_err(|why| {
            error(
                403,
                format!("refused: this agent group's web policy is invalid: {why}"),
            )
        })?;
        let req: SpeakRequest = serde_json::from_slice(&body).map_err(|e| {
            error(
                400,
                format!(r#"the request must be JSON {{"text": "…"}} ({e})"#),
            )
        })?;
        let started = Instant::now();
        let r = access.web.speak(&access.group, policy, &req.text).await;
        let ms = started.elapsed().as_millis() as u64;
        let sid = ctx.session_id.as_str();
        match r {
            Ok(audio) => {
                tracing::info!(
                    session_id = sid,
                    chars = req.text.chars().count(),
                    bytes = audio.len(),
                    ms,
                    "voice reply spoken"
                );
                Ok(audio)
            }
            Err(e) => {
                tracing::warn!(session_id = sid, ms, "speaking a voice reply: {e}");
                Err(error(e.status(), e.to_string()))
            }
        }
    };
    match spoken.await {
        Ok(audio) => write_bytes(&mut c, 200, "audio/ogg", &audio, lim).await,
        Err((code, json)) => write_answer(&mut c, code, &json, lim).await,
    }
}

/// The file `rel` beneath the session's inbox, opened beneath its
/// descriptor (no `..`, no link, no FIFO). Errors name `rel` only, never
/// the host's path.
fn open_inbox(inbox: &std::path::Path, rel: &str) -> Result<std::fs::File, String> {
    use crate::safe_fs::Error as E;
    crate::safe_fs::Dir::open_trusted(inbox)
        .and_then(|d| d.open_file(rel))
        .map_err(|e| {
            let why = match e {
                E::Missing(_) => "is missing",
                E::BadPath(_) => "is not a plain path inside the inbox",
                E::Symlink(_) => "is, or passes through, a link",
                E::NotRegular(_) => "is not a regular file",
                E::NotDir(_) => "passes through something that is not a folder",
                _ => "cannot be read",
            };
            format!("{rel:?} {why}")
        })
}

/// The whole file, at most the endpoints' 25 MB.
fn read_all(f: std::fs::File, rel: &str) -> Result<Vec<u8>, String> {
    let max = pinch_web::voice::MAX_AUDIO as u64;
    let mut data = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("{rel:?} cannot be read from the inbox ({})", e.kind()))?;
    if data.len() as u64 > max {
        return Err(format!(
            "{rel:?} is over {} MB, the most a transcription endpoint takes",
            max / (1024 * 1024)
        ));
    }
    Ok(data)
}

impl WebAccess {
    fn kept(&self, id: (u64, u64)) -> Option<String> {
        let k = self.transcripts.lock().ok()?;
        k.iter().find(|(i, _)| *i == id).map(|(_, t)| t.clone())
    }

    fn keep(&self, id: (u64, u64), text: &str) {
        if let Ok(mut k) = self.transcripts.lock() {
            if k.len() >= KEPT {
                k.remove(0);
            }
            k.push((id, text.to_owned()));
        }
    }
}
