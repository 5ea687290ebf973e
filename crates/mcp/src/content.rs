//! MCP tool results → the text a model reads.

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};

/// Largest result text handed to the model (like the shell tool's cap).
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Text blocks verbatim; other kinds summarised in one bracketed line (the
/// model cannot see images through a text tool result); structured content
/// as JSON when there is no content block. Capped at [`MAX_RESULT_BYTES`].
pub fn result_text(r: &CallToolResult) -> String {
    let mut parts: Vec<String> = r.content.iter().map(block_text).collect();
    if parts.is_empty() {
        if let Some(v) = &r.structured_content {
            parts.push(v.to_string());
        }
    }
    cap(parts.join("\n"))
}

fn block_text(b: &ContentBlock) -> String {
    match b {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::Image(i) => format!(
            "[image: {}, {} bytes, not shown]",
            i.mime_type,
            b64_len(&i.data)
        ),
        ContentBlock::Audio(a) => format!(
            "[audio: {}, {} bytes, not shown]",
            a.mime_type,
            b64_len(&a.data)
        ),
        ContentBlock::Resource(r) => match &r.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => {
                format!("[resource {uri}]\n{text}")
            }
            ResourceContents::BlobResourceContents {
                uri,
                mime_type,
                blob,
                ..
            } => format!(
                "[resource {uri}: {}, {} bytes, not shown]",
                mime_type.as_deref().unwrap_or("binary"),
                b64_len(blob)
            ),
            _ => "[resource of an unknown kind, not shown]".to_owned(),
        },
        ContentBlock::ResourceLink(l) => {
            let mut s = format!("[resource link: {} ({})", l.uri, l.name);
            if let Some(d) = &l.description {
                s.push_str(": ");
                s.push_str(d);
            }
            s.push(']');
            s
        }
        _ => "[content of an unknown kind, not shown]".to_owned(),
    }
}

/// Decoded size of base64 text (close enough for a summary).
fn b64_len(data: &str) -> usize {
    let n = data.trim_end_matches('=').len();
    n * 3 / 4
}

pub fn cap(mut s: String) -> String {
    if s.len() <= MAX_RESULT_BYTES {
        return s;
    }
    let total = s.len();
    let mut cut = MAX_RESULT_BYTES;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(&format!("\n[… truncated: {} more bytes]", total - cut));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_mapped_and_long_text_capped() {
        let r = CallToolResult::success(vec![
            ContentBlock::text("hello"),
            ContentBlock::image("aGVsbG8=", "image/png"),
            ContentBlock::Resource(rmcp::model::EmbeddedResource::new(ResourceContents::text(
                "body",
                "file:///a.txt",
            ))),
        ]);
        let t = result_text(&r);
        assert_eq!(
            t,
            "hello\n[image: image/png, 5 bytes, not shown]\n[resource file:///a.txt]\nbody"
        );

        let mut r = CallToolResult::success(vec![]);
        r.structured_content = Some(serde_json::json!({"n": 1}));
        assert_eq!(result_text(&r), r#"{"n":1}"#);

        let long = "é".repeat(MAX_RESULT_BYTES);
        let t = cap(long);
        assert!(
            t.len() < MAX_RESULT_BYTES + 64 && t.contains("truncated"),
            "{}",
            t.len()
        );
    }
}
