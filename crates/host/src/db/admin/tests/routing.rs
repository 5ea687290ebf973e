//! `wirings-*` and `messaging-groups-*`.

use super::*;

#[test]
fn wirings_validate_and_add_their_destination() {
    let (_d, c) = db();
    ok(&c, "groups-create", json!({"name": "r"}));
    let mg = ok(
        &c,
        "messaging-groups-create",
        json!({"channel_type": "telegram", "platform_id": "-1001", "is_group": "1"}),
    );
    let mg_id = mg["id"].as_str().unwrap().to_owned();
    assert!(
        mg_id.starts_with("mg-telegram-") && mg_id.len() == "mg-telegram-".len() + 8,
        "{mg_id}"
    );
    assert_eq!(mg["is_group"], 1);
    assert_eq!(mg["unknown_sender_policy"], "request_approval");
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"ag": "ag-r", "engage_mode": "mention"}),
            "invalid-args",
            "--mg",
        ),
        (
            json!({"mg": mg_id, "engage_mode": "mention"}),
            "invalid-args",
            "--ag",
        ),
        (
            json!({"mg": mg_id, "ag": "ag-r"}),
            "invalid-args",
            "--engage_mode",
        ),
        (
            json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "always"}),
            "invalid-args",
            "pattern, mention, mention-sticky",
        ),
        (
            json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "pattern"}),
            "invalid-args",
            "--engage_pattern",
        ),
        (
            json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "pattern", "engage_pattern": "(unclosed"}),
            "invalid-args",
            "(unclosed",
        ),
        (
            json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "mention", "sender_scope": "some"}),
            "invalid-args",
            "--sender_scope",
        ),
        (
            json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "mention", "priority": "high"}),
            "invalid-args",
            "--priority",
        ),
        (
            json!({"mg": "mg-nope", "ag": "ag-r", "engage_mode": "mention"}),
            "not-found",
            "mg-nope",
        ),
        (
            json!({"mg": mg_id, "ag": "ag-nope", "engage_mode": "mention"}),
            "not-found",
            "ag-nope",
        ),
        (
            json!({"mg": mg_id, "messaging_group": "other", "ag": "ag-r", "engage_mode": "mention"}),
            "invalid-args",
            "give it once",
        ),
    ];
    for (args, code, needle) in cases {
        let e = fails(&c, &Caller::Owner, "wirings-create", args.clone());
        assert_eq!(e.code, code, "{args}: {}", e.message);
        assert!(
            e.message.contains(needle),
            "{args}: {:?} lacks {needle:?}",
            e.message
        );
    }
    let e = fails(
        &c,
        &Caller::Owner,
        "wirings-create",
        json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "pattern", "engage_pattern": "a{2"}),
    );
    assert!(e.message.contains("not a valid regex"), "{}", e.message);

    // aliases, string ints, defaults
    let w = ok(
        &c,
        "wirings-create",
        json!({"messaging_group": mg_id, "agent_group": "ag-r", "engage_mode": "pattern", "engage_pattern": ".", "priority": "3"}),
    );
    assert_eq!(w["priority"], 3);
    assert_eq!(w["sender_scope"], "known");
    assert_eq!(w["ignored_message_policy"], "drop");
    assert_eq!(w["session_mode"], "shared");
    // no name → platform id, sanitized
    assert_eq!(w["destination_added"], "1001");
    let d = c.destinations("ag-r").unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].name.as_str(), d[0].platform_id.as_deref()),
        ("1001", Some("-1001"))
    );
    // the router sees it
    assert_eq!(c.wirings(&mg_id).unwrap()[0].agent_group_id, "ag-r");
    let e = fails(
        &c,
        &Caller::Owner,
        "wirings-create",
        json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "mention"}),
    );
    assert!(
        e.code == "invalid-args" && e.message.contains("already wired"),
        "{}",
        e.message
    );

    // a taken local name is left alone (INSERT OR IGNORE)
    ok(
        &c,
        "messaging-groups-create",
        json!({"id": "mg-b", "channel_type": "slack", "platform_id": "C1", "name": "Terminal"}),
    );
    let w2 = ok(
        &c,
        "wirings-create",
        json!({"mg": "mg-b", "ag": "main", "engage_mode": "mention-sticky"}),
    );
    assert_eq!(w2["destination_added"], Value::Null);
    let main = c.destinations("main").unwrap();
    assert_eq!(
        main.iter()
            .find(|d| d.name == "terminal")
            .unwrap()
            .platform_id
            .as_deref(),
        Some("local")
    );

    // update: mode pattern needs a pattern; a bad one names the error
    let wid = w2["id"].as_str().unwrap();
    let e = fails(
        &c,
        &Caller::Owner,
        "wirings-update",
        json!({"id": wid, "engage_mode": "pattern"}),
    );
    assert!(e.message.contains("--engage_pattern"), "{}", e.message);
    let e = fails(
        &c,
        &Caller::Owner,
        "wirings-update",
        json!({"id": wid, "engage_pattern": "[z-a]"}),
    );
    assert!(
        e.message.contains("[z-a]") && e.message.contains("regex"),
        "{}",
        e.message
    );
    let u = ok(
        &c,
        "wirings-update",
        json!({"id": wid, "engage_mode": "pattern", "engage_pattern": "^!ask", "session_mode": "per-thread"}),
    );
    assert_eq!(
        (u["engage_pattern"].as_str(), u["session_mode"].as_str()),
        (Some("^!ask"), Some("per-thread"))
    );
    // filters
    assert_eq!(
        ids(&ok(&c, "wirings-list", json!({"ag": "main"})), "id"),
        ["w-main-terminal", wid]
    );
    assert_eq!(
        ids(&ok(&c, "wirings-list", json!({"mg": "mg-b"})), "id"),
        [wid]
    );
    // delete tells what destinations remain
    let del = ok(&c, "wirings-delete", json!({"id": w["id"]}));
    assert_eq!(del["destinations_kept"], json!(["1001"]));
    assert_eq!(
        fails(&c, &Caller::Owner, "wirings-get", json!({"id": w["id"]})).code,
        "not-found"
    );
}

