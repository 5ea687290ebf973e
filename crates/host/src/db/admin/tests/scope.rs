//! Who may run what: the main loop's argument checks, the scope rules and
//! the approval gates of agents' commands.

use super::*;

#[test]
fn the_main_loops_commands_refuse_unknown_keys_and_bad_pages() {
    let e = |cmd: &str, args: Value| loop_args(cmd, &args).unwrap().unwrap_err().message;
    for (cmd, args, says) in [
        (
            "sessions-list",
            json!({"limit": "abc"}),
            "sessions-list: --limit must be a whole number",
        ),
        (
            "sessions-list",
            json!({"limit": "-5"}),
            "sessions-list: --limit must be between 1 and 200",
        ),
        (
            "sessions-list",
            json!({"offset": "-1"}),
            "--offset must be 0 or more",
        ),
        (
            "sessions-list",
            json!({"bogus": "1"}),
            "sessions-list: unknown argument --bogus; accepted: --limit, --offset",
        ),
        (
            "tasks-list",
            json!({"limit": "0"}),
            "tasks-list: --limit must be between 1 and 200",
        ),
        (
            "host-status",
            json!({"x": "1"}),
            "host-status: unknown argument --x; accepted: none besides the id",
        ),
        (
            "sessions-stop",
            json!({"id": "s", "force": "yes"}),
            "unknown argument --force",
        ),
        (
            "approvals-reject",
            json!({"id": "a", "value": "x"}),
            "unknown argument --value",
        ),
    ] {
        let m = e(cmd, args.clone());
        assert!(m.contains(says), "{cmd} {args}: {m}");
    }
    let (args, page) = loop_args(
        "tasks-list",
        &json!({"agent_group": "main", "limit": "2", "offset": "1"}),
    )
    .unwrap()
    .unwrap();
    assert_eq!(args["ag"], "main", "aliases are folded");
    let page = page.unwrap();
    assert_eq!(
        page,
        Page {
            limit: 2,
            offset: 1
        }
    );
    assert_eq!(page.apply(json!([1, 2, 3, 4])), json!([2, 3]));
    let (_, page) = loop_args("sessions-list", &json!({})).unwrap().unwrap();
    assert_eq!(
        page,
        Some(Page {
            limit: PAGE,
            offset: 0
        })
    );
    assert!(
        loop_args("groups-list", &json!({})).is_none(),
        "this module's own"
    );
}

#[test]
fn only_this_modules_commands_are_dispatched() {
    let (_d, c) = db();
    for cmd in [
        "sessions-list",
        "sessions-close",
        "host-status",
        "tasks-list",
        "approvals-approve",
        "groups-restart",
        "nonsense",
    ] {
        assert!(
            dispatch(&c.conn, &Caller::Owner, cmd, &json!({})).is_none(),
            "{cmd}"
        );
    }
    // The vocabulary's main-loop commands are not served here; every one
    // it says is served here has a handler (the table's own consistency is
    // tested in pinch_policy::admin).
    for spec in pinch_policy::admin::COMMANDS {
        let r = dispatch(&c.conn, &Caller::Owner, spec.name, &json!({}));
        match (spec.served, r) {
            (Served::MainLoop, None) => {}
            (Served::Central, Some(Err(e))) => {
                assert_ne!(e.code, "unknown-command", "{} has no handler", spec.name)
            }
            (Served::Central, Some(Ok(_))) => {}
            (served, r) => panic!("{} ({served:?}) gave {r:?}", spec.name),
        }
    }
}

