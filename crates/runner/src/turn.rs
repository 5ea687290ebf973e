//! One turn, as steps (each a function, run in this order by
//! [`Runner::handle`]):
//!
//! 1. **plan** the batch ([`crate::plan`], pure), failing rows this runner
//!    cannot handle and running the tasks' pre-scripts;
//! 2. **claim** it in `outbound.db`, with the conversation it continues;
//! 3. **build** the request: prompt, system prompt, tools, history (with
//!    compaction when the conversation fills the window);
//! 4. **run** it: a command, the agent CLI, or the provider and the agent
//!    loop (`agent.rs`);
//! 5. **commit** the replies, the acks and the conversation together.

use jiff::Timestamp;
use pinch_proto::content::InContent;
use pinch_proto::open::write_tx;
use pinch_proto::rows::{self, status, NewOutbound};
use pinch_proto::{progress, time, ProtoError};
use pinch_providers::{Capabilities, ProviderError, TurnRequest, TurnResult};

use crate::address::{self, Address};
use crate::commands::Command;
use crate::plan::{self, Batch, Scripts};
use crate::poll::Snapshot;
use crate::{
    commands, compact, continuation_key, format, history, output, prescript, prompt, waited_for,
    Runner,
};

/// Per-turn facts the tools and follow-ups need.
pub(crate) struct TurnState {
    /// Where the answer goes by default ([`address::origin`]).
    pub origin: Option<Address>,
    pub in_reply_to: String,
    pub destinations: Vec<rows::Destination>,
    /// Largest inbound seq seen this turn (the reply is numbered above it).
    pub in_max: i64,
    /// The inbound ids the turn answers: the batch, then any follow-ups.
    pub ids: Vec<String>,
    /// What the next turn's history shows as this turn's user message:
    /// the batch plus any follow-ups that joined it.
    pub user_record: String,
    /// Images `view_image` showed the model this turn (bounded by
    /// [`crate::vision::MAX_IMAGES`]: each goes with every later step).
    pub images_shown: usize,
    /// Bytes of images the turn's requests carry: the prompt's and those
    /// `view_image` showed (bounded by [`crate::resize::MAX_TOTAL`]).
    pub image_bytes: usize,
}

/// What the claim decided about the conversation.
struct Claim {
    continuation: String,
    /// A new conversation (first turn, `/clear`): no history is sent.
    fresh: bool,
}

/// The request a turn sends, and what a command answers with.
struct Prepared {
    req: TurnRequest,
    caps: Capabilities,
    /// `/compact`'s outcome, computed while building.
    compacted: Option<Result<Option<compact::Compacted>, String>>,
}

type Outcome = Result<TurnResult, ProviderError>;

impl Runner {
    /// Handles one successful poll. Returns whether a turn ran (or rows were
    /// settled), in which case the loop polls again at once.
    pub(crate) fn handle(&mut self, snap: Snapshot) -> Result<bool, ProtoError> {
        let first = std::mem::replace(&mut self.first_poll, false);
        self.prune_synced_acks(&snap)?;
        let now = Timestamp::now();
        let triage = plan::triage(&snap.pending, &self.acked, first, now, &waited_for);
        self.fail_rows(&triage.bad)?;
        let Some(selected) = plan::select(&triage.ready, self.cfg.batch_size as usize) else {
            return Ok(false);
        };
        let scripts = self.run_prescripts(&selected.take)?;
        let (policy_batch, skip_ids) = (selected.batch.clone(), selected.skip_ids.clone());
        let Some(mut batch) = plan::shape(selected, &scripts) else {
            // Every trigger was a task with nothing to do; context rows
            // stay pending for a later turn.
            return Ok(true);
        };
        let claim = self.claim(&batch, skip_ids)?;
        if batch.command.is_none() {
            self.transcribe(&mut batch.rows);
        }
        tracing::debug!(batch = ?policy_batch.take, trigger = policy_batch.trigger, "claimed batch");
        let mut prepared = self.build(&snap, &batch, &claim, now)?;
        let mut turn = TurnState {
            origin: address::origin(batch.trigger, snap.routing.as_ref()),
            in_reply_to: batch.trigger.id.clone(),
            destinations: snap.destinations.clone(),
            in_max: snap.in_max,
            ids: batch.ids(),
            user_record: prepared.req.prompt.clone(),
            images_shown: 0,
            image_bytes: prepared.req.images.iter().map(|i| i.data.len()).sum(),
        };
        let result = self.run(&mut prepared, batch.command, claim.fresh, &mut turn)?;
        self.commit(result, batch.command, &prepared.req, &turn)?;
        Ok(true)
    }