#[test]
fn messaging_groups_crud_deny_and_unique() {
    let (_d, c) = db();
    let e = fails(
        &c,
        &Caller::Owner,
        "messaging-groups-create",
        json!({"channel_type": "cli", "platform_id": "local"}),
    );
    assert_eq!(e.code, "invalid-args");
    assert!(
        e.message.contains("already exists") && e.message.contains("mg-cli-local"),
        "{}",
        e.message
    );
    let e = fails(
        &c,
        &Caller::Owner,
        "messaging-groups-create",
        json!({"id": "mg-cli-local", "channel_type": "cli", "platform_id": "other"}),
    );
    assert!(
        e.code == "invalid-args" && e.message.contains("already exists"),
        "{}",
        e.message
    );
    let e = fails(
        &c,
        &Caller::Owner,
        "messaging-groups-create",
        json!({"channel_type": "tg", "platform_id": "1", "unknown_sender_policy": "open"}),
    );
    assert!(
        e.message.contains("strict, request_approval, public"),
        "{}",
        e.message
    );
    let e = fails(
        &c,
        &Caller::Owner,
        "messaging-groups-create",
        json!({"channel_type": "tg"}),
    );
    assert!(e.message.contains("--platform_id"), "{}", e.message);
    let mg = ok(
        &c,
        "messaging-groups-create",
        json!({"id": "mg-x", "channel_type": "tg", "platform_id": 42, "unknown_sender_policy": "public"}),
    );
    assert_eq!(mg["platform_id"], "42");
    let d = ok(&c, "messaging-groups-deny", json!({"id": "mg-x"}));
    assert!(d["denied_at"].is_string());
    assert!(c
        .messaging_group("tg", "42")
        .unwrap()
        .unwrap()
        .denied_at
        .is_some());
    assert_eq!(
        ok(&c, "messaging-groups-undeny", json!({"id": "mg-x"}))["denied_at"],
        Value::Null
    );
    assert_eq!(
        ok(
            &c,
            "messaging-groups-update",
            json!({"id": "mg-x", "name": "Chat", "is_group": false})
        )["name"],
        "Chat"
    );
    assert_eq!(
        fails(
            &c,
            &Caller::Owner,
            "messaging-groups-update",
            json!({"id": "mg-nope", "name": "x"})
        )
        .code,
        "not-found"
    );
    ok(
        &c,
        "destinations-add",
        json!({"ag": "main", "name": "chat", "target_type": "channel", "target": "mg-x"}),
    );
    let del = ok(&c, "messaging-groups-delete", json!({"id": "mg-x"}));
    assert_eq!(del["destinations_removed"], 1);
    assert_eq!(
        fails(
            &c,
            &Caller::Owner,
            "messaging-groups-get",
            json!({"id": "mg-x"})
        )
        .code,
        "not-found"
    );
    // with an active session: refused
    c.insert_session(
        &crate::db::central::SessionRow {
            id: "s1".into(),
            agent_group_id: "main".into(),
            messaging_group_id: Some("mg-cli-local".into()),
            thread_id: None,
            folder: "main".into(),
        },
        "scripted",
    )
    .unwrap();
    let e = fails(
        &c,
        &Caller::Owner,
        "messaging-groups-delete",
        json!({"id": "mg-cli-local"}),
    );
    assert!(
        e.message.contains("s1") && e.message.contains("pinch admin sessions close"),
        "{}",
        e.message
    );
}
