//! The output convention (SPEC §5.4): what the agent's final text sends.
//!
//! `<message to="NAME">…</message>` blocks go to NAME; `<internal>…</internal>`
//! is never sent; with `bare_text = origin` (the default, because small
//! models ignore the convention) text outside any block goes to the origin
//! when the turn sent nothing else. Unknown names are reported back.

/// One send the turn asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Send {
    /// To the batch's origin.
    Origin(String),
    /// To a named destination.
    To { name: String, text: String },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub sends: Vec<Send>,
}

/// Parses the final text of a turn.
pub fn parse(text: &str) -> Parsed {
    let mut sends = Vec::new();
    let mut bare = String::new();
    let mut rest = text;
    loop {
        let next_msg = rest.find("<message to=\"");
        let next_int = rest.find("<internal>");
        let (pos, is_msg) = match (next_msg, next_int) {
            (None, None) => {
                bare.push_str(rest);
                break;
            }
            (Some(m), None) => (m, true),
            (None, Some(i)) => (i, false),
            (Some(m), Some(i)) => {
                if m < i {
                    (m, true)
                } else {
                    (i, false)
                }
            }
        };
        bare.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if is_msg {
            let open_end = after.find("\">");
            let close = after.find("</message>");
            match (open_end, close) {
                (Some(oe), Some(c)) if oe < c => {
                    let name = &after["<message to=\"".len()..oe];
                    let body = &after[oe + 2..c];
                    sends.push(Send::To {
                        name: name.trim().to_owned(),
                        text: body.trim().to_owned(),
                    });
                    rest = &after[c + "</message>".len()..];
                }
                _ => {
                    // Unterminated: treat the rest as bare text.
                    bare.push_str(after);
                    break;
                }
            }
        } else {
            match after.find("</internal>") {
                Some(c) => rest = &after[c + "</internal>".len()..],
                None => break, // unterminated internal: hide the rest
            }
        }
    }
    let bare = bare.trim();
    if sends.is_empty() && !bare.is_empty() {
        sends.push(Send::Origin(bare.to_owned()));
    }
    Parsed { sends }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_text_goes_to_origin() {
        assert_eq!(parse("  hello  ").sends, vec![Send::Origin("hello".into())]);
        assert!(parse("   ").sends.is_empty());
    }

    #[test]
    fn blocks_and_internal() {
        let p = parse(
            "<internal>thinking</internal>ignored bare\n<message to=\"family\">Hi all</message>",
        );
        assert_eq!(
            p.sends,
            vec![Send::To {
                name: "family".into(),
                text: "Hi all".into()
            }]
        );
        let p = parse("<internal>secret</internal> visible");
        assert_eq!(p.sends, vec![Send::Origin("visible".into())]);
        let p = parse("<internal>never closed, still hidden");
        assert!(p.sends.is_empty());
    }
}
