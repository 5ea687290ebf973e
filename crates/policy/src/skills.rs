//! The front matter of an Agent Skill's `SKILL.md` (issue 17, decision
//! 0044): `name` and `description`, read by a small reader of plain,
//! quoted and block (`>`, `|`) scalars rather than a YAML library. Shared
//! by the runner (the prompt's list, `load_skill`) and the host (`pinch
//! admin groups skills`).

/// The front matter is read from this much of the file at most.
pub const HEAD: usize = 16 * 1024;
/// Characters of a description kept.
pub const MAX_DESCRIPTION: usize = 1024;

/// `name` and `description` from a `SKILL.md`'s front matter, checked:
/// the name is lowercase letters, digits and hyphens (at most 64), the
/// description is not empty (at most 1,024 characters).
pub fn front_matter(text: &str) -> Result<(String, String), String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return Err("SKILL.md must start with a `---` line (YAML front matter)".into());
    }
    let block: Vec<&str> = lines.take_while(|l| l.trim_end() != "---").collect();
    let name = scalar(&block, "name").ok_or("the front matter has no `name`")?;
    let description =
        scalar(&block, "description").ok_or("the front matter has no `description`")?;
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_name {
        return Err(format!(
            "name {name:?} must be lowercase letters, digits and hyphens, at most 64"
        ));
    }
    if description.is_empty() {
        return Err("the description is empty".into());
    }
    let description: String = description.chars().take(MAX_DESCRIPTION).collect();
    Ok((name, description))
}

/// One top-level key's string value: plain, quoted, or a `>`/`|` block of
/// the more-indented lines that follow (folded into one line either way:
/// it is shown on one line of the prompt).
fn scalar(block: &[&str], key: &str) -> Option<String> {
    let i = block.iter().position(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })?;
    let value = block[i][key.len()..].trim_start()[1..].trim();
    if value.starts_with('>') || value.starts_with('|') {
        let body: Vec<&str> = block[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.starts_with(' ') || l.starts_with('\t'))
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        return Some(body.join(" "));
    }
    let unquoted = if let Some(rest) = value.strip_prefix('"') {
        // Up to the closing quote; `\"` and `\\` are escapes.
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out
    } else if let Some(rest) = value.strip_prefix('\'') {
        // Up to the closing quote; `''` is a quote.
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    out.push('\'');
                    continue;
                }
                break;
            }
            out.push(c);
        }
        out
    } else {
        // A plain scalar ends at a comment.
        value.split(" #").next().unwrap_or("").trim().to_owned()
    };
    Some(unquoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_in_its_usual_shapes() {
        let ok = |t: &str| front_matter(t).unwrap();
        assert_eq!(
            ok("---\nname: summarise-web-page\ndescription: Read a page and summarise it.\n---\nBody"),
            ("summarise-web-page".into(), "Read a page and summarise it.".into())
        );
        assert_eq!(
            ok("---\nname: \"daily-briefing\"\ndescription: 'It''s the morning brief' # why\nlicense: MIT\n---\n").1,
            "It's the morning brief"
        );
        assert_eq!(
            ok("---\nname: x1\ndescription: >\n  Folded over\n  two lines.\nallowed-tools: shell\n---\n").1,
            "Folded over two lines."
        );
        assert_eq!(
            ok("---\nname: a\ndescription: plain # comment\n---").1,
            "plain"
        );
        for (bad, why) in [
            ("name: a\ndescription: b", "must start with"),
            ("---\ndescription: b\n---", "no `name`"),
            ("---\nname: Bad_Name\ndescription: b\n---", "lowercase"),
            ("---\nname: a\n---", "no `description`"),
            ("---\nname: a\ndescription: \"\"\n---", "empty"),
        ] {
            let e = front_matter(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
