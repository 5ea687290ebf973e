//! The built-in tools (SPEC §5.6): a registry of [`ToolSpec`]s and one
//! entry point, [`call`], that runs a tool by name on JSON arguments.
//!
//! Independent of the provider and of the poll loop: a [`ToolCtx`] carries
//! what a tool needs (the runner's config, its `outbound.db` writer, the
//! destinations and the default address), so the agent loop and, later, an
//! MCP server can both call it. Outside effects exist only as
//! `messages_out` rows (written and committed at once, so progress messages
//! reach the user while the turn goes on; decision 0009) and as files in the
//! workspace and outbox.
//!
//! A tool never panics on model input: bad arguments come back as an error
//! result the model can read and correct.

pub mod admin;
pub mod files;
pub mod images;
pub mod memory;
pub mod messages;
pub mod questions;
pub mod shell;
pub mod skills;
pub mod tasks;
pub mod voice;
pub mod web;

use jiff::tz::TimeZone;
use pinch_proto::rows::{self, Destination, NewOutbound};
use pinch_proto::runner_config::RunnerConfig;
use pinch_proto::rusqlite::Connection;
use pinch_proto::{layout, time};
use pinch_providers::ToolSpec;
use serde_json::Value;

use crate::address::Fallback;

/// A tool's answer to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            is_error: false,
        }
    }
    pub fn err(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            is_error: true,
        }
    }
}

/// A tool failure, worded for the model.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

impl From<pinch_proto::ProtoError> for ToolError {
    fn from(e: pinch_proto::ProtoError) -> Self {
        ToolError(format!("internal error writing the session database: {e}"))
    }
}

impl From<pinch_policy::path::PathError> for ToolError {
    fn from(e: pinch_policy::path::PathError) -> Self {
        ToolError(e.to_string())
    }
}

pub type ToolResult = Result<String, ToolError>;

pub use crate::address::Address;

/// Everything a tool may touch.
pub struct ToolCtx<'a> {
    pub cfg: &'a RunnerConfig,
    /// The runner's `outbound.db` writer (the only one).
    pub out: &'a mut Connection,
    pub tz: TimeZone,
    /// As of the latest poll.
    pub destinations: Vec<Destination>,
    /// The default reply address: the turn's origin, else `session_routing`.
    pub origin: Option<Address>,
    /// The inbound row replies refer to (the batch trigger), if any.
    pub in_reply_to: Option<String>,
    /// Largest inbound seq seen (rows are numbered above it).
    pub in_max: i64,
    /// Inbound ids a tool acked (question responses), for the runner's
    /// never-take-twice set.
    pub acked: Vec<String>,
    /// Asked to stop (signal or `in/stop`): blocking tools give up.
    pub should_stop: &'a dyn Fn() -> bool,
    /// Tool rows written so far (part of their ids); carry it across
    /// contexts of one process.
    pub counter: u64,
    /// The group's long-term memory index, or why it is off (`None`: not
    /// given to this context).
    pub memory: Option<Result<&'a mut Connection, &'a str>>,
    /// Images a tool shows the model with its result (`view_image`).
    pub images: Vec<pinch_providers::Image>,
    /// How many more this turn may show.
    pub images_left: usize,
    /// How many more bytes of images this turn's requests may carry.
    pub image_bytes_left: usize,
}

