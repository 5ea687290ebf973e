//! `pinch admin <resource> <verb> [id] [--json]`: one request over the
//! host's admin socket (SPEC §10). Exit codes: 0 ok, 1 error frame, 2 usage
//! or transport.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct AdminArgs {
    /// What to act on (this build: sessions, host).
    resource: String,
    /// What to do (sessions: list, get, resume; host: status).
    verb: String,
    /// The id the verb acts on (get, resume).
    id: Option<String>,
    /// Print the raw JSON response.
    #[arg(long)]
    json: bool,
}

pub fn run(data_dir: &Path, a: AdminArgs) -> i32 {
    let sock = data_dir.join("run/admin.sock");
    let mut args = json!({});
    if let Some(id) = &a.id {
        args["id"] = json!(id);
    }
    let req = json!({"id": 1, "command": format!("{}-{}", a.resource, a.verb), "args": args});
    let resp = match call(&sock, &req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pinch admin: cannot reach the host at {}: {e} (is `pinch host` running for this data dir?)", sock.display());
            return 2;
        }
    };
    if a.json {
        println!("{resp}");
    }
    if resp["ok"] != json!(true) {
        let code = resp["error"]["code"].as_str().unwrap_or("error");
        let msg = resp["error"]["message"].as_str().unwrap_or("");
        eprintln!("pinch admin: {code}: {msg}");
        return if matches!(code, "unknown-command" | "invalid-args") { 2 } else { 1 };
    }
    if !a.json {
        print_human(&a.resource, &a.verb, &resp["data"]);
    }
    0
}

fn call(sock: &Path, req: &Value) -> std::io::Result<Value> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(s, "{req}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_human(resource: &str, verb: &str, data: &Value) {
    match (resource, verb, data) {
        ("sessions", "list", Value::Array(rows)) => {
            let cols = ["id", "agent_group", "runner", "quarantined_at", "exits", "last_exit"];
            let table: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|c| cell(&r[*c])).collect()).collect();
            let mut w: Vec<usize> = cols.iter().map(|c| c.len()).collect();
            for row in &table {
                for (i, c) in row.iter().enumerate() {
                    w[i] = w[i].max(c.chars().count().min(60));
                }
            }
            let line = |cells: Vec<String>| {
                cells.iter().enumerate().map(|(i, c)| format!("{:<w$}", c.chars().take(60).collect::<String>(), w = w[i])).collect::<Vec<_>>().join("  ")
            };
            println!("{}", line(cols.iter().map(|c| c.to_uppercase()).collect()));
            for row in table {
                println!("{}", line(row));
            }
            for r in rows {
                if let Some(reason) = r["quarantine_reason"].as_str() {
                    println!("\n{} is quarantined: {reason}\n  resume with: pinch admin sessions resume {}", cell(&r["id"]), cell(&r["id"]));
                }
            }
        }
        (_, _, Value::Object(m)) => {
            for (k, v) in m {
                println!("{k}: {}", cell(v));
            }
        }
        (_, _, other) => println!("{}", serde_json::to_string_pretty(other).unwrap_or_default()),
    }
}
