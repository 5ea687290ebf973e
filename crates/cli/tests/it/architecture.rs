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
