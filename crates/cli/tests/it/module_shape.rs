//! Inside a crate: file size and module cycles (issue 16, decision 0035).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file longer than this is split by job, or listed below with why.
const MAX_LINES: usize = 700;

/// Files allowed over [`MAX_LINES`], each with its reason. A listed file
/// that shrinks under the limit fails the test too, so the list stays true.
const LONG_FILES: &[(&str, &str)] = &[
    // Over only by their in-file tests (code under 700):
    (
        "crates/channels/src/cli_socket.rs",
        "608 lines of code; the rest is the protocol's tests",
    ),
    (
        "crates/host/src/session_check.rs",
        "649 lines of code; the rest is its tests",
    ),
    (
        "crates/policy/src/route.rs",
        "296 lines of code; the rest is its routing table tests",
    ),
    (
        "crates/runner/src/tools/files.rs",
        "427 lines of code; the rest is its tests",
    ),
];

/// Module cycles known today, each with who is removing it. A new cycle, or
/// one of these that grew or went away, fails the test.
const KNOWN_CYCLES: &[(&[&str], &str)] = &[];

/// The repository root (`CARGO_MANIFEST_DIR` is `crates/cli`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `crates/<name>/src` directory, by crate folder name.
fn crate_srcs() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(repo_root().join("crates")).expect("reading crates/") {
        let e = e.expect("reading crates/");
        let src = e.path().join("src");
        if src.is_dir() {
            out.insert(e.file_name().to_string_lossy().into_owned(), src);
        }
    }
    out
}

