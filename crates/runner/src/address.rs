//! Where a reply goes, decided in one place (pure functions).
//!
//! A turn has an *origin*: the trigger row's own address when it carries a
//! channel, else the session's routing (a task or a webhook row has none of
//! its own), else nothing. A send names a destination or defaults; the
//! default depends on who sends:
//!
//! - the turn's answer ([`Fallback::Origin`]) goes to the origin as it is,
//!   even unaddressed (the host then decides, as for any row without one);
//! - a tool's message ([`Fallback::Usable`]) needs a real conversation: the
//!   origin when it has a channel and a platform id, else the only
//!   destination, else the model is told to name one.
//!
//! A named destination is found by its exact name; an agent destination is
//! addressed as channel `agent` with the agent group's id.

use pinch_proto::rows::{Destination, InboundRow, Routing};

use crate::output;

/// Where a row goes: a channel conversation or an agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
}

impl Address {
    pub fn of_destination(d: &Destination) -> Address {
        if d.kind == "agent" {
            Address {
                channel_type: Some("agent".into()),
                platform_id: d.agent_group_id.clone(),
                thread_id: None,
            }
        } else {
            Address {
                channel_type: d.channel_type.clone(),
                platform_id: d.platform_id.clone(),
                thread_id: None,
            }
        }
    }

    pub fn of_routing(r: &Routing) -> Address {
        Address {
            channel_type: r.channel_type.clone(),
            platform_id: r.platform_id.clone(),
            thread_id: r.thread_id.clone(),
        }
    }

    /// Both a channel and a conversation on it.
    pub fn is_set(&self) -> bool {
        self.channel_type.is_some() && self.platform_id.is_some()
    }
}

/// The turn's origin: the trigger's address when it names a channel, else
/// the session's routing, else none.
pub fn origin(trigger: &InboundRow, routing: Option<&Routing>) -> Option<Address> {
    match (&trigger.channel_type, routing) {
        (Some(_), _) => Some(Address {
            channel_type: trigger.channel_type.clone(),
            platform_id: trigger.platform_id.clone(),
            thread_id: trigger.thread_id.clone(),
        }),
        (None, Some(r)) => Some(Address::of_routing(r)),
        (None, None) => None,
    }
}

/// What a send without a destination name falls back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The origin as it is; no origin is an unaddressed row.
    Origin,
    /// An origin with a channel and a platform id, else the only
    /// destination, else an error.
    Usable,
}

/// Why no address could be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// No destination has this name; the names there are.
    Unknown { name: String, names: Vec<String> },
    /// No usable origin and not exactly one destination.
    NoDefault { names: Vec<String> },
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "there are no destinations".to_owned()
            } else {
                format!("destinations: {}", names.join(", "))
            }
        };
        match self {
            AddressError::Unknown { name, names } => {
                write!(f, "unknown destination {name:?}; {}", list(names))
            }
            AddressError::NoDefault { names } => write!(
                f,
                "no default conversation to send to; name one with `to` ({})",
                list(names)
            ),
        }
    }
}

/// The address of a send: the destination named `to`, else the default
/// `fallback` picks.
pub fn resolve(
    to: Option<&str>,
    origin: Option<&Address>,
    destinations: &[Destination],
    fallback: Fallback,
) -> Result<Address, AddressError> {
    let names = || destinations.iter().map(|d| d.name.clone()).collect();
    if let Some(name) = to {
        return match destinations.iter().find(|d| d.name == name) {
            Some(d) => Ok(Address::of_destination(d)),
            None => Err(AddressError::Unknown {
                name: name.to_owned(),
                names: names(),
            }),
        };
    }
    match fallback {
        Fallback::Origin => Ok(origin.cloned().unwrap_or_default()),
        Fallback::Usable => {
            if let Some(a) = origin.filter(|a| a.is_set()) {
                return Ok(a.clone());
            }
            if let [only] = destinations {
                return Ok(Address::of_destination(only));
            }
            Err(AddressError::NoDefault { names: names() })
        }
    }
}

