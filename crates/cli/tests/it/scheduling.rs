//! Scheduled tasks end to end (SPEC §7.4): an agent's `schedule_task`
//! becomes a task row the host wakes the session for; a host that is down
//! when a task falls due runs it once after it restarts (R10); a recurring
//! series whose slots were missed runs the latest once and schedules the
//! next from its slot; list_tasks shows a scheduled series.

use std::time::{Duration, Instant};

use crate::common::*;
use pinch_channels::cli_socket::{ClientMsg, ServerMsg};
use pinch_host::sandbox::Choice;

/// Reads replies (acking them) until one contains `needle`; returns every
/// reply text seen. Panics after `within`.
fn replies_until(c: &mut Client, needle: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no reply containing {needle:?} within {within:?}; saw {seen:?}"
        );
        match c.recv() {
            Some(ServerMsg::Message { id, text, .. }) => {
                c.send(&ClientMsg::Ack { id });
                let hit = text.contains(needle);
                seen.push(text);
                if hit {
                    return seen;
                }
            }
            Some(_) => {}
            None => panic!("host closed"),
        }
    }
}

fn task_rows(data: &std::path::Path) -> Vec<(String, String, Option<String>)> {
    let dir = std::fs::read_dir(data.join("sessions/main"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let c = inbound(&dir);
    let mut s = c
        .prepare(
            "SELECT id, status, process_after FROM messages_in WHERE kind = 'task' ORDER BY seq",
        )
        .unwrap();
    let v = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    v
}

#[test]
fn a_task_due_while_the_host_is_down_runs_once_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    // Far enough ahead that the first host (and its runner) is down before it
    // falls due: a Docker runner takes longer to start and to stop.
    let lead = if any_sandbox() == Choice::Docker {
        10
    } else {
        3
    };
    let due = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(lead);
    let script = format!(
        r#"
[[rule]]
contains = "remind me"
tool = "schedule_task"
args = {{ prompt = "stretch now", at = "{}" }}

[[rule]]
after_tool = "schedule_task"
reply = "scheduled: {{tool_result}}"

[[rule]]
contains = "stretch now"
reply = "time to stretch"
"#,
        pinch_proto::time::format(due)
    );
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), &script);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let replies = c.ask("remind me to stretch");
    assert!(
        replies
            .iter()
            .any(|r| r.starts_with("scheduled: requested")),
        "{replies:?}"
    );
    // The host acts on the request (an action_result row for the agent).
    wait_for("the task row", Duration::from_secs(10), || {
        task_rows(&cfg.data_dir).len() == 1
    });
    drop(c);
    rt.block_on(host.shutdown()).unwrap();
    assert_eq!(task_rows(&cfg.data_dir)[0].1, "pending");
    // Down until the task is overdue.
    while jiff::Timestamp::now() < due + jiff::SignedDuration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let seen = replies_until(&mut c, "time to stretch", Duration::from_secs(20));
    assert_eq!(
        seen.iter()
            .filter(|t| t.contains("time to stretch"))
            .count(),
        1
    );
    wait_for("the task completed", Duration::from_secs(10), || {
        task_rows(&cfg.data_dir)[0].1 == "completed"
    });
    // And never again: what came after the first, up to a barrier sent
    // once the task is completed (and a while later), counted with it.
    std::thread::sleep(Duration::from_millis(1500));
    let later = message_texts(&c.until_barrier());
    let runs = seen
        .iter()
        .chain(&later)
        .filter(|t| t.contains("time to stretch"))
        .count();
    assert_eq!(runs, 1, "{seen:?} then {later:?}");
    rt.block_on(host.shutdown()).unwrap();
    let rows = task_rows(&cfg.data_dir);
    assert_eq!(rows.len(), 1, "{rows:?}");
}

#[test]
fn a_missed_recurring_series_runs_the_latest_slot_once_and_schedules_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"
[[rule]]
contains = "every new year"
tool = "schedule_task"
args = { prompt = "annual review", at = "2020-01-01T00:00:00Z", recurrence = "0 0 1 1 *" }

[[rule]]
after_tool = "schedule_task"
reply = "scheduled: {tool_result}"

