//! `pinch admin` as a user runs it: the real binary as a subprocess against
//! a host running in this process (process sandbox), over its admin socket.
//! Exit codes and output are checked, and what the commands change is
//! checked where it matters: in how the live host routes a message.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use pinch_channels::cli_socket::{ClientMsg, ServerMsg};
use pinch_host::sandbox::Choice;
use serde_json::Value;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `pinch --data-dir DATA admin ARGS`, isolated from the caller's config.
fn admin(data: &Path, args: &[&str]) -> Out {
    let out = Command::new(PINCH)
        .arg("--data-dir")
        .arg(data)
        .arg("admin")
        .args(args)
        .env_remove("PINCH_HOME")
        .env_remove("PINCH_CONFIG")
        .env("XDG_CONFIG_HOME", data.join("no-config"))
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(data: &Path, args: &[&str]) -> Out {
    let o = admin(data, args);
    assert_eq!(o.code, 0, "pinch admin {args:?}: {o:?}");
    o
}

fn fails(data: &Path, args: &[&str], code: i32, needle: &str) -> Out {
    let o = admin(data, args);
    assert_eq!(o.code, code, "pinch admin {args:?}: {o:?}");
    assert!(
        o.stderr.contains(needle),
        "pinch admin {args:?}: stderr lacks {needle:?}: {o:?}"
    );
    o
}

/// `--json` output: the raw response, `ok: true`; returns its data.
fn json(data: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let o = ok(data, &a);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o:?}"));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["id"], 1);
    v["data"].clone()
}

/// Sends a chat line through the CLI socket; returns how many agents took it
/// and the host's note.
fn routed(c: &mut Client, text: &str, cid: &str) -> (usize, Option<String>) {
    c.send(&ClientMsg::Message {
        text: text.into(),
        client_id: Some(cid.into()),
        key: None,
    });
    loop {
        match c.recv().expect("host closed") {
            ServerMsg::Accepted {
                client_id: Some(x),
                routed,
                note,
                ..
            } if x == cid => return (routed, note),
            ServerMsg::Rejected {
                client_id: Some(x),
                error,
            } if x == cid => panic!("rejected: {error}"),
            ServerMsg::Message { id, .. } => c.send(&ClientMsg::Ack { id }),
            _ => {}
        }
    }
}