/// The `.rs` files under `dir`, recursively, sorted.
fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("reading a source folder") {
            let p = e.expect("reading a source folder").path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    let root = repo_root().canonicalize().expect("repo root");
    let p = p.canonicalize().expect("source file");
    p.strip_prefix(&root)
        .unwrap_or(&p)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn no_source_file_over_700_lines() {
    let mut long = BTreeMap::new();
    for src in crate_srcs().values() {
        for f in rs_files(src) {
            let n = std::fs::read_to_string(&f)
                .expect("reading a source file")
                .lines()
                .count();
            if n > MAX_LINES {
                long.insert(rel(&f), n);
            }
        }
    }
    eprintln!("files over {MAX_LINES} lines:");
    for (f, n) in &long {
        eprintln!("  {n:>5}  {f}");
    }
    let mut errors = Vec::new();
    for (f, n) in &long {
        if !LONG_FILES.iter().any(|(l, _)| l == f) {
            errors.push(format!(
                "{f} has {n} lines (limit {MAX_LINES}): split it by job, or add it to LONG_FILES in {} with the reason",
                file!()
            ));
        }
    }
    for (f, why) in LONG_FILES {
        assert!(
            !why.trim().is_empty(),
            "{f} is in LONG_FILES without a reason"
        );
        if !long.contains_key(*f) {
            errors.push(format!(
                "{f} is in LONG_FILES but is no longer over {MAX_LINES} lines (or is gone): take it off the list"
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// A module's path inside its crate: `a/b.rs` and `a/b/mod.rs` are `a::b`;
/// the crate root (`lib.rs`, `main.rs`) is the empty path.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let r = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = r.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !(stem == "mod" || (parts.is_empty() && matches!(stem, "lib" | "main"))) {
        parts.push(stem.to_owned());
    }
    parts
}

/// `code` with comments, string and char literals blanked (newlines kept).
fn strip(code: &str) -> String {
    let c: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        if c[i] == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (at(i + 1) == '"' || (at(i + 1) == '#' && !c[i.saturating_sub(1)].is_alphanumeric()))
        {
            // a raw string r"…" or r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                blank(&mut out, c[j]);
                j += 1;
            }
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                }
                i += 1;
            }
            i += 1;
        } else if c[i] == '\'' && (at(i + 2) == '\'' || (at(i + 1) == '\\')) {
            // a char literal ('x', '\n', '\u{..}'); lifetimes are left alone
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The `crate::…`, `super::…`, `self::…` and bare `name::…` paths in
/// stripped `code`, with `use` groups (`crate::{a, b::{c}}`) expanded, each
/// with the depth of inline modules (`mod tests { … }`) it sits in.
fn paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let t: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut inline: Vec<usize> = Vec::new(); // brace depth of each open inline module
    let mut depth = 0usize;
    let mut i = 0;
    let ident_at = |i: usize| -> Option<(String, usize)> {
        let mut j = i;
        while j < t.len() && (t[j].is_alphanumeric() || t[j] == '_') {
            j += 1;
        }
        (j > i).then(|| (t[i..j].iter().collect(), j))
    };
    let skip_ws = |mut i: usize| {
        while i < t.len() && t[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < t.len() {
        let boundary =
            i == 0 || !(t[i - 1].is_alphanumeric() || matches!(t[i - 1], '_' | ':' | '.'));
        match t[i] {
            '{' => {
                depth += 1;
                i += 1;
            }
            '}' => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if boundary && (c.is_alphabetic() || c == '_') => {
                let (word, j) = ident_at(i).expect("an identifier");
                if word == "mod" {
                    let k = skip_ws(j);
                    if let Some((_, k)) = ident_at(k) {
                        let k = skip_ws(k);
                        if t.get(k) == Some(&'{') {
                            inline.push(depth + 1);
                        }
                    }
                    i = j;
                } else if t.get(j) == Some(&':') && t.get(j + 1) == Some(&':') {
                    // `crate::`, `super::`, `self::`, or a bare `child::`
                    // (read as `self::child::`; an extern crate or a type
                    // resolves to no module file and is dropped).
                    let prefix = match word.as_str() {
                        "crate" | "super" | "self" => Vec::new(),
                        _ => vec!["self".to_owned()],
                    };
                    let mut found = Vec::new();
                    let end = tree(&t, i, prefix, &mut found);
                    out.extend(found.into_iter().map(|p| (inline.len(), p)));
                    i = end.max(j);
                } else {
                    i = j;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Parses a use-tree starting at `i` (`a::b::{c, d::e}`), pushing each full
/// path onto `found`; returns where it ended.
fn tree(t: &[char], mut i: usize, mut prefix: Vec<String>, found: &mut Vec<Vec<String>>) -> usize {
    loop {
        while i < t.len() && t[i].is_whitespace() {
            i += 1;
        }
        if t.get(i) == Some(&'{') {
            i += 1;
            loop {
                while i < t.len() && (t[i].is_whitespace() || t[i] == ',') {
                    i += 1;
                }
                if i >= t.len() || t[i] == '}' {
                    found.push(prefix.clone()); // `{}` or a group naming only `self`
                    return i + 1;
                }
                i = tree(t, i, prefix.clone(), found);
            }
        }
        let start = i;
        while i < t.len() && (t[i].is_alphanumeric() || t[i] == '_') {
            i += 1;
        }
        if i > start {
            prefix.push(t[start..i].iter().collect());
        }
        if t.get(i) == Some(&':') && t.get(i + 1) == Some(&':') {
            i += 2;
            continue;
        }
        found.push(prefix);
        return i;
    }
}

/// Stripped `code` with each `#[cfg(test)]` item blanked (newlines kept):
/// a test using a sibling's helper is not a dependency of the product.
/// The item ends at its first `;` outside braces or at the `}` closing its
/// first `{` (comments and literals are already blank, so braces count).
fn without_tests(code: &str) -> String {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find(ATTR) {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, ch) in item.char_indices().skip(ATTR.len()) {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        out.extend(
            item[..end]
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' }),
        );
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_cycle_scanner_skips_test_items() {
    let code = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n    fn f() { if x { y } }\n}\n#[cfg(test)] use crate::c;\nuse crate::d;\n";
    let kept = without_tests(code);
    assert!(
        kept.contains("crate::a") && kept.contains("crate::d"),
        "{kept}"
    );
    assert!(
        !kept.contains("crate::b") && !kept.contains("crate::c"),
        "{kept}"
    );
    assert_eq!(kept.lines().count(), code.lines().count());
}

/// The module `path` (written in module `from`, inside `inline` inline
/// modules) reaches: the deepest module file it passes through.
fn resolve(
    from: &[String],
    inline: usize,
    path: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let mut segs = path.iter().peekable();
    let mut base: Vec<String> = match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        _ => from.to_vec(),
    };
    let mut ups = 0usize;
    while let Some(s) = segs.peek() {
        match s.as_str() {
            "super" => ups += 1,
            "self" => {}
            _ => break,
        }
        segs.next();
    }
    // `super` inside an inline module first leaves the inline module.
    for _ in 0..ups.saturating_sub(inline) {
        base.pop()?;
    }
    for s in segs {
        let mut next = base.clone();
        next.push(s.clone());
        if !modules.contains(&next) {
            break;
        }
        base = next;
    }
    Some(base)
}

/// Each crate's module graph: an edge `a -> b` when a file uses a path into
/// module `b`, counted unless `b` is `a` or one of its ancestors (a child
/// using its parent's items is how Rust nests modules; a parent using its
/// child, and any use between siblings or cousins, is a dependency).
fn module_graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files: Vec<PathBuf> = rs_files(src)
        .into_iter()
        .filter(|f| !f.starts_with(src.join("bin")))
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let from = module_of(src, f);
        let code = without_tests(&strip(
            &std::fs::read_to_string(f).expect("reading a source file"),
        ));
        for (inline, p) in paths(&code) {
            let Some(to) = resolve(&from, inline, &p, &modules) else {
                continue;
            };
            if !from.starts_with(&to) {
                graph.get_mut(&from).expect("a module").insert(to);
            }
        }
    }
    graph
}

/// Tarjan's strongly connected components with more than one module.
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'g Vec<String>, usize>,
        low: BTreeMap<&'g Vec<String>, usize>,
        stack: Vec<&'g Vec<String>>,
        on_stack: BTreeSet<&'g Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'g>(w: &mut Walk<'g>, v: &'g Vec<String>) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on_stack.insert(v);
        for to in &w.graph[v] {
            if !w.index.contains_key(to) {
                visit(w, to);
                let l = w.low[to].min(w.low[v]);
                w.low.insert(v, l);
            } else if w.on_stack.contains(to) {
                let l = w.index[to].min(w.low[v]);
                w.low.insert(v, l);
            }
        }
        if w.low[v] == w.index[v] {
            let mut scc = Vec::new();
            loop {
                let x = w.stack.pop().expect("tarjan stack");
                w.on_stack.remove(x);
                scc.push(x.clone());
                if x == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                w.out.push(scc);
            }
        }
    }
    let mut w = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !w.index.contains_key(v) {
            visit(&mut w, v);
        }
    }
    w.out.sort();
    w.out
}

fn module_name(krate: &str, m: &[String]) -> String {
    std::iter::once(krate.to_owned())
        .chain(m.iter().cloned())
        .collect::<Vec<_>>()
        .join("::")
}

#[test]
fn no_module_cycles_inside_a_crate() {
    let mut found: Vec<Vec<String>> = Vec::new();
    for (krate, src) in crate_srcs() {
        let graph = module_graph(&src);
        for scc in cycles(&graph) {
            let names: Vec<String> = scc.iter().map(|m| module_name(&krate, m)).collect();
            eprintln!("cycle: {}", names.join(" <-> "));
            for m in &scc {
                let to: Vec<String> = graph[m]
                    .iter()
                    .filter(|t| scc.contains(t))
                    .map(|t| module_name(&krate, t))
                    .collect();
                eprintln!("    {} -> {}", module_name(&krate, m), to.join(", "));
            }
            found.push(names);
        }
    }
    let mut errors = Vec::new();
    for c in &found {
        if !KNOWN_CYCLES
            .iter()
            .any(|(k, _)| k.iter().copied().eq(c.iter().map(String::as_str)))
        {
            errors.push(format!(
                "new module cycle: {} (break it: move what both sides need into one of them or a third module)",
                c.join(" <-> ")
            ));
        }
    }
    for (k, who) in KNOWN_CYCLES {
        if !found
            .iter()
            .any(|c| k.iter().copied().eq(c.iter().map(String::as_str)))
        {
            errors.push(format!(
                "known cycle {} ({who}) is gone or changed: update KNOWN_CYCLES in {}",
                k.join(" <-> "),
                file!()
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The newcomer's walk (issue 16, decision 0036): a channel kind is named
/// only by its own module and the registry in `crates/channels/src/lib.rs`,
/// so adding one touches those two places. Product code anywhere else that
/// names a kind's module (`pinch_channels::telegram::…`, `telegram::…`)
/// fails; string literals, comments and tests do not count.
#[test]
fn a_channel_kind_is_named_only_by_its_module_and_the_registry() {
    let channels = crate_srcs()["channels"].clone();
    let kinds: Vec<&str> = pinch_channels::KINDS.iter().map(|k| k.section).collect();
    assert!(kinds.contains(&"telegram"), "the registry: {kinds:?}");
    let mut errors = Vec::new();
    for src in crate_srcs().values() {
        for f in rs_files(src) {
            let code = without_tests(&strip(
                &std::fs::read_to_string(&f).expect("reading a source file"),
            ));
            for kind in &kinds {
                let own = f == channels.join(format!("{kind}.rs"))
                    || f.starts_with(channels.join(kind))
                    || f == channels.join("lib.rs");
                if own {
                    continue;
                }
                // Another crate's module or function of the same name
                // (`tokio::signal::ctrl_c`, `libc::signal(…)`, a `signal(…)`
                // call) is not the channel's: a module is named with a path
                // that goes on after it (`signal::…`), or imported whole.
                let named = paths(&code).into_iter().any(|(_, p)| {
                    // A bare path is read as `self::…`.
                    let q = if p.first().is_some_and(|s| s == "self") {
                        &p[1..]
                    } else {
                        &p[..]
                    };
                    let external = matches!(
                        q.first().map(String::as_str),
                        Some("tokio" | "libc" | "std")
                    );
                    let whole = q.len() == 2 && q[0] == "pinch_channels" && q[1] == *kind;
                    !external
                        && (whole || q[..q.len().saturating_sub(1)].iter().any(|seg| seg == kind))
                });
                if named {
                    errors.push(format!(
                        "{} names the `{kind}` channel's module: what it needs belongs in the channel's own module or its KIND (crates/channels/src/kind.rs)",
                        rel(&f)
                    ));
                }
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
