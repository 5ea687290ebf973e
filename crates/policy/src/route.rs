//! The router's decisions (SPEC §4 steps 2–4, §7.1): for one inbound
//! message, what happens to the conversation and, for each wiring, whether
//! the agent gets it (waking or as context), in which session, or why not.
//! The host gathers the facts (rows of the central DB, the sender's roles,
//! sticky sessions) and carries out the plan; everything that decides is
//! here, pure, and tested over every combination.

use regex::Regex;

use crate::commands::{self, CommandClass};

crate::choice! {
    /// `wirings.engage_mode`.
    pub enum EngageMode {
        Pattern = "pattern",
        Mention = "mention",
        MentionSticky = "mention-sticky",
    }
}

crate::choice! {
    /// `wirings.sender_scope`.
    pub enum SenderScope {
        Known = "known",
        All = "all",
    }
}

crate::choice! {
    /// `wirings.ignored_message_policy`.
    pub enum IgnoredPolicy {
        Drop = "drop",
        Accumulate = "accumulate",
    }
}

crate::choice! {
    /// `messaging_groups.unknown_sender_policy`.
    pub enum UnknownSenderPolicy {
        Strict = "strict",
        RequestApproval = "request_approval",
        Public = "public",
    }
}

crate::choice! {
    /// `wirings.session_mode`.
    pub enum SessionMode {
        Shared = "shared",
        PerThread = "per-thread",
        AgentShared = "agent-shared",
    }
}

/// Which session of the agent group takes the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionKey {
    /// (ag, mg, thread): `None` is the conversation's main session.
    Conversation { thread: Option<String> },
    /// The agent group's newest active session, wherever it is.
    AgentShared,
}

/// The session a wiring puts a message in: a threaded adapter in a group
/// forces per-thread unless the wiring is agent-shared (SPEC §4 step 3).
pub fn session_key(mode: SessionMode, msg: &Message<'_>) -> SessionKey {
    let thread = if msg.threaded_adapter {
        msg.thread_id.map(str::to_owned)
    } else {
        None
    };
    match mode {
        SessionMode::AgentShared => SessionKey::AgentShared,
        SessionMode::PerThread => SessionKey::Conversation { thread },
        SessionMode::Shared if msg.threaded_adapter && msg.is_group => {
            SessionKey::Conversation { thread }
        }
        SessionMode::Shared => SessionKey::Conversation { thread: None },
    }
}

/// The conversation (messaging group), if pinch knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub denied: bool,
    pub policy: UnknownSenderPolicy,
}

/// The message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub text: &'a str,
    /// It carries files. Without text (a photo or a voice note sent
    /// without a caption) a pattern is matched against [`FILES_ONLY`], so
    /// `.` ("every message") engages and a trigger like `^!ask` does not.
    pub files: bool,
    /// From the platform; true in DMs.
    pub is_mention: bool,
    pub is_group: bool,
    pub thread_id: Option<&'a str>,
    /// The adapter has threads (else `thread_id` is ignored).
    pub threaded_adapter: bool,
}

impl Message<'_> {
    /// Addressed to the bot: a mention, or any message in a DM.
    pub fn addressed(&self) -> bool {
        self.is_mention || !self.is_group
    }
}

/// One wiring, with what the host knows about the sender and the session.
#[derive(Clone, Copy, Debug)]
pub struct Wiring<'a> {
    pub mode: EngageMode,
    /// The compiled `engage_pattern`; `None` for a pattern wiring means the
    /// stored pattern does not compile (audited `bad_pattern`).
    pub pattern: Option<&'a Regex>,
    pub scope: SenderScope,
    pub ignored: IgnoredPolicy,
    pub session_mode: SessionMode,
    /// Owner, admin or member of the agent group.
    pub sender_access: bool,
    /// Owner, global admin or admin of the agent group.
    pub sender_admin: bool,
    /// mention-sticky: the session this message would go to was active
    /// within the sticky window.
    pub sticky_active: bool,
}

