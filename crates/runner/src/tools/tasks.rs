//! Scheduling tools (SPEC §5.6, §7.4): `schedule_task`, `update_task`,
//! `cancel_task`, `pause_task`, `resume_task` write `kind=system` rows
//! `{action, request_id, …}` for the host (rows only in this version: the
//! scheduling work makes the host act on them and answer with an
//! `action_result`); `list_tasks` reads the task rows of `inbound.db`.
//!
//! `at` is RFC 3339 (with an offset or `Z`) or a zone-less local time in
//! the configured zone (`2026-12-01T09:00`, `2026-12-01 09:00`); it is sent
//! as UTC in the one stored format. `recurrence` is a 5-field cron
//! expression, checked for shape here.

use jiff::{civil, Timestamp};
use pinch_proto::time;
use serde_json::{json, Map, Value};

use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_providers::ToolSpec;

pub fn specs() -> Vec<ToolSpec> {
    let id =
        json!({"type": "string", "description": "The task id (or series id) from list_tasks."});
    let at = json!({"type": "string", "description": "When: RFC 3339 (2026-12-01T09:00:00+01:00) or local time without a zone (2026-12-01T09:00)."});
    let rec = json!({"type": "string", "description": "Optional cron expression (minute hour day month weekday), e.g. \"0 9 * * mon-fri\"."});
    let script = json!({"type": "string", "description": "Optional shell script run first; its last stdout line {\"wake_agent\": bool, \"data\": ...} decides whether you are woken."});
    vec![
        spec(
            "schedule_task",
            "Schedule a task: at the given time you receive `prompt` as a task message. Returns once requested.",
            json!({"type": "object", "properties": {"prompt": {"type": "string"}, "at": at, "recurrence": rec, "script": script}, "required": ["prompt", "at"]}),
        ),
        spec(
            "update_task",
            "Change a scheduled task's prompt, time, recurrence or script.",
            json!({"type": "object", "properties": {"id": id, "prompt": {"type": "string"}, "at": at, "recurrence": rec, "script": script}, "required": ["id"]}),
        ),
        spec("cancel_task", "Cancel a scheduled task for good.", json!({"type": "object", "properties": {"id": id}, "required": ["id"]})),
        spec("pause_task", "Pause a scheduled task until resumed.", json!({"type": "object", "properties": {"id": id}, "required": ["id"]})),
        spec("resume_task", "Resume a paused task.", json!({"type": "object", "properties": {"id": id}, "required": ["id"]})),
        spec("list_tasks", "List your scheduled and paused tasks.", json!({"type": "object", "properties": {}})),
    ]
}

/// Parses `at` into the stored UTC format.
pub fn parse_at(at: &str, tz: &jiff::tz::TimeZone) -> Result<String, ToolError> {
    let s = at.trim();
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(time::format(ts));
    }
    match s.parse::<civil::DateTime>() {
        Ok(dt) => dt
            .to_zoned_datetime(tz.clone())
            .map(|z| time::format(z.timestamp()))
            .map_err(|e| ToolError(format!("`at` {s:?} does not exist in the local zone: {e}"))),
        Err(_) => Err(ToolError(format!(
            "`at` {s:?} is not a time I can read; use RFC 3339 like 2026-12-01T09:00:00+01:00, or local time like 2026-12-01T09:00"
        ))),
    }
}

pub fn call(ctx: &mut ToolCtx<'_>, name: &str, m: &Map<String, Value>) -> ToolResult {
    let tool: &'static str = match name {
        "schedule_task" => "schedule_task",
        "update_task" => "update_task",
        "cancel_task" => "cancel_task",
        "pause_task" => "pause_task",
        "resume_task" => "resume_task",
        _ => return list_tasks(ctx),
    };
    let a = Args { tool, m };
    let request_id = format!("req-{}", pinch_proto::runner_config::random_hex(6));
    let mut body = json!({"action": tool, "request_id": request_id});
    let o = body.as_object_mut().expect("object");
    if tool != "schedule_task" {
        let id = a.str("id")?;
        if id.trim().is_empty() {
            return Err(ToolError(format!(
                "{tool}: `id` is empty; list_tasks shows the ids"
            )));
        }
        o.insert("id".into(), json!(id));
    }
    if matches!(tool, "schedule_task" | "update_task") {
        let prompt = if tool == "schedule_task" {
            Some(a.str("prompt")?)
        } else {
            a.opt_str("prompt")?
        };
        if let Some(p) = prompt {
            if p.trim().is_empty() {
                return Err(ToolError(format!("{tool}: `prompt` is empty")));
            }
            o.insert("prompt".into(), json!(p));
        }
        let at = if tool == "schedule_task" {
            Some(a.str("at")?)
        } else {
            a.opt_str("at")?
        };
        if let Some(at) = at {
            o.insert("process_after".into(), json!(parse_at(at, &ctx.tz)?));
        }
        if let Some(r) = a.opt_str("recurrence")?.filter(|r| !r.trim().is_empty()) {
            pinch_policy::cron::check_shape(r).map_err(ToolError)?;
            o.insert("recurrence".into(), json!(r.trim()));
        }
        if let Some(s) = a.opt_str("script")?.filter(|s| !s.trim().is_empty()) {
            o.insert("script".into(), json!(s));
        }
        o.insert("timezone".into(), json!(ctx.cfg.timezone));
    }
    let addr = ctx.origin_address();
    ctx.write_row("system", &addr, body.to_string())?;
    Ok(format!(
        "requested ({request_id}); the result arrives later as a system response"
    ))
}

