//! `pinch admin <resource> <verb> [id] [--key value …] [--json]`: one
//! request over the host's admin socket (SPEC §10). The words are parsed
//! here with the shared vocabulary ([`pinch_policy::admin`]) the host uses
//! too, so a typo, an unknown flag or a bad value is refused before any
//! round trip, with the host's own message; `--key value` pairs go to the
//! host as `args` (strings; the host types them), the positional id as
//! `args.id`. Exit codes: 0 ok, 1 an error from the host, 2 usage (here, or
//! `invalid-args` / `unknown-command`) or no host to talk to.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pinch_policy::admin::{parse_words, AdminCommand, Resource, Words};
use serde_json::{json, Map, Value};

const USAGE: &str = "usage: pinch admin <resource> <verb> [id] [--key value …] [--json]";

/// `pinch admin --help`.
pub fn help() -> String {
    let mut s = String::from("Manage the running host over its admin socket (run/admin.sock).\n\n");
    s.push_str(USAGE);
    s.push_str("\n\nResources and verbs:\n");
    for r in Resource::ALL {
        let verbs: Vec<&str> = r.verbs().iter().map(|v| v.as_str()).collect();
        s.push_str(&format!("  {:<18}{}\n", r.as_str(), verbs.join(", ")));
    }
    s.push_str(crate::recover::HELP);
    s.push_str(
        "
Arguments are --key value pairs (or --key=value); '-' in a key is '_', so
--engage-mode = --engage_mode. The id is the row's id; for roles grant/revoke
and members add/remove it is the user, for destinations the agent group.
get, update, delete, config-get/-set, deny/undeny and the session, task and
approval actions need it. Lists show 200 rows at a time: --limit N --offset N.
--json prints the host's raw response.

Examples:
  pinch admin groups create --name Research
  pinch admin groups config-set ag-research --admin-scope group
  pinch admin messaging-groups create --channel-type telegram --platform-id -1001234 --name family
  pinch admin wirings create --mg mg-telegram-1a2b3c4d --ag ag-research --engage-mode mention
  pinch admin roles grant telegram:123456789 --role admin --ag ag-research
  pinch admin members add telegram:123456789 --ag ag-research
  pinch admin sessions list

  pinch admin audit list     the secrets' uses, newest first [--limit N --offset N --json] (local; no host needed)
  pinch admin web-token      prints the web token, for `Authorization: Bearer` (local; no host needed)
  pinch admin web-link       prints a one-time link that signs a browser in to web chat (works once, 30 min)
  pinch admin dashboard-link the same for the dashboard
",
    );
    s
}

/// The words after `pinch admin`, parsed by [`parse`] (clap only collects
/// them, so `--key value` pairs can be anything the host accepts).
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct AdminArgs {
    /// <resource> <verb> [id] [--key value …] [--json]; `pinch admin --help` lists them.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "RESOURCE VERB [ID] [--KEY VALUE]"
    )]
    words: Vec<String>,
}

/// One parsed request.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub resource: String,
    pub verb: String,
    pub args: Map<String, Value>,
    pub json: bool,
}

#[derive(Debug, PartialEq)]
pub enum Parse {
    Help,
    Request(Parsed),
}

impl AdminArgs {
    /// The words as given (after [`AdminArgs::take_globals`]).
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Takes `--data-dir`/`--config` given after `admin` (clap leaves them
    /// among the words), so `pinch admin groups list --data-dir D` works.
    pub fn take_globals(&mut self) -> Result<(Option<PathBuf>, Option<PathBuf>), String> {
        let mut data_dir = None;
        let mut config = None;
        let mut rest = Vec::new();
        let mut it = std::mem::take(&mut self.words).into_iter();
        while let Some(w) = it.next() {
            let (flag, inline) = match w.split_once('=') {
                Some((f, v)) if f == "--data-dir" || f == "--config" => {
                    (f.to_owned(), Some(v.to_owned()))
                }
                _ => (w.clone(), None),
            };
            let slot = match flag.as_str() {
                "--data-dir" => &mut data_dir,
                "--config" => &mut config,
                _ => {
                    rest.push(w);
                    continue;
                }
            };
            let v = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .filter(|v| !v.starts_with("--"))
                    .ok_or_else(|| format!("{flag} needs a value (e.g. {flag} ~/pinch-data)"))?,
            };
            *slot = Some(PathBuf::from(v));
        }
        self.words = rest;
        Ok((data_dir, config))
    }
}

