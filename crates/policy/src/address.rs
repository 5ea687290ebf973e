//! Where an outbound row may go (issue 14, break 3).
//!
//! A `messages_out` row is written by the runner, inside the sandbox: its
//! `channel_type`, `platform_id` and `thread_id` are a *claim* by a party
//! the host does not trust. The host delivers a row only to a place its
//! own records grant the session:
//!
//! - the session's own conversation (the messaging group and thread the
//!   central DB recorded for the session), which is also where a row with
//!   no address goes;
//! - the place the message the row answers came from (the `messages_in`
//!   row its `in_reply_to` names, which the host wrote: a shared session
//!   hears several threads, an `agent-shared` one several conversations);
//! - the channel and agent destinations the central DB grants the
//!   session's agent group (and the group itself, for agents).
//!
//! The target returned is the host's record, never the claim: a match
//! must be exact (channel type, platform id and thread), so no part of
//! the claim reaches a channel adapter unless a record holds the same.

/// A conversation (or a thread of one) on a channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    pub channel_type: String,
    pub platform_id: String,
    pub thread_id: Option<String>,
}

impl Place {
    pub fn new(channel_type: &str, platform_id: &str, thread_id: Option<&str>) -> Place {
        Place {
            channel_type: channel_type.to_owned(),
            platform_id: platform_id.to_owned(),
            thread_id: thread_id.map(str::to_owned),
        }
    }

    /// A place from optional columns: `None` unless both the channel type
    /// and the platform id are there (an empty string counts as absent).
    pub fn from_parts(
        channel_type: Option<&str>,
        platform_id: Option<&str>,
        thread_id: Option<&str>,
    ) -> Option<Place> {
        match (present(channel_type), present(platform_id)) {
            (Some(c), Some(p)) => Some(Place::new(c, p, present(thread_id))),
            _ => None,
        }
    }
}

/// The channel type of rows addressed to another agent group.
pub const AGENT: &str = "agent";

/// What a row claims: its address columns as the runner wrote them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Claim<'a> {
    pub channel_type: Option<&'a str>,
    pub platform_id: Option<&'a str>,
    pub thread_id: Option<&'a str>,
}

/// The host's own records for one session.
#[derive(Clone, Copy, Debug)]
pub struct Records<'a> {
    /// The session's agent group.
    pub agent_group: &'a str,
    /// The session's own conversation (none for a session without one).
    pub conversation: Option<&'a Place>,
    /// Where the inbound message the row answers came from, if the row
    /// names one of this session's messages that has an address. A place
    /// with channel type [`AGENT`] is the agent group that asked.
    pub answered: Option<&'a Place>,
    /// The channel destinations granted to the agent group.
    pub channels: &'a [Place],
    /// The agent groups granted as destinations.
    pub agents: &'a [String],
}

/// Where a row goes, taken from the host's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Channel(Place),
    /// Another agent group (or this one), by id.
    Agent(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed(Target),
    /// Why not, in words for the agent (naming the cause and what to do).
    Refused(String),
}

/// Longest part of a claim quoted back in a refusal (the claim is the
/// attacker's text; it is shown, bounded, never acted on).
pub const QUOTE_MAX: usize = 80;

