//! Vision (issue 17): a photo sent on a chat channel is saved in the
//! session's inbox by the host, read by the runner in its sandbox and sent
//! to a model that takes images with the prompt, byte for byte; a file too
//! large for the APIs is named to the model instead; a model without
//! vision gets only the prompt's line about the file.

use std::time::Duration;

use crate::common::*;
use pinch_channels::fake::Sent;
use pinch_channels::{AckOutcome, InboundAttachment};

const WAIT: Duration = Duration::from_secs(30);

fn photo(name: &str, len: usize) -> InboundAttachment {
    let mut data = b"\x89PNG\r\n\x1a\n".to_vec();
    data.resize(len, 7);
    InboundAttachment {
        name: name.into(),
        mime: Some("image/png".into()),
        size: len as u64,
        data: Some(data),
    }
}

/// A PNG of noise (which does not compress) of `w`×`h`.
fn noise_png(w: u32, h: u32) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_u32;
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let b = seed.to_le_bytes();
        image::Rgb([b[0], b[1], b[2]])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn ask(vision: bool, attachments: Vec<InboundAttachment>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let script = format!("vision = {vision}\ndefault_reply = \"saw: [{{images}}]\"\n");
    let mut cfg = with_script(host_config(tmp.path(), any_sandbox()), &script);
    let cell = fake_chat(&mut cfg);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let chat = cell.get().unwrap().clone();
    let mut msg = fake_chat_msg("m1", "what is this?");
    msg.attachments = attachments;
    let out = rt.block_on(chat.send(msg));
    assert!(
        matches!(out, AckOutcome::Stored { routed: 1, .. }),
        "{out:?}"
    );
    let reply = rt
        .block_on(chat.wait_for(WAIT, &|s: &Sent| matches!(s, Sent::Message { .. })))
        .unwrap_or_else(|| panic!("no reply; sent: {:#?}", chat.sent()));
    rt.block_on(host.shutdown()).unwrap();
    reply.text().to_owned()
}

#[test]
fn a_photo_reaches_a_model_that_sees_and_only_it() {
    assert_eq!(
        ask(true, vec![photo("receipt.png", 20_000)]),
        "saw: [receipt.png image/png 20000]"
    );
    // Over the APIs' limit and not an image after all: not sent (the
    // prompt says why).
    assert_eq!(ask(true, vec![photo("huge.png", 4_000_000)]), "saw: []");
    // A real photo over the limit: scaled to fit and sent as a JPEG.
    let big = noise_png(1600, 1200);
    assert!(big.len() > 3_750_000, "{}", big.len());
    let saw = ask(
        true,
        vec![InboundAttachment {
            name: "scan.png".into(),
            mime: Some("image/png".into()),
            size: big.len() as u64,
            data: Some(big),
        }],
    );
    let len: usize = saw
        .strip_prefix("saw: [scan.png image/jpeg ")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{saw}"))
        .parse()
        .unwrap();
    assert!(len <= 3_750_000, "{saw}");
    // A model without vision is sent no image.
    assert_eq!(ask(false, vec![photo("receipt.png", 20_000)]), "saw: []");
}

/// `view_image`: the agent looks at an image in its own folder (in its
/// sandbox); the file reaches the model with the tool's result, byte for
/// byte, and a file that is not an image is refused by its first bytes.
/// A model without vision is not offered the tool.
#[test]
fn the_agent_looks_at_an_image_in_its_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let script = "vision = true\n\
        [[rule]]\ncontains = \"look-chart\"\ntool = \"view_image\"\nargs = { path = \"chart.png\" }\n\n\
        [[rule]]\ncontains = \"look-fake\"\ntool = \"view_image\"\nargs = { path = \"fake.png\" }\n\n\
        [[rule]]\nafter_tool = \"*\"\nreply = \"saw: [{images}] {tool_result}\"\n";
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), script);
    let folder = cfg.data_dir.join("groups/main");
    std::fs::create_dir_all(&folder).unwrap();
    let mut chart = b"\x89PNG\r\n\x1a\n".to_vec();
    chart.resize(5000, 3);
    std::fs::write(folder.join("chart.png"), &chart).unwrap();
    std::fs::write(folder.join("fake.png"), b"#!/bin/sh\necho hi\n").unwrap();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let replies = c.ask("please look-chart");
    assert_eq!(
        replies,
        ["saw: [/workspace/agent/chart.png image/png 5000] Showing /workspace/agent/chart.png (image/png, 5000 bytes)."]
    );
    let replies = c.ask("please look-fake");
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].starts_with("saw: [] ")
            && replies[0].contains("is not a JPEG, PNG, GIF or WebP image"),
        "{replies:?}"
    );
    rt.block_on(host.shutdown()).unwrap();

    // Without vision the tool is not offered: the call is refused.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_script(
        host_config(tmp.path(), any_sandbox()),
        &script.replace("vision = true", "vision = false"),
    );
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let replies = c.ask("please look-chart");
    assert_eq!(replies.len(), 1);
    assert!(!replies[0].starts_with("saw: [/workspace"), "{replies:?}");
    rt.block_on(host.shutdown()).unwrap();
}
