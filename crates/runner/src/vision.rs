//! Images a person sent, shown to a model that takes them (issue 17): the
//! batch's image attachments (JPEG, PNG, GIF, WebP), read from the inbox
//! and sent with the prompt as the provider's image blocks. The prompt
//! names every file either way, so a model without vision still knows it
//! was sent; an image too large for the APIs is scaled to fit
//! ([`crate::resize`]), or named with the reason.

use pinch_proto::content::InContent;
use pinch_proto::runner_config::RunnerConfig;
use pinch_providers::Image;

/// Images sent with one prompt at most.
pub const MAX_IMAGES: usize = 8;

/// What an attachment says of its type: its MIME type without parameters
/// and its name's extension, both lowercase.
pub fn type_hints(mime: Option<&str>, name: &str) -> (Option<String>, Option<String>) {
    let m = mime.map(|m| {
        m.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    (m, ext)
}

/// The media type of an image the APIs take, from its MIME type or name.
pub fn media_type(mime: Option<&str>, name: &str) -> Option<&'static str> {
    let (m, ext) = type_hints(mime, name);
    match (m.as_deref(), ext.as_deref()) {
        (Some("image/jpeg" | "image/jpg"), _) | (_, Some("jpg" | "jpeg")) => Some("image/jpeg"),
        (Some("image/png"), _) | (_, Some("png")) => Some("image/png"),
        (Some("image/gif"), _) | (_, Some("gif")) => Some("image/gif"),
        (Some("image/webp"), _) | (_, Some("webp")) => Some("image/webp"),
        _ => None,
    }
}

/// The batch's images, and a note for each one left out (too large, too
/// many, unreadable) to add to the prompt.
pub fn collect<'a>(
    cfg: &RunnerConfig,
    contents: impl Iterator<Item = &'a InContent>,
) -> (Vec<Image>, Vec<String>) {
    let (mut images, mut notes) = (Vec::new(), Vec::new());
    for c in contents {
        let InContent::Chat(chat) = c else { continue };
        for a in &chat.attachments {
            let Some(media_type) = media_type(a.mime.as_deref(), &a.name) else {
                continue;
            };
            if images.len() == MAX_IMAGES {
                notes.push(format!("[image {} not shown to you: at most {MAX_IMAGES} images go with one message; read it with read_file if you need it]", a.name));
                continue;
            }
            // The path as the agent sees it, under the inbox.
            let Some(rel) = a.path.strip_prefix("/workspace/inbox/") else {
                continue;
            };
            let path = cfg.paths.inbox_dir.join(rel);
            let max = crate::resize::MAX_SOURCE;
            let data = match crate::read::regular(&path, max + 1) {
                Ok(data) if data.len() > max => {
                    notes.push(format!(
                        "[image {} not shown to you: it is over {} MB; read it with the shell's tools if you need it]",
                        a.name,
                        max / (1024 * 1024)
                    ));
                    continue;
                }
                Ok(data) => data,
                Err(e) => {
                    notes.push(format!("[image {} could not be read: {e}]", a.name));
                    continue;
                }
            };
            let used: usize = images.iter().map(|i: &Image| i.data.len()).sum();
            let room = crate::resize::MAX_TOTAL.saturating_sub(used);
            match crate::resize::ready(data, media_type, room) {
                Ok(r) => {
                    if let Some((w, h)) = r.scaled {
                        notes.push(format!(
                            "[image {} was scaled to {w}×{h} pixels to fit the model's limits]",
                            a.name
                        ));
                    }
                    images.push(Image {
                        name: a.name.clone(),
                        media_type: r.media_type.into(),
                        data: r.data,
                    });
                }
                Err(why) => notes.push(format!("[image {} not shown to you: {why}]", a.name)),
            }
        }
    }
    (images, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_from_mime_or_name() {
        assert_eq!(media_type(Some("image/jpeg"), "x"), Some("image/jpeg"));
        assert_eq!(media_type(None, "Photo.JPG"), Some("image/jpeg"));
        assert_eq!(media_type(Some("image/png; q=1"), "x"), Some("image/png"));
        assert_eq!(
            media_type(Some("application/octet-stream"), "a.webp"),
            Some("image/webp")
        );
        assert_eq!(media_type(Some("image/svg+xml"), "a.svg"), None);
        assert_eq!(media_type(Some("image/heic"), "a.heic"), None);
    }

    #[test]
    fn images_are_read_from_the_inbox_and_the_rest_named() {
        use pinch_proto::content::{Attachment, ChatIn};
        let env = crate::tools::testing::Env::new();
        let inbox = &env.cfg.paths.inbox_dir;
        std::fs::create_dir_all(inbox.join("m1")).unwrap();
        std::fs::write(inbox.join("m1/a.png"), b"png-bytes").unwrap();
        std::fs::write(
            inbox.join("m1/big.jpg"),
            vec![0u8; crate::resize::MAX_IMAGE + 1],
        )
        .unwrap();
        std::fs::write(inbox.join("m1/notes.txt"), b"text").unwrap();
        let att = |name: &str, mime: Option<&str>| Attachment {
            name: name.into(),
            mime: mime.map(str::to_owned),
            size: 0,
            path: format!("/workspace/inbox/m1/{name}"),
        };
        let chat = InContent::Chat(ChatIn {
            text: "look".into(),
            attachments: vec![
                att("a.png", Some("image/png")),
                att("big.jpg", None),
                att("notes.txt", Some("text/plain")),
                att("gone.gif", Some("image/gif")),
            ],
            ..Default::default()
        });
        let (images, notes) = collect(&env.cfg, [&chat].into_iter());
        assert_eq!(images.len(), 1);
        assert_eq!(
            (images[0].media_type.as_str(), images[0].data.as_slice()),
            ("image/png", &b"png-bytes"[..])
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("big.jpg not shown to you: it is over a model's limits")
                && notes[0].contains("could not be decoded"),
            "{notes:?}"
        );
        assert!(notes[1].contains("gone.gif could not be read"), "{notes:?}");
    }
}