/// `s` cut to at most [`QUOTE_MAX`] characters, with `…` when cut.
pub fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn present(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// Decides where a row claiming `claim` may go, from `records` alone.
pub fn decide(claim: &Claim<'_>, records: &Records<'_>) -> Decision {
    let (ct, pid, thread) = (
        present(claim.channel_type),
        present(claim.platform_id),
        present(claim.thread_id),
    );
    let (ct, pid) = match (ct, pid) {
        (None, None) => {
            if let Some(t) = thread {
                return Decision::Refused(format!(
                    "the row names thread {:?} but no conversation; leave the address empty to answer in your conversation",
                    quote(t)
                ));
            }
            return match records.conversation {
                Some(c) => Decision::Allowed(Target::Channel(c.clone())),
                None => Decision::Refused(
                    "the row has no address and this session has no conversation of its own; address one of your destinations".into(),
                ),
            };
        }
        (Some(c), None) => {
            return Decision::Refused(format!(
                "the row names channel {:?} but no platform id; an address needs both, or neither",
                quote(c)
            ))
        }
        (None, Some(p)) => {
            return Decision::Refused(format!(
                "the row names platform id {:?} but no channel; an address needs both, or neither",
                quote(p)
            ))
        }
        (Some(c), Some(p)) => (c, p),
    };
    if ct == AGENT {
        let answered_by = records
            .answered
            .filter(|a| a.channel_type == AGENT)
            .map(|a| a.platform_id.as_str());
        if pid == records.agent_group
            || answered_by == Some(pid)
            || records.agents.iter().any(|a| a == pid)
        {
            return Decision::Allowed(Target::Agent(pid.to_owned()));
        }
        return Decision::Refused(format!(
            "agent group {:?} is not one of your destinations; an owner can add it with `pinch admin destinations add`",
            quote(pid)
        ));
    }
    let granted = records
        .conversation
        .into_iter()
        .chain(records.answered.filter(|a| a.channel_type != AGENT))
        .chain(records.channels.iter());
    let mut same_conversation = false;
    for place in granted {
        if place.channel_type == ct && place.platform_id == pid {
            if place.thread_id.as_deref() == thread {
                return Decision::Allowed(Target::Channel(place.clone()));
            }
            same_conversation = true;
        }
    }
    if same_conversation {
        return Decision::Refused(format!(
            "thread {:?} of {}/{} is not one this session was given; answer in the thread the message came from, or without a thread",
            quote(thread.unwrap_or("")),
            quote(ct),
            quote(pid)
        ));
    }
    Decision::Refused(format!(
        "{}/{} is neither this session's conversation nor one of your destinations; a reply goes back where the message came from, \
         other places need a destination an owner adds with `pinch admin destinations add`",
        quote(ct),
        quote(pid)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim<'a>(ct: Option<&'a str>, pid: Option<&'a str>, thread: Option<&'a str>) -> Claim<'a> {
        Claim {
            channel_type: ct,
            platform_id: pid,
            thread_id: thread,
        }
    }

    struct World {
        conversation: Place,
        answered: Place,
        channels: Vec<Place>,
        agents: Vec<String>,
    }

    fn world() -> World {
        World {
            conversation: Place::new("slack", "C1", Some("t1")),
            answered: Place::new("slack", "C1", Some("t2")),
            channels: vec![
                Place::new("web", "alice", None),
                Place::new("slack", "C1", None),
            ],
            agents: vec!["helper".into()],
        }
    }

    fn records(w: &World) -> Records<'_> {
        Records {
            agent_group: "me",
            conversation: Some(&w.conversation),
            answered: Some(&w.answered),
            channels: &w.channels,
            agents: &w.agents,
        }
    }

    fn allowed(d: Decision) -> Target {
        match d {
            Decision::Allowed(t) => t,
            Decision::Refused(why) => panic!("refused: {why}"),
        }
    }

    fn refused(d: Decision) -> String {
        match d {
            Decision::Refused(why) => why,
            Decision::Allowed(t) => panic!("allowed: {t:?}"),
        }
    }

    #[test]
    fn no_address_is_the_sessions_conversation() {
        let w = world();
        assert_eq!(
            allowed(decide(&claim(None, None, None), &records(&w))),
            Target::Channel(w.conversation.clone())
        );
        // Empty strings are no address too.
        assert_eq!(
            allowed(decide(&claim(Some(""), Some(""), Some("")), &records(&w))),
            Target::Channel(w.conversation.clone())
        );
        // A session without a conversation has no default.
        let r = Records {
            conversation: None,
            ..records(&w)
        };
        assert!(
            refused(decide(&claim(None, None, None), &r)).contains("no conversation of its own")
        );
        // A thread alone does not pick a place.
        assert!(
            refused(decide(&claim(None, None, Some("t9")), &records(&w)))
                .contains("no conversation")
        );
    }

    #[test]
    fn half_an_address_is_refused_never_completed_from_the_routing() {
        let w = world();
        assert!(
            refused(decide(&claim(Some("webhook"), None, None), &records(&w)))
                .contains("no platform id")
        );
        assert!(
            refused(decide(&claim(None, Some("bob"), None), &records(&w))).contains("no channel")
        );
    }

    #[test]
    fn granted_places_match_exactly_and_the_target_is_the_record() {
        let w = world();
        let r = records(&w);
        assert_eq!(
            allowed(decide(&claim(Some("slack"), Some("C1"), Some("t1")), &r)),
            Target::Channel(w.conversation.clone())
        );
        assert_eq!(
            allowed(decide(&claim(Some("slack"), Some("C1"), Some("t2")), &r)),
            Target::Channel(w.answered.clone())
        );
        assert_eq!(
            allowed(decide(&claim(Some("slack"), Some("C1"), None), &r)),
            Target::Channel(Place::new("slack", "C1", None))
        );
        assert_eq!(
            allowed(decide(&claim(Some("web"), Some("alice"), None), &r)),
            Target::Channel(w.channels[0].clone())
        );
        // Another thread of a granted conversation is not granted.
        let why = refused(decide(&claim(Some("web"), Some("alice"), Some("x")), &r));
        assert!(why.contains("thread \"x\""), "{why}");
        // Nor is anything else: another user, a webhook, the terminal, a
        // channel that does not exist, a near miss in case.
        for (ct, pid) in [
            ("web", "bob"),
            ("webhook", "ci"),
            ("cli", "local"),
            ("nochannel", "x"),
            ("Slack", "C1"),
            ("slack", "c1"),
        ] {
            let why = refused(decide(&claim(Some(ct), Some(pid), None), &r));
            assert!(
                why.contains(&format!("{ct}/{pid} is neither")) && why.contains("destinations add"),
                "{why}"
            );
        }
    }

    #[test]
    fn agents_need_a_grant_the_own_group_or_to_have_asked() {
        let w = world();
        let r = records(&w);
        assert_eq!(
            allowed(decide(&claim(Some(AGENT), Some("helper"), None), &r)),
            Target::Agent("helper".into())
        );
        assert_eq!(
            allowed(decide(&claim(Some(AGENT), Some("me"), None), &r)),
            Target::Agent("me".into())
        );
        assert!(
            refused(decide(&claim(Some(AGENT), Some("admin"), None), &r))
                .contains("not one of your destinations")
        );
        let asker = Place::new(AGENT, "boss", None);
        let r2 = Records {
            answered: Some(&asker),
            ..r
        };
        assert_eq!(
            allowed(decide(&claim(Some(AGENT), Some("boss"), None), &r2)),
            Target::Agent("boss".into())
        );
        // An agent's address is never a channel place, and a channel's
        // platform id is never an agent.
        assert!(matches!(
            decide(&claim(Some(AGENT), Some("alice"), None), &r),
            Decision::Refused(_)
        ));
        assert!(matches!(
            decide(&claim(Some("web"), Some("helper"), None), &r),
            Decision::Refused(_)
        ));
    }

    #[test]
    fn nothing_granted_refuses_every_address() {
        let r = Records {
            agent_group: "me",
            conversation: None,
            answered: None,
            channels: &[],
            agents: &[],
        };
        for (ct, pid) in [("web", "alice"), ("cli", "local"), (AGENT, "other")] {
            assert!(
                matches!(
                    decide(&claim(Some(ct), Some(pid), None), &r),
                    Decision::Refused(_)
                ),
                "{ct}/{pid}"
            );
        }
    }

    #[test]
    fn quotes_of_the_claim_are_bounded() {
        let w = world();
        let long = "x".repeat(10_000);
        let why = refused(decide(&claim(Some("web"), Some(&long), None), &records(&w)));
        assert!(why.len() < 600, "{}", why.len());
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote(&"é".repeat(100)).chars().count(), QUOTE_MAX + 1);
    }
}
