//! Doctor's lines on the secret store (decision 0050): whether its key is
//! where the configuration says and fit to use, and whether every sealed
//! value opens with it (opened in memory to check, never shown).

use pinch_host::secrets::{Key, Store};
use pinch_host::HostConfig;

use super::{fail, ok, warn, Check};

pub(super) fn checks(cfg: &HostConfig) -> Vec<Check> {
    let store = Store::for_data_dir(&cfg.data_dir, cfg.secrets_key_file.as_deref());
    let all = match store.list() {
        Ok(a) => a,
        Err(e) => {
            return vec![fail(
                "secrets",
                format!("the secret store cannot be read: {e}"),
                format!(
                    "check {} (remove it to start over; the secrets in it are lost)",
                    store.path().display()
                ),
            )]
        }
    };
    if all.is_empty() {
        return vec![ok(
            "secrets",
            "no secrets: agents use no account of yours (add one: printf %s \"$TOKEN\" | pinch secrets add NAME --host HOST --group main)",
        )];
    }
    let key = match store.key_file() {
        Ok(k) => k.to_owned(),
        Err(e) => {
            return vec![fail(
                "secrets",
                e.to_owned(),
                "set [secrets] key_file in pinch.toml",
            )]
        }
    };
    if let Err(e) = Key::load(&key, &cfg.data_dir, false) {
        return vec![fail(
            "secrets",
            format!("{} secret(s) stored, but {e}", all.len()),
            "restore the key file from your backup, or set [secrets] key_file to where it is",
        )];
    }
    let broken: Vec<String> = all
        .iter()
        .filter(|b| store.value(&b.name).is_err())
        .map(|b| b.name.clone())
        .collect();
    if !broken.is_empty() {
        return vec![warn(
            "secrets",
            format!(
                "these secrets do not open with the key {}: {}",
                key.display(),
                broken.join(", ")
            ),
            format!(
                "pinch secrets rotate {} (or restore the key they were sealed with)",
                broken[0]
            ),
        )];
    }
    vec![ok(
        "secrets",
        format!(
            "{} secret(s) ({}), sealed with the key {}",
            all.len(),
            all.iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            key.display()
        ),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_host::secrets::{Approve, Form, NewSecret, Value};

    #[test]
    fn the_key_and_the_sealed_values_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = HostConfig::new(dir.path().join("data"));
        cfg.secrets_key_file = Some(dir.path().join("k/secrets.key"));
        let line = |cfg: &HostConfig| {
            let c = checks(cfg);
            assert_eq!(c.len(), 1);
            (c[0].level, c[0].what.clone())
        };
        assert!(line(&cfg).1.contains("no secrets"));
        let store = Store::new(&cfg.data_dir, dir.path().join("k/secrets.key"));
        let s = NewSecret {
            name: "github".into(),
            form: Form::Bearer,
            hosts: vec!["api.github.com".into()],
            groups: vec!["main".into()],
            approve: Approve::First,
        };
        store.add(&s, &Value::Token { value: "t".into() }).unwrap();
        let (level, what) = line(&cfg);
        assert!(
            level == super::super::Level::Ok && what.contains("github"),
            "{what}"
        );
        // The key lost: a failure naming it.
        cfg.secrets_key_file = Some(dir.path().join("elsewhere.key"));
        let (level, what) = line(&cfg);
        assert!(
            level == super::super::Level::Fail && what.contains("does not exist"),
            "{what}"
        );
        // Another key: the value does not open.
        Key::load(&dir.path().join("elsewhere.key"), &cfg.data_dir, true).unwrap();
        let (level, what) = line(&cfg);
        assert!(
            level == super::super::Level::Warn && what.contains("github"),
            "{what}"
        );
    }
}
