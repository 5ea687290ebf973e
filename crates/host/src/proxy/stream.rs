//! `POST /_pinch/stream` `{"reply_to": <inbound id>, "at": <byte>, "text":
//! …}` (decision 0048): a piece of the reply the model is writing, shown
//! live by the channels ([`crate::live`]). The host decides where it goes:
//! the conversation of that inbound row of this session, read from the
//! session's own `inbound.db` (which only the host writes); a row that is
//! unknown, has no conversation or is finished is refused. Answered `204`,
//! or the refusal's status with `{"error": …}` (the runner then stops
//! streaming that call; its final reply is unaffected).

use super::body::{error, read_body, write_answer, write_bytes};
use super::*;
use crate::live::{LiveHub, Target};

/// What a session's proxy needs to stream: the hub and the session's
/// `inbound.db`, with the last row it looked up.
pub struct StreamAccess {
    pub hub: Arc<LiveHub>,
    pub inbound_db: std::path::PathBuf,
    last: std::sync::Mutex<Option<(String, Target)>>,
}

impl StreamAccess {
    pub fn new(hub: Arc<LiveHub>, inbound_db: std::path::PathBuf) -> StreamAccess {
        StreamAccess {
            hub,
            inbound_db,
            last: std::sync::Mutex::new(None),
        }
    }
}

#[derive(serde::Deserialize)]
struct Piece {
    reply_to: String,
    at: usize,
    text: String,
}

pub(super) async fn answer(
    mut c: UnixStream,
    len: u64,
    early: &[u8],
    ctx: &Ctx,
) -> std::io::Result<()> {
    let lim = &ctx.limits;
    let body = read_body(&mut c, len, early, lim, "a streamed piece").await?;
    let (code, json) = take(body, ctx).await;
    if code == 204 {
        return write_bytes(&mut c, 204, "application/json", b"", lim).await;
    }
    write_answer(&mut c, code, &json, lim).await
}

async fn take(body: Vec<u8>, ctx: &Ctx) -> (u16, serde_json::Value) {
    let Some(access) = ctx.web.as_deref().and_then(|w| w.stream.as_deref()) else {
        return error(403, "streaming is not available through this proxy".into());
    };
    // The rate first: nothing is looked up for a piece over it.
    if let Err(r) = access.hub.admit(&ctx.session_id) {
        return error(r.status(), r.message());
    }
    let p: Piece = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                400,
                format!(r#"the request must be JSON {{"reply_to": …, "at": …, "text": …}} ({e})"#),
            )
        }
    };
    let target = match target(access, &p.reply_to).await {
        Ok(t) => t,
        Err(refused) => return refused,
    };
    match access
        .hub
        .piece(&ctx.session_id, &p.reply_to, target, p.at, &p.text)
        .await
    {
        Ok(()) => (204, serde_json::Value::Null),
        Err(r) => error(r.status(), r.message()),
    }
}

/// The conversation of the inbound row `id`, from the host's records; else
/// the refusal: 404 naming why the row cannot take a draft, or 503 when
/// the session's `inbound.db` could not be read (not the agent's doing).
async fn target(access: &StreamAccess, id: &str) -> Result<Target, (u16, serde_json::Value)> {
    if let Some((known, t)) = access.last.lock().unwrap().as_ref() {
        if known == id {
            return Ok(t.clone());
        }
    }
    let (db, key) = (access.inbound_db.clone(), id.to_owned());
    let read = tokio::task::spawn_blocking(move || {
        let conn = pinch_proto::open::open_reader(&db, crate::session::BUSY)?;
        Ok::<_, pinch_proto::ProtoError>(
            pinch_proto::rows::inbound_by_ids(&conn, &[key])?
                .into_iter()
                .next(),
        )
    })
    .await;
    let row = match read {
        Ok(Ok(Some(row))) => row,
        Ok(Ok(None)) => return Err(error(404, format!("no message {id:?} in this session"))),
        Ok(Err(e)) => {
            tracing::warn!(file = %access.inbound_db.display(), "a streamed piece could not be placed: {e}");
            return Err(error(
                503,
                format!("the host could not read this session's messages ({e})"),
            ));
        }
        Err(e) => {
            return Err(error(
                503,
                format!("the host could not look the message up ({e})"),
            ))
        }
    };
    use pinch_proto::rows::status;
    if [status::COMPLETED, status::FAILED, status::CANCELLED].contains(&row.status.as_str()) {
        return Err(error(404, format!("message {id:?} is {}", row.status)));
    }
    let t = Target::of_row(&row)
        .ok_or_else(|| error(404, format!("message {id:?} has no conversation")))?;
    *access.last.lock().unwrap() = Some((id.to_owned(), t.clone()));
    Ok(t)
}
