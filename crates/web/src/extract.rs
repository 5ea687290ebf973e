//! A fetched body → readable text: HTML to Markdown (htmd, on html5ever),
//! JSON, XML and plain text as they are, anything else refused with the
//! reason. Pure functions of the bytes and the response's content type.

use std::sync::{Arc, Mutex};

/// What a body turned into.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Extracted {
    pub(crate) title: Option<String>,
    pub(crate) text: String,
}

/// What kind of body a content type names (its parameters ignored).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Html,
    Text,
    Unsupported(String),
}

/// Decides from the `Content-Type` header and, without one, from the bytes.
pub(crate) fn kind(content_type: Option<&str>, body: &[u8]) -> Kind {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty());
    let Some(mime) = essence else {
        return sniff(body);
    };
    match mime.as_str() {
        "text/html" | "application/xhtml+xml" => Kind::Html,
        "application/json" | "application/xml" | "application/javascript"
        | "application/ecmascript" | "application/x-ndjson" | "application/yaml"
        | "application/toml" => Kind::Text,
        m if m.starts_with("text/") || m.ends_with("+json") || m.ends_with("+xml") => Kind::Text,
        "application/pdf" => Kind::Unsupported(
            "a PDF: web_fetch returns text and does not read PDFs yet; if the shell tool's network allows the host, download it and use a PDF tool there".to_owned(),
        ),
        "application/octet-stream" => sniff(body),
        m if m.starts_with("image/") || m.starts_with("audio/") || m.starts_with("video/") => {
            Kind::Unsupported(format!("{m}: web_fetch returns text, not media"))
        }
        m => Kind::Unsupported(format!("{m}: web_fetch returns text only")),
    }
}

/// No (or a generic) content type: text if the bytes look like text.
fn sniff(body: &[u8]) -> Kind {
    let head = &body[..body.len().min(1024)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    if head.contains(&0) {
        Kind::Unsupported("binary data with no text content type".to_owned())
    } else if text.trim_start().starts_with("<!doctype html") || text.contains("<html") {
        Kind::Html
    } else {
        Kind::Text
    }
}

/// The body as a string: the charset the header names, else a BOM, else
/// UTF-8 (invalid bytes replaced).
pub(crate) fn decode(content_type: Option<&str>, body: &[u8]) -> String {
    let label = content_type.and_then(|c| {
        c.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| v.trim().trim_matches('"').to_owned())
        })
    });
    let enc = label
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    let (text, _, _) = enc.decode(body);
    text.into_owned()
}

/// HTML given to the parser at most; the rest of a longer page is left out
/// (and the page says it was cut).
pub(crate) const MAX_HTML: usize = 1024 * 1024;
/// Nesting the HTML → Markdown converter is trusted with. htmd walks the
/// tree by recursion and html5ever checks scopes by walking the stack of
/// open elements, so a page of thousands of nested `<div>`s would overflow
/// a stack or spin for minutes (decision 0042's review): deeper pages are
/// read as plain text instead.
pub(crate) const MAX_DEPTH: usize = 256;

/// Elements that never hold others (not counted as opened).
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr", "param", "keygen", "!doctype",
];

/// The deepest nesting a naive reading of the tags reaches: every start
/// tag that is not void or self-closed opens, every end tag closes. It
/// over-counts (`<p>` and `<li>` close implicitly), never under-counts by
/// more than html5ever's reconstruction of formatting elements.
pub(crate) fn naive_depth(html: &str) -> usize {
    let b = html.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while let Some(off) = b[i..].iter().position(|&c| c == b'<') {
        i += off + 1;
        let closing = b.get(i) == Some(&b'/');
        let start = if closing { i + 1 } else { i };
        let end = b[start..]
            .iter()
            .position(|c| !c.is_ascii_alphanumeric() && *c != b'!' && *c != b'-')
            .map_or(b.len(), |n| start + n);
        if end == start {
            continue;
        }
        let name = html[start..end].to_ascii_lowercase();
        if name.starts_with("!--") {
            i = html[start..].find("-->").map_or(b.len(), |n| start + n + 3);
            continue;
        }
        let gt = b[end..]
            .iter()
            .position(|&c| c == b'>')
            .map_or(b.len(), |n| end + n);
        let self_closed = gt > 0 && b.get(gt - 1) == Some(&b'/');
        if closing {
            depth = depth.saturating_sub(1);
        } else if !VOID.contains(&name.as_str()) && !self_closed {
            depth += 1;
            max = max.max(depth);
        }
        i = gt.min(b.len());
    }
    max
}

/// Plain text of HTML without a DOM: tags dropped (with the contents of
/// scripts and styles), a few entities decoded, blank runs collapsed.
/// Linear in the input; for pages too deep for [`html`].
pub(crate) fn html_as_text(source: &str) -> String {
    let lower = source.to_ascii_lowercase();
    let mut out = String::with_capacity(source.len() / 2);
    let mut i = 0;
    while i < source.len() {
        match source[i..].find('<') {
            None => {
                out.push_str(&source[i..]);
                break;
            }
            Some(off) => {
                out.push_str(&source[i..i + off]);
                let at = i + off;
                let skip_to = ["script", "style", "noscript", "template", "svg"]
                    .iter()
                    .find(|t| lower[at + 1..].starts_with(*t))
                    .and_then(|t| lower[at..].find(&format!("</{t}")).map(|e| at + e));
                let from = skip_to.unwrap_or(at);
                i = match source[from..].find('>') {
                    Some(gt) => from + gt + 1,
                    None => source.len(),
                };
                out.push(' ');
            }
        }
    }
    let out = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let mut lines: Vec<String> = Vec::new();
    for l in out.lines() {
        let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
        if !l.is_empty() {
            lines.push(l);
        }
    }
    lines.join("\n")
}

