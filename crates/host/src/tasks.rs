//! Scheduled tasks in a session's `inbound.db` (SPEC §7.4): the host
//! carries out the agent's task actions and schedules each recurring
//! task's next occurrence when the last one finishes.
//!
//! Occurrence ids are `task:<series_id>:<slot UTC>`, so the primary key is
//! the occurrence ledger: inserting the same slot twice is a no-op, and the
//! next occurrence is inserted in the same transaction that records the
//! finished one — across crashes each slot runs exactly once. The next slot
//! is computed from the finished row's *scheduled* time, not from now; if
//! slots were missed while the host was down, only the latest runs, and the
//! skipped ones are logged.

use anyhow::{bail, Context, Result};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use pinch_policy::cron::Schedule;
use pinch_proto::content::{InContent, TaskIn};
use pinch_proto::open::write_tx;
use pinch_proto::rows::{self, NewInbound};
use pinch_proto::rusqlite::Transaction;
use pinch_proto::tasks as task_store;
use pinch_proto::time;
use serde_json::{json, Value};

use crate::paths::SessionDir;
use crate::session::BUSY;

fn zone(name: Option<&str>, default: &str) -> TimeZone {
    name.and_then(|n| TimeZone::get(n).ok())
        .or_else(|| TimeZone::get(default).ok())
        .unwrap_or(TimeZone::UTC)
}

fn occurrence_id(series: &str, slot: Timestamp) -> String {
    format!("task:{series}:{}", time::format(slot))
}

/// After the row `id` reached a terminal status (inside the ack-sync
/// transaction): if it is a recurring task, insert its next occurrence and
/// return when it falls due.
pub fn schedule_next(
    tx: &Transaction<'_>,
    id: &str,
    default_tz: &str,
    out_max: i64,
) -> Result<Option<Timestamp>> {
    let Some(task_store::Occurrence {
        kind,
        process_after: scheduled,
        recurrence: Some(rec),
        series_id: Some(series),
        content,
        channel_type,
        platform_id,
        thread_id,
    }) = task_store::occurrence(tx, id)?
    else {
        return Ok(None);
    };
    if kind != "task" {
        return Ok(None);
    }
    let schedule = match Schedule::parse(&rec) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(task = %id, "recurring task has an invalid recurrence; no further occurrences: {e}");
            return Ok(None);
        }
    };
    let tz_name = match InContent::parse("task", &content) {
        Ok(InContent::Task(t)) => t.timezone,
        _ => None,
    };
    let tz = zone(tz_name.as_deref(), default_tz);
    let now = Timestamp::now();
    let scheduled = scheduled
        .as_deref()
        .and_then(|s| time::parse(s).ok())
        .unwrap_or(now);
    let Some((slot, skipped)) = schedule.next_slot(scheduled, now, &tz) else {
        tracing::info!(task = %id, recurrence = %rec, "recurring task has no further slot");
        return Ok(None);
    };
    if skipped > 0 {
        tracing::warn!(series = %series, skipped, runs = %time::format(slot), "missed task slots while the host was down: running the latest once, skipping the rest");
    }
    let next = NewInbound {
        id: occurrence_id(&series, slot),
        kind: "task".into(),
        timestamp: time::now(),
        process_after: Some(time::format(slot)),
        trigger: true,
        channel_type,
        platform_id,
        thread_id,
        content,
        recurrence: Some(rec),
        series_id: Some(series),
        ..Default::default()
    };
    rows::insert_inbound(tx, &next, out_max)?;
    Ok(Some(slot))
}

/// What an action did: the `action_result` body, and when to wake the
/// session (a task falling due).
#[derive(Debug, PartialEq)]
pub struct Done {
    pub result: Value,
    pub wake_at: Option<Timestamp>,
}

