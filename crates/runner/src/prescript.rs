//! Task pre-scripts (SPEC §7.4, lesson 41): a task may carry a shell
//! script the runner runs in the sandbox, in the workspace, before waking
//! the model (30 s timeout, stdout capped at 1 MiB). Its last non-empty
//! stdout line decides: `{"wake_agent": false}` finishes the task without
//! a model call; `{"wake_agent": true, "data": …}` wakes the agent with the
//! data added to the task. A script that fails, times out or prints no
//! verdict wakes the agent with what happened — a broken check must be
//! noticed, not silently skip every run.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::tools::shell;

pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const CAP: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Wake the agent, with this data for the task (if any).
    Wake(Option<Value>),
    /// Nothing to do: finish the task without the model.
    Skip,
}

/// Runs a task's script and decides.
pub fn run(script: &str, workspace: &Path) -> Verdict {
    match shell::run_with(script, workspace, TIMEOUT, CAP, false) {
        Ok(o) if o.timed_out => Verdict::Wake(Some(
            json!({"script_error": format!("the task's script timed out after {} s", TIMEOUT.as_secs())}),
        )),
        Ok(o) if o.exit != Some(0) => Verdict::Wake(Some(json!({
            "script_error": format!("the task's script failed (exit {:?}, signal {:?})", o.exit, o.signal),
            "output": tail(&String::from_utf8_lossy(&o.output), 2000),
        }))),
        Ok(o) => decide(&String::from_utf8_lossy(&o.output)),
        Err(e) => Verdict::Wake(Some(
            json!({"script_error": format!("the task's script could not start: {e}")}),
        )),
    }
}

/// The verdict of a script's stdout (pure).
pub fn decide(stdout: &str) -> Verdict {
    let Some(last) = stdout.lines().map(str::trim).rev().find(|l| !l.is_empty()) else {
        return Verdict::Wake(Some(
            json!({"script_error": "the task's script printed nothing; its last line should be {\"wake_agent\": true|false, \"data\": …}"}),
        ));
    };
    match serde_json::from_str::<Value>(last) {
        Ok(v) => match v.get("wake_agent").and_then(Value::as_bool) {
            Some(false) => Verdict::Skip,
            Some(true) => Verdict::Wake(v.get("data").cloned().filter(|d| !d.is_null())),
            None => Verdict::Wake(Some(
                json!({"script_error": "the script's last line has no boolean `wake_agent`", "last_line": tail(last, 2000)}),
            )),
        },
        Err(_) => Verdict::Wake(Some(
            json!({"script_error": "the script's last line is not JSON", "last_line": tail(last, 2000)}),
        )),
    }
}

fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(
            decide("checking…\n{\"wake_agent\": false}\n\n"),
            Verdict::Skip
        );
        assert_eq!(
            decide("{\"wake_agent\": true, \"data\": {\"n\": 3}}"),
            Verdict::Wake(Some(json!({"n": 3})))
        );
        assert_eq!(decide("{\"wake_agent\": true}"), Verdict::Wake(None));
        for bad in ["", "ok", "{\"wake\": false}", "{\"wake_agent\": \"no\"}"] {
            assert!(
                matches!(decide(bad), Verdict::Wake(Some(v)) if v.get("script_error").is_some()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn runs_in_the_workspace_and_failures_wake() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("due.txt"), "2").unwrap();
        assert_eq!(
            run(
                "n=$(cat due.txt); echo \"{\\\"wake_agent\\\": true, \\\"data\\\": $n}\"",
                d.path()
            ),
            Verdict::Wake(Some(json!(2)))
        );
        assert_eq!(
            run("echo noise >&2; echo '{\"wake_agent\": false}'", d.path()),
            Verdict::Skip,
            "stderr is not the verdict"
        );
        assert!(
            matches!(run("exit 3", d.path()), Verdict::Wake(Some(v)) if v["script_error"].as_str().unwrap().contains("exit Some(3)"))
        );
    }
}