impl<'a> ToolCtx<'a> {
    pub fn new(
        cfg: &'a RunnerConfig,
        out: &'a mut Connection,
        should_stop: &'a dyn Fn() -> bool,
    ) -> ToolCtx<'a> {
        let tz = TimeZone::get(&cfg.timezone).unwrap_or(TimeZone::UTC);
        ToolCtx {
            cfg,
            out,
            tz,
            destinations: Vec::new(),
            origin: None,
            in_reply_to: None,
            in_max: 0,
            acked: Vec::new(),
            should_stop,
            counter: 0,
            memory: None,
            images: Vec::new(),
            images_left: 0,
            image_bytes_left: 0,
        }
    }

    /// A fresh outbound id (distinct from the runner's own `out-<runner>-<n>`).
    fn next_out_id(&mut self) -> String {
        self.counter += 1;
        format!(
            "out-{}-t{}-{}",
            self.cfg.runner_id,
            self.counter,
            pinch_proto::runner_config::random_hex(2)
        )
    }

    /// Resolves `to` (a destination name; blank means none) or the default
    /// address ([`crate::address::resolve`] with [`Fallback::Usable`]).
    /// Unknown names and an ambiguous default list the destinations.
    pub fn address(&self, to: Option<&str>) -> Result<Address, ToolError> {
        let to = to.map(str::trim).filter(|t| !t.is_empty());
        crate::address::resolve(
            to,
            self.origin.as_ref(),
            &self.destinations,
            Fallback::Usable,
        )
        .map_err(|e| ToolError(e.to_string()))
    }

    /// Where a request to the host (a task, an admin action) is addressed:
    /// the origin as it is ([`Fallback::Origin`]).
    pub fn origin_address(&self) -> Address {
        crate::address::resolve(
            None,
            self.origin.as_ref(),
            &self.destinations,
            Fallback::Origin,
        )
        .unwrap_or_default()
    }

    /// Writes one outbound row and commits it now; returns (id, seq).
    pub fn write_row(
        &mut self,
        kind: &str,
        addr: &Address,
        content: String,
    ) -> Result<(String, i64), ToolError> {
        let id = self.next_out_id();
        self.write_row_with_id(&id, kind, addr, content)
            .map(|seq| (id, seq))
    }

    fn write_row_with_id(
        &mut self,
        id: &str,
        kind: &str,
        addr: &Address,
        content: String,
    ) -> Result<i64, ToolError> {
        let inbound = self.cfg.paths.in_dir.join(layout::INBOUND_DB);
        let in_max = self
            .in_max
            .max(pinch_proto::seq::other_max(&inbound, "messages_in"));
        let row = NewOutbound {
            id: id.to_owned(),
            in_reply_to: self.in_reply_to.clone(),
            timestamp: time::now(),
            deliver_after: None,
            kind: kind.into(),
            platform_id: addr.platform_id.clone(),
            channel_type: addr.channel_type.clone(),
            thread_id: addr.thread_id.clone(),
            content,
        };
        let tx = pinch_proto::open::write_tx(self.out)?;
        let seq = rows::insert_outbound(&tx, &row, in_max)?;
        tx.commit()
            .map_err(|e| ToolError(format!("internal error committing the message: {e}")))?;
        Ok(seq)
    }

    /// Records a tool in flight in `container_state` (the host's sweep
    /// widens its stuck tolerance by the declared timeout), or clears it.
    pub fn set_tool_in_flight(&mut self, tool: Option<(&str, u64)>) {
        let now = time::now();
        let tool = tool.map(|(n, ms)| (n, ms as i64));
        let r = pinch_proto::progress::set_tool(self.out, &self.cfg.runner_id, tool, &now);
        if let Err(e) = r {
            tracing::warn!("could not record the tool in container_state: {e}");
        }
    }
}

/// The argument object of a call, or an error the model can act on.
fn parse_args(name: &str, args: &str) -> Result<serde_json::Map<String, Value>, ToolError> {
    let text = if args.trim().is_empty() { "{}" } else { args };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ToolError(format!("arguments of {name} must be a JSON object, got {other}"))),
        Err(e) => Err(ToolError(format!("arguments of {name} are not valid JSON ({e}); send a JSON object matching the tool's schema"))),
    }
}

/// Typed access to arguments with errors naming the argument.
pub(crate) struct Args<'m> {
    tool: &'static str,
    m: &'m serde_json::Map<String, Value>,
}

