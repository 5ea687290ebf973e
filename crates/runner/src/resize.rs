//! Images over a model's limits made to fit (issue 17, decision 0045):
//! a photo larger than 3.75 MB, or wider or taller than 8000 pixels, is
//! decoded (with the `image` crate, under its limits: 12,000 pixels a
//! side and 256 MiB for the decoded image, so a decompression bomb stops
//! at the limit), scaled so its longest edge is
//! at most 1568 pixels (the size Anthropic recommends, within OpenAI's
//! 2048), and sent as a JPEG. Decoding happens in the runner, inside the
//! sandbox.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

/// The largest image sent: Anthropic takes 5 MB of base64 per image, which
/// is 3.75 MB of bytes (OpenAI takes more).
pub const MAX_IMAGE: usize = 3_750_000;
/// The longest edge after a resize.
pub const LONG_EDGE: u32 = 1568;
/// The most pixels an edge may have as sent (Anthropic's limit).
pub const MAX_EDGE: u32 = 8000;
/// The largest file read to be resized (Telegram hands bots files of up
/// to 20 MB).
pub const MAX_SOURCE: usize = 20 * 1024 * 1024;
/// Memory one decode's image may take (an 8000×8000 RGB photo is 192 MB).
const MAX_ALLOC: u64 = 256 * 1024 * 1024;
/// The most pixels an edge may have to be decoded at all.
const MAX_DECODE_EDGE: u32 = 12_000;

/// What [`fit`] made.
#[derive(Debug, PartialEq, Eq)]
pub struct Fitted {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

fn format_of(media_type: &str) -> Option<ImageFormat> {
    Some(match media_type {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::WebP,
        _ => return None,
    })
}

fn reader<'a>(data: &'a [u8], media_type: &str) -> Result<ImageReader<Cursor<&'a [u8]>>, String> {
    let format = format_of(media_type).ok_or_else(|| format!("{media_type} is not resized"))?;
    let mut r = ImageReader::with_format(Cursor::new(data), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODE_EDGE);
    limits.max_image_height = Some(MAX_DECODE_EDGE);
    limits.max_alloc = Some(MAX_ALLOC);
    r.limits(limits);
    Ok(r)
}

/// Whether an image must be made smaller before a model takes it: over
/// the byte limit, or (by its header) over the edge limit. An image whose
/// header cannot be read is left as it is (the API says what it thinks).
pub fn needed(data: &[u8], media_type: &str) -> bool {
    if data.len() > MAX_IMAGE {
        return true;
    }
    let Some(format) = format_of(media_type) else {
        return false;
    };
    // The header alone: no limits needed to read it.
    ImageReader::with_format(Cursor::new(data), format)
        .into_dimensions()
        .is_ok_and(|(w, h)| w > MAX_EDGE || h > MAX_EDGE)
}

/// The images of one request together, at most: as base64 (a third more)
/// with the conversation's text they must fit the credential proxy's
/// 16 MiB request limit.
pub const MAX_TOTAL: usize = 10 * 1024 * 1024;

/// An image made ready to send.
#[derive(Debug)]
pub struct Ready {
    pub data: Vec<u8>,
    pub media_type: &'static str,
    /// Scaled to these pixels (the prompt says so).
    pub scaled: Option<(u32, u32)>,
}

/// `data` made ready to send within `room` bytes (what is left of
/// [`MAX_TOTAL`]): as it is when it fits the APIs' limits and the room,
/// else scaled ([`fit`]); or why it cannot be sent.
pub fn ready(data: Vec<u8>, media_type: &'static str, room: usize) -> Result<Ready, String> {
    if !needed(&data, media_type) && data.len() <= room {
        return Ok(Ready {
            data,
            media_type,
            scaled: None,
        });
    }
    let f = fit(&data, media_type).map_err(|why| {
        format!(
            "it is over a model's limits ({:.2} MB, {MAX_EDGE} pixels a side) and {why}",
            MAX_IMAGE as f64 / 1e6
        )
    })?;
    if f.data.len() > room {
        return Err(format!(
            "the images sent with one request together are at most {} MB, and this one does not fit in what is left",
            MAX_TOTAL / (1024 * 1024)
        ));
    }
    Ok(Ready {
        data: f.data,
        media_type: "image/jpeg",
        scaled: Some((f.width, f.height)),
    })
}

