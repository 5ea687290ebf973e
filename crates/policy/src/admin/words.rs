//! `pinch admin`'s words: the resource, verb, positional id and
//! `--key value` pairs, checked against the table before any round trip.

use serde_json::{Map, Value};

use super::{Resource, Spec, Verb};

/// The CLI's words parsed: help, or a command with its arguments as the
/// strings given (`-` in a key is `_`; the positional id is `args.id`).
#[derive(Debug, PartialEq)]
pub enum Words {
    Help,
    Request {
        spec: &'static Spec,
        args: Map<String, Value>,
        /// `--json`: print the raw response.
        json: bool,
    },
}

/// Parses the words after `pinch admin`. `Err` is a usage message naming
/// the fix (the values are typed later, by [`AdminCommand::with_spec`]).
pub fn parse_words(words: &[String]) -> Result<Words, String> {
    let mut pos: Vec<&str> = Vec::new();
    let mut args = Map::new();
    let mut json = false;
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        i += 1;
        match w {
            "--json" => json = true,
            "--help" | "-h" => return Ok(Words::Help),
            "help" if pos.is_empty() => return Ok(Words::Help),
            _ if w.starts_with("--") => {
                let (key, value) = match w[2..].split_once('=') {
                    Some((k, v)) => (k, v.to_owned()),
                    None => {
                        let k = &w[2..];
                        match words.get(i) {
                            Some(v) if !v.starts_with("--") => {
                                i += 1;
                                (k, v.clone())
                            }
                            _ => return Err(format!("--{k} needs a value (e.g. --{k} VALUE; use --{k}=VALUE for a value that starts with --)")),
                        }
                    }
                };
                if key.is_empty()
                    || !key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(format!(
                        "{w:?} is not a --key (keys are letters, digits, '-' and '_')"
                    ));
                }
                let key = key.replace('-', "_");
                if args.insert(key.clone(), Value::String(value)).is_some() {
                    return Err(format!("--{key} given twice"));
                }
            }
            // A single-dash word that is not a number (`-5`, a Telegram
            // chat id) is a flag this parser does not have.
            _ if w.len() > 1
                && w.starts_with('-')
                && !w[1..].starts_with(|c: char| c.is_ascii_digit()) =>
            {
                return Err(format!(
                    "unknown flag {w:?}: arguments are --key value (or --key=value), plus --json"
                ));
            }
            _ => pos.push(w),
        }
    }
    let Some(&resource) = pos.first() else {
        return Err(format!(
            "give a resource and a verb, e.g. `pinch admin sessions list`; resources: {}",
            Resource::NAMES.join(", ")
        ));
    };
    let Some(r) = Resource::parse(resource) else {
        return Err(format!(
            "unknown resource {resource:?}; resources: {}",
            Resource::NAMES.join(", ")
        ));
    };
    let verbs = || {
        r.verbs()
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(&verb) = pos.get(1) else {
        return Err(format!("give a verb for {resource}; verbs: {}", verbs()));
    };
    let Some(spec) = Verb::parse(verb).and_then(|v| Spec::of(r, v)) else {
        return Err(format!(
            "unknown verb {verb:?} for {resource}; verbs: {}",
            verbs()
        ));
    };
    if let Some(extra) = pos.get(3) {
        return Err(format!(
            "unexpected argument {extra:?}: give one id, then --key value pairs"
        ));
    }
    if let Some(id) = pos.get(2) {
        if args.contains_key("id") {
            return Err("the id is given twice (positional and --id); give it once".into());
        }
        args.insert("id".into(), Value::String((*id).to_owned()));
    }
    if spec.needs_id && !args.contains_key("id") {
        return Err(format!(
            "{resource} {verb} needs an id: pinch admin {resource} {verb} <id>{}",
            if r == Resource::Sessions {
                " (see `pinch admin sessions list`)"
            } else {
                ""
            }
        ));
    }
    Ok(Words::Request { spec, args, json })
}
