//! The admin handlers against a real temp `pinch.db`, by resource; the
//! vocabulary's own parsing is tested in `pinch_policy::admin`.

use super::*;
use crate::db::central::Central;
use serde_json::json;

mod groups;
mod people;
mod routing;
mod scope;

fn db() -> (tempfile::TempDir, Central) {
    let d = tempfile::tempdir().unwrap();
    let mut c = Central::open(&d.path().join("pinch.db")).unwrap();
    c.bootstrap("alice").unwrap();
    (d, c)
}

fn call(c: &Central, caller: &Caller, cmd: &str, args: Value) -> Reply {
    dispatch(&c.conn, caller, cmd, &args).unwrap_or_else(|| panic!("{cmd} is not served here"))
}

fn ok(c: &Central, cmd: &str, args: Value) -> Value {
    call(c, &Caller::Owner, cmd, args)
        .unwrap_or_else(|e| panic!("{cmd}: {}: {}", e.code, e.message))
}

fn fails(c: &Central, caller: &Caller, cmd: &str, args: Value) -> ErrorBody {
    match call(c, caller, cmd, args) {
        Ok(v) => panic!("{cmd} should fail, gave {v}"),
        Err(e) => e,
    }
}

fn agent(ag: &str, scope: AdminScope) -> Caller {
    Caller::Agent {
        ag: ag.into(),
        scope,
    }
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].as_str().unwrap().to_owned())
        .collect()
}

/// main (bootstrap), plus ag-research with a member, a destination, a
/// messaging group and a wiring.
fn fixture() -> (tempfile::TempDir, Central) {
    let (d, c) = db();
    ok(&c, "groups-create", json!({"name": "Research"}));
    ok(
        &c,
        "messaging-groups-create",
        json!({"id": "mg-tg-fam", "channel_type": "telegram", "platform_id": "-100", "name": "Family"}),
    );
    ok(
        &c,
        "wirings-create",
        json!({"mg": "mg-tg-fam", "ag": "ag-research", "engage_mode": "mention"}),
    );
    ok(
        &c,
        "members-add",
        json!({"user": "telegram:7", "ag": "ag-research"}),
    );
    ok(
        &c,
        "members-add",
        json!({"user": "telegram:8", "ag": "main"}),
    );
    (d, c)
}

#[test]
fn lists_page_at_200() {
    let (_d, c) = db();
    for i in 0..250 {
        c.conn
            .execute(
                "INSERT INTO users (id, kind, created_at) VALUES (?1, 'telegram', ?2)",
                [
                    format!("telegram:{i:03}"),
                    format!("2030-01-01T00:00:{:02}.{:03}Z", i / 100, i % 100),
                ],
            )
            .unwrap();
    }
    let all = 251; // with the bootstrap owner
    assert_eq!(
        ok(&c, "users-list", json!({})).as_array().unwrap().len(),
        200
    );
    assert_eq!(
        ok(&c, "users-list", json!({"offset": "200"}))
            .as_array()
            .unwrap()
            .len(),
        all - 200
    );
    let page = ok(&c, "users-list", json!({"limit": "10", "offset": 5}));
    assert_eq!(page.as_array().unwrap().len(), 10);
    assert_eq!(
        page[0]["id"], "telegram:004",
        "ordered by creation; the owner is first"
    );
    assert_eq!(
        ok(&c, "users-list", json!({"kind": "cli"}))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for bad in [
        json!({"limit": 201}),
        json!({"limit": "0"}),
        json!({"limit": "ten"}),
        json!({"offset": -1}),
    ] {
        let e = fails(&c, &Caller::Owner, "users-list", bad.clone());
        assert_eq!(e.code, "invalid-args", "{bad}");
        assert!(
            e.message.contains("--limit") || e.message.contains("--offset"),
            "{}",
            e.message
        );
    }
}

#[test]
fn audit_and_approval_lists() {
    let (_d, c) = db();
    for (p, last) in [
        ("a", "2030-01-01T00:00:00.000Z"),
        ("b", "2030-01-03T00:00:00.000Z"),
        ("c", "2030-01-02T00:00:00.000Z"),
    ] {
        c.conn
            .execute(
                "INSERT INTO dropped_messages (channel_type, platform_id, reason, first_seen, last_seen) VALUES ('tg', ?1, 'unknown_sender', ?2, ?2)",
                [p, last],
            )
            .unwrap();
    }
    assert_eq!(
        ids(&ok(&c, "dropped-messages-list", json!({})), "platform_id"),
        ["b", "c", "a"]
    );
    assert_eq!(
        ok(&c, "dropped-messages-list", json!({"reason": "denied"})),
        json!([])
    );
    c.conn
        .execute(
            "INSERT INTO pending_approvals (approval_id, agent_group_id, action, payload, title, options_json, approver_user_id, expires_at, created_at)
             VALUES ('ap1', 'main', 'install_packages', '{\"packages\":[\"jq\"]}', 'Install jq?', '[]', 'cli:alice', 'x', 'y')",
            [],
        )
        .unwrap();
    assert_eq!(
        ids(
            &ok(&c, "approvals-list", json!({"status": "pending"})),
            "id"
        ),
        ["ap1"]
    );
    assert_eq!(
        ok(&c, "approvals-list", json!({"status": "approved"})),
        json!([])
    );
    assert_eq!(
        fails(
            &c,
            &Caller::Owner,
            "approvals-list",
            json!({"status": "open"})
        )
        .code,
        "invalid-args"
    );
    assert_eq!(
        ok(&c, "approvals-get", json!({"id": "ap1"}))["payload"],
        json!({"packages": ["jq"]})
    );
    assert_eq!(
        fails(&c, &Caller::Owner, "approvals-get", json!({"id": "ap2"})).code,
        "not-found"
    );
    c.conn
        .execute(
            "INSERT INTO user_dms VALUES ('cli:alice', 'cli', 'mg-cli-local', 'z')",
            [],
        )
        .unwrap();
    assert_eq!(ok(&c, "user-dms-list", json!({}))[0]["mg"], "mg-cli-local");
}

#[test]
fn sanitize_names() {
    // only [a-z0-9-] is kept; anything else separates
    for (raw, want) in [
        ("Family Chat", "family-chat"),
        ("--x--", "x"),
        ("-1001", "1001"),
        ("Ünï €", "n"),
        ("!!!", ""),
        ("a  b", "a-b"),
    ] {
        assert_eq!(sanitize_name(raw, 40), want, "{raw}");
    }
    assert_eq!(
        sanitize_name(&format!("{}-b", "a".repeat(39)), 40),
        "a".repeat(39)
    );
}
