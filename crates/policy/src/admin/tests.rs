use proptest::prelude::*;
use serde_json::json;

use super::*;

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| (*s).to_owned()).collect()
}

fn refused(command: &str, args: Value) -> String {
    match AdminCommand::parse(command, &args) {
        Ok(c) => panic!("{command} {args} parsed: {c:?}"),
        Err(e) => {
            assert_eq!(e.code, "invalid-args", "{e}");
            e.message
        }
    }
}

#[test]
fn the_table_is_consistent() {
    let mut seen = std::collections::HashSet::new();
    for s in COMMANDS {
        assert_eq!(s.name, format!("{}-{}", s.resource, s.verb), "{s:?}");
        assert!(seen.insert(s.name), "{} twice", s.name);
        assert_eq!(Spec::find(s.name), Some(s));
        let keys: std::collections::HashSet<_> = s.keys.iter().collect();
        assert_eq!(keys.len(), s.keys.len(), "{}: a key twice", s.name);
        if let Some(k) = s.id_as {
            assert!(s.keys.contains(&k) && !s.keys.contains(&"id"), "{}", s.name);
        }
        if s.needs_id {
            assert!(s.keys.contains(&"id"), "{}", s.name);
        }
        for k in s.keys {
            assert!(
                !ALIASES.iter().any(|(a, _)| a == k),
                "{}: alias {k}",
                s.name
            );
        }
    }
    // grouped by resource, in the order of Resource::ALL
    let order: Vec<Resource> = COMMANDS
        .iter()
        .map(|s| s.resource)
        .fold(Vec::new(), |mut v, r| {
            if v.last() != Some(&r) {
                v.push(r);
            }
            v
        });
    assert_eq!(order, Resource::ALL);
    let wirings: Vec<&str> = Resource::Wirings
        .verbs()
        .iter()
        .map(|v| v.as_str())
        .collect();
    assert_eq!(wirings, ["list", "get", "create", "update", "delete"]);
    let set = Spec::find("groups-config-set").unwrap();
    assert_eq!(set.keys[0], "id");
    assert_eq!(
        &set.keys[1..],
        CONFIG_KEYS,
        "config-set accepts exactly the config columns"
    );
    assert_eq!(
        Spec::find("messaging-groups-deny").unwrap().resource,
        Resource::MessagingGroups
    );
    assert_eq!(
        Spec::find("dropped-messages-list").unwrap().verb,
        Verb::List
    );
    assert!(Spec::find("nonsense").is_none());
    let reprojecting: Vec<&str> = COMMANDS
        .iter()
        .filter(|s| s.reprojects())
        .map(|s| s.name)
        .collect();
    for name in [
        "wirings-create",
        "destinations-remove",
        "messaging-groups-deny",
        "groups-delete",
    ] {
        assert!(reprojecting.contains(&name), "{name}");
    }
    for name in [
        "groups-update",
        "members-add",
        "roles-grant",
        "users-delete",
    ] {
        assert!(!reprojecting.contains(&name), "{name}");
    }
}