[[rule]]
contains = "annual review"
reply = "annual review done"
"#;
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), script);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let first = c.ask("every new year please");
    let this_year = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .year();
    let next_slot = format!("{}-01-01T00:00:00.000Z", this_year + 1);
    // 2020's slot runs, then this year's (the latest missed) once, then
    // next year's is pending. (Replies are read as they come: the CLI
    // channel waits for the client's ack before the next delivery.)
    let mut done = first
        .iter()
        .filter(|t| t.contains("annual review done"))
        .count();
    while done < 2 {
        done += replies_until(&mut c, "annual review done", Duration::from_secs(20))
            .iter()
            .filter(|t| t.contains("annual review done"))
            .count();
    }
    assert_eq!(done, 2);
    wait_for("next year's occurrence", Duration::from_secs(20), || {
        task_rows(&cfg.data_dir)
            .iter()
            .any(|r| r.2.as_deref() == Some(next_slot.as_str()))
    });
    let rows = task_rows(&cfg.data_dir);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0].2.as_deref(), Some("2020-01-01T00:00:00.000Z"));
    assert_eq!(
        rows[1].2.as_deref(),
        Some(format!("{this_year}-01-01T00:00:00.000Z").as_str())
    );
    assert_eq!(
        (rows[0].1.as_str(), rows[1].1.as_str(), rows[2].1.as_str()),
        ("completed", "completed", "pending")
    );
    // No third run: next year's slot is not due.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(task_rows(&cfg.data_dir).len(), 3);
    let later = message_texts(&c.until_barrier());
    assert!(
        !later.iter().any(|t| t.contains("annual review done")),
        "a third run: {later:?}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn list_tasks_shows_a_scheduled_series() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"
[[rule]]
contains = "hourly"
tool = "schedule_task"
args = { prompt = "hourly check", at = "2099-01-01T00:00:00Z", recurrence = "0 * * * *" }

[[rule]]
contains = "cancel it"
tool = "list_tasks"

[[rule]]
after_tool = "*"
reply = "tool: {tool_result}"
"#;
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), script);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.ask("hourly please");
    wait_for("the task row", Duration::from_secs(10), || {
        task_rows(&cfg.data_dir).len() == 1
    });
    let replies = c.ask("cancel it: what is scheduled?");
    assert!(
        replies.iter().any(|r| r.contains("hourly check")),
        "list_tasks shows the task: {replies:?}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// Lesson 41: a task whose pre-script finds nothing to do makes no model
/// call; one that finds work wakes the agent with the script's data.
#[test]
fn pre_scripts_decide_whether_the_model_is_called() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"
[[rule]]
contains = "quiet check"
tool = "schedule_task"
args = { prompt = "quiet heartbeat", at = "2020-01-01T00:00:00Z", script = """echo checking; echo '{"wake_agent": false}'""" }

[[rule]]
contains = "busy check"
tool = "schedule_task"
args = { prompt = "busy heartbeat", at = "2020-01-01T00:00:00Z", script = """echo '{"wake_agent": true, "data": {"due": "seventeen"}}'""" }

[[rule]]
after_tool = "schedule_task"
reply = "scheduled"

[[rule]]
contains = "quiet heartbeat"
reply = "MODEL CALLED FOR THE QUIET TASK"

[[rule]]
contains = "seventeen"
reply = "the script says seventeen are due"
"#;
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), script);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let mut seen = c.ask("quiet check please");
    wait_for("the quiet task finished", Duration::from_secs(20), || {
        task_rows(&cfg.data_dir)
            .first()
            .is_some_and(|r| r.1 == "completed")
    });
    seen.extend(c.ask("busy check please"));
    if !seen.iter().any(|t| t.contains("seventeen are due")) {
        seen.extend(replies_until(
            &mut c,
            "seventeen are due",
            Duration::from_secs(20),
        ));
    }
    assert!(!seen.iter().any(|t| t.contains("MODEL CALLED")), "{seen:?}");
    // Replies are delivered in order: a model call for the quiet task would
    // have been seen before the busy task's answer.
    wait_for("both tasks completed", Duration::from_secs(10), || {
        let rows = task_rows(&cfg.data_dir);
        rows.len() == 2 && rows.iter().all(|r| r.1 == "completed")
    });
    rt.block_on(host.shutdown()).unwrap();
}