/// (caller, command, args, Ok(()) or Err(code)).
#[test]
fn scope_rules() {
    let (_d, c) = fixture();
    let owner = Caller::Owner;
    let off = agent("ag-research", AdminScope::Disabled);
    let grp = agent("ag-research", AdminScope::Group);
    let glob = agent("ag-research", AdminScope::Global);
    let cases: Vec<(&Caller, &str, Value, Result<(), &str>)> = vec![
        (&off, "groups-list", json!({}), Err("permission-denied")),
        (
            &off,
            "groups-get",
            json!({"id": "ag-research"}),
            Err("permission-denied"),
        ),
        (&off, "members-list", json!({}), Err("permission-denied")),
        (&off, "users-list", json!({}), Err("permission-denied")),
        (&grp, "groups-get", json!({"id": "ag-research"}), Ok(())),
        (
            &grp,
            "groups-config-get",
            json!({"id": "ag-research"}),
            Ok(()),
        ),
        (&grp, "groups-get", json!({"id": "main"}), Err("not-found")),
        (
            &grp,
            "groups-config-get",
            json!({"id": "main"}),
            Err("not-found"),
        ),
        (&grp, "groups-get", json!({"id": "nope"}), Err("not-found")),
        (
            &grp,
            "groups-update",
            json!({"id": "main", "name": "x"}),
            Err("forbidden"),
        ),
        (
            &grp,
            "groups-update",
            json!({"id": "ag-research", "name": "Research 2"}),
            Ok(()),
        ),
        (
            &grp,
            "groups-config-set",
            json!({"id": "ag-research", "model": "m1"}),
            Ok(()),
        ),
        (
            &grp,
            "groups-config-set",
            json!({"id": "main", "model": "m1"}),
            Err("forbidden"),
        ),
        (
            &grp,
            "groups-config-set",
            json!({"id": "ag-research", "admin_scope": "global"}),
            Err("forbidden"),
        ),
        (
            &grp,
            "groups-config-set",
            json!({"id": "ag-research", "can_create_agents": "true"}),
            Err("forbidden"),
        ),
        (
            &grp,
            "groups-create",
            json!({"name": "Other"}),
            Err("forbidden"),
        ),
        (
            &grp,
            "groups-delete",
            json!({"id": "ag-research"}),
            Err("forbidden"),
        ),
        (&grp, "wirings-list", json!({}), Err("forbidden")),
        (
            &grp,
            "messaging-groups-get",
            json!({"id": "mg-tg-fam"}),
            Err("forbidden"),
        ),
        (&grp, "users-list", json!({}), Err("forbidden")),
        (
            &grp,
            "roles-grant",
            json!({"user": "telegram:7", "role": "owner"}),
            Err("forbidden"),
        ),
        (&grp, "approvals-list", json!({}), Err("forbidden")),
        (&grp, "dropped-messages-list", json!({}), Err("forbidden")),
        (
            &grp,
            "destinations-list",
            json!({"ag": "main"}),
            Err("forbidden"),
        ),
        (
            &grp,
            "destinations-add",
            json!({"ag": "main", "name": "x", "target_type": "channel", "target": "mg-cli-local"}),
            Err("forbidden"),
        ),
        (
            &grp,
            "destinations-remove",
            json!({"ag": "main", "name": "terminal"}),
            Err("forbidden"),
        ),
        (
            &grp,
            "members-list",
            json!({"ag": "main"}),
            Err("forbidden"),
        ),
        (
            &grp,
            "members-add",
            json!({"ag": "main", "user": "telegram:9"}),
            Err("forbidden"),
        ),
        (&grp, "members-add", json!({"user": "telegram:9"}), Ok(())),
        (
            &grp,
            "destinations-add",
            json!({"name": "notes", "target_type": "agent", "target": "main"}),
            Ok(()),
        ),
        (&glob, "users-list", json!({}), Ok(())),
        (&glob, "groups-get", json!({"id": "main"}), Ok(())),
        (
            &glob,
            "groups-config-set",
            json!({"id": "ag-research", "can_create_agents": "1"}),
            Ok(()),
        ),
        (
            &owner,
            "groups-config-set",
            json!({"id": "ag-research", "admin_scope": "group"}),
            Ok(()),
        ),
        (&owner, "wirings-list", json!({}), Ok(())),
    ];
    for (caller, cmd, args, want) in cases {
        let got = call(&c, caller, cmd, args.clone());
        match (&got, want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(code)) if e.code == code => {}
            _ => panic!(
                "{caller:?} {cmd} {args}: want {want:?}, got {:?}",
                got.map_err(|e| (e.code, e.message))
            ),
        }
    }
    // disabled: the message says how to enable it
    let e = fails(&c, &off, "groups-list", json!({}));
    assert!(
        e.message
            .contains("pinch admin groups config-set ag-research --admin_scope group"),
        "{}",
        e.message
    );
    // no existence oracle: a foreign group and a missing one read alike
    let foreign = fails(&c, &grp, "groups-get", json!({"id": "main"})).message;
    let missing = fails(&c, &grp, "groups-get", json!({"id": "zzzz"})).message;
    assert_eq!(foreign.replace("main", "X"), missing.replace("zzzz", "X"));
    // lists are filtered to its own group
    assert_eq!(
        ids(&call(&c, &grp, "groups-list", json!({})).unwrap(), "id"),
        ["ag-research"]
    );
    let members = call(&c, &grp, "members-list", json!({})).unwrap();
    assert!(
        ids(&members, "ag").iter().all(|a| a == "ag-research"),
        "{members}"
    );
    assert!(ids(&members, "user").contains(&"telegram:7".to_owned()));
    assert!(
        !ids(&members, "user").contains(&"telegram:8".to_owned()),
        "main's member leaked: {members}"
    );
    let dests = call(&c, &grp, "destinations-list", json!({})).unwrap();
    assert!(
        ids(&dests, "ag").iter().all(|a| a == "ag-research"),
        "{dests}"
    );
    assert!(ids(&dests, "name").contains(&"notes".to_owned()));
    // the owner sees everything
    assert_eq!(
        ids(&ok(&c, "groups-list", json!({})), "id"),
        ["main", "ag-research"]
    );
    assert!(ids(&ok(&c, "members-list", json!({})), "user").contains(&"telegram:8".to_owned()));
    // the scope refusal left nothing behind
    assert_eq!(
        ok(&c, "groups-config-get", json!({"id": "ag-research"}))["admin_scope"],
        "group"
    );
    assert_eq!(ok(&c, "groups-get", json!({"id": "main"}))["name"], "main");
}