fn list_tasks(ctx: &mut ToolCtx<'_>) -> ToolResult {
    let path = ctx.cfg.paths.in_dir.join(pinch_proto::layout::INBOUND_DB);
    let conn = pinch_proto::open::open_reader(
        &path,
        std::time::Duration::from_millis(ctx.cfg.timings.busy_timeout_ms),
    )
    .map_err(|e| ToolError(format!("cannot read the task list: {e}")))?;
    let rows = pinch_proto::tasks::live(&conn)
        .map_err(|e| ToolError(format!("cannot read the task list: {e}")))?;
    if rows.is_empty() {
        return Ok("no scheduled tasks".into());
    }
    let list: Vec<Value> = rows
        .into_iter()
        .map(|t| {
            let pinch_proto::tasks::LiveTask {
                id,
                series_id: series,
                status,
                process_after: due,
                recurrence: rec,
                content,
            } = t;
            let prompt = serde_json::from_str::<Value>(&content).ok().and_then(|v| v.get("prompt").cloned()).unwrap_or(Value::Null);
            let local = due
                .as_deref()
                .and_then(|d| time::parse(d).ok())
                .map(|ts| ts.to_zoned_datetime(ctx.tz.clone()).strftime("%Y-%m-%d %H:%M %Z").to_string());
            json!({"id": series.clone().unwrap_or(id.clone()), "row_id": id, "status": status, "next_run": local, "recurrence": rec, "prompt": prompt})
        })
        .collect();
    Ok(serde_json::to_string_pretty(&list).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::*;
    use crate::tools::{call as tool_call, ToolCtx};

    #[test]
    fn at_formats() {
        let madrid = jiff::tz::TimeZone::get("Europe/Madrid").unwrap();
        assert_eq!(
            parse_at("2026-12-01T09:00:00+01:00", &madrid).unwrap(),
            "2026-12-01T08:00:00.000Z"
        );
        assert_eq!(
            parse_at("2026-12-01T09:00:00Z", &madrid).unwrap(),
            "2026-12-01T09:00:00.000Z"
        );
        assert_eq!(
            parse_at("2026-12-01T09:00", &madrid).unwrap(),
            "2026-12-01T08:00:00.000Z",
            "zone-less is user-local"
        );
        assert_eq!(
            parse_at("2026-07-01 09:00", &madrid).unwrap(),
            "2026-07-01T07:00:00.000Z",
            "DST"
        );
        assert!(parse_at("tomorrow at 9", &madrid)
            .unwrap_err()
            .0
            .contains("RFC 3339"));
    }

    #[test]
    fn schedule_writes_a_system_row_and_validates() {
        let env = Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        let r = tool_call(
            &mut ctx,
            "schedule_task",
            r#"{"prompt": "water plants", "at": "2026-12-01T09:00", "recurrence": "0 9 * * *"}"#,
        );
        assert!(
            !r.is_error && r.content.starts_with("requested (req-"),
            "{}",
            r.content
        );
        let r = tool_call(
            &mut ctx,
            "schedule_task",
            r#"{"prompt": "x", "at": "2026-12-01T09:00", "recurrence": "every day"}"#,
        );
        assert!(r.is_error && r.content.contains("5"), "{}", r.content);
        let r = tool_call(
            &mut ctx,
            "schedule_task",
            r#"{"prompt": "x", "at": "soon"}"#,
        );
        assert!(
            r.is_error && r.content.contains("RFC 3339"),
            "{}",
            r.content
        );
        assert!(!tool_call(&mut ctx, "pause_task", r#"{"id": "task:abc"}"#).is_error);
        assert!(tool_call(&mut ctx, "cancel_task", "{}").is_error);
        let rows = out_rows(&out);
        assert_eq!(rows.len(), 2, "only valid requests became rows");
        let v: Value = serde_json::from_str(&rows[0].3).unwrap();
        assert_eq!(rows[0].0, "system");
        assert_eq!(v["action"], "schedule_task");
        assert_eq!(v["process_after"], "2026-12-01T08:00:00.000Z");
        assert_eq!(v["recurrence"], "0 9 * * *");
        assert!(v["request_id"].as_str().unwrap().starts_with("req-"));
        let v: Value = serde_json::from_str(&rows[1].3).unwrap();
        assert_eq!(
            (v["action"].as_str(), v["id"].as_str()),
            (Some("pause_task"), Some("task:abc"))
        );
    }

    #[test]
    fn list_reads_task_rows() {
        let env = Env::new();
        {
            let mut w = env.inbound_writer();
            let tx = pinch_proto::open::write_tx(&mut w).unwrap();
            let row = pinch_proto::rows::NewInbound {
                id: "task:s1:2026".into(),
                kind: "task".into(),
                timestamp: time::now(),
                process_after: Some("2026-12-01T08:00:00.000Z".into()),
                trigger: true,
                content: r#"{"prompt": "water plants"}"#.into(),
                ..Default::default()
            };
            pinch_proto::rows::insert_inbound(&tx, &row, 0).unwrap();
            tx.commit().unwrap();
        }
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        let r = tool_call(&mut ctx, "list_tasks", "{}");
        assert!(!r.is_error, "{}", r.content);
        assert!(
            r.content.contains("water plants") && r.content.contains("2026-12-01 09:00 CET"),
            "{}",
            r.content
        );
    }
}