#[test]
fn choice_lists_come_from_the_enums() {
    assert_eq!(
        kind_of("engage_mode"),
        Kind::Choice(&["pattern", "mention", "mention-sticky"])
    );
    assert_eq!(
        kind_of("admin_scope"),
        Kind::Choice(&["disabled", "group", "global"])
    );
    assert_eq!(kind_of("role"), Kind::Choice(&["owner", "admin"]));
    assert_eq!(AdminScope::or_disabled(Some("group")), AdminScope::Group);
    assert_eq!(AdminScope::or_disabled(Some("bogus")), AdminScope::Disabled);
    assert_eq!(AdminScope::or_disabled(None), AdminScope::Disabled);
    let e = refused("wirings-create", json!({"engage_mode": "always"}));
    assert_eq!(
        e,
        "wirings-create: --engage_mode \"always\" is not one of pattern, mention, mention-sticky (e.g. --engage_mode pattern)"
    );
    let c =
        AdminCommand::parse("roles-grant", &json!({"id": "telegram:1", "role": "admin"})).unwrap();
    assert_eq!(
        c.args.opt_choice::<Role>("role").unwrap(),
        Some(Role::Admin)
    );
    assert_eq!(
        c.args.opt_str("user").unwrap().as_deref(),
        Some("telegram:1"),
        "the id is --user here"
    );
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    for (cmd, args, says) in [
        (
            "groups-create",
            json!({"name": "x", "colour": "red"}),
            "groups-create: unknown argument --colour; accepted: --name, --folder, --provider",
        ),
        (
            "host-status",
            json!({"x": "1"}),
            "host-status: unknown argument --x; accepted: none besides the id",
        ),
        (
            "sessions-list",
            json!({"limit": "abc"}),
            "sessions-list: --limit must be a whole number, e.g. --limit 50",
        ),
        (
            "sessions-list",
            json!({"limit": "-5"}),
            "sessions-list: --limit must be between 1 and 200",
        ),
        (
            "groups-list",
            json!({"offset": -1}),
            "groups-list: --offset must be 0 or more",
        ),
        (
            "messaging-groups-create",
            json!({"is_group": "maybe"}),
            "--is_group must be true or false (also 1/0, yes/no), e.g. --is_group true",
        ),
        (
            "wirings-update",
            json!({"id": "w", "priority": "high"}),
            "--priority must be a whole number, e.g. --priority 10",
        ),
        (
            "groups-config-set",
            json!({"id": "main", "batch_size": 0}),
            "--batch_size must be at least 1, e.g. --batch_size 10",
        ),
        (
            "groups-config-set",
            json!({"id": "main", "packages": "[oops"}),
            "--packages is not valid JSON",
        ),
        (
            "groups-get",
            json!({"id": true}),
            "groups-get: --id must be text, not true",
        ),
        (
            "roles-grant",
            json!({"id": "a", "user": "b"}),
            "the positional id is --user here; give it once",
        ),
        (
            "wirings-list",
            json!({"ag": "a", "agent_group": "b"}),
            "--agent_group and --ag are the same argument",
        ),
        ("groups-list", json!([1]), "args must be a JSON object"),
    ] {
        let m = refused(cmd, args.clone());
        assert!(m.contains(says), "{cmd} {args}: {m}");
    }
    let e = AdminCommand::parse("groups-fly", &json!({})).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        ("unknown-command", "unknown command \"groups-fly\"")
    );
    // The same through the CLI's words.
    let e = AdminCommand::from_words(&words(&[
        "groups", "create", "--name", "y", "--colour", "red",
    ]))
    .unwrap_err();
    assert!(e.message.contains("unknown argument --colour"), "{e}");
    let e = AdminCommand::from_words(&words(&["wirings", "lst"])).unwrap_err();
    assert!(
        e.message
            .contains("unknown verb \"lst\" for wirings; verbs: list, get, create, update, delete"),
        "{e}"
    );
}

#[test]
fn words_and_json_give_the_same_command() {
    let w = AdminCommand::from_words(&words(&[
        "wirings",
        "create",
        "--mg",
        "mg-1",
        "--engage-mode",
        "pattern",
        "--engage_pattern",
        "^!ask",
        "--priority=-3",
    ]))
    .unwrap();
    let j = AdminCommand::parse(
        "wirings-create",
        &json!({"messaging_group_id": "mg-1", "engage_mode": "pattern", "engage_pattern": "^!ask", "priority": -3}),
    )
    .unwrap();
    assert_eq!(w, j);
    assert_eq!(j.args.opt_int("priority").unwrap(), Some(-3));
    let w = AdminCommand::from_words(&words(&["members", "add", "telegram:7", "--ag", "main"]))
        .unwrap();
    let j =
        AdminCommand::parse("members-add", &json!({"user": "telegram:7", "ag": "main"})).unwrap();
    assert_eq!(w, j);
}