#[test]
fn gates_of_agent_commands() {
    use Gate::*;
    for scope in [AdminScope::Group, AdminScope::Global] {
        let a = agent("ag-x", scope);
        let cases: Vec<(&str, Value, Gate)> = vec![
            // reads
            ("groups-list", json!({}), Now),
            ("groups-get", json!({"id": "main"}), Now),
            ("groups-config-get", json!({"id": "ag-x"}), Now),
            ("users-list", json!({}), Now),
            ("roles-list", json!({}), Now),
            ("approvals-get", json!({"id": "x"}), Now),
            // its own group, plain
            ("groups-update", json!({"id": "ag-x", "name": "X"}), Now),
            ("destinations-remove", json!({"name": "notes"}), Now),
            (
                "destinations-remove",
                json!({"ag": "ag-x", "name": "notes"}),
                Now,
            ),
            // its own group, access: the group's admins decide
            ("members-add", json!({"user": "t:1"}), Approval),
            (
                "members-remove",
                json!({"user": "t:1", "ag": "ag-x"}),
                Approval,
            ),
            (
                "destinations-add",
                json!({"name": "n", "target_type": "agent", "target": "main"}),
                Approval,
            ),
            (
                "groups-config-set",
                json!({"id": "ag-x", "model": "m"}),
                Approval,
            ),
            // beyond its group, or a security boundary: owners decide
            (
                "groups-update",
                json!({"id": "main", "name": "pwned"}),
                Owner,
            ),
            ("groups-update", json!({"id": 42, "name": "pwned"}), Owner),
            (
                "groups-update",
                json!({"id": "ag-x ", "name": "pwned"}),
                Owner,
            ),
            ("members-add", json!({"user": "t:1", "ag": 7}), Owner),
            (
                "groups-config-set",
                json!({"id": "main", "model": "m"}),
                Owner,
            ),
            (
                "groups-config-set",
                json!({"id": "ag-x", "egress_allow": ["evil.example"]}),
                Owner,
            ),
            (
                "groups-config-set",
                json!({"id": "ag-x", "model": "m", "extra_mounts": "[]"}),
                Owner,
            ),
            (
                "groups-config-set",
                json!({"id": "ag-x", "sandbox": {"disk_mb": 1}}),
                Owner,
            ),
            (
                "groups-config-set",
                json!({"id": "ag-x", "admin_scope": "global"}),
                Owner,
            ),
            (
                "groups-config-set",
                json!({"id": "ag-x", "can_create_agents": true}),
                Owner,
            ),
            ("groups-create", json!({"name": "Other"}), Owner),
            ("groups-delete", json!({"id": "ag-x"}), Owner),
            (
                "users-update",
                json!({"id": "cli:alice", "display_name": "mallory"}),
                Owner,
            ),
            ("users-create", json!({"id": "t:2", "kind": "t"}), Owner),
            ("users-delete", json!({"id": "t:2"}), Owner),
            (
                "roles-grant",
                json!({"user": "t:1", "role": "owner"}),
                Owner,
            ),
            (
                "roles-revoke",
                json!({"user": "t:1", "role": "owner"}),
                Owner,
            ),
            ("wirings-create", json!({"mg": "m", "ag": "ag-x"}), Owner),
            ("wirings-delete", json!({"id": "w"}), Owner),
            ("messaging-groups-deny", json!({"id": "m"}), Owner),
            ("members-add", json!({"user": "t:1", "ag": "main"}), Owner),
            (
                "members-add",
                json!({"user": "t:1", "agent_group_id": "main"}),
                Owner,
            ),
            (
                "destinations-remove",
                json!({"ag": "main", "name": "terminal"}),
                Owner,
            ),
            // invalid arguments are answered at once (by the handler)
            ("groups-update", json!({"id": "main", "bogus": 1}), Now),
            // not this module's
            ("sessions-close", json!({"id": "s"}), Now),
        ];
        for (cmd, args, want) in cases {
            assert_eq!(gate(&a, cmd, &args), want, "{scope:?} {cmd} {args}");
            assert_eq!(gate(&Caller::Owner, cmd, &args), Now, "owner {cmd}");
        }
    }
}
