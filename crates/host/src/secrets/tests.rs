use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let s = Store::new(&data, dir.path().join("key/secrets.key"));
    (dir, s)
}

fn github() -> NewSecret {
    NewSecret {
        name: "github".into(),
        form: Form::Bearer,
        hosts: vec!["api.github.com".into(), "*.githubusercontent.com".into()],
        groups: vec!["main".into()],
        approve: Approve::Never,
    }
}

#[test]
fn add_list_rotate_remove_and_the_value_never_in_the_clear() {
    let (_dir, s) = store();
    assert!(s.list().unwrap().is_empty());
    assert!(!s.path().exists(), "reading creates nothing");
    let v = Value::Token {
        value: "ghp_SECRET_1".into(),
    };
    s.add(&github(), &v).unwrap();
    assert!(matches!(s.add(&github(), &v), Err(Error::Exists(_))));
    // Not in the store or its journal, in any form it was given.
    for f in std::fs::read_dir(s.path().parent().unwrap()).unwrap() {
        let raw = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!raw.windows(12).any(|w| w == b"ghp_SECRET_1"));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let l = s.list().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].name.as_str(), l[0].kind.as_str()),
        ("github", "token")
    );
    assert!(format!("{:?}", s.value("github").unwrap()) == "Token(***)");
    assert_eq!(s.value("github").unwrap(), v);
    assert!(s.bound_to("api.github.com", 443).unwrap().len() == 1);
    assert!(s.bound_to("raw.githubusercontent.com", 443).unwrap().len() == 1);
    assert!(s.bound_to("api.github.com", 8443).unwrap().is_empty());
    assert!(s.bound_to("github.com", 443).unwrap().is_empty());
    let v2 = Value::Token {
        value: "ghp_SECRET_2".into(),
    };
    s.rotate("github", &v2).unwrap();
    assert_eq!(s.value("github").unwrap(), v2);
    assert!(s.list().unwrap()[0].rotated_at.is_some());
    assert!(matches!(s.rotate("nope", &v2), Err(Error::Unknown(_))));
    s.grant("github", "main", "owner").unwrap();
    assert!(s.granted("github", "main").unwrap());
    assert!(s.remove("github").unwrap());
    assert!(!s.remove("github").unwrap());
    assert!(!s.granted("github", "main").unwrap(), "grants go with it");
}

#[test]
fn a_store_opened_with_another_key_says_so() {
    let (dir, s) = store();
    s.add(&github(), &Value::Token { value: "t".into() })
        .unwrap();
    let other = Store::new(&dir.path().join("data"), dir.path().join("other.key"));
    let e = other.value("github").unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
    Key::load(
        &dir.path().join("other.key"),
        &dir.path().join("data"),
        true,
    )
    .unwrap();
    let e = other.value("github").unwrap_err().to_string();
    assert!(e.contains("pinch secrets rotate github"), "{e}");
}

#[test]
fn the_audit_keeps_uses_newest_first() {
    let (_dir, s) = store();
    for (i, status) in [200u16, 403].into_iter().enumerate() {
        s.record(&Use {
            at: format!("2026-12-05T10:00:0{i}Z"),
            agent_group: "main".into(),
            session: "sess".into(),
            secret: "github".into(),
            method: "GET".into(),
            host: "api.github.com".into(),
            path: "/notifications".into(),
            status,
            outcome: if status == 200 { "injected" } else { "denied" }.into(),
        })
        .unwrap();
    }
    let u = s.uses(10, 0).unwrap();
    assert_eq!(u.iter().map(|u| u.status).collect::<Vec<_>>(), [403, 200]);
    assert_eq!(s.uses(1, 1).unwrap()[0].status, 200);
}

#[test]
fn forms_and_names_are_checked() {
    assert_eq!(Form::parse("bearer").unwrap(), Form::Bearer);
    assert_eq!(
        Form::parse("header:X-Api-Key").unwrap(),
        Form::Header("x-api-key".into())
    );
    assert_eq!(Form::parse("query:key").unwrap(), Form::Query("key".into()));
    for bad in [
        "",
        "token",
        "header:",
        "header:Host",
        "header:a b",
        "query:a&b",
        "header:x\r\ny",
    ] {
        assert!(Form::parse(bad).is_err(), "{bad:?}");
    }
    assert!(check_name("github-2.work_x").is_ok());
    for bad in ["", "a/b", "a b", &"x".repeat(65)] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    assert!(check_binding(&[], &[]).is_ok(), "kept for channels only");
    assert!(check_binding(&[], &["main".into()]).is_err());
    assert!(check_binding(&["api.github.com".into()], &[]).is_err());
    assert!(check_binding(&["http://x".into()], &["main".into()]).is_err());
}

#[test]
fn a_query_secret_names_its_hosts_exactly() {
    let (_dir, s) = store();
    let mut q = github();
    q.form = Form::Query("key".into());
    let e = s
        .add(&q, &Value::Token { value: "k".into() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("no *."), "{e}");
    q.hosts = vec!["maps.example.com".into()];
    s.add(&q, &Value::Token { value: "k".into() }).unwrap();
    let wild = ["*.example.com".to_owned()];
    assert!(s.edit("github", None, Some(&wild), None, None).is_err());
}

#[test]
fn a_refreshed_oauth_value_never_overwrites_the_owners_new_sign_in() {
    let (_dir, s) = store();
    let v1 = OAuthValue {
        refresh_token: "rt-1".into(),
        client_id: "c".into(),
        client_secret: None,
        token_url: "https://a.example/token".into(),
        scope: None,
    };
    s.add(&github(), &Value::OAuth(v1.clone())).unwrap();
    let v2 = OAuthValue {
        refresh_token: "rt-2".into(),
        ..v1.clone()
    };
    assert!(s.update_oauth("github", &v1, &v2).unwrap());
    assert_eq!(s.value("github").unwrap(), Value::OAuth(v2.clone()));
    // The owner signs in again (another provider) while a refresh that
    // read v2 runs: the refresh's write is dropped.
    let theirs = OAuthValue {
        refresh_token: "other".into(),
        token_url: "https://b.example/token".into(),
        ..v1.clone()
    };
    let mut moved = github();
    moved.hosts = vec!["b.example".into()];
    s.replace(&moved, &Value::OAuth(theirs.clone())).unwrap();
    let v3 = OAuthValue {
        refresh_token: "rt-3".into(),
        ..v2.clone()
    };
    assert!(!s.update_oauth("github", &v2, &v3).unwrap());
    assert_eq!(s.value("github").unwrap(), Value::OAuth(theirs));
    assert_eq!(s.list().unwrap()[0].hosts, ["b.example"]);
}
