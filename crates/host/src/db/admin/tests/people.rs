//! `roles-*`, `members-*`, `users-*` and `destinations-*`.

use super::*;

#[test]
fn roles_and_the_last_owner() {
    let (_d, c) = db();
    let e = fails(
        &c,
        &Caller::Owner,
        "roles-revoke",
        json!({"user": "cli:alice", "role": "owner"}),
    );
    assert_eq!(e.code, "forbidden");
    assert!(e.message.contains("last owner"), "{}", e.message);
    let e = fails(
        &c,
        &Caller::Owner,
        "users-delete",
        json!({"id": "cli:alice"}),
    );
    assert!(
        e.code == "forbidden" && e.message.contains("last owner"),
        "{}",
        e.message
    );
    let e = fails(
        &c,
        &Caller::Owner,
        "roles-grant",
        json!({"user": "telegram:1", "role": "owner", "ag": "main"}),
    );
    assert!(
        e.code == "invalid-args" && e.message.contains("always global"),
        "{}",
        e.message
    );
    let e = fails(
        &c,
        &Caller::Owner,
        "roles-grant",
        json!({"user": "bob", "role": "admin"}),
    );
    assert!(
        e.code == "invalid-args" && e.message.contains("telegram:123456789"),
        "{}",
        e.message
    );
    let e = fails(
        &c,
        &Caller::Owner,
        "roles-grant",
        json!({"user": "telegram:1", "role": "god"}),
    );
    assert!(e.message.contains("owner, admin"), "{}", e.message);
    let e = fails(
        &c,
        &Caller::Owner,
        "roles-grant",
        json!({"user": "telegram:1", "role": "admin", "ag": "ag-nope"}),
    );
    assert_eq!(e.code, "not-found");

    // ag admin implies member; the user row is created
    ok(
        &c,
        "roles-grant",
        json!({"id": "telegram:1", "role": "admin", "ag": "main"}),
    );
    assert_eq!(
        ok(&c, "users-get", json!({"id": "telegram:1"}))["kind"],
        "telegram"
    );
    assert_eq!(
        ok(&c, "users-get", json!({"id": "telegram:1"}))["member_of"],
        json!(["main"])
    );
    let e = fails(
        &c,
        &Caller::Owner,
        "roles-grant",
        json!({"user": "telegram:1", "role": "admin", "ag": "main"}),
    );
    assert!(
        e.code == "invalid-args" && e.message.contains("already exists"),
        "{}",
        e.message
    );
    assert_eq!(
        ids(&ok(&c, "roles-list", json!({"ag": "main"})), "user"),
        ["telegram:1"]
    );

    ok(
        &c,
        "roles-grant",
        json!({"user": "telegram:2", "role": "owner"}),
    );
    assert_eq!(
        ok(
            &c,
            "roles-list",
            json!({"role": null, "user": "telegram:2"})
        )[0]["ag"],
        Value::Null
    );
    ok(
        &c,
        "roles-revoke",
        json!({"user": "cli:alice", "role": "owner"}),
    );
    let e = fails(
        &c,
        &Caller::Owner,
        "roles-revoke",
        json!({"user": "telegram:2", "role": "owner"}),
    );
    assert_eq!(e.code, "forbidden");
    let e = fails(
        &c,
        &Caller::Owner,
        "roles-revoke",
        json!({"user": "cli:alice", "role": "owner"}),
    );
    assert_eq!(e.code, "not-found");
    ok(
        &c,
        "roles-revoke",
        json!({"user": "telegram:1", "role": "admin", "ag": "main"}),
    );
    assert!(
        c.has_access("telegram:1", "main").unwrap(),
        "membership outlives the admin role"
    );
}

#[test]
fn members_users_and_destinations() {
    let (_d, c) = db();
    let e = fails(&c, &Caller::Owner, "users-create", json!({"id": "nocolon"}));
    assert!(
        e.code == "invalid-args" && e.message.contains("<channel>:"),
        "{}",
        e.message
    );
    let u = ok(
        &c,
        "users-create",
        json!({"id": "telegram:5", "display_name": "Bob"}),
    );
    assert_eq!(
        (u["kind"].as_str(), u["display_name"].as_str()),
        (Some("telegram"), Some("Bob"))
    );
    let e = fails(
        &c,
        &Caller::Owner,
        "users-create",
        json!({"id": "telegram:5"}),
    );
    assert!(
        e.message.contains("\"telegram:5\" already exists"),
        "{}",
        e.message
    );
    assert_eq!(
        ok(
            &c,
            "users-update",
            json!({"id": "telegram:5", "display_name": "Robert"})
        )["display_name"],
        "Robert"
    );

    let e = fails(
        &c,
        &Caller::Owner,
        "members-add",
        json!({"user": "telegram:6"}),
    );
    assert!(
        e.code == "invalid-args" && e.message.contains("--ag"),
        "{}",
        e.message
    );
    ok(
        &c,
        "members-add",
        json!({"user": "telegram:6", "ag": "main"}),
    );
    assert!(c.has_access("telegram:6", "main").unwrap());
    let e = fails(
        &c,
        &Caller::Owner,
        "members-add",
        json!({"user": "telegram:6", "ag": "main"}),
    );
    assert!(
        e.code == "invalid-args" && e.message.contains("already exists"),
        "{}",
        e.message
    );
    ok(
        &c,
        "members-remove",
        json!({"id": "telegram:6", "ag": "main"}),
    );
    assert!(!c.has_access("telegram:6", "main").unwrap());
    assert_eq!(
        fails(
            &c,
            &Caller::Owner,
            "members-remove",
            json!({"user": "telegram:6", "ag": "main"})
        )
        .code,
        "not-found"
    );
    ok(&c, "users-delete", json!({"id": "telegram:5"}));
    assert_eq!(
        fails(&c, &Caller::Owner, "users-get", json!({"id": "telegram:5"})).code,
        "not-found"
    );

    let e = fails(
        &c,
        &Caller::Owner,
        "destinations-add",
        json!({"ag": "main", "name": "x", "target_type": "channel", "target": "mg-nope"}),
    );
    assert_eq!(e.code, "not-found");
    let e = fails(
        &c,
        &Caller::Owner,
        "destinations-add",
        json!({"ag": "main", "name": "x y", "target_type": "channel", "target": "mg-cli-local"}),
    );
    assert_eq!(e.code, "invalid-args");
    let e = fails(
        &c,
        &Caller::Owner,
        "destinations-add",
        json!({"ag": "main", "name": "x", "target_type": "email", "target": "a"}),
    );
    assert!(e.message.contains("channel, agent"), "{}", e.message);
    let e = fails(
        &c,
        &Caller::Owner,
        "destinations-add",
        json!({"ag": "main", "name": "terminal", "target_type": "agent", "target": "main"}),
    );
    assert!(
        e.code == "invalid-args" && e.message.contains("already exists"),
        "{}",
        e.message
    );
    ok(
        &c,
        "destinations-add",
        json!({"id": "main", "name": "self", "target_type": "agent", "target": "main"}),
    );
    assert_eq!(
        ids(&ok(&c, "destinations-list", json!({"id": "main"})), "name"),
        ["self", "terminal"]
    );
    ok(
        &c,
        "destinations-remove",
        json!({"ag": "main", "local_name": "self"}),
    );
    assert_eq!(
        fails(
            &c,
            &Caller::Owner,
            "destinations-remove",
            json!({"ag": "main", "name": "self"})
        )
        .code,
        "not-found"
    );
}