/// Why a message was not taken (the audit's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    NoAgentWired,
    NoAgentEngaged,
    UnknownSender,
    SenderScope,
    Denied,
    BadPattern,
    Quarantined,
    /// A filtered command (`/login`, …): never reaches an agent.
    Command,
    /// An admin-only command from someone who is not.
    PermissionDenied,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoAgentWired => "no_agent_wired",
            DropReason::NoAgentEngaged => "no_agent_engaged",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::SenderScope => "sender_scope",
            DropReason::Denied => "denied",
            DropReason::BadPattern => "bad_pattern",
            DropReason::Quarantined => "quarantined",
            DropReason::Command => "filtered_command",
            DropReason::PermissionDenied => "permission_denied",
        }
    }
}

/// What one wiring does with the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Take {
    /// Store it: `trigger` = wakes the agent (else context for later).
    Store {
        trigger: bool,
        session: SessionKey,
    },
    Drop(DropReason),
}

/// The plan for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Unknown conversation, not addressed to the bot: ignored, no audit.
    Ignore,
    /// Unknown conversation addressed to the bot: create it (policy
    /// `request_approval`), audit `no_agent_wired`, ask the owner to
    /// register it.
    CreateAndRegister,
    /// The owner rejected this conversation: audit `denied`.
    Denied,
    /// A known conversation without wirings: audit `no_agent_wired`; ask
    /// the owner to register it if the message was addressed to the bot.
    Unwired { register: bool },
    /// The host answers `/help` itself.
    Help,
    /// A filtered command: dropped, audited, never stored.
    Filtered,
    /// One entry per wiring, in the order given (priority order). If
    /// `ask_sender_approval` is set, the sender is unknown under
    /// `request_approval`: send the approver of that wiring's agent group a
    /// card (deduplicated per sender).
    Fanout {
        takes: Vec<Take>,
        ask_sender_approval: Option<usize>,
    },
}

impl Plan {
    /// Agents that store the message.
    pub fn stored(&self) -> usize {
        match self {
            Plan::Fanout { takes, .. } => takes
                .iter()
                .filter(|t| matches!(t, Take::Store { .. }))
                .count(),
            _ => 0,
        }
    }
}

/// The text a pattern wiring sees for a message of files alone.
pub const FILES_ONLY: &str = "[file]";

pub fn engages(w: &Wiring<'_>, msg: &Message<'_>) -> bool {
    match w.mode {
        EngageMode::Pattern => w.pattern.is_some_and(|p| {
            // Files without text: matched as FILES_ONLY, never by their
            // names (the sender chooses those).
            let text = if msg.text.trim().is_empty() && msg.files {
                FILES_ONLY
            } else {
                msg.text
            };
            p.is_match(text)
        }),
        EngageMode::Mention => msg.is_mention,
        EngageMode::MentionSticky => msg.is_mention || (msg.is_group && w.sticky_active),
    }
}

