//! `web_fetch(url, max_chars)`: a page of the web as readable text, and
//! `web_search(query, count)`: the owner's search backend's results. The
//! sandbox has no network; the host does both (its routes on the
//! credential proxy's socket, decision 0042) under the agent group's
//! policy — fetches behind the SSRF guard — and answers with JSON.

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_providers::ToolSpec;

/// The host's routes on the proxy socket.
pub const FETCH_PATH: &str = "/_pinch/web/fetch";
pub const SEARCH_PATH: &str = "/_pinch/web/search";
/// The largest answer read from the host (100k characters of text at up to
/// 4 bytes each, JSON-escaped, and the fields around them).
const MAX_ANSWER: u64 = 1024 * 1024;

pub fn specs() -> Vec<ToolSpec> {
    vec![
        spec(
        "web_fetch",
        "Fetch a web page (http or https) and read it as text: HTML comes back as Markdown with its title; JSON and \
         plain text as they are. The host fetches it for you (your sandbox has no network of its own), follows \
         redirects, and refuses private and local addresses. Long pages are cut at max_chars.",
        json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "The http:// or https:// URL."},
                "max_chars": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 100000,
                              "description": "Characters of text to return at most."}
            },
            "required": ["url"]
        }),
    ),
    spec(
        "web_search",
        "Search the web. Returns up to `count` results, each with its title, URL and a snippet; read a result with \
         web_fetch. The host asks the search service its owner chose.",
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to search for, as you would type it into a search engine."},
                "count": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5,
                          "description": "Results to return at most."}
            },
            "required": ["query"]
        }),
    )]
}

pub fn call(ctx: &mut ToolCtx<'_>, name: &str, m: &Map<String, Value>) -> ToolResult {
    if name == "web_search" {
        let a = Args {
            tool: "web_search",
            m,
        };
        let query = a.str("query")?.trim();
        let count = a.opt_u64("count")?;
        let v = ask_host(
            ctx,
            "web_search",
            SEARCH_PATH,
            json!({ "query": query, "count": count }),
        )
        .map_err(|why| ToolError(format!("web_search {query:?}: {why}")))?;
        return Ok(render_hits(query, &v));
    }
    let a = Args {
        tool: "web_fetch",
        m,
    };
    let url = a.str("url")?.trim();
    let max_chars = a.opt_u64("max_chars")?;
    let v = ask_host(
        ctx,
        "web_fetch",
        FETCH_PATH,
        json!({ "url": url, "max_chars": max_chars }),
    )
    .map_err(|why| ToolError(format!("web_fetch {url}: {why}")))?;
    Ok(render(&v))
}

/// POSTs `body` to the host's route `path`; the JSON answer, or why not.
fn ask_host(ctx: &mut ToolCtx<'_>, tool: &str, path: &str, body: Value) -> Result<Value, String> {
    let Some(socket) = ctx.cfg.proxy_socket.clone() else {
        return Err("not available: this runner has no credential proxy to ask".into());
    };
    let wait = ctx.cfg.timings.web_fetch_ms;
    ctx.set_tool_in_flight(Some((tool, wait)));
    let r = pinch_providers::http::post(
        &socket,
        path,
        &[],
        &body.to_string(),
        Duration::from_millis(wait),
    );
    ctx.set_tool_in_flight(None);
    let resp = r.map_err(|e| e.message)?;
    let status = resp.status;
    let mut text = String::new();
    resp.body
        .take(MAX_ANSWER)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the host's answer: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|_| {
        let head: String = text.chars().take(300).collect();
        format!("the host answered {status}: {head}")
    })?;
    if status != 200 {
        return Err(v["error"].as_str().unwrap_or("no reason given").to_owned());
    }
    Ok(v)
}

/// Search results as the model reads them: numbered, one block each.
fn render_hits(query: &str, v: &Value) -> String {
    let hits = v["results"].as_array().cloned().unwrap_or_default();
    if hits.is_empty() {
        return format!("No results for {query:?}.");
    }
    let mut out = format!("Results for {query:?}:\n");
    for (i, h) in hits.iter().enumerate() {
        let s = |k: &str| h[k].as_str().unwrap_or("").to_owned();
        out.push_str(&format!("\n{}. {}\n   {}\n", i + 1, s("title"), s("url")));
        if !s("snippet").is_empty() {
            out.push_str(&format!("   {}\n", s("snippet")));
        }
    }
    out
}

/// The page as the model reads it: a few header lines, then the text.
fn render(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("");
    let mut out = format!("URL: {}\nStatus: {}", s("final_url"), v["status"]);
    if s("final_url") != s("url") {
        out.push_str(&format!(" (redirected from {})", s("url")));
    }
    if !s("content_type").is_empty() {
        out.push_str(&format!("\nContent-Type: {}", s("content_type")));
    }
    if !s("title").is_empty() {
        out.push_str(&format!("\nTitle: {}", s("title")));
    }
    if v["truncated"].as_bool() == Some(true) {
        out.push_str("\nNote: the page was longer and was cut.");
    }
    if v["cached"].as_bool() == Some(true) {
        out.push_str("\nNote: served from the host's cache (fetched in the last few minutes).");
    }
    out.push_str("\n\n");
    out.push_str(s("text"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_renders_with_its_facts_first() {
        let v = json!({"url": "http://a/x", "final_url": "http://a/y", "status": 200,
                       "content_type": "text/html", "title": "T", "text": "# Hi",
                       "truncated": true, "cached": false});
        assert_eq!(
            render(&v),
            "URL: http://a/y\nStatus: 200 (redirected from http://a/x)\nContent-Type: text/html\nTitle: T\nNote: the page was longer and was cut.\n\n# Hi"
        );
    }

    #[test]
    fn results_render_numbered() {
        let v = json!({"results": [{"title": "A", "url": "https://a/", "snippet": "about a"},
                                   {"title": "B", "url": "https://b/", "snippet": ""}]});
        assert_eq!(
            render_hits("q", &v),
            "Results for \"q\":\n\n1. A\n   https://a/\n   about a\n\n2. B\n   https://b/\n"
        );
        assert_eq!(
            render_hits("q", &json!({"results": []})),
            "No results for \"q\"."
        );
    }

    #[test]
    fn without_a_proxy_the_tool_says_so() {
        let env = super::super::testing::Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &super::super::testing::no_stop);
        let r = super::super::call(&mut ctx, "web_fetch", r#"{"url":"https://example.com"}"#);
        assert!(
            r.is_error && r.content.contains("no credential proxy"),
            "{r:?}"
        );
    }
}