/// Exactly once per slot across a host SIGKILL in the middle of a slot:
/// the killed run is re-run (it never finished), each slot has one row, and
/// the series moves on once.
#[test]
fn a_host_killed_mid_slot_runs_each_slot_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    let script = tmp.path().join("script.toml");
    std::fs::write(
        &script,
        r#"
[[rule]]
contains = "every new year"
tool = "schedule_task"
args = { prompt = "slow annual review", at = "2020-01-01T00:00:00Z", recurrence = "0 0 1 1 *" }

[[rule]]
after_tool = "schedule_task"
reply = "scheduled"

[[rule]]
contains = "slow annual review"
delay_ms = 2500
reply = "annual review done"
"#,
    )
    .unwrap();
    // The slots below are UTC midnights: pin the zone (the daemon would
    // otherwise take the system's, e.g. TZ=Europe/Madrid in CI's second pass).
    std::fs::write(&cfg, format!("timezone = \"UTC\"\n[provider.scripted]\nscript = {script:?}\n[host]\nsweep_s = 1\nboot_breaker = false\n")).unwrap();
    let sock = data.join("run/cli.sock");
    let mut h = start_daemon(
        &data,
        &cfg,
        if any_sandbox() == Choice::Bwrap {
            "bwrap"
        } else {
            "process"
        },
    );
    let mut c = Client::connect(&sock);
    c.ask("every new year please");
    // The 2020 slot is claimed and running (2.5 s): kill the host now.
    let dir = || {
        std::fs::read_dir(data.join("sessions/main"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    };
    wait_for("the first slot claimed", Duration::from_secs(15), || {
        outbound(&dir()).query_row("SELECT count(*) FROM processing_ack WHERE message_id LIKE 'task:%' AND status = 'processing'", [], |r| r.get::<_, i64>(0)).unwrap_or(0) == 1
    });
    h.0.kill().unwrap();
    h.0.wait().unwrap();
    drop(c);
    let _h = start_daemon(
        &data,
        &cfg,
        if any_sandbox() == Choice::Bwrap {
            "bwrap"
        } else {
            "process"
        },
    );
    let mut c = Client::connect(&sock);
    let this_year = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .year();
    let next_slot = format!("{}-01-01T00:00:00.000Z", this_year + 1);
    let mut done = 0;
    while done < 2 {
        done += replies_until(&mut c, "annual review done", Duration::from_secs(30))
            .iter()
            .filter(|t| t.contains("annual review done"))
            .count();
    }
    wait_for("next year's occurrence", Duration::from_secs(20), || {
        task_rows(&data)
            .iter()
            .any(|r| r.2.as_deref() == Some(next_slot.as_str()))
    });
    let rows = task_rows(&data);
    let slots: Vec<Option<&str>> = rows.iter().map(|r| r.2.as_deref()).collect();
    assert_eq!(rows.len(), 3, "one row per slot: {rows:?}");
    assert_eq!(slots[0], Some("2020-01-01T00:00:00.000Z"));
    assert_eq!(
        slots[1],
        Some(format!("{this_year}-01-01T00:00:00.000Z").as_str())
    );
    // One answer per slot: the killed run never answered.
    std::thread::sleep(Duration::from_millis(1000));
    let answers: i64 = outbound(&dir())
        .query_row(
            "SELECT count(*) FROM messages_out WHERE content LIKE '%annual review done%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(answers, 2);
}

/// `pinch admin tasks list|pause|resume|cancel` (SPEC §10) as the owner
/// runs them, against a live host: the task an agent scheduled is listed
/// with its session, a series is paused and resumed by its series id, and
/// cancelled for good; unknown ids are `not-found` (exit 1).
#[test]
fn the_owner_manages_tasks_with_pinch_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"
[[rule]]
contains = "hourly"
tool = "schedule_task"
args = { prompt = "hourly check", at = "2099-01-01T00:00:00Z", recurrence = "0 * * * *" }

[[rule]]
after_tool = "*"
reply = "tool: {tool_result}"
"#;
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), script);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.ask("hourly please");
    wait_for("the task row", Duration::from_secs(10), || {
        task_rows(&cfg.data_dir).len() == 1
    });
    let admin = |args: &[&str]| {
        let o = std::process::Command::new(PINCH)
            .arg("--data-dir")
            .arg(&cfg.data_dir)
            .arg("admin")
            .args(args)
            .env_remove("PINCH_HOME")
            .env_remove("PINCH_CONFIG")
            .env("XDG_CONFIG_HOME", tmp.path().join("no-config"))
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = admin(&["tasks", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &list["data"].as_array().unwrap_or_else(|| panic!("{out}"))[0];
    assert_eq!(
        (
            t["prompt"].as_str(),
            t["status"].as_str(),
            t["agent_group"].as_str()
        ),
        (Some("hourly check"), Some("pending"), Some("main")),
        "{t}"
    );
    assert_eq!(t["recurrence"], "0 * * * *");
    let series = t["series_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{t}"))
        .to_owned();
    // The table form names the columns.
    let (code, table, _) = admin(&["tasks", "list"]);
    assert!(
        code == 0 && table.contains("SERIES_ID") && table.contains("hourly check"),
        "{table}"
    );
    let status = || task_rows(&cfg.data_dir)[0].1.clone();
    let (code, _, err) = admin(&["tasks", "pause", &series]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status(), "paused");
    let (code, _, err) = admin(&["tasks", "pause", &series]);
    assert_eq!(code, 1, "pausing a paused task is refused");
    assert!(err.contains("no live task"), "{err}");
    let (code, _, err) = admin(&["tasks", "resume", &series]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status(), "pending");
    let (code, _, err) = admin(&["tasks", "cancel", &series]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status(), "cancelled");
    let (code, out, _) = admin(&["tasks", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (code, list["data"].as_array().map(Vec::len)),
        (0, Some(0)),
        "{out}"
    );
    let (code, _, err) = admin(&["tasks", "cancel", "ser-nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no live task") && err.contains("ser-nope"),
        "{err}"
    );
    rt.block_on(host.shutdown()).unwrap();
}
