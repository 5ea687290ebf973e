//! A command's typed arguments: built from the JSON object (strings from
//! the CLI, typed values from an agent) by [`Args::new`], read by the
//! host's handlers through the accessors below.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{kind_of, AdminCommand, Kind, Refusal, Spec, ALIASES, PAGE};

/// One typed argument value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Given as null (or blank, for numbers and JSON): clear the column.
    Null,
    Text(String),
    Bool(bool),
    Int(i64),
    Json(Value),
}

/// A command's arguments: canonical key → typed value, every key one the
/// command accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub(super) cmd: &'static str,
    pub(super) m: BTreeMap<&'static str, Arg>,
}

impl Args {
    /// Folds aliases and the positional id, refuses unknown keys naming
    /// the accepted ones, and types every value by [`kind_of`].
    pub fn new(spec: &'static Spec, raw: &Value) -> Result<Args, Refusal> {
        let cmd = spec.name;
        let invalid = |m: String| Err(Refusal::invalid(m));
        let mut m = match raw {
            Value::Null => Map::new(),
            Value::Object(m) => m.clone(),
            other => return invalid(format!("{cmd}: args must be a JSON object, not {other}")),
        };
        for (alias, key) in ALIASES {
            if let Some(v) = m.remove(*alias) {
                match m.get(*key) {
                    Some(existing) if *existing != v => {
                        return invalid(format!(
                            "{cmd}: --{alias} and --{key} are the same argument; give it once"
                        ))
                    }
                    _ => {
                        m.insert((*key).to_owned(), v);
                    }
                }
            }
        }
        if let Some(target) = spec.id_as {
            if let Some(v) = m.remove("id") {
                match m.get(target) {
                    Some(existing) if *existing != v => {
                        return invalid(format!(
                            "{cmd}: the positional id is --{target} here; give it once"
                        ))
                    }
                    _ => {
                        m.insert(target.to_owned(), v);
                    }
                }
            }
        }
        let mut unknown: Vec<&str> = m
            .keys()
            .map(String::as_str)
            .filter(|k| !spec.keys.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            let accepted: Vec<String> = spec
                .keys
                .iter()
                .filter(|k| **k != "id")
                .map(|k| format!("--{k}"))
                .collect();
            let accepted = if accepted.is_empty() {
                "none besides the id".to_owned()
            } else {
                accepted.join(", ")
            };
            return invalid(format!(
                "{cmd}: unknown argument --{}; accepted: {accepted}",
                unknown.join(", --")
            ));
        }
        let mut typed = BTreeMap::new();
        for key in spec.keys {
            if let Some(v) = m.get(*key) {
                typed.insert(*key, typed_value(cmd, key, v)?);
            }
        }
        let args = Args { cmd, m: typed };
        if spec.is_list() {
            args.page()?;
        }
        Ok(args)
    }

    /// The command's wire name (for messages).
    pub fn cmd(&self) -> &'static str {
        self.cmd
    }

    /// Whether the key was given (even as null).
    pub fn has(&self, key: &str) -> bool {
        self.m.contains_key(key)
    }

    /// The typed value of a key.
    pub fn get(&self, key: &str) -> Option<&Arg> {
        self.m.get(key)
    }

    /// A text argument; `null` (and absent) = `None`.
    pub fn opt_str(&self, key: &str) -> Result<Option<String>, Refusal> {
        match self.m.get(key) {
            None | Some(Arg::Null) => Ok(None),
            Some(Arg::Text(s)) => Ok(Some(s.clone())),
            Some(Arg::Int(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.wrong_kind(key, other)),
        }
    }

    /// A required, non-blank text argument; the error names it and shows
    /// an example.
    pub fn req_str(&self, key: &str, example: &str) -> Result<String, Refusal> {
        match self.opt_str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(Refusal::invalid(format!(
                "{} needs --{key} (e.g. {example})",
                self.cmd
            ))),
        }
    }

    /// The row id (`args.id`, the CLI's positional).
    pub fn id(&self, example: &str) -> Result<String, Refusal> {
        match self.opt_str("id")? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(Refusal::invalid(format!(
                "{} needs an id (e.g. {example})",
                self.cmd
            ))),
        }
    }

    /// A nullable text column for an update: absent = leave, `null` or
    /// blank = clear.
    pub fn nullable_str(&self, key: &str) -> Result<Option<Option<String>>, Refusal> {
        if !self.has(key) {
            return Ok(None);
        }
        Ok(Some(self.opt_str(key)?.filter(|s| !s.trim().is_empty())))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, Refusal> {
        match self.m.get(key) {
            None | Some(Arg::Null) => Ok(None),
            Some(Arg::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_kind(key, other)),
        }
    }

    pub fn opt_int(&self, key: &str) -> Result<Option<i64>, Refusal> {
        match self.m.get(key) {
            None | Some(Arg::Null) => Ok(None),
            Some(Arg::Int(n)) => Ok(Some(*n)),
            Some(other) => Err(self.wrong_kind(key, other)),
        }
    }

    /// A nullable integer column for an update (absent = leave, null/blank
    /// = clear); its minimum was checked when parsed.
    pub fn nullable_int(&self, key: &str) -> Result<Option<Option<i64>>, Refusal> {
        if !self.has(key) {
            return Ok(None);
        }
        Ok(Some(self.opt_int(key)?))
    }

    /// A choice argument as its enum.
    pub fn opt_choice<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Refusal> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => s.parse::<T>().map(Some).map_err(|_| {
                Refusal::invalid(format!("{}: --{key} {s:?} is not a choice", self.cmd))
            }),
        }
    }

    /// A JSON argument: absent = leave, `Some(None)` = clear.
    pub fn json(&self, key: &str) -> Result<Option<Option<Value>>, Refusal> {
        match self.m.get(key) {
            None => Ok(None),
            Some(Arg::Null) => Ok(Some(None)),
            Some(Arg::Json(v)) => Ok(Some(Some(v.clone()))),
            Some(other) => Err(self.wrong_kind(key, other)),
        }
    }

    /// `limit` (1..=200, default 200) and `offset` (≥ 0, default 0).
    pub fn page(&self) -> Result<(i64, i64), Refusal> {
        let limit = self.opt_int("limit")?.unwrap_or(PAGE);
        if !(1..=PAGE).contains(&limit) {
            return Err(Refusal::invalid(format!(
                "{}: --limit must be between 1 and {PAGE}, e.g. --limit 50",
                self.cmd
            )));
        }
        let offset = self.opt_int("offset")?.unwrap_or(0);
        if offset < 0 {
            return Err(Refusal::invalid(format!(
                "{}: --offset must be 0 or more, e.g. --offset 200",
                self.cmd
            )));
        }
        Ok((limit, offset))
    }

    /// The arguments as a JSON object of canonical keys (what the main
    /// loop's handlers read).
    pub fn to_json(&self) -> Value {
        AdminCommand {
            spec: Spec::find(self.cmd).expect("made from a spec"),
            args: self.clone(),
        }
        .args_json()
    }

    fn wrong_kind(&self, key: &str, v: &Arg) -> Refusal {
        Refusal::invalid(format!(
            "{}: --{key} is read as another type than it was given ({v:?}); this is a bug in the admin table",
            self.cmd
        ))
    }
}

