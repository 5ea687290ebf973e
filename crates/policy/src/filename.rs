//! Names that arrive from outside (channel attachments, agent file names)
//! turned into one safe file name (SPEC §7.8, TARGETS S7).
//!
//! The file still arrives: a bad name is *sanitised*, not rejected, so a
//! user's photo called `../../etc/passwd` is saved as `passwd` inside the
//! message's inbox folder. The filesystem half (no symlinks, exclusive
//! create, realpath containment) is the host's `attachments` module.

/// Longest name kept, in bytes (ext4 allows 255; room for a `-N` suffix).
pub const MAX_NAME: usize = 200;
/// Longest extension kept whole when a long name is cut.
const MAX_EXT: usize = 16;
/// The name used when nothing usable is left.
pub const FALLBACK: &str = "attachment";

/// A safe single path component for `raw`: its basename (after the last
/// `/` or `\`), without control characters (NUL included), trimmed, not
/// starting with `.` (no hidden files, never `.` or `..`), at most
/// [`MAX_NAME`] bytes with the extension kept; [`FALLBACK`] if empty.
pub fn sanitize(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let name = cleaned.trim().trim_start_matches('.').trim();
    if name.is_empty() {
        return FALLBACK.to_owned();
    }
    if name.len() <= MAX_NAME {
        return name.to_owned();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= MAX_EXT => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let mut cut = MAX_NAME - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &stem[..cut], ext)
}

/// `name` with `-n` before its extension: the n-th alternative when a
/// file of that name already exists.
pub fn numbered(name: &str, n: u32) -> String {
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{}-{n}{}", &name[..i], &name[i..]),
        _ => format!("{name}-{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        for (raw, want) in [
            ("cat.jpg", "cat.jpg"),
            ("../../etc/passwd", "passwd"),
            ("..\\..\\windows\\system.ini", "system.ini"),
            ("/abs/path/x.pdf", "x.pdf"),
            ("..", FALLBACK),
            (".", FALLBACK),
            ("", FALLBACK),
            ("dir/", FALLBACK),
            ("a\0b.txt", "ab.txt"),
            ("evil\n.txt", "evil.txt"),
            (".bashrc", "bashrc"),
            ("  spaced name.doc  ", "spaced name.doc"),
        ] {
            assert_eq!(sanitize(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn long_names_keep_their_extension_and_char_boundaries() {
        let s = sanitize(&format!("{}.png", "é".repeat(500)));
        assert!(s.len() <= MAX_NAME && s.ends_with(".png"), "{s}");
        let s = sanitize(&"x".repeat(10_000));
        assert_eq!(s.len(), MAX_NAME);
    }

    #[test]
    fn numbering() {
        assert_eq!(numbered("cat.jpg", 1), "cat-1.jpg");
        assert_eq!(numbered("README", 2), "README-2");
    }

    proptest! {
        #[test]
        fn always_one_safe_component(raw in any::<String>()) {
            let s = sanitize(&raw);
            prop_assert!(!s.is_empty() && s.len() <= MAX_NAME);
            prop_assert!(!s.contains('/') && !s.contains('\\') && !s.contains('\0'));
            prop_assert!(!s.chars().any(char::is_control));
            prop_assert!(!s.starts_with('.'));
        }
    }
}