/// Carries out one task action an agent wrote (`schedule_task`,
/// `update_task`, `cancel_task`, `pause_task`, `resume_task`). `Err` is a
/// refusal the agent is told, in words it can act on.
pub fn apply(
    dir: &SessionDir,
    action: &str,
    v: &Value,
    default_tz: &str,
    out_max: i64,
) -> Result<Done> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|x| !x.is_empty())
    };
    let mut conn = pinch_proto::open::open_existing_writer(&dir.inbound_db(), BUSY)?;
    let tx = write_tx(&mut conn)?;
    let done = match action {
        "schedule_task" => {
            let prompt = s("prompt").context("schedule_task needs a `prompt`")?;
            let at = s("process_after").context("schedule_task needs a time (`at`)")?;
            let due = time::parse(at)
                .map_err(|e| anyhow::anyhow!("the time {at:?} is not readable: {e}"))?;
            let rec = s("recurrence");
            if let Some(r) = rec {
                Schedule::parse(r).map_err(anyhow::Error::msg)?;
            }
            let series = format!("ser-{}", pinch_proto::runner_config::random_hex(4));
            let content = TaskIn {
                prompt: prompt.to_owned(),
                script: s("script").map(str::to_owned),
                timezone: Some(s("timezone").unwrap_or(default_tz).to_owned()),
            };
            let row = NewInbound {
                id: occurrence_id(&series, due),
                kind: "task".into(),
                timestamp: time::now(),
                process_after: Some(time::format(due)),
                trigger: true,
                content: InContent::Task(content).to_json(),
                recurrence: rec.map(str::to_owned),
                series_id: Some(series.clone()),
                ..Default::default()
            };
            rows::insert_inbound(&tx, &row, out_max)?;
            Done {
                result: json!({"id": row.id, "series_id": series, "next": time::format(due), "recurrence": rec}),
                wake_at: Some(due),
            }
        }
        "cancel_task" | "pause_task" | "resume_task" => {
            let key = s("id").context("give the task's id or series id (list_tasks shows them)")?;
            let t = match action {
                "cancel_task" => task_store::Transition::Cancel,
                "pause_task" => task_store::Transition::Pause,
                _ => task_store::Transition::Resume,
            };
            let to = t.to();
            let n = task_store::transition(&tx, key, t)?;
            if n == 0 {
                bail!(
                    "no {} task has the id or series id {key:?} (list_tasks shows the live ones)",
                    if action == "resume_task" {
                        "paused"
                    } else {
                        "live"
                    }
                );
            }
            let wake_at = if action == "resume_task" {
                task_store::next_due(&tx, key)?.and_then(|t| time::parse(&t).ok())
            } else {
                None
            };
            Done {
                result: json!({"id": key, "status": to, "rows": n}),
                wake_at,
            }
        }
        "update_task" => {
            let key = s("id").context("give the task's id or series id (list_tasks shows them)")?;
            let live = task_store::newest_live(&tx, key)?;
            let Some((id, content)) = live else {
                bail!("no live task has the id or series id {key:?} (list_tasks shows them)")
            };
            let mut t = match InContent::parse("task", &content) {
                Ok(InContent::Task(t)) => t,
                _ => bail!("task {id} has unreadable content"),
            };
            if let Some(p) = s("prompt") {
                t.prompt = p.to_owned();
            }
            if let Some(sc) = s("script") {
                t.script = Some(sc.to_owned());
            }
            let due = match s("process_after") {
                Some(at) => Some(
                    time::parse(at)
                        .map_err(|e| anyhow::anyhow!("the time {at:?} is not readable: {e}"))?,
                ),
                None => None,
            };
            if let Some(r) = s("recurrence") {
                Schedule::parse(r).map_err(anyhow::Error::msg)?;
                task_store::set_recurrence(&tx, &id, r)?;
            }
            task_store::set_content(&tx, &id, &InContent::Task(t).to_json())?;
            if let Some(d) = due {
                task_store::set_process_after(&tx, &id, &time::format(d))?;
            }
            Done {
                result: json!({"id": id, "updated": true}),
                wake_at: due,
            }
        }
        other => bail!("unknown task action {other:?}"),
    };
    tx.commit().context("committing the task change")?;
    Ok(done)
}

/// The session's live tasks (pending or paused), soonest first, as
/// `pinch admin tasks list` shows them.
pub fn live(dir: &SessionDir) -> Result<Vec<Value>> {
    let conn = pinch_proto::open::open_reader(&dir.inbound_db(), BUSY)?;
    Ok(task_store::live(&conn)?
        .into_iter()
        .map(|task_store::LiveTask { id, series_id: series, status, process_after: due, recurrence: rec, content }| {
            let (prompt, tz, script) = match InContent::parse("task", &content) {
                Ok(InContent::Task(t)) => (t.prompt, t.timezone, t.script.is_some()),
                _ => ("(unreadable)".to_owned(), None, false),
            };
            json!({"id": id, "series_id": series, "status": status, "next": due, "recurrence": rec, "timezone": tz, "pre_script": script, "prompt": prompt})
        })
        .collect())
}

