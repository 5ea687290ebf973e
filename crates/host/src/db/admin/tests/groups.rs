//! `groups-*` and their config.

use super::*;

#[test]
fn a_groups_disk_quota_must_be_a_positive_whole_number() {
    let (_d, c) = db();
    for bad in [
        json!({"disk_mb": 0}),
        json!({"disk_mb": "lots"}),
        json!({"disk_mb": -1}),
    ] {
        let e = dispatch(
            &c.conn,
            &Caller::Owner,
            "groups-config-set",
            &json!({"id": "main", "sandbox": bad}),
        )
        .unwrap()
        .unwrap_err();
        assert!(
            e.message
                .contains("disk_mb is a whole number of MiB, at least 1"),
            "{bad}: {}",
            e.message
        );
    }
    assert!(dispatch(
        &c.conn,
        &Caller::Owner,
        "groups-config-set",
        &json!({"id": "main", "sandbox": {"disk_mb": 1}}),
    )
    .unwrap()
    .is_ok());
}

#[test]
fn groups_create_validates_and_defaults() {
    let (_d, c) = db();
    let g = ok(&c, "groups-create", json!({"name": "My Research!! Lab"}));
    assert_eq!(g["id"], "ag-my-research-lab");
    assert_eq!(g["folder"], "my-research-lab");
    assert_eq!(g["admin_scope"], "disabled");
    assert_eq!(g["can_create_agents"], 0);
    let long = "x".repeat(60);
    assert_eq!(
        ok(&c, "groups-create", json!({"name": long}))["folder"]
            .as_str()
            .unwrap()
            .len(),
        40
    );

    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({}), "invalid-args", "--name"),
        (json!({"name": "  "}), "invalid-args", "--name"),
        (json!({"name": "Global"}), "invalid-args", "reserved"),
        (
            json!({"name": "x", "folder": "global"}),
            "invalid-args",
            "reserved",
        ),
        (
            json!({"name": "x", "folder": ".."}),
            "invalid-args",
            "plain folder",
        ),
        (
            json!({"name": "x", "folder": "a/b"}),
            "invalid-args",
            "plain folder",
        ),
        (
            json!({"name": "x", "folder": "Bad Folder"}),
            "invalid-args",
            "--folder research",
        ),
        (
            json!({"name": "x", "folder": "y".repeat(41)}),
            "invalid-args",
            "1 to 40",
        ),
        (json!({"name": "!!!"}), "invalid-args", "--folder"),
        (json!({"name": "Main"}), "invalid-args", "already exists"),
        (
            json!({"name": "x", "folder": "main", "id": "ag-other"}),
            "invalid-args",
            "folder \"main\" already exists",
        ),
        (
            json!({"name": "x", "id": "../evil"}),
            "invalid-args",
            "group id",
        ),
        (
            json!({"name": "x", "colour": "red"}),
            "invalid-args",
            "unknown argument --colour",
        ),
        (json!("not an object"), "invalid-args", "JSON object"),
    ];
    for (args, code, needle) in cases {
        let e = fails(&c, &Caller::Owner, "groups-create", args.clone());
        assert_eq!(e.code, code, "{args}: {}", e.message);
        assert!(
            e.message.contains(needle),
            "{args}: {:?} lacks {needle:?}",
            e.message
        );
    }
    // "Main" → folder main exists: the id ag-main is free, the folder not
    let n: i64 = c
        .conn
        .query_row("SELECT count(*) FROM agent_groups", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3, "failed creates left no rows");
    let n: i64 = c
        .conn
        .query_row("SELECT count(*) FROM agent_configs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        n, 3,
        "every group has its config row, and a failed create left none"
    );
}