/// Decides one message. `conv` is `None` for a conversation pinch has
/// never seen; `wirings` are in priority order (highest first).
pub fn plan(conv: Option<Conversation>, msg: &Message<'_>, wirings: &[Wiring<'_>]) -> Plan {
    let Some(conv) = conv else {
        return if msg.addressed() {
            Plan::CreateAndRegister
        } else {
            Plan::Ignore
        };
    };
    if conv.denied {
        return Plan::Denied;
    }
    if wirings.is_empty() {
        return Plan::Unwired {
            register: msg.addressed(),
        };
    }
    let class = commands::classify(msg.text);
    match class {
        CommandClass::Filtered => return Plan::Filtered,
        CommandClass::Help => return Plan::Help,
        CommandClass::Text | CommandClass::AdminOnly => {}
    }
    // The conversation's gate: a sender known to none of its agents.
    let unknown = !wirings.iter().any(|w| w.sender_access);
    if unknown && conv.policy != UnknownSenderPolicy::Public {
        let ask = (conv.policy == UnknownSenderPolicy::RequestApproval).then_some(0);
        return Plan::Fanout {
            takes: vec![Take::Drop(DropReason::UnknownSender); wirings.len()],
            ask_sender_approval: ask,
        };
    }
    let takes = wirings
        .iter()
        .map(|w| {
            if w.scope == SenderScope::Known && !w.sender_access {
                return Take::Drop(DropReason::SenderScope);
            }
            if w.mode == EngageMode::Pattern && w.pattern.is_none() {
                return Take::Drop(DropReason::BadPattern);
            }
            let engaged = engages(w, msg);
            if class == CommandClass::AdminOnly {
                // A command runs or is refused; it is never context.
                return if !engaged {
                    Take::Drop(DropReason::NoAgentEngaged)
                } else if w.sender_admin {
                    Take::Store {
                        trigger: true,
                        session: session_key(w.session_mode, msg),
                    }
                } else {
                    Take::Drop(DropReason::PermissionDenied)
                };
            }
            if engaged {
                Take::Store {
                    trigger: true,
                    session: session_key(w.session_mode, msg),
                }
            } else if w.ignored == IgnoredPolicy::Accumulate {
                Take::Store {
                    trigger: false,
                    session: session_key(w.session_mode, msg),
                }
            } else {
                Take::Drop(DropReason::NoAgentEngaged)
            }
        })
        .collect();
    Plan::Fanout {
        takes,
        ask_sender_approval: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: [EngageMode; 3] = [
        EngageMode::Pattern,
        EngageMode::Mention,
        EngageMode::MentionSticky,
    ];
    const POLICIES: [UnknownSenderPolicy; 3] = [
        UnknownSenderPolicy::Strict,
        UnknownSenderPolicy::RequestApproval,
        UnknownSenderPolicy::Public,
    ];
    const SCOPES: [SenderScope; 2] = [SenderScope::All, SenderScope::Known];
    const SESSION_MODES: [SessionMode; 3] = [
        SessionMode::Shared,
        SessionMode::PerThread,
        SessionMode::AgentShared,
    ];
    const IGNORED: [IgnoredPolicy; 2] = [IgnoredPolicy::Drop, IgnoredPolicy::Accumulate];

    /// Where the message comes from: (is_group, threaded adapter, thread id).
    const PLACES: [(bool, bool, Option<&str>); 5] = [
        (false, false, None),      // a DM on a thread-less adapter
        (true, false, Some("t1")), // a group on a thread-less adapter (thread ignored)
        (true, true, Some("t1")),  // a threaded group, in a thread
        (true, true, None),        // a threaded group, top level
        (false, true, Some("t9")), // a DM on a threaded adapter
    ];

    // Hand-written facts, one dimension at a time.

    /// Engaged? (mode, mention, pattern matches, sticky, is_group)
    fn engage_fact(
        mode: EngageMode,
        mention: bool,
        matches: bool,
        sticky: bool,
        is_group: bool,
    ) -> bool {
        let table: &[(EngageMode, bool, bool, bool, bool, bool)] = &[
            // pattern: only the pattern counts
            (EngageMode::Pattern, false, true, false, true, true),
            (EngageMode::Pattern, true, false, true, true, false),
            // mention: only the mention counts
            (EngageMode::Mention, true, false, false, true, true),
            (EngageMode::Mention, false, true, true, true, false),
            // mention-sticky: a mention, or a sticky session in a group
            (EngageMode::MentionSticky, true, false, false, true, true),
            (EngageMode::MentionSticky, false, false, true, true, true),
            (EngageMode::MentionSticky, false, true, false, true, false),
            (EngageMode::MentionSticky, false, false, true, false, false),
        ];
        if let Some(row) = table
            .iter()
            .find(|r| (r.0, r.1, r.2, r.3, r.4) == (mode, mention, matches, sticky, is_group))
        {
            return row.5;
        }
        // the rows above pin the rule; the rest follows it
        match mode {
            EngageMode::Pattern => matches,
            EngageMode::Mention => mention,
            EngageMode::MentionSticky => mention || (sticky && is_group),
        }
    }

    /// The session for (mode, place).
    fn session_fact(mode: SessionMode, place: (bool, bool, Option<&str>)) -> SessionKey {
        let c = |t: Option<&str>| SessionKey::Conversation {
            thread: t.map(str::to_owned),
        };
        match (mode, place) {
            (SessionMode::AgentShared, _) => SessionKey::AgentShared,
            (SessionMode::Shared, (false, false, None)) => c(None),
            (SessionMode::Shared, (true, false, Some("t1"))) => c(None),
            (SessionMode::Shared, (true, true, Some("t1"))) => c(Some("t1")), // forced per-thread
            (SessionMode::Shared, (true, true, None)) => c(None),
            (SessionMode::Shared, (false, true, Some("t9"))) => c(None), // DMs are not forced
            (SessionMode::PerThread, (false, false, None)) => c(None),
            (SessionMode::PerThread, (true, false, Some("t1"))) => c(None), // thread-less adapter
            (SessionMode::PerThread, (true, true, Some("t1"))) => c(Some("t1")),
            (SessionMode::PerThread, (true, true, None)) => c(None),
            (SessionMode::PerThread, (false, true, Some("t9"))) => c(Some("t9")),
            other => panic!("no fact for {other:?}"),
        }
    }

    /// Every engage mode × unknown-sender policy × sender scope × session
    /// mode × accumulate/drop × place × sender (unknown/member) × mention ×
    /// pattern match × sticky: the plan for a single wiring equals the
    /// composition of the facts above with the gate rules of SPEC §4/§7.1.
    #[test]
    fn every_combination_of_one_wiring() {
        let hit = Regex::new("(?i)pinch").unwrap();
        let mut n = 0;
        for mode in MODES {
            for policy in POLICIES {
                for scope in SCOPES {
                    for sm in SESSION_MODES {
                        for ignored in IGNORED {
                            for place in PLACES {
                                for known in [false, true] {
                                    for mention in [false, true] {
                                        for matches in [false, true] {
                                            for sticky in [false, true] {
                                                let (is_group, threaded, thread) = place;
                                                let text =
                                                    if matches { "hey pinch" } else { "hello" };
                                                let msg = Message {
                                                    text,
                                                    files: false,
                                                    is_mention: mention,
                                                    is_group,
                                                    thread_id: thread,
                                                    threaded_adapter: threaded,
                                                };
                                                let w = Wiring {
                                                    mode,
                                                    pattern: Some(&hit),
                                                    scope,
                                                    ignored,
                                                    session_mode: sm,
                                                    sender_access: known,
                                                    sender_admin: known,
                                                    sticky_active: sticky,
                                                };
                                                let got = plan(
                                                    Some(Conversation {
                                                        denied: false,
                                                        policy,
                                                    }),
                                                    &msg,
                                                    &[w],
                                                );
                                                let want = if !known
                                                    && policy != UnknownSenderPolicy::Public
                                                {
                                                    Plan::Fanout {
                                                        takes: vec![Take::Drop(DropReason::UnknownSender)],
                                                        ask_sender_approval: (policy == UnknownSenderPolicy::RequestApproval).then_some(0),
                                                    }
                                                } else if !known && scope == SenderScope::Known {
                                                    Plan::Fanout {
                                                        takes: vec![Take::Drop(
                                                            DropReason::SenderScope,
                                                        )],
                                                        ask_sender_approval: None,
                                                    }
                                                } else if engage_fact(
                                                    mode, mention, matches, sticky, is_group,
                                                ) {
                                                    Plan::Fanout {
                                                        takes: vec![Take::Store {
                                                            trigger: true,
                                                            session: session_fact(sm, place),
                                                        }],
                                                        ask_sender_approval: None,
                                                    }
                                                } else if ignored == IgnoredPolicy::Accumulate {
                                                    Plan::Fanout {
                                                        takes: vec![Take::Store {
                                                            trigger: false,
                                                            session: session_fact(sm, place),
                                                        }],
                                                        ask_sender_approval: None,
                                                    }
                                                } else {
                                                    Plan::Fanout {
                                                        takes: vec![Take::Drop(
                                                            DropReason::NoAgentEngaged,
                                                        )],
                                                        ask_sender_approval: None,
                                                    }
                                                };
                                                assert_eq!(got, want, "mode {mode:?} policy {policy:?} scope {scope:?} session {sm:?} ignored {ignored:?} place {place:?} known {known} mention {mention} matches {matches} sticky {sticky}");
                                                n += 1;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(n, 3 * 3 * 2 * 3 * 2 * 5 * 2 * 2 * 2 * 2);
    }

    fn w<'a>(mode: EngageMode, pattern: Option<&'a Regex>, access: bool) -> Wiring<'a> {
        Wiring {
            mode,
            pattern,
            scope: SenderScope::Known,
            ignored: IgnoredPolicy::Drop,
            session_mode: SessionMode::Shared,
            sender_access: access,
            sender_admin: false,
            sticky_active: false,
        }
    }

    fn conv(policy: UnknownSenderPolicy) -> Option<Conversation> {
        Some(Conversation {
            denied: false,
            policy,
        })
    }

    #[test]
    fn conversation_level_outcomes() {
        let dm = Message {
            text: "hi",
            files: false,
            is_mention: true,
            is_group: false,
            thread_id: None,
            threaded_adapter: false,
        };
        let group_chatter = Message {
            text: "hi",
            files: false,
            is_mention: false,
            is_group: true,
            thread_id: None,
            threaded_adapter: false,
        };
        let group_mention = Message {
            is_mention: true,
            ..group_chatter
        };
        let any = Regex::new(".").unwrap();
        let wired = [w(EngageMode::Pattern, Some(&any), true)];
        // unknown conversation
        assert_eq!(plan(None, &dm, &[]), Plan::CreateAndRegister);
        assert_eq!(plan(None, &group_mention, &[]), Plan::CreateAndRegister);
        assert_eq!(plan(None, &group_chatter, &[]), Plan::Ignore);
        // denied wins over wirings
        assert_eq!(
            plan(
                Some(Conversation {
                    denied: true,
                    policy: UnknownSenderPolicy::Public
                }),
                &dm,
                &wired
            ),
            Plan::Denied
        );
        // known, unwired
        assert_eq!(
            plan(conv(UnknownSenderPolicy::Strict), &dm, &[]),
            Plan::Unwired { register: true }
        );
        assert_eq!(
            plan(conv(UnknownSenderPolicy::Strict), &group_chatter, &[]),
            Plan::Unwired { register: false }
        );
        // commands
        let help = Message {
            text: "/help",
            ..dm
        };
        let login = Message {
            text: "/login x",
            ..dm
        };
        assert_eq!(
            plan(conv(UnknownSenderPolicy::Public), &help, &wired),
            Plan::Help
        );
        assert_eq!(
            plan(conv(UnknownSenderPolicy::Public), &login, &wired),
            Plan::Filtered
        );
        // a pattern wiring whose regex did not compile
        assert_eq!(
            plan(
                conv(UnknownSenderPolicy::Public),
                &dm,
                &[w(EngageMode::Pattern, None, true)]
            ),
            Plan::Fanout {
                takes: vec![Take::Drop(DropReason::BadPattern)],
                ask_sender_approval: None
            }
        );
    }

    #[test]
    fn admin_only_commands_need_an_admin_and_never_accumulate() {
        let any = Regex::new(".").unwrap();
        let clear = Message {
            files: false,
            text: "/clear",
            is_mention: false,
            is_group: true,
            thread_id: None,
            threaded_adapter: false,
        };
        let member = w(EngageMode::Pattern, Some(&any), true);
        let admin = Wiring {
            sender_admin: true,
            ..member
        };
        let c = conv(UnknownSenderPolicy::Strict);
        assert_eq!(
            plan(c, &clear, &[member]),
            Plan::Fanout {
                takes: vec![Take::Drop(DropReason::PermissionDenied)],
                ask_sender_approval: None
            }
        );
        assert_eq!(
            plan(c, &clear, &[admin]),
            Plan::Fanout {
                takes: vec![Take::Store {
                    trigger: true,
                    session: SessionKey::Conversation { thread: None }
                }],
                ask_sender_approval: None
            }
        );
        let quiet = Wiring {
            mode: EngageMode::Mention,
            ignored: IgnoredPolicy::Accumulate,
            ..admin
        };
        assert_eq!(
            plan(c, &clear, &[quiet]),
            Plan::Fanout {
                takes: vec![Take::Drop(DropReason::NoAgentEngaged)],
                ask_sender_approval: None
            }
        );
    }

    /// A photo or voice note sent without a caption engages a wiring whose
    /// pattern is `.` (every message), not one that waits for a trigger.
    #[test]
    fn a_file_without_text_engages_every_message_patterns_only() {
        let any = Regex::new(".").unwrap();
        let trigger = Regex::new("^!ask").unwrap();
        let voice = Message {
            text: "",
            files: true,
            is_mention: false,
            is_group: true,
            thread_id: None,
            threaded_adapter: false,
        };
        assert!(engages(&w(EngageMode::Pattern, Some(&any), true), &voice));
        assert!(!engages(
            &w(EngageMode::Pattern, Some(&trigger), true),
            &voice
        ));
        // A caption of only a newline is no caption.
        let blank = Message {
            text: "\n",
            ..voice
        };
        assert!(engages(&w(EngageMode::Pattern, Some(&any), true), &blank));
        let nothing = Message {
            files: false,
            ..voice
        };
        assert!(!engages(
            &w(EngageMode::Pattern, Some(&any), true),
            &nothing
        ));
    }

    /// Fan-out keeps the wirings' (priority) order; a sender known to one
    /// agent passes the conversation gate, and each wiring applies its own
    /// scope.
    #[test]
    fn fan_out_is_per_wiring_and_in_order() {
        let any = Regex::new(".").unwrap();
        let msg = Message {
            text: "hello",
            files: false,
            is_mention: false,
            is_group: true,
            thread_id: Some("th"),
            threaded_adapter: true,
        };
        let a = w(EngageMode::Pattern, Some(&any), true);
        let b = Wiring {
            sender_access: false,
            ..a
        };
        let c = Wiring {
            scope: SenderScope::All,
            sender_access: false,
            session_mode: SessionMode::AgentShared,
            ..a
        };
        let d = Wiring {
            mode: EngageMode::Mention,
            ignored: IgnoredPolicy::Accumulate,
            ..a
        };
        let got = plan(conv(UnknownSenderPolicy::Strict), &msg, &[a, b, c, d]);
        let th = SessionKey::Conversation {
            thread: Some("th".into()),
        };
        assert_eq!(
            got,
            Plan::Fanout {
                takes: vec![
                    Take::Store {
                        trigger: true,
                        session: th.clone()
                    },
                    Take::Drop(DropReason::SenderScope),
                    Take::Store {
                        trigger: true,
                        session: SessionKey::AgentShared
                    },
                    Take::Store {
                        trigger: false,
                        session: th
                    },
                ],
                ask_sender_approval: None
            }
        );
        assert_eq!(got.stored(), 3);
        // unknown to every agent: the conversation's policy decides for all
        let none = [
            b,
            Wiring {
                sender_access: false,
                ..d
            },
        ];
        assert_eq!(
            plan(conv(UnknownSenderPolicy::RequestApproval), &msg, &none),
            Plan::Fanout {
                takes: vec![Take::Drop(DropReason::UnknownSender); 2],
                ask_sender_approval: Some(0)
            }
        );
    }
}