/// Whether a live task of this session has `key` as its id or series id.
pub fn holds(dir: &SessionDir, key: &str) -> Result<bool> {
    let conn = pinch_proto::open::open_reader(&dir.inbound_db(), BUSY)?;
    Ok(task_store::holds(&conn, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_proto::open::open_writer;

    fn session() -> (tempfile::TempDir, SessionDir) {
        let d = tempfile::tempdir().unwrap();
        let dir = SessionDir(d.path().to_owned());
        std::fs::create_dir_all(dir.in_dir()).unwrap();
        let c = open_writer(&dir.inbound_db(), BUSY).unwrap();
        pinch_proto::schema::migrate_inbound(&c).unwrap();
        (d, dir)
    }

    fn statuses(dir: &SessionDir) -> Vec<(String, String, Option<String>)> {
        let c = pinch_proto::open::open_reader(&dir.inbound_db(), BUSY).unwrap();
        let mut s = c
            .prepare("SELECT id, status, process_after FROM messages_in ORDER BY seq")
            .unwrap();
        let v = s
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        v
    }

    fn finish(dir: &SessionDir, id: &str) -> Option<Timestamp> {
        let mut c = open_writer(&dir.inbound_db(), BUSY).unwrap();
        let tx = write_tx(&mut c).unwrap();
        rows::set_inbound_status(&tx, id, "completed").unwrap();
        let next = schedule_next(&tx, id, "UTC", 0).unwrap();
        tx.commit().unwrap();
        next
    }

    #[test]
    fn a_missed_yearly_series_runs_the_latest_slot_once_then_the_next() {
        let (_d, dir) = session();
        let a = json!({"prompt": "happy new year", "process_after": "2020-01-01T00:00:00.000Z", "recurrence": "0 0 1 1 *", "timezone": "UTC"});
        let done = apply(&dir, "schedule_task", &a, "UTC", 0).unwrap();
        let first = done.result["id"].as_str().unwrap().to_owned();
        let series = done.result["series_id"].as_str().unwrap().to_owned();
        assert_eq!(first, format!("task:{series}:2020-01-01T00:00:00.000Z"));
        // It ran (late): the next is the latest missed slot, not 2021.
        let this_year = Timestamp::now().to_zoned_datetime(TimeZone::UTC).year();
        let next = finish(&dir, &first).unwrap();
        assert_eq!(
            time::format(next),
            format!("{this_year}-01-01T00:00:00.000Z")
        );
        // Finishing the same row again (a second ack sync after a crash) adds nothing.
        let mut c = open_writer(&dir.inbound_db(), BUSY).unwrap();
        let tx = write_tx(&mut c).unwrap();
        schedule_next(&tx, &first, "UTC", 0).unwrap();
        tx.commit().unwrap();
        assert_eq!(statuses(&dir).len(), 2, "one row per slot");
        // The catch-up run finishes: the next is next year's, from its own slot.
        let catch_up = format!("task:{series}:{this_year}-01-01T00:00:00.000Z");
        let next = finish(&dir, &catch_up).unwrap();
        assert_eq!(
            time::format(next),
            format!("{}-01-01T00:00:00.000Z", this_year + 1)
        );
        assert_eq!(statuses(&dir).len(), 3);
    }

    #[test]
    fn recurrence_follows_the_users_zone_across_dst() {
        let (_d, dir) = session();
        // 09:00 Madrid every day, first on the day before spring-forward.
        let a = json!({"prompt": "p", "process_after": "2099-03-28T08:00:00.000Z", "recurrence": "0 9 * * *", "timezone": "Europe/Madrid"});
        let id = apply(&dir, "schedule_task", &a, "UTC", 0).unwrap().result["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // 2099-03-29 is DST day in Madrid (last Sunday of March): 09:00 is 07:00Z.
        let next = finish(&dir, &id).unwrap();
        assert_eq!(time::format(next), "2099-03-29T07:00:00.000Z");
    }

    #[test]
    fn pause_resume_cancel_by_id_or_series_and_refusals() {
        let (_d, dir) = session();
        let a = json!({"prompt": "p", "process_after": "2099-01-01T00:00:00Z", "recurrence": "0 * * * *"});
        let r = apply(&dir, "schedule_task", &a, "UTC", 0).unwrap().result;
        let (id, series) = (
            r["id"].as_str().unwrap().to_owned(),
            r["series_id"].as_str().unwrap().to_owned(),
        );
        assert_eq!(
            apply(&dir, "pause_task", &json!({"id": series}), "UTC", 0)
                .unwrap()
                .result["status"],
            "paused"
        );
        assert_eq!(statuses(&dir)[0].1, "paused");
        let e = apply(&dir, "pause_task", &json!({"id": id}), "UTC", 0).unwrap_err();
        assert!(e.to_string().contains("no live task"), "{e}");
        let done = apply(&dir, "resume_task", &json!({"id": id}), "UTC", 0).unwrap();
        assert_eq!(
            done.wake_at.map(time::format).as_deref(),
            Some("2099-01-01T00:00:00.000Z")
        );
        apply(
            &dir,
            "update_task",
            &json!({"id": series, "prompt": "q", "process_after": "2099-02-01T00:00:00Z"}),
            "UTC",
            0,
        )
        .unwrap();
        assert_eq!(
            statuses(&dir)[0].2.as_deref(),
            Some("2099-02-01T00:00:00.000Z")
        );
        assert_eq!(
            apply(&dir, "cancel_task", &json!({"id": id}), "UTC", 0)
                .unwrap()
                .result["status"],
            "cancelled"
        );
        assert_eq!(statuses(&dir)[0].1, "cancelled");
        for (action, args, want) in [
            (
                "schedule_task",
                json!({"prompt": "p", "process_after": "tomorrow"}),
                "not readable",
            ),
            (
                "schedule_task",
                json!({"prompt": "p", "process_after": "2099-01-01T00:00:00Z", "recurrence": "every day"}),
                "5",
            ),
            (
                "schedule_task",
                json!({"process_after": "2099-01-01T00:00:00Z"}),
                "prompt",
            ),
            ("cancel_task", json!({}), "id"),
            ("cancel_task", json!({"id": "nope"}), "no live task"),
        ] {
            let e = apply(&dir, action, &args, "UTC", 0).unwrap_err();
            assert!(e.to_string().contains(want), "{action} {args}: {e}");
        }
    }
}