/// Types one value by its key's [`Kind`]; the error names the flag and
/// shows an example.
fn typed_value(cmd: &str, key: &str, v: &Value) -> Result<Arg, Refusal> {
    let invalid = |m: String| Err(Refusal::invalid(m));
    match kind_of(key) {
        Kind::Text | Kind::Choice(_) => {
            let text = match v {
                Value::Null => return Ok(Arg::Null),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => return invalid(format!("{cmd}: --{key} must be text, not {other}")),
            };
            match kind_of(key) {
                Kind::Choice(names) if !names.contains(&text.as_str()) => invalid(format!(
                    "{cmd}: --{key} {text:?} is not one of {} (e.g. --{key} {})",
                    names.join(", "),
                    names[0]
                )),
                _ => Ok(Arg::Text(text)),
            }
        }
        Kind::Bool => {
            let bad = || {
                invalid(format!(
                    "{cmd}: --{key} must be true or false (also 1/0, yes/no), e.g. --{key} true"
                ))
            };
            match v {
                Value::Null => Ok(Arg::Null),
                Value::Bool(b) => Ok(Arg::Bool(*b)),
                Value::Number(n) => match n.as_i64() {
                    Some(0) => Ok(Arg::Bool(false)),
                    Some(1) => Ok(Arg::Bool(true)),
                    _ => bad(),
                },
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Ok(Arg::Bool(true)),
                    "false" | "0" | "no" => Ok(Arg::Bool(false)),
                    _ => bad(),
                },
                _ => bad(),
            }
        }
        Kind::Int { example } => int(cmd, key, v, example),
        Kind::Limit => int(cmd, key, v, 50),
        Kind::Offset => int(cmd, key, v, 200),
        Kind::IntAtLeast { min, example } => {
            let n = int(cmd, key, v, example)?;
            match n {
                Arg::Int(n) if n < min => invalid(format!(
                    "{cmd}: --{key} must be at least {min}, e.g. --{key} {example}"
                )),
                other => Ok(other),
            }
        }
        Kind::Json => match v {
            Value::Null => Ok(Arg::Null),
            Value::String(t) if t.trim().is_empty() => Ok(Arg::Null),
            Value::String(t) => serde_json::from_str::<Value>(t).map(Arg::Json).or_else(|e| {
                invalid(format!(
                    "{cmd}: --{key} is not valid JSON ({e}); quote it for the shell, e.g. --{key} '[]'"
                ))
            }),
            other => Ok(Arg::Json(other.clone())),
        },
    }
}

fn int(cmd: &str, key: &str, v: &Value, example: i64) -> Result<Arg, Refusal> {
    let bad = || {
        Err(Refusal::invalid(format!(
            "{cmd}: --{key} must be a whole number, e.g. --{key} {example}"
        )))
    };
    match v {
        Value::Null => Ok(Arg::Null),
        Value::Number(n) => n.as_i64().map(Arg::Int).map_or_else(bad, Ok),
        Value::String(s) if s.trim().is_empty() => Ok(Arg::Null),
        Value::String(s) => s.trim().parse::<i64>().map(Arg::Int).or_else(|_| bad()),
        _ => bad(),
    }
}
