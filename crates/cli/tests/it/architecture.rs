//! The crate graph is the architecture (SPEC §2.2): these edges must be
//! impossible, so a change that adds one fails here, not in review.

use std::process::Command;

fn deps(krate: &str) -> Vec<String> {
    deps_pruned(krate, &[])
}

/// The dependencies of `krate`, not counting what arrives only through the
/// `pruned` crates.
fn deps_pruned(krate: &str, pruned: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec![
        "tree",
        "-p",
        krate,
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
        "--offline",
    ];
    for p in pruned {
        args.extend(["--prune", p]);
    }
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn forbid(krate: &str, forbidden: &[&str]) {
    let d = deps(krate);
    assert!(
        d.iter().any(|x| x == krate),
        "cargo tree did not list {krate} itself: {d:?}"
    );
    for f in forbidden {
        assert!(
            !d.iter().any(|x| x == f),
            "{krate} must not depend on {f} (directly or not)"
        );
    }
}

#[test]
fn policy_is_pure() {
    forbid(
        "pinch-policy",
        &[
            "tokio",
            "rusqlite",
            "libsqlite3-sys",
            "notify",
            "pinch-proto",
        ],
    );
}

#[test]
fn proto_has_no_async_runtime() {
    forbid(
        "pinch-proto",
        &["tokio", "pinch-host", "pinch-runner", "pinch-channels"],
    );
}

#[test]
fn runner_never_reaches_channels_or_the_host() {
    forbid("pinch-runner", &["pinch-channels", "pinch-host"]);
    // tokio may reach the runner only inside pinch-mcp, whose blocking
    // facade owns its runtime (decision 0010); the runner's own code and its
    // other dependencies stay synchronous.
    let through_mcp = deps("pinch-runner").iter().any(|x| x == "pinch-mcp");
    let d = if through_mcp {
        deps_pruned("pinch-runner", &["pinch-mcp"])
    } else {
        deps("pinch-runner")
    };
    assert!(
        d.iter().any(|x| x == "pinch-runner"),
        "cargo tree did not list pinch-runner: {d:?}"
    );
    for f in ["tokio", "rmcp"] {
        assert!(
            !d.iter().any(|x| x == f),
            "pinch-runner must not depend on {f} except through pinch-mcp"
        );
    }
}

#[test]
fn mcp_stays_a_leaf_and_proto_stays_plain() {
    forbid(
        "pinch-mcp",
        &[
            "pinch-host",
            "pinch-runner",
            "pinch-channels",
            "pinch-policy",
        ],
    );
    forbid("pinch-proto", &["rmcp", "pinch-mcp"]);
}

#[test]
fn providers_know_nothing_of_sessions_or_sqlite() {
    forbid(
        "pinch-providers",
        &["pinch-proto", "rusqlite", "pinch-channels", "pinch-host"],
    );
}

#[test]
fn the_local_model_knows_nothing_of_sessions_or_async() {
    forbid(
        "pinch-local",
        &[
            "tokio",
            "rusqlite",
            "libsqlite3-sys",
            "pinch-proto",
            "pinch-host",
            "pinch-runner",
            "pinch-channels",
        ],
    );
}

#[test]
fn providers_stay_free_of_candle() {
    forbid(
        "pinch-providers",
        &["candle-core", "candle-transformers", "pinch-local"],
    );
}

#[test]
fn channels_do_not_reach_host_or_runner() {
    forbid(
        "pinch-channels",
        &["pinch-host", "pinch-runner", "pinch-providers", "rusqlite"],
    );
}

#[test]
fn the_sandbox_knows_nothing_of_the_host_the_runner_or_channels() {
    forbid(
        "pinch-sandbox",
        &[
            "pinch-host",
            "pinch-runner",
            "pinch-channels",
            "pinch-providers",
        ],
    );
}

/// The web fetcher is a leaf the host calls: no sessions, no SQLite, no
/// channels; and the runner never reaches the web through it (the sandbox
/// asks the host).
#[test]
fn the_web_fetcher_knows_nothing_of_sessions_and_the_runner_never_has_it() {
    forbid(
        "pinch-web",
        &[
            "pinch-proto",
            "rusqlite",
            "pinch-host",
            "pinch-runner",
            "pinch-channels",
            "pinch-providers",
        ],
    );
    forbid("pinch-runner", &["pinch-web", "reqwest"]);
}

#[test]
fn the_host_spawns_through_the_sandbox_crate() {
    let d = deps("pinch-host");
    assert!(
        d.iter().any(|x| x == "pinch-sandbox"),
        "pinch-host must depend on pinch-sandbox (its only way to start a runner): {d:?}"
    );
    // The runner runs inside a sandbox; it never starts one.
    forbid("pinch-runner", &["pinch-sandbox"]);
}

// ---------------------------------------------------------------------------
// Storage behind one door (issue 16, decision 0034): every SQL statement on
// a session table lives in `crates/proto/src`, every statement on a central
// table under `crates/host/src/db/`. The table lists come from the schemas
// themselves (proto's `schema.rs` and ledger file, the host's migrations),
// so a new table is covered the day it is declared.

/// Files that still hold SQL outside its door, each with why. Entries are
/// path prefixes (a module that is split keeps its entry). An entry that no
/// longer matches any stray statement fails the test: remove it.
const SQL_OUTSIDE_THE_DOOR: &[(&str, &str)] = &[];

/// Where a statement on a table of each kind may live.
const SESSION_DOOR: &str = "crates/proto/src/";
const CENTRAL_DOOR: &str = "crates/host/src/db/";

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// One string literal of a Rust file: its first line (1-based) and its text
/// as written (escapes are not decoded; SQL keywords and table names are
/// plain ASCII either way).
struct Literal {
    line: usize,
    text: String,
}

/// The string literals of `src` outside `#[cfg(test)]` items (a test module
/// may build a broken file by hand; the rule is about product code). A small
/// lexer: comments, char literals and lifetimes are skipped, raw strings and
/// byte strings are read whole, and a `#[cfg(test)]` `mod`/`fn` is skipped
/// to its matching brace.
fn string_literals(src: &str) -> Vec<Literal> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut depth) = (0usize, 1usize, 0usize);
    let mut skip_at: Option<usize> = None; // depth a skipped test item opened at
    let mut test_item_pending = false;
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| b.get(i + k) == Some(&c));
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if at(i, "//") {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut nest = 0;
            while i < b.len() {
                if at(i, "/*") {
                    nest += 1;
                    i += 2;
                } else if at(i, "*/") {
                    nest -= 1;
                    i += 2;
                    if nest == 0 {
                        break;
                    }
                } else {
                    if b[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if at(i, "#[cfg(test)]") {
            test_item_pending = true;
            i += "#[cfg(test)]".len();
        } else if c == '"'
            || ((c == 'r' || c == 'b')
                && !prev_is_ident(&b, i)
                && raw_or_byte_start(&b, i).is_some())
        {
            let (hashes, open) = if c == '"' {
                (None, i + 1)
            } else {
                raw_or_byte_start(&b, i).unwrap()
            };
            let start_line = line;
            let mut j = open;
            let mut text = String::new();
            while let Some(&d) = b.get(j) {
                match hashes {
                    None if d == '\\' => {
                        text.push(d);
                        if let Some(&e) = b.get(j + 1) {
                            if e == '\n' {
                                line += 1;
                            }
                            text.push(e);
                        }
                        j += 2;
                        continue;
                    }
                    None if d == '"' => {
                        j += 1;
                        break;
                    }
                    Some(n) if d == '"' && (1..=n).all(|k| b.get(j + k) == Some(&'#')) => {
                        j += 1 + n;
                        break;
                    }
                    _ => {}
                }
                if d == '\n' {
                    line += 1;
                }
                text.push(d);
                j += 1;
            }
            if skip_at.is_none() {
                out.push(Literal {
                    line: start_line,
                    text,
                });
            }
            i = j;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c == '{' {
            if test_item_pending && skip_at.is_none() {
                skip_at = Some(depth);
            }
            test_item_pending = false;
            depth += 1;
            i += 1;
        } else if c == '}' {
            depth = depth.saturating_sub(1);
            if skip_at == Some(depth) {
                skip_at = None;
            }
            i += 1;
        } else if c == ';' {
            // `#[cfg(test)] use …;` or `mod tests;`: the attribute is spent.
            test_item_pending = false;
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

fn prev_is_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// At `r"`, `r#"`, `b"`, `br"`, `br#"`: (Some(hash count) for raw, None for
/// a plain byte string; index after the opening quote).
fn raw_or_byte_start(b: &[char], i: usize) -> Option<(Option<usize>, usize)> {
    let mut j = i;
    if b.get(j) == Some(&'b') {
        j += 1;
        if b.get(j) == Some(&'"') {
            return Some((None, j + 1));
        }
    }
    if b.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut n = 0;
    while b.get(j) == Some(&'#') {
        n += 1;
        j += 1;
    }
    (b.get(j) == Some(&'"')).then_some((Some(n), j + 1))
}

/// (line offset of the table name within the text, table) of every `FROM t`, `INTO t`,
/// `UPDATE t`, `JOIN t`, `TABLE t` (CREATE/ALTER, `IF NOT EXISTS` skipped).
/// Keywords count only in upper case, as this code base writes SQL.
fn sql_targets(text: &str) -> Vec<(usize, String)> {
    let mut words: Vec<(usize, &str)> = Vec::new();
    for (n, l) in text.split('\n').enumerate() {
        for w in l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !w.is_empty() {
                words.push((n, w));
            }
        }
    }
    let mut out = Vec::new();
    for (k, (_, w)) in words.iter().enumerate() {
        if !matches!(*w, "FROM" | "INTO" | "UPDATE" | "JOIN" | "TABLE") {
            continue;
        }
        let mut t = k + 1;
        if *w == "TABLE" && words.get(t).map(|x| x.1) == Some("IF") {
            t += 3; // IF NOT EXISTS
        }
        if let Some((tn, name)) = words.get(t) {
            out.push((*tn, name.to_string()));
        }
    }
    out
}

/// Line offsets of every `FROM {…}`, `INTO {…}`, `UPDATE {…}`, `JOIN {…}`,
/// `TABLE {…}`: a statement whose table is filled in at run time
/// (`format!`), which [`sql_targets`] cannot name.
fn dynamic_targets(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (n, l) in text.split('\n').enumerate() {
        for kw in ["FROM", "INTO", "UPDATE", "JOIN", "TABLE"] {
            let mut rest = l;
            while let Some(i) = rest.find(kw) {
                let before = rest[..i].chars().last();
                let after = rest[i + kw.len()..].trim_start();
                if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    && rest[i + kw.len()..].starts_with(char::is_whitespace)
                    && after.starts_with('{')
                {
                    out.push(n);
                }
                rest = &rest[i + kw.len()..];
            }
        }
    }
    out
}

/// Table names declared in the session schema: every `name: "…"` of a
/// `Table` in proto's `schema.rs`, plus the tables of the ledger file.
fn session_tables(root: &std::path::Path) -> std::collections::BTreeSet<String> {
    let schema = std::fs::read_to_string(root.join("crates/proto/src/schema.rs")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for l in schema.lines() {
        if let Some(rest) = l.trim().strip_prefix("name: \"") {
            names.insert(rest.split('"').next().unwrap().to_owned());
        }
    }
    let ledger = std::fs::read_to_string(root.join("crates/proto/src/ledger.rs")).unwrap();
    for lit in string_literals(&ledger) {
        names.extend(created_tables(&lit.text));
    }
    names
}

fn created_tables(text: &str) -> Vec<String> {
    let mut words = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .peekable();
    let mut out = Vec::new();
    while let Some(w) = words.next() {
        if w == "CREATE" && words.peek() == Some(&"TABLE") {
            words.next();
            let mut name = words.next();
            if name == Some("IF") {
                words.next();
                words.next();
                name = words.next();
            }
            out.extend(name.map(str::to_owned));
        }
    }
    out
}

/// Table names the central DB's migrations create (every `CREATE TABLE`
/// in a string under `crates/host/src/db/`).
fn central_tables(root: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for f in rust_files(&root.join(CENTRAL_DOOR)) {
        let src = std::fs::read_to_string(&f).unwrap();
        for lit in string_literals(&src) {
            names.extend(created_tables(&lit.text));
        }
    }
    names
}

fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `file:line: KEYWORD table (kind)` for every statement outside its door.
fn sql_outside_the_door(
    root: &std::path::Path,
    session: &std::collections::BTreeSet<String>,
    central: &std::collections::BTreeSet<String>,
) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let crates = std::fs::read_dir(root.join("crates")).unwrap();
    let mut srcs: Vec<_> = crates.flatten().map(|e| e.path().join("src")).collect();
    srcs.sort();
    for src in srcs {
        for f in rust_files(&src) {
            let rel = f
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&f).unwrap();
            let in_a_door = rel.starts_with(SESSION_DOOR) || rel.starts_with(CENTRAL_DOOR);
            for lit in string_literals(&text) {
                for off in dynamic_targets(&lit.text)
                    .into_iter()
                    .filter(|_| !in_a_door)
                {
                    found.push((
                        rel.clone(),
                        format!(
                            "{rel}:{}: a statement whose table is chosen at run time belongs behind a door ({SESSION_DOOR} or {CENTRAL_DOOR})",
                            lit.line + off
                        ),
                    ));
                }
                for (off, table) in sql_targets(&lit.text) {
                    let is_session = session.contains(&table);
                    let is_central = central.contains(&table);
                    let allowed = (is_session && rel.starts_with(SESSION_DOOR))
                        || (is_central && rel.starts_with(CENTRAL_DOOR));
                    if (is_session || is_central) && !allowed {
                        let door = if is_session {
                            SESSION_DOOR
                        } else {
                            CENTRAL_DOOR
                        };
                        found.push((
                            rel.clone(),
                            format!(
                                "{rel}:{}: a statement on `{table}` belongs in {door}",
                                lit.line + off
                            ),
                        ));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn sql_lives_behind_its_door() {
    let root = workspace_root();
    let session = session_tables(&root);
    let central = central_tables(&root);
    // The lists come from the schemas; if parsing them broke, say so here
    // rather than pass on empty lists.
    for t in [
        "messages_in",
        "messages_out",
        "processing_ack",
        "delivered",
        "container_state",
        "session_state",
        "conversation",
        "session_identity",
    ] {
        assert!(
            session.contains(t),
            "{t} missing from the parsed session schema: {session:?}"
        );
    }
    for t in [
        "sessions",
        "agent_groups",
        "wirings",
        "pending_approvals",
        "host_notices",
    ] {
        assert!(
            central.contains(t),
            "{t} missing from the parsed central migrations: {central:?}"
        );
    }
    let found = sql_outside_the_door(&root, &session, &central);
    let stray: Vec<&String> = found
        .iter()
        .filter(|(file, _)| {
            !SQL_OUTSIDE_THE_DOOR
                .iter()
                .any(|(p, _)| file.starts_with(p))
        })
        .map(|(_, msg)| msg)
        .collect();
    assert!(
        stray.is_empty(),
        "SQL outside its door (move it into a named function there, decision 0034):\n{}",
        stray
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let stale: Vec<&str> = SQL_OUTSIDE_THE_DOOR
        .iter()
        .filter(|(p, _)| !found.iter().any(|(file, _)| file.starts_with(p)))
        .map(|(p, _)| *p)
        .collect();
    assert!(
        stale.is_empty(),
        "these SQL_OUTSIDE_THE_DOOR entries hold no stray SQL any more; remove them: {stale:?}"
    );
}

#[test]
fn the_sql_scanner_sees_what_it_must_and_skips_tests() {
    let src = r##"
        // "SELECT * FROM messages_in" in a comment does not count
        fn product() {
            let c = '"'; let l: &'static str = "x";
            conn.execute("UPDATE messages_in SET status = ?1", []);
            conn.query_row(r#"SELECT 1 FROM
                sessions s JOIN agent_groups g ON g.id = s.agent_group_id"#, [], f);
            batch("CREATE TABLE IF NOT EXISTS delivered (x)");
            log("nothing FROM here");
        }
        #[cfg(test)]
        mod tests {
            fn t() { c.execute("DELETE FROM messages_out", []); }
        }
        fn after() { q("INSERT OR IGNORE INTO wirings VALUES (1)"); }
    "##;
    let got: Vec<(usize, String)> = string_literals(src)
        .iter()
        .flat_map(|l| {
            sql_targets(&l.text)
                .into_iter()
                .map(move |(off, t)| (l.line + off, t))
        })
        .collect();
    let want = [
        (5, "messages_in"),
        (7, "sessions"),
        (7, "agent_groups"),
        (8, "delivered"),
        (9, "here"),
        (15, "wirings"),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(l, t)| (*l, t.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        created_tables("CREATE TABLE a (x); CREATE TABLE IF NOT EXISTS b (y)"),
        ["a", "b"]
    );
    assert_eq!(
        dynamic_targets("SELECT x FROM {table} WHERE y\nDELETE FROM  {t}\nreading FROM{x} INFROM {y} from {z}\nINSERT INTO {t} SELECT * FROM x"),
        [0, 1, 3]
    );
}