#[test]
fn gates() {
    let g = |cmd: &str, args: Value| AdminCommand::parse(cmd, &args).unwrap().gate("ag-r");
    assert_eq!(g("groups-list", json!({})), Gate::Now);
    assert_eq!(
        g("groups-update", json!({"id": "ag-r", "name": "R"})),
        Gate::Now
    );
    assert_eq!(
        g("groups-update", json!({"id": "main", "name": "R"})),
        Gate::Owner
    );
    assert_eq!(
        g("groups-config-set", json!({"id": "ag-r", "model": "m"})),
        Gate::Approval
    );
    assert_eq!(
        g("groups-config-set", json!({"id": "ag-r", "sandbox": {}})),
        Gate::Owner
    );
    assert_eq!(g("members-add", json!({"user": "u"})), Gate::Approval);
    assert_eq!(
        g("members-add", json!({"user": "u", "ag": "main"})),
        Gate::Owner
    );
    assert_eq!(g("destinations-remove", json!({"name": "x"})), Gate::Now);
    assert_eq!(g("users-create", json!({"id": "telegram:1"})), Gate::Owner);
    assert_eq!(g("approvals-get", json!({"id": "a"})), Gate::Now);
    assert_eq!(g("sessions-close", json!({"id": "s"})), Gate::Now);
}

fn value_of(kind: Kind) -> BoxedStrategy<Value> {
    match kind {
        Kind::Text => prop_oneof![
            "[a-zA-Z0-9:_. -]{0,12}".prop_map(Value::String),
            Just(Value::Null),
            (0i64..1000).prop_map(Value::from),
        ]
        .boxed(),
        Kind::Bool => prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            prop::sample::select(vec!["yes", "no", "1", "0", "TRUE"]).prop_map(Value::from),
            Just(Value::Null),
        ]
        .boxed(),
        Kind::Int { .. } => prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<i32>().prop_map(|n| Value::String(n.to_string())),
            Just(Value::Null),
        ]
        .boxed(),
        Kind::IntAtLeast { min, .. } => {
            prop_oneof![(min..1_000_000i64).prop_map(Value::from), Just(Value::Null)].boxed()
        }
        Kind::Choice(names) => prop::sample::select(names.to_vec())
            .prop_map(Value::from)
            .boxed(),
        Kind::Json => prop_oneof![
            Just(json!(["a", "b"])),
            Just(json!({"memory_mb": 1024})),
            Just(Value::String("\"just text\"".into())),
            Just(Value::String("[1, 2]".into())),
            Just(Value::Null),
            Just(Value::String(String::new())),
        ]
        .boxed(),
        Kind::Limit => (1..=PAGE).prop_map(Value::from).boxed(),
        Kind::Offset => (0..100_000i64)
            .prop_map(|n| Value::String(n.to_string()))
            .boxed(),
    }
}

fn command() -> impl Strategy<Value = (&'static Spec, Value)> {
    (0..COMMANDS.len()).prop_flat_map(|i| {
        let spec = &COMMANDS[i];
        let fields: Vec<_> = spec
            .keys
            .iter()
            .map(|k| prop::option::of(value_of(kind_of(k))).prop_map(move |v| (*k, v)))
            .collect();
        fields.prop_map(move |kv| {
            let mut m = Map::new();
            for (k, v) in kv {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            if spec.needs_id && !matches!(m.get("id"), Some(Value::String(_))) {
                m.insert("id".into(), Value::String("row-1".into()));
            }
            (spec, Value::Object(m))
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every command parses from its JSON form and from its CLI words to
    /// the same value.
    #[test]
    fn every_command_round_trips((spec, args) in command()) {
        let c = AdminCommand::parse(spec.name, &args).expect("a valid command");
        prop_assert_eq!(c.spec, spec);
        let again = AdminCommand::parse(spec.name, &c.args_json()).expect("its own JSON");
        prop_assert_eq!(&again, &c);
        if let Some(w) = c.to_words() {
            let from_words = AdminCommand::from_words(&w);
            prop_assert_eq!(from_words.as_ref(), Ok(&c), "words {:?}", w);
        }
    }

    /// A key the command does not take is refused, named.
    #[test]
    fn unknown_keys_are_named((spec, args) in command(), key in "[a-z]{3,8}_x") {
        let mut args = args;
        args[key.as_str()] = json!("1");
        let e = AdminCommand::parse(spec.name, &args).unwrap_err();
        prop_assert!(e.message.contains(&format!("unknown argument --{key}")), "{}", e.message);
    }
}