#[test]
fn config_set_validates_types_and_json() {
    let (_d, c) = db();
    ok(&c, "groups-create", json!({"name": "r"}));
    let cfg = ok(
        &c,
        "groups-config-set",
        json!({"id": "ag-r", "batch_size": "5", "can_create_agents": "true", "egress_allow": "[\"api.github.com\"]", "sandbox": {"memory_mb": 512}, "model": "m"}),
    );
    assert_eq!(cfg["batch_size"], 5);
    assert_eq!(cfg["can_create_agents"], 1);
    assert_eq!(cfg["egress_allow"], json!(["api.github.com"]));
    assert_eq!(cfg["sandbox"], json!({"memory_mb": 512}));
    assert_eq!(
        c.egress_allow("ag-r").unwrap(),
        vec!["api.github.com".to_owned()]
    );
    let cfg = ok(
        &c,
        "groups-config-set",
        json!({"id": "ag-r", "can_create_agents": "0", "model": "", "batch_size": null}),
    );
    assert_eq!(cfg["can_create_agents"], 0);
    assert_eq!(cfg["model"], Value::Null);
    assert_eq!(cfg["batch_size"], Value::Null);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"id": "ag-r"}),
            "invalid-args",
            "needs something to set",
        ),
        (
            json!({"id": "ag-r", "batch_size": "lots"}),
            "invalid-args",
            "--batch_size must be a whole number",
        ),
        (
            json!({"id": "ag-r", "batch_size": "0"}),
            "invalid-args",
            "at least 1",
        ),
        (
            json!({"id": "ag-r", "can_create_agents": "maybe"}),
            "invalid-args",
            "true or false",
        ),
        (
            json!({"id": "ag-r", "admin_scope": "all"}),
            "invalid-args",
            "disabled, group, global",
        ),
        (
            json!({"id": "ag-r", "egress_allow": "[oops"}),
            "invalid-args",
            "not valid JSON",
        ),
        (
            json!({"id": "ag-r", "egress_allow": "{\"a\":1}"}),
            "invalid-args",
            "host patterns",
        ),
        (
            json!({"id": "ag-r", "mcp_servers": "[{\"name\":\"x\"}]"}),
            "invalid-args",
            "command",
        ),
        (
            json!({"id": "ag-r", "sandbox": "[]"}),
            "invalid-args",
            "JSON object",
        ),
        (json!({"id": "nope", "model": "m"}), "not-found", "nope"),
        (json!({"model": "m"}), "invalid-args", "needs an id"),
    ];
    for (args, code, needle) in cases {
        let e = fails(&c, &Caller::Owner, "groups-config-set", args.clone());
        assert_eq!(e.code, code, "{args}: {}", e.message);
        assert!(
            e.message.contains(needle),
            "{args}: {:?} lacks {needle:?}",
            e.message
        );
    }
}

#[test]
fn delete_main_and_groups_with_active_sessions_are_refused() {
    let (_d, c) = fixture();
    let e = fails(&c, &Caller::Owner, "groups-delete", json!({"id": "main"}));
    assert_eq!(e.code, "forbidden");
    assert!(e.message.contains("main"));
    let s = |id: &str, status: &str| {
        c.insert_session(
            &crate::db::central::SessionRow {
                id: id.into(),
                agent_group_id: "ag-research".into(),
                messaging_group_id: Some("mg-tg-fam".into()),
                thread_id: Some(id.into()),
                folder: "research".into(),
            },
            "scripted",
        )
        .unwrap();
        c.conn
            .execute(
                "UPDATE sessions SET status = ?2 WHERE id = ?1",
                [id, status],
            )
            .unwrap();
    };
    s("s-old", "closed");
    s("s-live", "active");
    c.record_exit("s-old", "r1", "t", Some(0), None, "idle", None)
        .unwrap();
    let e = fails(
        &c,
        &Caller::Owner,
        "groups-delete",
        json!({"id": "ag-research"}),
    );
    assert_eq!(e.code, "forbidden");
    assert!(
        e.message.contains("s-live") && e.message.contains("pinch admin sessions close <id>"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("s-old"));
    c.conn
        .execute(
            "UPDATE sessions SET status = 'closed' WHERE id = 's-live'",
            [],
        )
        .unwrap();
    // another group's destination pointing at it goes too
    ok(
        &c,
        "destinations-add",
        json!({"ag": "main", "name": "research", "target_type": "agent", "target": "ag-research"}),
    );
    let r = ok(&c, "groups-delete", json!({"id": "ag-research"}));
    assert_eq!(r["closed_sessions_forgotten"], 2);
    assert_eq!(r["destinations_removed"], 1);
    assert_eq!(r["folder_kept"], "groups/research");
    for table in [
        "wirings",
        "agent_group_members",
        "agent_configs",
        "agent_destinations",
        "sessions",
    ] {
        let n: i64 = c
            .conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE agent_group_id = 'ag-research'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let n: i64 = c
        .conn
        .query_row(
            "SELECT count(*) FROM agent_destinations WHERE target_id = 'ag-research'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        fails(
            &c,
            &Caller::Owner,
            "groups-delete",
            json!({"id": "ag-research"})
        )
        .code,
        "not-found"
    );
}
