//! Tool names offered to the model: `<server>__<tool>`, limited to what
//! every provider API accepts (`[A-Za-z0-9_-]`, at most 64 characters).

/// Longest tool name providers accept.
pub const MAX_LEN: usize = 64;

/// `<server>__<tool>`, other characters replaced by `_`, cut to 64.
pub fn tool_name(server: &str, tool: &str) -> String {
    let mut s: String = format!("{server}__{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(MAX_LEN);
    s
}

/// [`tool_name`], made unique against `taken` by a numeric suffix (two
/// long names may share their first 64 characters).
pub fn unique_tool_name(server: &str, tool: &str, taken: &dyn Fn(&str) -> bool) -> String {
    let base = tool_name(server, tool);
    if !taken(&base) {
        return base;
    }
    for n in 2.. {
        let suffix = format!("_{n}");
        let mut s = base.clone();
        s.truncate(MAX_LEN - suffix.len());
        s.push_str(&suffix);
        if !taken(&s) {
            return s;
        }
    }
    unreachable!("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_cut_and_unique() {
        assert_eq!(tool_name("files", "read"), "files__read");
        assert_eq!(tool_name("git hub", "pr.list/all"), "git_hub__pr_list_all");
        assert_eq!(tool_name("s", "héllo"), "s__h_llo");
        let long = "x".repeat(100);
        assert_eq!(tool_name("s", &long).len(), MAX_LEN);
        let first = tool_name("s", &long);
        let second = unique_tool_name("s", &long, &|n| n == first);
        assert_ne!(first, second);
        assert!(
            second.ends_with("_2") && second.len() == MAX_LEN,
            "{second}"
        );
    }
}
