//! QR codes in the terminal (WhatsApp's pairing code): Unicode half blocks,
//! two rows of modules per line, dark modules as spaces on a light quiet
//! zone, so a phone reads it on dark and light terminals alike.

/// `data` as a QR code drawn with `▀`, `▄`, `█` and spaces, lines ending
/// in `\n`; empty if `data` does not fit in a QR code.
pub fn terminal(data: &str) -> String {
    use qrcode::render::unicode::Dense1x2;
    let Ok(code) = qrcode::QrCode::new(data.as_bytes()) else {
        return String::new();
    };
    let mut s = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_code_is_square_blocks_and_decodes_to_lines() {
        let s = super::terminal("2@abcdefghijklmnopqrstuvwxyz,0123456789,ABCDEF=,ghijkl=");
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines.len() > 10, "{s}");
        let w = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == w));
        assert!(s.chars().all(|c| matches!(c, ' ' | '▀' | '▄' | '█' | '\n')));
        // Two module rows per line: about half as many lines as columns.
        assert!(
            lines.len() * 2 >= w && lines.len() * 2 <= w + 2,
            "{w} x {}",
            lines.len()
        );
    }
}
