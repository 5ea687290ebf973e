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

/// Tags whose content is never text for a reader.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "iframe", "svg", "canvas", "object", "embed",
];

/// HTML → Markdown and the page's `<title>`.
pub(crate) fn html(source: &str) -> Extracted {
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
        .filter(|t| !t.is_empty());
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
}