/// Where each send of the turn's answer goes (`<message to="…">` blocks
/// and bare text, SPEC §5.4). A block naming an unknown destination is
/// dropped (and logged).
pub fn answer_sends(
    sends: Vec<output::Send>,
    origin: Option<&Address>,
    destinations: &[Destination],
) -> Vec<(Address, String)> {
    let mut out = Vec::new();
    for s in sends {
        let (to, text) = match s {
            output::Send::Origin(text) => (None, text),
            output::Send::To { name, text } => (Some(name), text),
        };
        match resolve(to.as_deref(), origin, destinations, Fallback::Origin) {
            Ok(a) => out.push((a, text)),
            Err(_) => {
                let name = to.unwrap_or_default();
                tracing::warn!(name = %name, "agent addressed an unknown destination; block dropped")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str, pid: &str) -> Destination {
        Destination {
            name: name.into(),
            display_name: None,
            kind: "channel".into(),
            channel_type: Some("telegram".into()),
            platform_id: Some(pid.into()),
            agent_group_id: None,
        }
    }

    fn agent(name: &str, group: &str) -> Destination {
        Destination {
            name: name.into(),
            display_name: None,
            kind: "agent".into(),
            channel_type: None,
            platform_id: None,
            agent_group_id: Some(group.into()),
        }
    }

    fn addr(ct: Option<&str>, pid: Option<&str>, th: Option<&str>) -> Address {
        Address {
            channel_type: ct.map(Into::into),
            platform_id: pid.map(Into::into),
            thread_id: th.map(Into::into),
        }
    }

    fn row(ct: Option<&str>, pid: Option<&str>, th: Option<&str>) -> InboundRow {
        InboundRow {
            id: "in-1".into(),
            seq: 2,
            kind: "chat".into(),
            timestamp: "t".into(),
            status: "pending".into(),
            process_after: None,
            recurrence: None,
            series_id: None,
            tries: 0,
            trigger: true,
            platform_id: pid.map(Into::into),
            channel_type: ct.map(Into::into),
            thread_id: th.map(Into::into),
            content: "{}".into(),
            source_session_id: None,
            on_wake: false,
        }
    }

    #[test]
    fn the_origin_is_the_trigger_then_the_routing_then_none() {
        let routing = Routing {
            channel_type: Some("slack".into()),
            platform_id: Some("C1".into()),
            thread_id: Some("t9".into()),
        };
        for (trigger, routing, want) in [
            (
                row(Some("cli"), Some("local"), Some("th")),
                Some(&routing),
                Some(addr(Some("cli"), Some("local"), Some("th"))),
            ),
            // A channel without a platform id is still the trigger's own.
            (
                row(Some("cli"), None, None),
                Some(&routing),
                Some(addr(Some("cli"), None, None)),
            ),
            // No channel of its own (a task, a webhook): the routing.
            (
                row(None, Some("ignored"), None),
                Some(&routing),
                Some(addr(Some("slack"), Some("C1"), Some("t9"))),
            ),
            (row(None, None, None), None, None),
        ] {
            assert_eq!(origin(&trigger, routing), want, "{trigger:?}");
        }
    }

    #[test]
    fn one_table_for_every_sender() {
        let dests = [channel("family", "fam"), agent("helper", "g-help")];
        let only = [channel("family", "fam")];
        let full = addr(Some("cli"), Some("local"), Some("th"));
        let half = addr(Some("cli"), None, None);
        let fam = addr(Some("telegram"), Some("fam"), None);
        let unknown = |n: &str, names: &[&str]| AddressError::Unknown {
            name: n.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
        };
        let no_default = |names: &[&str]| AddressError::NoDefault {
            names: names.iter().map(|s| s.to_string()).collect(),
        };
        use Fallback::{Origin, Usable};
        #[allow(clippy::type_complexity)]
        let table: Vec<(
            Option<&str>,
            Option<&Address>,
            &[Destination],
            Fallback,
            Result<Address, AddressError>,
        )> = vec![
            // A name wins over the origin, whoever sends.
            (Some("family"), Some(&full), &dests, Origin, Ok(fam.clone())),
            (Some("family"), Some(&full), &dests, Usable, Ok(fam.clone())),
            // An agent destination is channel `agent`, its group as the id.
            (
                Some("helper"),
                None,
                &dests,
                Usable,
                Ok(addr(Some("agent"), Some("g-help"), None)),
            ),
            // Names match exactly.
            (
                Some("Family"),
                Some(&full),
                &dests,
                Origin,
                Err(unknown("Family", &["family", "helper"])),
            ),
            (Some("x"), None, &[], Usable, Err(unknown("x", &[]))),
            // The answer: the origin as it is, or unaddressed.
            (None, Some(&full), &dests, Origin, Ok(full.clone())),
            (None, Some(&half), &dests, Origin, Ok(half.clone())),
            (None, None, &only, Origin, Ok(Address::default())),
            // A tool: a usable origin, else the only destination, else an error.
            (None, Some(&full), &dests, Usable, Ok(full.clone())),
            (None, Some(&half), &only, Usable, Ok(fam.clone())),
            (None, None, &only, Usable, Ok(fam.clone())),
            (
                None,
                Some(&half),
                &dests,
                Usable,
                Err(no_default(&["family", "helper"])),
            ),
            (None, None, &[], Usable, Err(no_default(&[]))),
        ];
        for (to, origin, dests, fallback, want) in table {
            assert_eq!(
                resolve(to, origin, dests, fallback),
                want,
                "to {to:?}, origin {origin:?}, {fallback:?}"
            );
        }
    }

    #[test]
    fn errors_list_the_destinations() {
        let e = resolve(Some("wrk"), None, &[channel("work", "w")], Fallback::Usable)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown destination \"wrk\"; destinations: work");
        let e = resolve(None, None, &[], Fallback::Usable)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "no default conversation to send to; name one with `to` (there are no destinations)"
        );
    }

    #[test]
    fn the_answer_drops_blocks_to_unknown_names() {
        let origin = addr(Some("cli"), Some("local"), None);
        let sends = vec![
            output::Send::To {
                name: "family".into(),
                text: "a".into(),
            },
            output::Send::To {
                name: "nobody".into(),
                text: "b".into(),
            },
            output::Send::Origin("c".into()),
        ];
        assert_eq!(
            answer_sends(sends, Some(&origin), &[channel("family", "fam")]),
            [
                (addr(Some("telegram"), Some("fam"), None), "a".to_owned()),
                (origin, "c".to_owned()),
            ]
        );
    }
}
