//! A QR code drawn in the terminal with Unicode half blocks (two modules
//! per character cell, so it stays square), for linking pinch as a device
//! of a phone app (`pinch channels signal link`; any linked-device channel
//! can use it). Dark modules are drawn as the terminal's background on a
//! light frame, which phones read on dark and light terminals alike.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// `data` as a QR code (error correction M, a quiet zone around it), one
/// string of lines; or a note when it is too long for a QR code.
pub fn terminal(data: &str) -> String {
    match QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_becomes_square_rows_of_half_blocks() {
        let q = terminal("sgnl://linkdevice?uuid=abc&pub_key=def");
        let lines: Vec<&str> = q.lines().collect();
        let width = lines[0].chars().count();
        assert!(
            width >= 21 + 8,
            "a version-1 code and its quiet zone: {width}"
        );
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // Two modules per line: about half as many lines as columns.
        assert!(
            lines.len() * 2 >= width && lines.len() * 2 <= width + 2,
            "{} × {width}",
            lines.len()
        );
        assert!(q.chars().all(|c| matches!(c, ' ' | '█' | '▀' | '▄' | '\n')));
    }
}