#[test]
fn admin_cli_against_a_running_host() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = host_config(tmp.path(), Choice::Process);
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();

    // groups: create (folder and id from the name), refuse a reserved folder
    let o = ok(&data, &["groups", "create", "--name", "Research Lab"]);
    assert!(
        o.stdout.contains("id: ag-research-lab\n") && o.stdout.contains("folder: research-lab\n"),
        "{o:?}"
    );
    assert!(o.stdout.contains("admin_scope: disabled\n"), "{o:?}");
    let o = fails(
        &data,
        &["groups", "create", "--name", "x", "--folder", "global"],
        2,
        "invalid-args",
    );
    assert!(o.stderr.contains("reserved"), "{o:?}");
    fails(
        &data,
        &["groups", "create", "--name", "Research Lab"],
        2,
        "already exists",
    );
    fails(&data, &["groups", "get", "ag-nope"], 1, "not-found");
    let cfg = json(
        &data,
        &[
            "groups",
            "config-set",
            "ag-research-lab",
            "--batch-size",
            "4",
            "--egress-allow",
            "[\"api.github.com\"]",
        ],
    );
    assert_eq!(cfg["batch_size"], 4);
    assert_eq!(cfg["egress_allow"], serde_json::json!(["api.github.com"]));
    fails(
        &data,
        &[
            "groups",
            "config-set",
            "ag-research-lab",
            "--egress-allow",
            "[nope",
        ],
        2,
        "not valid JSON",
    );

    // a messaging group, then wirings: a bad regex is refused naming it
    let mg = json(
        &data,
        &[
            "messaging-groups",
            "create",
            "--channel-type",
            "telegram",
            "--platform-id",
            "-1001",
            "--name",
            "Family",
        ],
    );
    let mg_id = mg["id"].as_str().unwrap().to_owned();
    assert!(mg_id.starts_with("mg-telegram-"), "{mg}");
    let o = fails(
        &data,
        &[
            "wirings",
            "create",
            "--mg",
            &mg_id,
            "--ag",
            "ag-research-lab",
            "--engage-mode",
            "pattern",
            "--engage-pattern",
            "(unclosed",
        ],
        2,
        "invalid-args",
    );
    assert!(
        o.stderr.contains("\"(unclosed\"") && o.stderr.contains("not a valid regex"),
        "{o:?}"
    );
    fails(
        &data,
        &[
            "wirings",
            "create",
            "--mg",
            &mg_id,
            "--ag",
            "ag-research-lab",
            "--engage-mode",
            "pattern",
        ],
        2,
        "--engage_pattern",
    );
    let o = ok(
        &data,
        &[
            "wirings",
            "create",
            "--mg",
            &mg_id,
            "--ag",
            "ag-research-lab",
            "--engage-mode",
            "mention",
            "--priority",
            "5",
        ],
    );
    assert!(o.stdout.contains("destination_added: family\n"), "{o:?}");
    let w_id = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("the wiring's id")
        .to_owned();
    assert!(w_id.starts_with("w-ag-research-lab-"), "{w_id}");

    // list: a table with the wiring; --json parses
    let o = ok(&data, &["wirings", "list"]);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID ")
            && lines[0].contains("ENGAGE_MODE")
            && lines[0].contains("PRIORITY"),
        "{o:?}"
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with(&w_id))
        .unwrap_or_else(|| panic!("no row for {w_id}: {o:?}"));
    assert!(
        row.contains("mention") && row.contains(&mg_id) && row.contains("ag-research-lab"),
        "{row}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("w-main-terminal")),
        "{o:?}"
    );
    let list = json(&data, &["wirings", "list", "--ag", "ag-research-lab"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        (list[0]["id"].as_str(), list[0]["priority"].as_i64()),
        (Some(w_id.as_str()), Some(5))
    );
    let dests = json(&data, &["destinations", "list", "ag-research-lab"]);
    assert_eq!(
        (dests[0]["name"].as_str(), dests[0]["target"].as_str()),
        (Some("family"), Some(mg_id.as_str()))
    );

    // roles: grant (admin of a group makes a member), revoke; never the last owner
    ok(
        &data,
        &[
            "roles",
            "grant",
            "telegram:42",
            "--role",
            "admin",
            "--ag",
            "ag-research-lab",
        ],
    );
    let o = ok(&data, &["roles", "list", "--ag", "ag-research-lab"]);
    assert!(
        o.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("telegram:42") && l.contains("admin")),
        "{o:?}"
    );
    assert!(ok(&data, &["members", "list", "ag-research-lab"])
        .stdout
        .contains("telegram:42"));
    fails(
        &data,
        &[
            "roles",
            "grant",
            "telegram:42",
            "--role",
            "owner",
            "--ag",
            "ag-research-lab",
        ],
        2,
        "always global",
    );
    ok(
        &data,
        &[
            "roles",
            "revoke",
            "telegram:42",
            "--role",
            "admin",
            "--ag",
            "ag-research-lab",
        ],
    );
    assert_eq!(
        ok(&data, &["roles", "list", "--ag", "ag-research-lab"]).stdout,
        "(none)\n"
    );
    fails(
        &data,
        &["roles", "revoke", "--user", "cli:tester", "--role", "owner"],
        1,
        "last owner",
    );

    // members: add, see, remove, remove again
    ok(
        &data,
        &["members", "add", "telegram:43", "--ag", "ag-research-lab"],
    );
    let m = json(&data, &["members", "list", "--ag", "ag-research-lab"]);
    assert!(
        m.as_array()
            .unwrap()
            .iter()
            .any(|r| r["user"] == "telegram:43"),
        "{m}"
    );
    assert_eq!(
        json(&data, &["users", "get", "telegram:43"])["kind"],
        "telegram"
    );
    ok(
        &data,
        &[
            "members",
            "remove",
            "telegram:43",
            "--ag",
            "ag-research-lab",
        ],
    );
    fails(
        &data,
        &[
            "members",
            "remove",
            "telegram:43",
            "--ag",
            "ag-research-lab",
        ],
        1,
        "not-found",
    );

    // what the commands change is what the live host routes by
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(
        routed(&mut c, "hello", "c1").0,
        1,
        "only main is wired to the terminal"
    );
    ok(
        &data,
        &[
            "wirings",
            "create",
            "--mg",
            "mg-cli-local",
            "--ag",
            "ag-research-lab",
            "--engage-mode",
            "pattern",
            "--engage-pattern",
            "^!ask",
        ],
    );
    assert_eq!(
        routed(&mut c, "hello again", "c2").0,
        1,
        "the pattern does not engage"
    );
    assert_eq!(
        routed(&mut c, "!ask research", "c3").0,
        2,
        "the pattern engages the second agent"
    );
    ok(&data, &["messaging-groups", "deny", "mg-cli-local"]);
    let (n, note) = routed(&mut c, "anyone?", "c4");
    assert_eq!(n, 0);
    assert!(note.unwrap_or_default().contains("denied"));
    ok(&data, &["messaging-groups", "undeny", "mg-cli-local"]);
    assert_eq!(routed(&mut c, "!ask back", "c5").0, 2);

    // deletes: main never; a group with a live session not before it is closed
    fails(&data, &["groups", "delete", "main"], 1, "cannot be deleted");
    let o = fails(
        &data,
        &["groups", "delete", "ag-research-lab"],
        1,
        "forbidden",
    );
    assert!(o.stderr.contains("pinch admin sessions close"), "{o:?}");
    ok(&data, &["groups", "create", "--name", "Scratch"]);
    ok(
        &data,
        &[
            "wirings",
            "create",
            "--mg",
            &mg_id,
            "--ag",
            "ag-scratch",
            "--engage-mode",
            "mention-sticky",
        ],
    );
    let d = json(&data, &["groups", "delete", "ag-scratch"]);
    assert_eq!(d["deleted"], "ag-scratch");
    assert!(json(&data, &["wirings", "list", "--ag", "ag-scratch"])
        .as_array()
        .unwrap()
        .is_empty());
    ok(&data, &["wirings", "delete", &w_id]);
    fails(&data, &["wirings", "get", &w_id], 1, "not-found");
    ok(&data, &["messaging-groups", "delete", &mg_id]);
    fails(&data, &["messaging-groups", "get", &mg_id], 1, "not-found");

    // client-side usage errors: exit 2 with the fix, before any request
    let o = fails(
        &data,
        &["wirings", "lst"],
        2,
        "unknown verb \"lst\" for wirings; verbs: list, get, create, update, delete",
    );
    assert!(
        o.stderr.contains("usage: pinch admin <resource> <verb>"),
        "{o:?}"
    );
    fails(&data, &["wiring", "list"], 2, "unknown resource \"wiring\"");
    fails(
        &data,
        &["groups", "create", "--name"],
        2,
        "--name needs a value",
    );
    fails(&data, &["groups", "get"], 2, "groups get needs an id");
    fails(
        &data,
        &["groups", "create", "--name", "y", "--colour", "red"],
        2,
        "unknown argument --colour",
    );
    // the main loop's commands pass through; global flags after `admin` work
    assert!(ok(&data, &["sessions", "list"]).stdout.starts_with("ID "));
    let st = admin(
        tmp.path(),
        &[
            "host",
            "status",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(st.code, 0, "{st:?}");
    assert!(st.stdout.contains("\"live_runners\""), "{st:?}");
    let ch = json(&data, &["channels", "status"]);
    assert_eq!(ch[0]["channel"], "cli", "{ch}");
    assert_eq!(ch[0]["buttons"], true, "{ch}");
    let r = json(&data, &["groups", "restart", "main"]);
    assert_eq!(r["id"], "main", "{r}");
    fails(
        &data,
        &["groups", "restart", "nope"],
        1,
        "no agent group nope",
    );
    assert!(json(&data, &["host", "version"])["version"].is_string());
    let help = ok(&data, &["--help"]).stdout;
    assert!(
        help.contains("wirings           list, get, create, update, delete"),
        "{help}"
    );

    rt.block_on(host.shutdown()).unwrap();
    // no host: exit 2 with the transport message
    fails(&data, &["groups", "list"], 2, "cannot reach the host");
}

/// Every subcommand refuses a bad `--limit`, a negative one and an unknown
/// flag with exit 2 and the flag named, the main loop's commands (sessions,
/// tasks, host) as well as the central DB's (issue 15).
#[test]
fn admin_refuses_bad_limits_and_unknown_flags_in_every_subcommand() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = host_config(tmp.path(), Choice::Process);
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    for list in [
        &["sessions", "list"][..],
        &["tasks", "list"],
        &["groups", "list"],
        &["approvals", "list"],
    ] {
        let with = |extra: &[&'static str]| [list, extra].concat();
        fails(
            &data,
            &with(&["--limit", "abc"]),
            2,
            "--limit must be a whole number",
        );
        fails(
            &data,
            &with(&["--limit", "-5"]),
            2,
            "--limit must be between 1 and 200",
        );
        fails(
            &data,
            &with(&["--offset", "-1"]),
            2,
            "--offset must be 0 or more",
        );
        fails(
            &data,
            &with(&["--bogus", "1"]),
            2,
            "unknown argument --bogus",
        );
        fails(&data, &with(&["-x"]), 2, "unknown flag \"-x\"");
    }
    fails(
        &data,
        &["host", "status", "--verbose", "yes"],
        2,
        "unknown argument --verbose",
    );
    fails(
        &data,
        &["sessions", "stop", "s-x", "--force", "1"],
        2,
        "unknown argument --force",
    );
    // The main loop's lists are paged as --limit says.
    let mut c = Client::connect(&data.join("run/cli.sock"));
    c.say("hello", "c1");
    let all = json(&data, &["sessions", "list"]);
    assert!(!all.as_array().unwrap().is_empty(), "{all}");
    assert_eq!(
        json(&data, &["sessions", "list", "--limit", "1"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let past = json(&data, &["sessions", "list", "--offset", "1000"]);
    assert_eq!(past, serde_json::json!([]));
    rt.block_on(host.shutdown()).unwrap();
}

/// `pinch admin groups skills <id>`: the skills the group's agent sees —
/// the shipped examples installed globally, the agent's own one replacing
/// a global one of the same name, a broken one named with its error.
#[test]
fn groups_skills_lists_what_the_agent_sees() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = host_config(tmp.path(), Choice::Process);
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../skills");
    for name in ["daily-briefing", "summarise-web-page"] {
        let to = data.join("groups/global/skills").join(name);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(repo.join(name).join("SKILL.md"), to.join("SKILL.md")).unwrap();
    }
    let own = data.join("groups/main/skills/my-briefing");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(
        own.join("SKILL.md"),
        "---\nname: daily-briefing\ndescription: My own morning brief.\n---\nSteps.\n",
    )
    .unwrap();
    let broken = data.join("groups/main/skills/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("SKILL.md"), "no front matter\n").unwrap();

    let rows = json(&data, &["groups", "skills", "main"]);
    let rows = rows.as_array().unwrap();
    let find = |folder: &str| {
        rows.iter()
            .find(|r| r["folder"] == folder)
            .unwrap_or_else(|| panic!("{folder}: {rows:#?}"))
    };
    let global = find("/workspace/global/skills/daily-briefing");
    assert_eq!(
        (global["name"].as_str(), global["shadowed"].as_bool()),
        (Some("daily-briefing"), Some(true))
    );
    assert_eq!(
        find("/workspace/global/skills/summarise-web-page")["name"],
        "summarise-web-page"
    );
    assert_eq!(
        find("/workspace/agent/skills/my-briefing")["description"],
        "My own morning brief."
    );
    assert!(find("/workspace/agent/skills/broken")["error"]
        .as_str()
        .unwrap()
        .contains("must start with a `---` line"));
    let text = ok(&data, &["groups", "skills", "main"]);
    assert!(text.stdout.contains("summarise-web-page"), "{text:?}");
    fails(
        &data,
        &["groups", "skills", "nope"],
        1,
        "no agent group nope",
    );
    rt.block_on(host.shutdown()).unwrap();
}