impl<'m> Args<'m> {
    pub fn str(&self, k: &str) -> Result<&'m str, ToolError> {
        match self.m.get(k) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(ToolError(format!(
                "{}: argument `{k}` must be a string, got {other}",
                self.tool
            ))),
            None => Err(ToolError(format!(
                "{}: argument `{k}` is required",
                self.tool
            ))),
        }
    }
    pub fn opt_str(&self, k: &str) -> Result<Option<&'m str>, ToolError> {
        match self.m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(k).map(Some),
        }
    }
    pub fn opt_u64(&self, k: &str) -> Result<Option<u64>, ToolError> {
        match self.m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= 0.0 && f.is_finite()) => {
                Ok(Some(n.as_f64().unwrap_or(0.0) as u64))
            }
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
            Some(other) => Err(ToolError(format!(
                "{}: argument `{k}` must be a non-negative integer, got {other}",
                self.tool
            ))),
        }
    }
    pub fn i64(&self, k: &str) -> Result<i64, ToolError> {
        match self.m.get(k) {
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or(0)),
            Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
                Ok(s.trim().parse().unwrap_or(0))
            }
            Some(other) => Err(ToolError(format!(
                "{}: argument `{k}` must be an integer, got {other}",
                self.tool
            ))),
            None => Err(ToolError(format!(
                "{}: argument `{k}` is required",
                self.tool
            ))),
        }
    }
    pub fn value(&self, k: &str) -> Option<&'m Value> {
        self.m.get(k).filter(|v| !v.is_null())
    }
}

/// A group of tools (one file): its specs, and the call that runs any of
/// them by name.
struct Group {
    specs: fn() -> Vec<ToolSpec>,
    call: fn(&mut ToolCtx<'_>, &str, &serde_json::Map<String, Value>) -> ToolResult,
}

/// The built-in tools, group by group, in the order they are offered. A
/// tool added to a group's file is offered and dispatched with no change
/// here; a new group is one line.
const GROUPS: &[Group] = &[
    Group {
        specs: shell::specs,
        call: shell_call,
    },
    Group {
        specs: files::specs,
        call: files::call,
    },
    Group {
        specs: messages::specs,
        call: messages::call,
    },
    Group {
        specs: tasks::specs,
        call: tasks::call,
    },
    Group {
        specs: questions::specs,
        call: questions_call,
    },
    Group {
        specs: admin::specs,
        call: admin::dispatch,
    },
    Group {
        specs: web::specs,
        call: web_call,
    },
    Group {
        specs: memory::specs,
        call: memory::call,
    },
    Group {
        specs: skills::specs,
        call: skills::call,
    },
    Group {
        specs: images::specs,
        call: images::call,
    },
    Group {
        specs: voice::specs,
        call: voice::call,
    },
];

fn web_call(ctx: &mut ToolCtx<'_>, name: &str, m: &serde_json::Map<String, Value>) -> ToolResult {
    web::call(ctx, name, m)
}

fn shell_call(ctx: &mut ToolCtx<'_>, _: &str, m: &serde_json::Map<String, Value>) -> ToolResult {
    shell::call(ctx, m)
}

fn questions_call(
    ctx: &mut ToolCtx<'_>,
    _: &str,
    m: &serde_json::Map<String, Value>,
) -> ToolResult {
    questions::call(ctx, m)
}

/// All built-in tools, for the provider's tool list.
pub fn specs() -> Vec<ToolSpec> {
    GROUPS.iter().flat_map(|g| (g.specs)()).collect()
}

pub(crate) fn spec(name: &str, description: &str, parameters: Value) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters,
    }
}