/// Parses the words after `pinch admin` ([`parse_words`]). `Err` is a
/// usage message.
pub fn parse(words: &[String]) -> Result<Parse, String> {
    Ok(match parse_words(words)? {
        Words::Help => Parse::Help,
        Words::Request { spec, args, json } => Parse::Request(Parsed {
            resource: spec.resource.as_str().to_owned(),
            verb: spec.verb.as_str().to_owned(),
            args,
            json,
        }),
    })
}

/// `listen`: the configured `[http] listen` (for `web-link`).
/// `pinch admin audit list [--limit N] [--offset N] [--json]`: read from
/// the secret store itself; `None` for any other words.
pub fn audit_words(data_dir: &Path, words: &[String]) -> Option<u8> {
    if words.first().map(String::as_str) != Some("audit") {
        return None;
    }
    let (mut limit, mut offset, mut json) = (200usize, 0usize, false);
    let mut it = words[1..].iter();
    if it.next().map(String::as_str) != Some("list") {
        eprintln!("pinch admin: audit has one verb: list (pinch admin audit list [--limit N] [--offset N] [--json])");
        return Some(2);
    }
    while let Some(w) = it.next() {
        let num = |v: Option<&String>| v.and_then(|v| v.parse::<usize>().ok());
        match w.as_str() {
            "--json" => json = true,
            "--limit" => match num(it.next()) {
                Some(n) => limit = n,
                None => {
                    eprintln!("pinch admin: --limit needs a number");
                    return Some(2);
                }
            },
            "--offset" => match num(it.next()) {
                Some(n) => offset = n,
                None => {
                    eprintln!("pinch admin: --offset needs a number");
                    return Some(2);
                }
            },
            other => {
                eprintln!(
                    "pinch admin: audit list takes --limit, --offset and --json, not {other:?}"
                );
                return Some(2);
            }
        }
    }
    let store = pinch_host::secrets::Store::new(data_dir, std::path::PathBuf::new());
    match crate::secrets::audit(&store, limit, offset, json, &mut std::io::stdout()) {
        Ok(()) => Some(0),
        Err(e) => {
            eprintln!("pinch admin: {e:#}");
            Some(1)
        }
    }
}

pub fn run(data_dir: &Path, listen: Option<std::net::SocketAddr>, a: AdminArgs) -> i32 {
    // Local, no host needed: a one-time login link for a browser.
    if let Some(w @ ("web-link" | "dashboard-link")) = a.words.first().map(String::as_str) {
        let listen = listen.unwrap_or_else(|| {
            pinch_host::config::HttpSettings::DEFAULT_LISTEN
                .parse()
                .expect("a valid default")
        });
        let path = if w == "web-link" { "/" } else { "/dashboard" };
        return match pinch_host::web_login_url(data_dir, listen, path) {
            Ok(u) => {
                println!("{u}");
                0
            }
            Err(e) => {
                eprintln!("pinch admin: {e:#}");
                1
            }
        };
    }
    // Local, no host needed: the web chat token (made if missing).
    if a.words.first().map(String::as_str) == Some("web-token") {
        return match pinch_host::web_token(data_dir) {
            Ok(t) => {
                println!("{t}");
                0
            }
            Err(e) => {
                eprintln!("pinch admin: {e:#}");
                1
            }
        };
    }
    let p = match parse(&a.words) {
        Ok(Parse::Help) => {
            print!("{}", help());
            return 0;
        }
        Ok(Parse::Request(p)) => p,
        Err(msg) => {
            eprintln!(
                "pinch admin: {msg}\n{USAGE} (`pinch admin --help` lists resources and verbs)"
            );
            return 2;
        }
    };
    let sock = data_dir.join("run/admin.sock");
    let command = format!("{}-{}", p.resource, p.verb);
    let args = Value::Object(p.args);
    // The arguments typed as the host will type them: a bad one is the
    // host's own `invalid-args`, without the round trip.
    let resp = if let Err(e) = AdminCommand::parse(&command, &args) {
        json!({"id": 1, "ok": false, "error": {"code": e.code, "message": e.message}})
    } else {
        let req = json!({"id": 1, "command": command, "args": args});
        match call(&sock, &req) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pinch admin: cannot reach the host at {}: {e} (is `pinch host` running for this data dir?)", sock.display());
                return 2;
            }
        }
    };
    if p.json {
        println!("{resp}");
    }
    if resp["ok"] != json!(true) {
        let code = resp["error"]["code"].as_str().unwrap_or("error");
        let msg = resp["error"]["message"].as_str().unwrap_or("");
        eprintln!("pinch admin: {code}: {msg}");
        return if matches!(code, "unknown-command" | "invalid-args") {
            2
        } else {
            1
        };
    }
    if !p.json {
        print!("{}", render(&p.resource, &p.verb, &resp["data"]));
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

/// Widest a table column gets; longer cells end in `…`.
const MAX_WIDTH: usize = 40;

/// A value as a table shows it. Control characters are escaped: an
/// agent writes some of what is listed (skill names and descriptions), and
/// must not drive the owner's terminal.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => return "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn clip(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A text table: a header of the column names in upper case, then one
/// line per row; each column as wide as its widest cell, at most
/// [`MAX_WIDTH`].
pub fn table(cols: &[String], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| clip(&cell(&r[c.as_str()]), MAX_WIDTH))
                .collect()
        })
        .collect();
    let mut w: Vec<usize> = cols
        .iter()
        .map(|c| c.chars().count().min(MAX_WIDTH))
        .collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = w[i]))
            .collect::<Vec<_>>()
            .join("  ");
        format!("{}\n", s.trim_end())
    };
    let mut out = line(
        cols.iter()
            .map(|c| clip(&c.to_uppercase(), MAX_WIDTH))
            .collect(),
    );
    for row in cells {
        out.push_str(&line(row));
    }
    out
}

