//! The command gate (SPEC §4 step 4), one table for the host and the
//! runner: which slash commands never reach an agent, which the host
//! answers itself, which need an owner or admin of the agent group, and
//! which are ordinary text.

/// What a message's leading `/word` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandClass {
    /// Not a command, or a `/word` the agent reads as text.
    Text,
    /// Dropped by the host: platform or agent-CLI commands that must never
    /// reach an agent (`/login`, `/config`, …).
    Filtered,
    /// Answered by the host (`/help`).
    Help,
    /// Run by the runner without the model; only the group's owner or
    /// admins may send them (others are told "permission denied" by the
    /// host, through the channel, never via `outbound.db`).
    AdminOnly,
}

pub const FILTERED: &[&str] = &[
    "/login",
    "/logout",
    "/doctor",
    "/config",
    "/remote-control",
    "/start",
];
pub const ADMIN_ONLY: &[&str] = &["/clear", "/compact", "/context", "/cost", "/files"];

/// The command word of a message: its first word, lowercased, without a
/// Telegram-style `@botname` suffix; `None` when it is not a `/word`.
pub fn command_word(text: &str) -> Option<String> {
    let first = text.split_whitespace().next()?;
    if !first.starts_with('/') || first.len() < 2 {
        return None;
    }
    let word = first.split('@').next().unwrap_or(first).to_lowercase();
    Some(word)
}

pub fn classify(text: &str) -> CommandClass {
    let Some(w) = command_word(text) else {
        return CommandClass::Text;
    };
    if FILTERED.contains(&w.as_str()) {
        CommandClass::Filtered
    } else if w == "/help" {
        CommandClass::Help
    } else if ADMIN_ONLY.contains(&w.as_str()) {
        CommandClass::AdminOnly
    } else {
        CommandClass::Text
    }
}

/// The host's answer to `/help`.
pub const HELP: &str =
    "Talk to the agent in plain words. Commands (owners and admins of this agent): \
/clear starts a new conversation, /compact summarises the older part, /context shows how full the \
context is, /cost shows token use, /files lists the agent's files.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use CommandClass::*;
        for (text, want) in [
            ("hello", Text),
            ("", Text),
            ("/", Text),
            ("a /clear", Text),
            ("/clear", AdminOnly),
            ("  /CLEAR now", AdminOnly),
            ("/compact@pinch_bot", AdminOnly),
            ("/context", AdminOnly),
            ("/cost", AdminOnly),
            ("/files", AdminOnly),
            ("/help", Help),
            ("/help@bot me", Help),
            ("/login", Filtered),
            ("/logout", Filtered),
            ("/doctor", Filtered),
            ("/config set x", Filtered),
            ("/remote-control", Filtered),
            ("/start", Filtered),
            ("/weather today", Text),
            ("/clearly", Text),
        ] {
            assert_eq!(classify(text), want, "{text:?}");
        }
    }
}
