//! `view_image(path)`: the agent looks at an image file in its workspace
//! (a chart it drew, a screenshot, a photo in the inbox). The image goes
//! to the model with the tool's result (`Step::ToolResult.images`), for
//! the rest of the turn; offered only to a model that takes images.

use std::io::Read;

use pinch_policy::path::Access;
use serde_json::{json, Map, Value};

use super::{files, spec, Args, ToolCtx, ToolError, ToolResult};
use crate::vision::MAX_IMAGES;
use pinch_providers::{Image, ToolSpec};

pub fn specs() -> Vec<ToolSpec> {
    vec![spec(
        "view_image",
        "Look at an image file (JPEG, PNG, GIF or WebP, at most 20 MB; a large one is scaled down): it is shown to you \
         with this tool's result. \
         Paths as for read_file (relative to your workspace, or /workspace/inbox/… for files people sent).",
        json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "The image file."}},
            "required": ["path"]
        }),
    )]
}

/// The media type an image's first bytes say it is (the name may lie).
pub fn sniff(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

pub fn call(ctx: &mut ToolCtx<'_>, _: &str, m: &Map<String, Value>) -> ToolResult {
    let a = Args {
        tool: "view_image",
        m,
    };
    let path = a.str("path")?.trim();
    if ctx.images_left == 0 {
        return Err(ToolError(format!(
            "view_image: at most {MAX_IMAGES} images can be shown in one turn; describe what you have seen so far"
        )));
    }
    let r = files::resolve(ctx.cfg, path, Access::Read)?;
    let shown = r.checked.display();
    if !r.exists {
        return Err(ToolError(format!("{shown} does not exist")));
    }
    let (f, len) = files::open_regular(&r)?;
    let max = crate::resize::MAX_SOURCE;
    if len > max as u64 {
        return Err(ToolError(format!(
            "{shown} is {len} bytes; view_image reads images up to {max} bytes"
        )));
    }
    let mut data = Vec::with_capacity(len as usize);
    f.take(max as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| ToolError(format!("reading {shown}: {e}")))?;
    if data.len() > max {
        return Err(ToolError(format!(
            "{shown} grew past {max} bytes while it was read"
        )));
    }
    let Some(media_type) = sniff(&data) else {
        return Err(ToolError(format!(
            "{shown} is not a JPEG, PNG, GIF or WebP image (by its first bytes)"
        )));
    };
    let r = crate::resize::ready(data, media_type, ctx.image_bytes_left)
        .map_err(|why| ToolError(format!("{shown} cannot be shown: {why}")))?;
    let scaled = r
        .scaled
        .map(|(w, h)| format!(", scaled to {w}×{h} pixels"))
        .unwrap_or_default();
    let (data, media_type) = (r.data, r.media_type);
    let n = data.len();
    ctx.images.push(Image {
        name: shown.clone(),
        media_type: media_type.into(),
        data,
    });
    ctx.images_left -= 1;
    ctx.image_bytes_left = ctx.image_bytes_left.saturating_sub(n);
    Ok(format!(
        "Showing {shown} ({media_type}, {n} bytes{scaled})."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::{no_stop, Env};

    #[test]
    fn images_are_sniffed_shown_and_bounded() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a.."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"<svg"), None);
        let env = Env::new();
        let ws = env.cfg.paths.workspace_dir.clone();
        std::fs::write(ws.join("chart.png"), b"\x89PNG\r\n\x1a\nchart").unwrap();
        std::fs::write(ws.join("fake.png"), b"#!/bin/sh").unwrap();
        let mut big = vec![0xFF, 0xD8, 0xFF];
        big.resize(crate::resize::MAX_IMAGE + 1, 0);
        std::fs::write(ws.join("big.jpg"), big).unwrap();
        std::fs::write(
            ws.join("huge.jpg"),
            vec![0xFF; crate::resize::MAX_SOURCE + 1],
        )
        .unwrap();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        ctx.images_left = 1;
        ctx.image_bytes_left = crate::resize::MAX_TOTAL;
        let m = |p: &str| json!({ "path": p }).as_object().unwrap().clone();
        assert!(call(&mut ctx, "view_image", &m("fake.png"))
            .unwrap_err()
            .0
            .contains("not a JPEG, PNG, GIF or WebP"));
        assert!(call(&mut ctx, "view_image", &m("big.jpg"))
            .unwrap_err()
            .0
            .contains("cannot be shown: it is over a model's limits"));
        assert!(call(&mut ctx, "view_image", &m("huge.jpg"))
            .unwrap_err()
            .0
            .contains("view_image reads images up to"));
        assert!(call(&mut ctx, "view_image", &m("../../etc/passwd")).is_err());
        let ok = call(&mut ctx, "view_image", &m("chart.png")).unwrap();
        assert!(
            ok.starts_with("Showing /workspace/agent/chart.png (image/png, 13 bytes)"),
            "{ok}"
        );
        assert_eq!(ctx.images.len(), 1);
        assert_eq!(ctx.images[0].data, b"\x89PNG\r\n\x1a\nchart");
        assert!(call(&mut ctx, "view_image", &m("chart.png"))
            .unwrap_err()
            .0
            .contains("at most 8 images"));
    }
}
