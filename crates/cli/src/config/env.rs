//! The environment layer: variables are read from an [`Env`] passed in,
//! never from the process, so resolution is a function of (file, env,
//! flags) and tests build the variables they need instead of setting them
//! on the process. `PINCH__<SECTION>__<KEY>` variables override the file.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// The environment variables configuration may read. The binary passes
/// [`Env::process`]; tests build one with [`Env::from_iter`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// This process's variables. Entries whose name or value is not UTF-8
    /// are left out (no setting reads one).
    pub fn process() -> Env {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }

    /// The variable's value, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The variable's value, if set and not empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// All variables, in name order.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(it: I) -> Env {
        Env(it.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

/// Names only: values may be secrets (API keys, bot tokens).
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// `PINCH__RUNNER__IDLE_EXIT_S=5` → `runner.idle_exit_s = 5`. Returns the
/// keys set this way (`runner.idle_exit_s`) with the variable that set each.
pub fn apply_env(table: &mut toml::Table, env: &Env) -> Result<Vec<(String, String)>> {
    let mut set = Vec::new();
    for (k, v) in env.vars() {
        let Some(rest) = k.strip_prefix("PINCH__") else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.iter().any(|p| p.is_empty()) {
            bail!("environment variable {k} is malformed: use PINCH__<SECTION>__<KEY>");
        }
        let value = parse_scalar(v);
        let mut t = &mut *table;
        for p in &parts[..parts.len() - 1] {
            let entry = t
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = match entry {
                toml::Value::Table(tt) => tt,
                _ => bail!("environment variable {k}: {p} is not a section"),
            };
        }
        t.insert(parts[parts.len() - 1].clone(), value);
        set.push((parts.join("."), k.to_owned()));
    }
    Ok(set)
}

fn parse_scalar(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = v.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match v {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(v.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_become_typed_keys() {
        let mut t: toml::Table = "[runner]\nidle_exit_s = 600\n".parse().unwrap();
        let env: Env = [
            ("PINCH__RUNNER__IDLE_EXIT_S", "5"),
            ("PINCH__HOST__BOOT_BREAKER", "false"),
            ("PINCH__PROVIDER__OPENAI__MODEL", "gpt-x"),
            ("PINCH__STUCK__CLAIM_STUCK_S", "2.5"),
            ("OTHER", "x"),
        ]
        .into_iter()
        .collect();
        let set = apply_env(&mut t, &env).unwrap();
        assert_eq!(t["runner"]["idle_exit_s"].as_integer(), Some(5));
        assert_eq!(t["host"]["boot_breaker"].as_bool(), Some(false));
        assert_eq!(t["provider"]["openai"]["model"].as_str(), Some("gpt-x"));
        assert_eq!(t["stuck"]["claim_stuck_s"].as_float(), Some(2.5));
        assert!(set.contains(&(
            "runner.idle_exit_s".to_owned(),
            "PINCH__RUNNER__IDLE_EXIT_S".to_owned()
        )));
        assert_eq!(set.len(), 4, "{set:?}");
    }

    #[test]
    fn malformed_variables_are_refused() {
        for (k, says) in [
            ("PINCH__RUNNER__", "malformed"),
            ("PINCH____X", "malformed"),
            ("PINCH__TIMEZONE__X", "timezone is not a section"),
        ] {
            let mut t: toml::Table = "timezone = \"UTC\"\n".parse().unwrap();
            let env: Env = [(k, "1")].into_iter().collect();
            let e = apply_env(&mut t, &env).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(says), "{k}: {e}");
        }
    }

    #[test]
    fn debug_shows_names_not_values() {
        let env: Env = [("ANTHROPIC_API_KEY", "sk-secret")].into_iter().collect();
        let d = format!("{env:?}");
        assert!(
            d.contains("ANTHROPIC_API_KEY") && !d.contains("sk-secret"),
            "{d}"
        );
        assert_eq!(env.non_empty("ANTHROPIC_API_KEY"), Some("sk-secret"));
        let empty: Env = [("X", "")].into_iter().collect();
        assert_eq!((empty.get("X"), empty.non_empty("X")), (Some(""), None));
    }
}