    /// Fails rows no turn can take (bad JSON, an unknown kind) with their
    /// reason.
    fn fail_rows(&mut self, bad: &[(String, String)]) -> Result<(), ProtoError> {
        if bad.is_empty() {
            return Ok(());
        }
        let now_s = time::now();
        let tx = write_tx(&mut self.out)?;
        for (id, reason) in bad {
            tracing::warn!(id = %id, "failing inbound row: {reason}");
            rows::ack(
                &tx,
                id,
                status::FAILED,
                &self.cfg.runner_id,
                &now_s,
                Some(reason),
            )?;
        }
        tx.commit()
            .map_err(ProtoError::sqlite("commit failed acks"))?;
        self.acked.extend(bad.iter().map(|(id, _)| id.clone()));
        Ok(())
    }

    /// Runs the pre-scripts of the batch's tasks (SPEC §7.4): a task whose
    /// script finds nothing to do is completed here, without the model
    /// (lesson 41).
    fn run_prescripts(&mut self, take: &[plan::Row<'_>]) -> Result<Scripts, ProtoError> {
        let mut scripts = Scripts::default();
        for (row, content) in take {
            if let InContent::Task(pinch_proto::content::TaskIn {
                script: Some(sc), ..
            }) = content
            {
                match prescript::run(sc, &self.cfg.paths.workspace_dir) {
                    prescript::Verdict::Skip => scripts.quiet.push(row.id.clone()),
                    prescript::Verdict::Wake(Some(d)) => {
                        scripts.data.insert(row.seq, d);
                    }
                    prescript::Verdict::Wake(None) => {}
                }
            }
        }
        if scripts.quiet.is_empty() {
            return Ok(scripts);
        }
        let now_s = time::now();
        let tx = write_tx(&mut self.out)?;
        for id in &scripts.quiet {
            rows::ack(
                &tx,
                id,
                status::COMPLETED,
                &self.cfg.runner_id,
                &now_s,
                Some("pre-script: nothing to do"),
            )?;
        }
        tx.commit()
            .map_err(ProtoError::sqlite("commit pre-script acks"))?;
        tracing::info!(
            tasks = scripts.quiet.len(),
            "task pre-script found nothing to do; no model call"
        );
        self.acked.extend(scripts.quiet.iter().cloned());
        Ok(scripts)
    }

    /// Claims the batch (and settles skipped context) in one transaction.
    /// The continuation is created and stored before the first call
    /// (lesson 13: a turn killed midway resumes the same conversation).
    fn claim(&mut self, batch: &Batch<'_>, skip_ids: Vec<String>) -> Result<Claim, ProtoError> {
        let ids = batch.ids();
        let fresh = batch.command == Some(Command::Clear) || self.continuation.is_none();
        if fresh {
            self.continuation = Some(format!("c-{}", pinch_proto::runner_config::random_hex(8)));
        }
        let continuation = self.continuation.clone().expect("set above");
        let now_s = time::now();
        let tx = write_tx(&mut self.out)?;
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        rows::claim(&tx, &id_refs, &self.cfg.runner_id, &now_s)?;
        if fresh {
            rows::state_put(&tx, &continuation_key(&self.cfg), &continuation, &now_s)?;
        }
        for id in &skip_ids {
            rows::ack(
                &tx,
                id,
                status::COMPLETED,
                &self.cfg.runner_id,
                &now_s,
                Some("skipped: older context beyond the batch size"),
            )?;
        }
        // The turn begins with a model call: it is in flight from here, in
        // this commit rather than a write of its own (decision 0040).
        let model_wait = i64::try_from(self.cfg.timings.model_wait_ms).unwrap_or(i64::MAX);
        progress::begin_turn(
            &tx,
            &self.cfg.runner_id,
            &now_s,
            Some((crate::MODEL_CALL, model_wait)),
        )?;
        tx.commit().map_err(ProtoError::sqlite("commit claim"))?;
        self.model_marked = true;
        if !skip_ids.is_empty() {
            tracing::info!(
                count = skip_ids.len(),
                "older context rows skipped (beyond the batch size)"
            );
        }
        self.acked.extend(ids);
        self.acked.extend(skip_ids);
        Ok(Claim {
            continuation,
            fresh,
        })
    }

    /// The request: the batch as a prompt, the system prompt and tools
    /// (none for a command), and the history that fits the window.
    fn build(
        &mut self,
        snap: &Snapshot,
        batch: &Batch<'_>,
        claim: &Claim,
        now: Timestamp,
    ) -> Result<Prepared, ProtoError> {
        let command = batch.command;
        let items: Vec<format::Item<'_>> = batch
            .rows
            .iter()
            .map(|(row, content)| format::Item { row, content })
            .collect();
        let mut prompt = format::format_batch(
            &items,
            &snap.destinations,
            &self.cfg.timezone,
            &self.tz,
            now,
        );
        let caps = self.provider.capabilities();
        // Images go with the prompt to a model that takes them.
        let images = if caps.vision && command.is_none() {
            let (images, notes) =
                crate::vision::collect(&self.cfg, batch.rows.iter().map(|(_, c)| c));
            for n in notes {
                prompt.push('\n');
                prompt.push_str(&n);
            }
            images
        } else {
            Vec::new()
        };
        let offered = if command.is_none() && caps.tools {
            self.all_tools()
        } else {
            Vec::new()
        };
        let system = if offered.is_empty()
            && caps.context_window > 0
            && caps.context_window <= prompt::SMALL_WINDOW
        {
            prompt::system_prompt_small(&self.cfg)
        } else {
            prompt::system_prompt(&self.cfg, &snap.destinations, &offered, &self.mcp_notes)
        };
        // What every request carries besides history and prompt: the system
        // prompt and the tool schemas (for the context estimate).
        let fixed = format!(
            "{system}{}",
            serde_json::to_string(&offered).unwrap_or_default()
        );
        let continuation = &claim.continuation;
        let history = if claim.fresh || command.is_some() {
            Vec::new()
        } else {
            let mut live = history::Live::load(&self.out, continuation)?;
            let reported =
                history::usage_get(&self.out, &history::usage_key(continuation))?.last_input_tokens;
            let tokens = compact::estimate_tokens(&fixed, &live.history(), &prompt, reported);
            if compact::over_threshold(tokens, caps.context_window) {
                tracing::info!(
                    tokens,
                    window = caps.context_window,
                    "the conversation fills the context window past the threshold"
                );
                match self.compact(continuation, &system, 4)? {
                    Ok(Some(_)) => live = history::Live::load(&self.out, continuation)?,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(
                        "compaction failed, the oldest messages are left out instead: {e}"
                    ),
                }
            }
            // Whatever compaction managed, never send more than the window.
            let budget =
                (caps.context_window as usize * 4).saturating_sub(fixed.len() + prompt.len()) * 9
                    / 10;
            let budget = if caps.context_window == 0 {
                usize::MAX
            } else {
                budget
            };
            history::fit(live.history(), live.summary.is_some(), budget)
        };
        let compacted = if command == Some(Command::Compact) {
            Some(self.compact(continuation, &system, 2)?)
        } else {
            None
        };
        Ok(Prepared {
            req: TurnRequest {
                system,
                prompt,
                texts: batch.texts(),
                continuation: Some(continuation.clone()),
                fresh_continuation: claim.fresh,
                history,
                tools: offered,
                images,
                ..Default::default()
            },
            caps,
            compacted,
        })
    }

    /// Runs the turn: a command answers without the model; the agent CLI
    /// runs its own loop; otherwise the provider, then the agent loop.
    fn run(
        &mut self,
        p: &mut Prepared,
        command: Option<Command>,
        fresh: bool,
        turn: &mut TurnState,
    ) -> Result<Outcome, ProtoError> {
        if let Some(cmd) = command {
            tracing::info!(
                ?cmd,
                "command heading the batch, answered without the model"
            );
            let text = self.answer_command(cmd, p, turn)?;
            return Ok(Ok(TurnResult {
                text,
                ..Default::default()
            }));
        }
        if self.cfg.provider.kind == "cli" {
            // CLI ENGINE HOOK (2/2): the agent CLI runs the whole loop itself,
            // calling pinch's tools over MCP; its answer has no tool calls.
            return Ok(self.cli_turn(&p.req, turn));
        }
        let req = &mut p.req;
        // The turn's text streams to the host as the model writes it
        // (decision 0048); the final row stays the reply.
        self.streaming_for = Some(turn.in_reply_to.clone());
        let r = self.model_turn(req, fresh, turn);
        self.streaming_for = None;
        r
    }

    /// The provider's first call (a forgotten conversation started over
    /// once), then the agent loop.
    fn model_turn(
        &mut self,
        req: &mut TurnRequest,
        fresh: bool,
        turn: &mut TurnState,
    ) -> Result<Outcome, ProtoError> {
        let first = match self.provider_turn(req) {
            // A resume the provider no longer knows: start over once, not
            // forever (lesson 14).
            Err(e) if e.kind == pinch_providers::ErrorKind::SessionNotFound && !fresh => {
                tracing::warn!("resuming the conversation failed ({e}); starting a new one, once");
                let c = format!("c-{}", pinch_proto::runner_config::random_hex(8));
                let tx = write_tx(&mut self.out)?;
                rows::state_put(&tx, &continuation_key(&self.cfg), &c, &time::now())?;
                tx.commit()
                    .map_err(ProtoError::sqlite("commit continuation"))?;
                self.continuation = Some(c.clone());
                req.continuation = Some(c);
                req.fresh_continuation = true;
                req.history.clear();
                self.provider_turn(req)
            }
            r => r,
        };
        self.agent_loop(first, req, turn)
    }

    /// A command's answer (SPEC §5.2).
    fn answer_command(
        &mut self,
        cmd: Command,
        p: &mut Prepared,
        turn: &TurnState,
    ) -> Result<String, ProtoError> {
        let conv = p.req.continuation.clone().unwrap_or_default();
        Ok(match cmd {
            Command::Clear => "Session cleared.".into(),
            Command::Compact => match p.compacted.take().expect("compacted while building") {
                Ok(Some(c)) => format!(
                    "Compacted: {} messages summarised; the full text is archived in {}. MEMORY.md stays as it is.",
                    c.messages, c.archive
                ),
                Ok(None) => "Nothing to compact yet: the conversation since the last compaction is shorter than one exchange.".into(),
                Err(e) => format!("Could not compact the conversation: {e}. It goes on as it was."),
            },
            Command::Context => {
                // As a normal turn would send it: tools offered, their schemas counted.
                let all = if p.caps.tools { self.all_tools() } else { Vec::new() };
                let sys = prompt::system_prompt(&self.cfg, &turn.destinations, &all, &self.mcp_notes);
                let fixed = format!("{sys}{}", serde_json::to_string(&all).unwrap_or_default());
                commands::context(&self.out, &conv, &fixed, p.caps.context_window)?
            }
            Command::Cost => commands::cost(&self.out, &conv)?,
            Command::Files => commands::files(&self.cfg),
        })
    }

    /// Writes the replies, the acks, the conversation record and the usage
    /// in one transaction (lesson 18/20).
    fn commit(
        &mut self,
        result: Outcome,
        command: Option<Command>,
        req: &TurnRequest,
        turn: &TurnState,
    ) -> Result<(), ProtoError> {
        let answered: Option<String> = match (&result, command) {
            (Ok(r), None) => Some(r.text.clone()),
            _ => None,
        };
        let (sends, outcome, reason) = match result {
            Ok(r) => (output::parse(&r.text).sends, status::COMPLETED, None),
            Err(e) => {
                tracing::error!(retryable = e.retryable, "provider failed: {e}");
                (
                    vec![output::Send::Origin(format!(
                        "Sorry, I could not answer that: the model provider failed ({e})."
                    ))],
                    status::FAILED,
                    Some(format!("provider failed: {e}")),
                )
            }
        };
        let sends = address::answer_sends(sends, turn.origin.as_ref(), &turn.destinations);
        let now_s = time::now();
        let tx = write_tx(&mut self.out)?;
        let mut rows_out = TextRows {
            tx: &tx,
            runner_id: &self.cfg.runner_id,
            counter: &mut self.out_counter,
            turn,
            now_s: &now_s,
        };
        for (addr, text) in sends {
            rows_out.insert(addr, text)?;
        }
        rows_out.tell_mcp_failures(&self.mcp_failures)?;
        for id in &turn.ids {
            rows::ack(
                &tx,
                id,
                outcome,
                &self.cfg.runner_id,
                &now_s,
                reason.as_deref(),
            )?;
        }
        if let (Some(reply), Some(c)) = (answered.as_deref(), req.continuation.as_deref()) {
            history::append(
                &tx,
                c,
                &[("user", &turn.user_record), ("assistant", reply)],
                &now_s,
            )?;
        }
        if let (None, Some(c)) = (command, req.continuation.as_deref()) {
            let spent = std::mem::take(&mut self.spent);
            history::usage_record(&tx, c, &spent, true, &now_s)?;
        }
        progress::end_turn(&tx, &self.cfg.runner_id, &now_s)?;
        tx.commit().map_err(ProtoError::sqlite("commit turn"))?;
        // Long-term memory, after the turn's own commit (decision 0043).
        if let Ok(mem) = self.memory.as_mut() {
            crate::memory::catch_up(&self.out, mem, &self.cfg.session_id);
        }
        tracing::info!(batch = turn.ids.len(), outcome, "turn done");
        Ok(())
    }
}

/// The turn's text rows, written in its commit's transaction.
struct TextRows<'a, 't> {
    tx: &'a pinch_proto::rusqlite::Transaction<'t>,
    runner_id: &'a str,
    counter: &'a mut u64,
    turn: &'a TurnState,
    now_s: &'a str,
}

impl TextRows<'_, '_> {
    fn insert(&mut self, addr: Address, text: String) -> Result<(), ProtoError> {
        *self.counter += 1;
        let row = NewOutbound {
            id: format!("out-{}-{}", self.runner_id, self.counter),
            in_reply_to: Some(self.turn.in_reply_to.clone()),
            timestamp: self.now_s.to_owned(),
            deliver_after: None,
            kind: "chat".into(),
            platform_id: addr.platform_id,
            channel_type: addr.channel_type,
            thread_id: addr.thread_id,
            content: pinch_proto::content::ChatOut::Text {
                text,
                files: vec![],
            }
            .to_json(),
        };
        rows::insert_outbound(self.tx, &row, self.turn.in_max).map(|_| ())
    }

    /// An MCP server that failed to start is told to the conversation once
    /// per distinct error (the agent's prompt says so every turn): the
    /// user learns why its tools are missing, in the server's own words.
    fn tell_mcp_failures(&mut self, failures: &[(String, String)]) -> Result<(), ProtoError> {
        let Some(origin) = self.turn.origin.clone() else {
            return Ok(());
        };
        for (name, error) in failures {
            let key = format!("mcp_failure_told:{name}");
            if rows::state_get(self.tx, &key)?.as_deref() == Some(error.as_str()) {
                continue;
            }
            let text = format!(
                "Note from pinch: the MCP server `{name}` could not start, so its tools are not available. {error}. \
                 Fix its entry ([mcp.servers.{name}] in pinch.toml, or the agent group's mcp_servers); the next runner tries again, \
                 and `pinch doctor` checks that its command exists inside the sandbox."
            );
            self.insert(origin.clone(), text)?;
            rows::state_put(self.tx, &key, error, self.now_s)?;
        }
        Ok(())
    }
}