/// The image scaled to [`LONG_EDGE`] and encoded as a JPEG under the byte
/// limit (an animated GIF keeps its first frame), or why not.
pub fn fit(data: &[u8], media_type: &str) -> Result<Fitted, String> {
    let img = reader(data, media_type)?
        .decode()
        .map_err(|e| format!("it could not be decoded ({e})"))?;
    // `thumbnail` samples in integers: no floating-point copy of the
    // whole image, which `resize` would make.
    let img = if img.width().max(img.height()) > LONG_EDGE {
        img.thumbnail(LONG_EDGE, LONG_EDGE)
    } else {
        img
    };
    let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
    for quality in [85u8, 70, 50] {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode_image(&rgb)
            .map_err(|e| format!("it could not be re-encoded ({e})"))?;
        if out.len() <= MAX_IMAGE {
            return Ok(Fitted {
                data: out,
                width: rgb.width(),
                height: rgb.height(),
            });
        }
    }
    Err("it stays over the size limit even as a small JPEG".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of noise (which does not compress) of `w`×`h`.
    pub fn noise_png(w: u32, h: u32) -> Vec<u8> {
        let mut seed = 0x2545_f491_u32;
        let img = image::RgbImage::from_fn(w, h, |_, _| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let b = seed.to_le_bytes();
            image::Rgb([b[0], b[1], b[2]])
        });
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn large_images_are_scaled_and_small_ones_left() {
        let big = noise_png(1200, 1200);
        assert!(big.len() > MAX_IMAGE, "{}", big.len());
        assert!(needed(&big, "image/png"));
        let f = fit(&big, "image/png").unwrap();
        assert!(f.data.len() <= MAX_IMAGE);
        assert_eq!(
            (f.width, f.height),
            (1200, 1200),
            "under the long edge: not scaled"
        );
        assert!(f.data.starts_with(&[0xFF, 0xD8, 0xFF]), "a JPEG");
        let small = noise_png(64, 32);
        assert!(!needed(&small, "image/png"));
        // Too wide for the API though small in bytes: scaled.
        let wide = {
            let img = image::RgbImage::new(9000, 10);
            let mut out = Vec::new();
            DynamicImage::ImageRgb8(img)
                .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
                .unwrap();
            out
        };
        assert!(needed(&wide, "image/png"));
        let f = fit(&wide, "image/png").unwrap();
        assert_eq!(f.width, LONG_EDGE);
        // Not an image: said, not a panic.
        assert!(fit(b"\x89PNG\r\n\x1a\nbroken", "image/png")
            .unwrap_err()
            .contains("could not be decoded"));
    }

    #[test]
    fn images_are_made_to_fit_what_is_left_of_the_requests_room() {
        let small = noise_png(64, 32);
        let r = ready(small.clone(), "image/png", MAX_TOTAL).unwrap();
        assert_eq!((r.data, r.media_type, r.scaled), (small, "image/png", None));
        // Fits the APIs, but not the room left: scaled to a JPEG.
        let mid = noise_png(600, 400);
        let r = ready(mid.clone(), "image/png", mid.len() - 1).unwrap();
        assert!(r.data.len() < mid.len() && r.media_type == "image/jpeg");
        assert_eq!(r.scaled, Some((600, 400)));
        // No room at all: said.
        let e = ready(mid, "image/png", 10).unwrap_err();
        assert!(e.contains("together are at most 10 MB"), "{e}");
    }

    #[test]
    fn an_image_past_the_decoding_limits_is_refused_not_decoded() {
        // 25,000 pixels wide (one row, so the test itself stays small):
        // past the edge any decode accepts.
        let img = image::GrayImage::new(25_000, 1);
        let mut png = Vec::new();
        DynamicImage::ImageLuma8(img)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        assert!(needed(&png, "image/png"), "over 8000 px");
        let e = fit(&png, "image/png").unwrap_err();
        assert!(
            e.contains("could not be decoded") && e.contains("limit"),
            "{e}"
        );
    }
}