/// Tags whose content is never text for a reader.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "iframe", "svg", "canvas", "object", "embed",
];

/// HTML → Markdown and the page's `<title>`; a page nested deeper than
/// [`MAX_DEPTH`] is read as plain text ([`html_as_text`]).
pub(crate) fn html(source: &str) -> Extracted {
    if naive_depth(source) > MAX_DEPTH {
        tracing::debug!("a page nested deeper than {MAX_DEPTH} is read as plain text");
        return Extracted {
            title: None,
            text: html_as_text(source),
        };
    }
    let title: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = title.clone();
    let converter = htmd::HtmlToMarkdown::builder()
        .skip_tags(SKIPPED.to_vec())
        .add_handler(
            vec!["title"],
            move |h: &dyn htmd::element_handler::Handlers, e: htmd::Element| {
                let text = h.walk_children(e.node).content;
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if let Ok(mut t) = seen.lock() {
                    t.get_or_insert(text);
                }
                None
            },
        )
        .build();
    let text = converter.convert(source).unwrap_or_else(|e| {
        tracing::debug!("htmd could not convert a page ({e}); returning its text as is");
        source.to_owned()
    });
    let title = title
        .lock()
        .ok()
        .and_then(|t| t.clone())
        .filter(|t| !t.is_empty())
        .map(|t| t.chars().take(300).collect());
    Extracted {
        title,
        text: text.trim().to_owned(),
    }
}

/// Cuts `text` to at most `max` characters, on a character boundary.
pub(crate) fn cut(text: &mut String, max: usize) -> bool {
    match text.char_indices().nth(max) {
        Some((i, _)) => {
            text.truncate(i);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_markdown_with_its_title_and_without_scripts() {
        let page = r#"<!doctype html><html><head><title> The  &amp; Title </title>
            <style>p{color:red}</style><script>alert("x")</script></head>
            <body><h1>Hello</h1><p>Some <b>bold</b> and <a href="/x">a link</a>.</p>
            <ul><li>one</li><li>two</li></ul><noscript>enable js</noscript></body></html>"#;
        let e = html(page);
        assert_eq!(e.title.as_deref(), Some("The & Title"));
        assert!(e.text.starts_with("# Hello"), "{}", e.text);
        for want in ["**bold**", "[a link](/x)", "one", "two"] {
            assert!(e.text.contains(want), "{want} in {}", e.text);
        }
        for gone in ["alert", "color:red", "enable js", "The & Title"] {
            assert!(!e.text.contains(gone), "{gone} in {}", e.text);
        }
    }

    #[test]
    fn content_types_decide_the_kind() {
        assert_eq!(kind(Some("text/html; charset=utf-8"), b""), Kind::Html);
        assert_eq!(kind(Some("application/json"), b"{}"), Kind::Text);
        assert_eq!(kind(Some("application/ld+json"), b"{}"), Kind::Text);
        assert_eq!(kind(Some("text/plain"), b"x"), Kind::Text);
        assert_eq!(kind(None, b"<!DOCTYPE html><p>x"), Kind::Html);
        assert_eq!(kind(None, b"plain words"), Kind::Text);
        assert!(matches!(
            kind(None, b"\x89PNG\r\n\x1a\n\0\0"),
            Kind::Unsupported(_)
        ));
        match kind(Some("application/pdf"), b"%PDF") {
            Kind::Unsupported(why) => assert!(why.contains("PDF"), "{why}"),
            k => panic!("{k:?}"),
        }
        match kind(Some("image/png"), b"") {
            Kind::Unsupported(why) => assert!(why.contains("image/png"), "{why}"),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn charsets_are_honoured_and_cuts_keep_characters_whole() {
        assert_eq!(
            decode(Some("text/plain; charset=ISO-8859-1"), b"caf\xe9"),
            "café"
        );
        assert_eq!(decode(Some("text/plain"), "café".as_bytes()), "café");
        assert_eq!(decode(None, b"a\xffb"), "a\u{fffd}b");
        let mut s = "héllo wörld".to_owned();
        assert!(cut(&mut s, 5));
        assert_eq!(s, "héllo");
        let mut s = "short".to_owned();
        assert!(!cut(&mut s, 5));
    }

    /// A page of deeply nested elements is read as text, quickly, without
    /// the recursive converter (which would overflow the stack).
    #[test]
    fn deep_pages_are_read_as_text_in_linear_time() {
        let deep = format!(
            "<html><body>{}deep words{}</body></html>",
            "<div>".repeat(200_000),
            "</div>".repeat(10)
        );
        assert!(naive_depth(&deep) > MAX_DEPTH);
        let t0 = std::time::Instant::now();
        let e = html(&deep);
        assert_eq!(e.text, "deep words");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t0.elapsed()
        );
        let flat = "<p>a<p>b<br><img src=x><hr/><!-- <div> --><ul><li>c</li></ul>";
        assert!(naive_depth(flat) <= 4, "{}", naive_depth(flat));
        assert_eq!(
            html_as_text("<p>Tom &amp; Jerry</p><script>var x = '<p>';</script><style>p{}</style>\n<b>ok</b>"),
            "Tom & Jerry\nok"
        );
    }
}
