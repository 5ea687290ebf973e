//! A reply's Markdown as the HTML web chat shows (issue 18): rendered on
//! the server with pulldown-cmark (CommonMark, tables, strikethrough, task
//! lists) and sanitised with ammonia before any browser sees it. Raw HTML
//! in the text is shown as text, never as markup; links keep only
//! `http`, `https` and `mailto` and open in a new tab without an opener;
//! an image is shown as a link to it (the browser fetches nothing the
//! agent names unless a person clicks).
//! The page inserts this HTML and nothing else it did not build itself.

use pulldown_cmark::{html, Event, Options, Parser, Tag, TagEnd};

/// The largest text rendered (a longer one is shown as plain text).
const MAX_TEXT: usize = 256 * 1024;

/// `text` (Markdown) as sanitised HTML.
pub fn to_html(text: &str) -> String {
    if text.len() > MAX_TEXT {
        return ammonia::clean_text(text);
    }
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    // Raw HTML becomes text: a model (or whoever it quotes) writes no markup.
    // An image becomes a link to it: a browser would fetch an image by
    // itself, so an agent could send data anywhere in its URL; a link is
    // followed only by a person's click.
    let events = Parser::new_ext(text, opts).map(|e| match e {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }),
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        other => other,
    });
    let mut raw = String::with_capacity(text.len() * 3 / 2);
    html::push_html(&mut raw, events);
    ammonia::Builder::default()
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some("noopener noreferrer nofollow"))
        .set_tag_attribute_value("a", "target", "_blank")
        .add_tag_attributes("input", ["type", "checked", "disabled"])
        // `language-rust` on a fence's code: a class is only a style hook.
        .add_tag_attributes("code", ["class"])
        .add_tags(["input"])
        .rm_tags(["img"])
        .clean(&raw)
        .to_string()
        // No trailing newline after the last block: the bubble's text is
        // the reply's.
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_and_markup_never_does() {
        let h = to_html("**bold** and `code`\n\n```rust\nfn main() {}\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(h.contains("<strong>bold</strong>"), "{h}");
        assert!(h.contains("<code>code</code>"), "{h}");
        assert!(
            h.contains("<pre><code class=\"language-rust\">fn main() {}"),
            "{h}"
        );
        assert!(h.contains("<table>"), "{h}");
        let link = to_html("[docs](https://example.org/a?b=1)");
        assert!(
            link.contains(r#"href="https://example.org/a?b=1""#)
                && link.contains(r#"target="_blank""#)
                && link.contains("noopener"),
            "{link}"
        );
        for evil in [
            "<img src=x onerror=alert(1)>",
            "<script>alert(1)</script>",
            "[click](javascript:alert(1))",
            "[click](  JaVaScRiPt:alert(1))",
            "![x](x\" onerror=\"alert(1))",
            "<a href=\"javascript:alert(1)\">a</a>",
            "[x](data:text/html;base64,PHNjcmlwdD4=)",
        ] {
            let h = to_html(evil);
            // Escaped text may say anything; the tags (every `<` left is
            // one) may not.
            for tag in h
                .split('<')
                .skip(1)
                .map(|t| t.split('>').next().unwrap_or(""))
            {
                let t = tag.to_ascii_lowercase();
                assert!(
                    !t.starts_with("script")
                        && !t.starts_with("img")
                        && !t.contains("onerror")
                        && !t.contains("javascript:")
                        && !t.contains("data:"),
                    "{evil:?} → {h}"
                );
            }
        }
        // An image is a link: nothing is fetched without a click.
        let img = to_html("![the chart](https://tracker.example/p.png?secret=1)");
        assert!(
            !img.contains("<img")
                && img.contains(r#"<a href="https://tracker.example/p.png?secret=1""#)
                && img.contains(">the chart</a>"),
            "{img}"
        );
        // Raw HTML is shown as text.
        assert!(to_html("<b>hi</b>").contains("&lt;b&gt;hi&lt;/b&gt;"));
    }
}
