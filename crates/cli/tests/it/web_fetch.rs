//! `web_fetch` end to end (issue 17, decision 0042): a model in a real
//! bwrap sandbox (no network of its own) calls the tool, the runner asks
//! the host through the credential proxy's socket, the host fetches a real
//! page from a loopback server the owner allowed, and the page's title and
//! text reach the user. The same sandbox cannot reach the host's own
//! listener or the metadata address through it, and an agent group whose
//! policy turns web_fetch off is told so.

use crate::common::*;
use pinch_host::sandbox::Choice;
use pinch_web::testing::{header, serve, Answer};

fn site(path: &str, _port: u16) -> Answer {
    Some(match path {
        "/page" => (
            200,
            header("content-type", "text/html"),
            b"<html><head><title>Landlord notes</title></head><body><h1>Rent</h1><p>Due on the <b>first</b>.</p></body></html>".to_vec(),
        ),
        "/to-metadata" => (302, header("location", "http://169.254.169.254/latest/meta-data/"), vec![]),
        p if p.starts_with("/brave?") => (
            200,
            header("content-type", "application/json"),
            br#"{"web":{"results":[{"title":"Rent <strong>law</strong>","url":"https://law.example/rent","description":"What a landlord may ask."}]}}"#.to_vec(),
        ),
        _ => (404, vec![], vec![]),
    })
}

/// One rule per phrase: fetch that URL; after the tool, say what it said.
fn script(urls: &[(&str, String)]) -> String {
    let mut s = String::from(
        "[[rule]]\ncontains = \"search-rent\"\ntool = \"web_search\"\nargs = { query = \"rent law\", count = 3 }\n\n",
    );
    for (phrase, url) in urls {
        s.push_str(&format!(
            "[[rule]]\ncontains = \"{phrase}\"\ntool = \"web_fetch\"\nargs = {{ url = \"{url}\" }}\n\n"
        ));
    }
    s.push_str("[[rule]]\nafter_tool = \"*\"\nreply = \"tool said: {tool_result}\"\n");
    s
}

fn one(replies: Vec<String>) -> String {
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.into_iter().next().unwrap()
}

#[test]
fn a_page_fetched_by_the_host_reaches_the_agent_in_its_sandbox() {
    if !bwrap_or_skip() {
        return;
    }
    let site = serve(site);
    let listener = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}", site.port);
    let mut cfg = with_script(
        host_config(tmp.path(), Choice::Bwrap),
        &script(&[
            ("read-page", format!("{base}/page")),
            ("via-redirect", format!("{base}/to-metadata")),
            (
                "metadata",
                "http://169.254.169.254/latest/meta-data/iam/".into(),
            ),
            ("own-listener", format!("http://127.0.0.1:{listener}/")),
            ("own-by-name", format!("http://localhost:{listener}/")),
        ]),
    );
    cfg.web.allow_private = pinch_policy::hosts::HostPatterns::parse_as(
        &[format!("127.0.0.1:{}", site.port)],
        "t",
        None,
    )
    .unwrap();
    const KEY: &str = "brave-secret-key-4f1d";
    cfg.web.search = Some(pinch_web::search::Backend::Brave {
        url: format!("{base}/brave"),
        key: pinch_web::search::Key::new(KEY),
    });
    let data = cfg.data_dir.clone();
    cfg.http = Some(pinch_host::config::HttpSettings::local(
        ([127, 0, 0, 1], listener).into(),
        true,
    ));
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let reply = one(c.ask("please read-page"));
    assert!(
        reply.starts_with(&format!("tool said: URL: {base}/page\nStatus: 200")),
        "{reply}"
    );
    assert!(
        reply.contains("Title: Landlord notes")
            && reply.contains("# Rent\n\nDue on the **first**."),
        "{reply}"
    );
    for (phrase, why) in [
        ("via-redirect", "169.254.169.254 is a link-local address"),
        ("metadata", "169.254.169.254 is a link-local address"),
        // The owner allowed the test site's port only.
        (
            "own-listener",
            "allowed by [web_fetch] allow_private on another port",
        ),
        (
            "own-by-name",
            "localhost resolves only to non-public addresses",
        ),
    ] {
        let reply = one(c.ask(&format!("please {phrase}")));
        assert!(
            reply.starts_with("tool said: web_fetch ") && reply.contains(why),
            "{phrase}: {reply}"
        );
    }
    assert_eq!(
        site.hits.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the page and the first hop of the redirect"
    );
    let reply = one(c.ask("please search-rent"));
    assert_eq!(
        reply,
        "tool said: Results for \"rent law\":\n\n1. Rent law\n   https://law.example/rent\n   What a landlord may ask."
    );
    assert!(site
        .heads
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.contains(&format!("x-subscription-token: {KEY}"))));
    rt.block_on(host.shutdown()).unwrap();
    // The search key never reached the sandbox's side: not in runner.json,
    // the session DBs, or any log.
    assert_eq!(
        files_holding(&data, KEY),
        Vec::<std::path::PathBuf>::new(),
        "the search key is in these files"
    );
}

/// A group whose policy turns web_fetch off is not offered the tool, and
/// the host refuses the route even when the sandbox asks it directly.
#[test]
fn a_group_whose_policy_turns_web_fetch_off_is_refused_by_the_host() {
    let site = serve(site);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/page", site.port);
    let mut cfg = host_config(tmp.path(), any_sandbox());
    cfg.web.allow_private = pinch_policy::hosts::HostPatterns::parse_as(
        &[format!("127.0.0.1:{}", site.port)],
        "t",
        None,
    )
    .unwrap();
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let bad = pinch(
        &[
            "admin",
            "groups",
            "config-set",
            "main",
            "--web",
            r#"{"fetch":"yes"}"#,
        ],
        &data,
    )
    .output()
    .unwrap();
    let said =
        String::from_utf8_lossy(&bad.stderr).to_string() + &String::from_utf8_lossy(&bad.stdout);
    assert!(
        !bad.status.success() && said.contains("--web must be a JSON object like"),
        "{said}"
    );
    let set = pinch(
        &[
            "admin",
            "groups",
            "config-set",
            "main",
            "--web",
            r#"{"fetch":false}"#,
        ],
        &data,
    )
    .output()
    .unwrap();
    assert!(set.status.success(), "{set:?}");
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(c.ask("hello").len(), 1);
    assert_eq!(
        runner_json(&data)["web"],
        serde_json::json!({"fetch": false, "search": false, "voice": false, "speech": false}),
        "the runner does not offer the tool"
    );
    let s = rt.block_on(host.sessions()).remove(0);
    let sock = data.join("run/proxy").join(&s.id).join("llm.sock");
    let answer = post_to_proxy(&sock, "/_pinch/web/fetch", &format!(r#"{{"url":"{url}"}}"#));
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("web_fetch is off for agent group"),
        "{answer}"
    );
    assert_eq!(site.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The voice route on an install without [voice]: the answer says what
    // the owner can set.
    let answer = post_to_proxy(
        &sock,
        "/_pinch/voice/transcribe",
        r#"{"path":"/workspace/inbox/m1/voice.ogg"}"#,
    );
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("set [voice] url in pinch.toml"),
        "{answer}"
    );
    rt.block_on(host.shutdown()).unwrap();
}
