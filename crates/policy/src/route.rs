//! Does a wiring engage a message, and may this sender reach the agent?
//! (SPEC §4 step 2.) The full matrix (sticky windows, sender approval,
//! fan-out order across many wirings) grows with the routing work; the shape
//! of the decision is fixed here.

use regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngageMode {
    Pattern,
    Mention,
    MentionSticky,
}

impl EngageMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pattern" => Some(EngageMode::Pattern),
            "mention" => Some(EngageMode::Mention),
            "mention-sticky" => Some(EngageMode::MentionSticky),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderScope {
    All,
    Known,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoredPolicy {
    Drop,
    Accumulate,
}

/// The facts about one message and one wiring the decision needs.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub mode: EngageMode,
    pub pattern: Option<&'a Regex>,
    pub scope: SenderScope,
    pub ignored: IgnoredPolicy,
    pub text: &'a str,
    pub is_mention: bool,
    /// Owner, admin or member of the agent group.
    pub sender_known: bool,
    /// mention-sticky: an (ag, mg, thread) session active within the window.
    pub sticky_active: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store with `trigger = 1`: wakes the agent.
    Trigger,
    /// Store with `trigger = 0`: context for the next turn.
    Accumulate,
    /// Not stored for this agent, with the audit reason.
    Drop(DropReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    NotEngaged,
    SenderScope,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotEngaged => "no_agent_engaged",
            DropReason::SenderScope => "sender_scope",
        }
    }
}

pub fn engages(f: &Facts<'_>) -> bool {
    match f.mode {
        EngageMode::Pattern => f.pattern.is_some_and(|p| p.is_match(f.text)),
        EngageMode::Mention => f.is_mention,
        EngageMode::MentionSticky => f.is_mention || f.sticky_active,
    }
}

/// Decides one wiring. Refused senders never accumulate.
pub fn decide(f: &Facts<'_>) -> Decision {
    let allowed = match f.scope {
        SenderScope::All => true,
        SenderScope::Known => f.sender_known,
    };
    if !allowed {
        return Decision::Drop(DropReason::SenderScope);
    }
    if engages(f) {
        Decision::Trigger
    } else if f.ignored == IgnoredPolicy::Accumulate {
        Decision::Accumulate
    } else {
        Decision::Drop(DropReason::NotEngaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        let dot = Regex::new(".").unwrap();
        let hey = Regex::new("(?i)^hey pinch").unwrap();
        use Decision as D;
        use EngageMode::*;
        use IgnoredPolicy as Ig;
        use SenderScope::*;
        // (mode, pattern, scope, ignored, text, mention, known, sticky) -> decision
        let table: Vec<(EngageMode, Option<&Regex>, SenderScope, IgnoredPolicy, &str, bool, bool, bool, Decision)> = vec![
            (Pattern, Some(&dot), Known, Ig::Drop, "hi", false, true, false, D::Trigger),
            (Pattern, Some(&dot), Known, Ig::Drop, "hi", false, false, false, D::Drop(DropReason::SenderScope)),
            (Pattern, Some(&dot), All, Ig::Drop, "hi", false, false, false, D::Trigger),
            (Pattern, Some(&dot), All, Ig::Drop, "", false, false, false, D::Drop(DropReason::NotEngaged)),
            (Pattern, Some(&hey), All, Ig::Accumulate, "hello", false, true, false, D::Accumulate),
            (Pattern, Some(&hey), All, Ig::Accumulate, "Hey pinch, hi", false, true, false, D::Trigger),
            (Pattern, None, All, Ig::Drop, "x", true, true, false, D::Drop(DropReason::NotEngaged)),
            (Mention, None, All, Ig::Drop, "x", true, true, false, D::Trigger),
            (Mention, None, All, Ig::Accumulate, "x", false, true, false, D::Accumulate),
            (Mention, None, Known, Ig::Accumulate, "x", false, false, false, D::Drop(DropReason::SenderScope)),
            (MentionSticky, None, All, Ig::Drop, "x", false, true, true, D::Trigger),
            (MentionSticky, None, All, Ig::Drop, "x", false, true, false, D::Drop(DropReason::NotEngaged)),
        ];
        for (i, (mode, pattern, scope, ignored, text, is_mention, sender_known, sticky_active, want)) in
            table.into_iter().enumerate()
        {
            let f = Facts { mode, pattern, scope, ignored, text, is_mention, sender_known, sticky_active };
            assert_eq!(decide(&f), want, "row {i}");
        }
    }
}