/// Runs one tool call. Never panics on model input; unknown tools and bad
/// arguments are error results.
pub fn call(ctx: &mut ToolCtx<'_>, name: &str, args_json: &str) -> ToolOutput {
    let m = match parse_args(name, args_json) {
        Ok(m) => m,
        Err(e) => return ToolOutput::err(e.0),
    };
    let group = GROUPS
        .iter()
        .find(|g| (g.specs)().iter().any(|s| s.name == name));
    let r = match group {
        Some(g) => (g.call)(ctx, name, &m),
        None => Err(ToolError(format!(
            "unknown tool {name:?}; the tools are: {}",
            specs()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    };
    match r {
        Ok(c) => ToolOutput::ok(c),
        Err(e) => ToolOutput::err(e.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each tool name is offered once and dispatched to its own group.
    #[test]
    fn every_tool_has_one_group() {
        let names: Vec<String> = specs().into_iter().map(|s| s.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a name offered twice: {names:?}");
        for g in GROUPS {
            for s in (g.specs)() {
                let owners = GROUPS
                    .iter()
                    .filter(|o| (o.specs)().iter().any(|x| x.name == s.name))
                    .count();
                assert_eq!(owners, 1, "{}", s.name);
            }
        }
        assert_eq!(names.len(), 27, "the built-in tools: {names:?}");
    }

    #[test]
    fn an_unknown_tool_lists_the_tools() {
        let env = testing::Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &testing::no_stop);
        let r = call(&mut ctx, "telepathy", "{}");
        assert!(r.is_error, "{r:?}");
        assert!(
            r.content
                .starts_with("unknown tool \"telepathy\"; the tools are: shell, read_file"),
            "{}",
            r.content
        );
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A real session layout in a temp dir for tool tests.
    use std::path::Path;

    use pinch_proto::runner_config::{
        ProviderSettings, RunnerConfig, RunnerPaths, Timings, VERSION,
    };
    use pinch_proto::rusqlite::Connection;

    pub struct Env {
        pub dir: tempfile::TempDir,
        pub cfg: RunnerConfig,
    }

    impl Env {
        pub fn new() -> Env {
            let dir = tempfile::tempdir().unwrap();
            let p = |s: &str| {
                let d = dir.path().join(s);
                std::fs::create_dir_all(&d).unwrap();
                d
            };
            let paths = RunnerPaths {
                in_dir: p("in"),
                out_dir: p("out"),
                inbox_dir: p("inbox"),
                outbox_dir: p("outbox"),
                workspace_dir: p("agent"),
                global_dir: Some(p("global")),
                extra: vec![],
            };
            let cfg = RunnerConfig {
                version: VERSION,
                session_id: "s1".into(),
                runner_id: "r1".into(),
                agent_group_id: "main".into(),
                agent_name: "main".into(),
                assistant_name: None,
                paths,
                provider: ProviderSettings {
                    kind: "scripted".into(),
                    ..Default::default()
                },
                timezone: "Europe/Madrid".into(),
                timings: Timings::default(),
                batch_size: 10,
                proxy_socket: None,
                web: Default::default(),
                mcp_servers: Vec::new(),
                credentials: Vec::new(),
            };
            // Both DBs exist with their schemas, as the host makes them.
            let inb = Connection::open(cfg.paths.in_dir.join("inbound.db")).unwrap();
            pinch_proto::schema::migrate_inbound(&inb).unwrap();
            let out = Connection::open(cfg.paths.out_dir.join("outbound.db")).unwrap();
            pinch_proto::schema::migrate_outbound(&out).unwrap();
            out.execute(
                "INSERT INTO container_state (id, runner_id, updated_at) VALUES (1, 'r1', 'x')",
                [],
            )
            .unwrap();
            Env { dir, cfg }
        }

        pub fn out(&self) -> Connection {
            pinch_proto::open::open_writer(
                &self.cfg.paths.out_dir.join("outbound.db"),
                std::time::Duration::from_secs(5),
            )
            .unwrap()
        }

        pub fn inbound_writer(&self) -> Connection {
            pinch_proto::open::open_writer(
                &self.cfg.paths.in_dir.join("inbound.db"),
                std::time::Duration::from_secs(5),
            )
            .unwrap()
        }

        pub fn path(&self, rel: &str) -> std::path::PathBuf {
            self.dir.path().join(rel)
        }

        #[allow(dead_code)]
        pub fn root(&self) -> &Path {
            self.dir.path()
        }
    }

    pub fn no_stop() -> bool {
        false
    }

    /// The outbound rows: (kind, channel_type, platform_id, content).
    pub fn out_rows(c: &Connection) -> Vec<(String, Option<String>, Option<String>, String)> {
        c.prepare("SELECT kind, channel_type, platform_id, content FROM messages_out ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}
