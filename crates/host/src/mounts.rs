//! Extra folders (SPEC §7.8): the owner's allowlist file and the agent
//! groups' requests (`agent_configs.extra_mounts`), resolved at each spawn
//! into the binds the sandbox adds at `/workspace/extra/<name>`.
//!
//! The file (`~/.config/pinch/mount-allowlist.toml`, outside the data dir,
//! never mounted):
//!
//! ```toml
//! blocked_patterns = ["*.pem"]          # on top of the built-in list
//! [[allowed_roots]]
//! path = "~/projects"
//! read_write = true
//! ```
//!
//! No file: no extra mounts at all. A request that fails the rules
//! ([`pinch_policy::mounts::decide`]) is left out and logged with its
//! reason; the session still starts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pinch_policy::mounts::{self, AllowedRoot, Allowlist, Granted};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allowed_roots: Vec<RootEntry>,
    #[serde(default)]
    blocked_patterns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootEntry {
    path: String,
    #[serde(default)]
    read_write: bool,
}

/// `~` and `~/…` against `$HOME`.
pub fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix('~'), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(p),
    }
}

/// Reads the allowlist; a missing file is an empty list. Roots that do not
/// exist are left out with a warning (they can be created later).
pub fn load(path: &Path) -> Result<Allowlist> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Allowlist::default()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading the mount allowlist {}", path.display()))
        }
    };
    let f: File = toml::from_str(&text).with_context(|| format!("{} is not a valid mount allowlist (allowed_roots = [{{ path, read_write }}], blocked_patterns = [..]); fix or remove it", path.display()))?;
    let mut roots = Vec::new();
    for r in f.allowed_roots {
        match std::fs::canonicalize(expand_home(&r.path)) {
            Ok(real) => roots.push(AllowedRoot {
                path: real,
                read_write: r.read_write,
            }),
            Err(e) => {
                tracing::warn!(root = %r.path, "an allowed root in {} is not usable and is skipped: {e}", path.display())
            }
        }
    }
    Ok(Allowlist {
        roots,
        blocked: f.blocked_patterns,
    })
}

/// One request as stored in `agent_configs.extra_mounts`:
/// `{"host": "~/projects/site", "name": "site", "read_write": true}`
/// (`name` defaults to the folder's name).
pub fn parse_request(v: &Value) -> Result<(String, String, bool), String> {
    let host = v
        .get("host")
        .and_then(Value::as_str)
        .filter(|h| !h.trim().is_empty())
        .ok_or("each extra mount needs a \"host\" folder")?;
    let name = match v.get("name").and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => expand_home(host)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let rw = v
        .get("read_write")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((host.to_owned(), name, rw))
}

/// The grants for a group's requests (`extra_mounts` JSON), each checked
/// against the allowlist after resolving its real path. Refusals come back
/// beside the grants, with their reasons.
pub fn resolve(
    requests: Option<&str>,
    allow: &Allowlist,
    protected: &[PathBuf],
) -> (Vec<Granted>, Vec<String>) {
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    let Some(raw) = requests.filter(|r| !r.trim().is_empty()) else {
        return (ok, refused);
    };
    let list: Vec<Value> = match serde_json::from_str(raw) {
        Ok(Value::Array(a)) => a,
        _ => {
            refused.push(format!("extra_mounts is not a JSON list: {raw}"));
            return (ok, refused);
        }
    };
    for v in &list {
        let (host, name, rw) = match parse_request(v) {
            Ok(x) => x,
            Err(e) => {
                refused.push(format!("{v}: {e}"));
                continue;
            }
        };
        let real = match std::fs::canonicalize(expand_home(&host)) {
            Ok(r) if r.is_dir() => r,
            Ok(r) => {
                refused.push(format!("{host}: {} is not a folder", r.display()));
                continue;
            }
            Err(e) => {
                refused.push(format!("{host}: {e}"));
                continue;
            }
        };
        if ok.iter().any(|g: &Granted| g.name == name) {
            refused.push(format!("{host}: the name {name:?} is used twice"));
            continue;
        }
        match mounts::decide(&real, &name, rw, allow, protected) {
            Ok(g) => ok.push(g),
            Err(e) => refused.push(format!("{host}: {e}")),
        }
    }
    (ok, refused)
}