/// The columns of a generic list: the first row's keys, the identifying
/// ones first (the host's objects come with sorted keys).
fn columns(first: &Map<String, Value>) -> Vec<String> {
    const LEAD: [&str; 6] = ["id", "name", "user", "role", "ag", "mg"];
    let mut cols: Vec<String> = LEAD
        .iter()
        .filter(|k| first.contains_key(**k))
        .map(|k| (*k).to_owned())
        .collect();
    cols.extend(
        first
            .keys()
            .filter(|k| !LEAD.contains(&k.as_str()))
            .cloned(),
    );
    cols
}

/// The human output of a successful response.
pub fn render(resource: &str, verb: &str, data: &Value) -> String {
    match (resource, verb, data) {
        ("sessions", "list", Value::Array(rows)) => {
            let cols: Vec<String> = [
                "id",
                "agent_group",
                "runner",
                "quarantined_at",
                "exits",
                "last_exit",
            ]
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
            let mut out = table(&cols, rows);
            for r in rows {
                if let Some(reason) = r["quarantine_reason"].as_str() {
                    out.push_str(&format!("\n{} is quarantined: {reason}\n  resume with: pinch admin sessions resume {}\n", cell(&r["id"]), cell(&r["id"])));
                }
            }
            out
        }
        (_, _, Value::Array(rows)) if rows.is_empty() => "(none)\n".into(),
        (_, _, Value::Array(rows)) => match rows[0].as_object() {
            Some(first) => table(&columns(first), rows),
            None => rows.iter().map(|r| format!("{}\n", cell(r))).collect(),
        },
        (_, _, Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", cell(v)))
            .collect(),
        (_, _, other) => format!("{}\n", cell(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_never_carry_control_characters_to_the_terminal() {
        assert_eq!(
            cell(&serde_json::json!("a\u{1b}[31mred\nline")),
            "a\\u{1b}[31mred\\nline"
        );
        assert_eq!(cell(&serde_json::json!("plain – ok")), "plain – ok");
        assert_eq!(cell(&Value::Null), "-");
    }

    fn p(words: &[&str]) -> Result<Parse, String> {
        parse(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>())
    }

    fn req(words: &[&str]) -> Parsed {
        match p(words) {
            Ok(Parse::Request(r)) => r,
            other => panic!("{words:?}: {other:?}"),
        }
    }

    #[test]
    fn parses_positional_id_and_key_values() {
        let r = req(&[
            "wirings",
            "create",
            "--mg",
            "mg-1",
            "--engage-mode",
            "pattern",
            "--engage_pattern",
            "^!ask",
            "--priority=-3",
            "--json",
        ]);
        assert_eq!(
            (r.resource.as_str(), r.verb.as_str(), r.json),
            ("wirings", "create", true)
        );
        assert_eq!(
            Value::Object(r.args),
            json!({"mg": "mg-1", "engage_mode": "pattern", "engage_pattern": "^!ask", "priority": "-3"})
        );
        let r = req(&["--json", "groups", "get", "main"]);
        assert!(r.json);
        assert_eq!(r.args["id"], "main");
        // a value may start with one '-' (a negative id), not with two
        let r = req(&[
            "messaging-groups",
            "create",
            "--platform-id",
            "-1001",
            "--channel-type",
            "telegram",
        ]);
        assert_eq!(r.args["platform_id"], "-1001");
        let r = req(&["users", "update", "telegram:1", "--display-name=--odd--"]);
        assert_eq!(r.args["display_name"], "--odd--");
    }

    #[test]
    fn usage_errors_name_the_fix() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "give a resource and a verb"),
            (
                &["wiring", "list"],
                "unknown resource \"wiring\"; resources: groups, messaging-groups",
            ),
            (
                &["wirings"],
                "give a verb for wirings; verbs: list, get, create, update, delete",
            ),
            (
                &["wirings", "lst"],
                "unknown verb \"lst\" for wirings; verbs: list, get, create, update, delete",
            ),
            (&["groups", "get"], "groups get needs an id"),
            (&["sessions", "close"], "sessions close needs an id"),
            (
                &["users", "create", "--kind", "x"],
                "users create needs an id",
            ),
            (&["groups", "create", "--name"], "--name needs a value"),
            (
                &["groups", "create", "--name", "--folder", "x"],
                "--name needs a value",
            ),
            (&["groups", "get", "a", "b"], "unexpected argument \"b\""),
            (
                &["groups", "create", "--name", "a", "--name", "b"],
                "--name given twice",
            ),
            (&["groups", "get", "a", "--id", "b"], "given twice"),
            (&["groups", "create", "--na me", "x"], "not a --key"),
            (&["sessions", "list", "-x"], "unknown flag \"-x\""),
            (&["groups", "list", "--json", "-q"], "unknown flag \"-q\""),
        ];
        for (words, needle) in cases {
            match p(words) {
                Err(m) => assert!(m.contains(needle), "{words:?}: {m:?} lacks {needle:?}"),
                Ok(x) => panic!("{words:?} parsed: {x:?}"),
            }
        }
        assert_eq!(p(&["--help"]), Ok(Parse::Help));
        assert_eq!(p(&["groups", "create", "-h"]), Ok(Parse::Help));
        for r in Resource::ALL {
            let verbs: Vec<&str> = r.verbs().iter().map(|v| v.as_str()).collect();
            assert!(
                help().contains(&format!("{:<18}{}", r.as_str(), verbs.join(", "))),
                "{r}"
            );
        }
    }

    #[test]
    fn takes_global_flags_given_after_admin() {
        let mut a = AdminArgs {
            words: [
                "groups",
                "list",
                "--data-dir",
                "/d",
                "--config=/c.toml",
                "--limit",
                "5",
            ]
            .iter()
            .map(|w| (*w).to_owned())
            .collect(),
        };
        assert_eq!(
            a.take_globals().unwrap(),
            (Some(PathBuf::from("/d")), Some(PathBuf::from("/c.toml")))
        );
        assert_eq!(a.words, ["groups", "list", "--limit", "5"]);
        let mut a = AdminArgs {
            words: vec!["groups".into(), "list".into(), "--data-dir".into()],
        };
        assert!(a
            .take_globals()
            .unwrap_err()
            .contains("--data-dir needs a value"));
    }

    #[test]
    fn renders_tables_and_objects() {
        let rows = json!([
            {"ag": "main", "created_at": "t1", "id": "w-1", "engage_pattern": null, "priority": 0},
            {"ag": "ag-research-with-a-very-long-name-indeed-yes", "created_at": "t2", "id": "w-2", "engage_pattern": ".", "priority": 10},
        ]);
        let t = render("wirings", "list", &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID   AG"), "{t}");
        assert!(
            lines[0].contains("CREATED_AT")
                && lines[0].contains("ENGAGE_PATTERN")
                && lines[0].contains("PRIORITY")
        );
        assert!(lines[1].starts_with("w-1  main"), "{t}");
        assert!(lines[1].contains(" - "), "null shows as -: {t}");
        assert!(
            lines[2].contains("ag-research-with-a-very-long-name-indee…"),
            "{t}"
        );
        assert!(!lines[2].contains("yes"));
        assert_eq!(render("wirings", "list", &json!([])), "(none)\n");
        let o = render(
            "groups",
            "get",
            &json!({"id": "main", "wirings": 1, "provider": null, "x": {"a": [1]}}),
        );
        assert_eq!(o, "id: main\nprovider: -\nwirings: 1\nx: {\"a\":[1]}\n");
        let s = render(
            "sessions",
            "list",
            &json!([{"id": "s1", "agent_group": "main", "runner": "stopped", "quarantined_at": "t", "exits": 3, "last_exit": "fatal", "quarantine_reason": "crash loop"}]),
        );
        assert!(
            s.contains("s1 is quarantined: crash loop")
                && s.contains("pinch admin sessions resume s1"),
            "{s}"
        );
    }
}
