//! The agent loop (SPEC §5.5) and the provider calls: tool calls run in
//! order, follow-ups join at step boundaries (lesson 20), each step is
//! recorded with the follow-ups' claims (lesson 13), retryable provider
//! errors back off with full jitter while the heartbeat keeps beating.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use pinch_proto::layout;
use pinch_proto::open::write_tx;
use pinch_proto::rows;
use pinch_proto::time;
use pinch_providers::{Step, TurnRequest};

use crate::turn::TurnState;
use crate::{
    format, history, plan, poll, signals, tools, waited_for, Runner, MODEL_CALL, PROGRESS_EVERY,
};

/// Rows that joined a running turn.
struct FollowUps {
    ids: Vec<String>,
    prompt: String,
    texts: Vec<String>,
    in_max: i64,
}

impl Runner {
    /// The agent loop (SPEC §5.5): while the model asks for tools, run
    /// them, append the results (and any follow-ups that arrived, lesson
    /// 20) to the steps, record the step in `conversation` with the
    /// follow-ups' claims (lesson 13), and call the model again. Ends at the
    /// first result without tool calls, at an error, or at `max_steps`
    /// model calls (then with the text the last call had).
    pub(crate) fn agent_loop(
        &mut self,
        first: Result<pinch_providers::TurnResult, pinch_providers::ProviderError>,
        req: &mut TurnRequest,
        turn: &mut TurnState,
    ) -> Result<
        Result<pinch_providers::TurnResult, pinch_providers::ProviderError>,
        pinch_proto::ProtoError,
    > {
        let max = self.cfg.timings.max_steps.max(1);
        let mut calls = 1u32;
        let mut r = first;
        loop {
            let t = match r {
                Ok(t) if !t.tool_calls.is_empty() => t,
                other => return Ok(other),
            };
            if req.tools.is_empty() {
                tracing::warn!(
                    calls = t.tool_calls.len(),
                    "the provider called tools although none were offered; calls ignored"
                );
                return Ok(Ok(pinch_providers::TurnResult {
                    tool_calls: Vec::new(),
                    ..t
                }));
            }
            if calls >= max {
                tracing::warn!(
                    max_steps = max,
                    pending_calls = t.tool_calls.len(),
                    "step limit reached: the turn ends with the text of the last step, its tool calls not run"
                );
                return Ok(Ok(pinch_providers::TurnResult {
                    tool_calls: Vec::new(),
                    ..t
                }));
            }
            let mut new_steps = self.run_tools(&t, turn);
            let follow = self.follow_ups(&turn.ids);
            if let Some(f) = &follow {
                new_steps.push(Step::User {
                    text: f.prompt.clone(),
                });
            }
            let now_s = time::now();
            {
                let tx = write_tx(&mut self.out)?;
                if let Some(c) = req.continuation.as_deref() {
                    let recs: Vec<String> = new_steps
                        .iter()
                        .map(|s| serde_json::to_string(s).unwrap_or_default())
                        .collect();
                    let msgs: Vec<(&str, &str)> =
                        recs.iter().map(|x| ("step", x.as_str())).collect();
                    history::append(&tx, c, &msgs, &now_s)?;
                }
                if let Some(f) = &follow {
                    let fids: Vec<&str> = f.ids.iter().map(String::as_str).collect();
                    rows::claim(&tx, &fids, &self.cfg.runner_id, &now_s)?;
                }
                pinch_proto::progress::touch(&tx, &self.cfg.runner_id, &now_s)?;
                tx.commit()
                    .map_err(pinch_proto::ProtoError::sqlite("commit step"))?;
            }
            req.steps.extend(new_steps);
            if let Some(f) = follow {
                tracing::info!(count = f.ids.len(), "follow-ups joined the turn");
                self.acked.extend(f.ids.iter().cloned());
                turn.ids.extend(f.ids);
                req.texts.extend(f.texts);
                turn.user_record.push('\n');
                turn.user_record.push_str(&f.prompt);
                turn.in_max = turn.in_max.max(f.in_max);
            }
            calls += 1;
            r = self.provider_turn(req);
        }
    }

    /// The built-in tools, then the MCP servers' (a name clash keeps the
    /// built-in one: MCP names always contain `__`, built-ins never do).
    pub(crate) fn all_tools(&self) -> Vec<pinch_providers::ToolSpec> {
        let mut all = tools::specs();
        // The host's web tools only where the group has them (the host
        // refuses the rest anyway; offering them would only mislead).
        let web = &self.cfg.web;
        let skills = !crate::skills::list(&self.cfg).is_empty();
        let vision = self.provider.capabilities().vision;
        all.retain(|t| match t.name.as_str() {
            "web_fetch" => web.fetch,
            "web_search" => web.search,
            "load_skill" => skills,
            // Only a model that takes images can look at one.
            "view_image" => vision,
            "send_voice" => web.speech,
            _ => true,
        });
        all.extend(self.mcp.tools());
        all
    }

    /// Runs one step's tool calls in order; returns the step records (the
    /// model's output, then each result).
    fn run_tools(&mut self, t: &pinch_providers::TurnResult, turn: &mut TurnState) -> Vec<Step> {
        let stop_file = self.cfg.paths.in_dir.join(layout::STOP);
        let rid = self.cfg.runner_id.clone();
        let should_stop = move || {
            signals::stop_requested()
                || std::fs::read_to_string(&stop_file).is_ok_and(|s| s.trim() == rid)
        };
        let mut ctx = tools::ToolCtx::new(&self.cfg, &mut self.out, &should_stop);
        ctx.memory = Some(self.memory.as_mut().map_err(|e| e.as_str()));
        ctx.destinations = turn.destinations.clone();
        ctx.origin = turn.origin.clone();
        ctx.in_reply_to = Some(turn.in_reply_to.clone());
        ctx.in_max = turn.in_max;
        ctx.counter = self.tool_counter;
        ctx.images_left = crate::vision::MAX_IMAGES.saturating_sub(turn.images_shown);
        ctx.image_bytes_left = crate::resize::MAX_TOTAL.saturating_sub(turn.image_bytes);
        // The model call is over: tools that declare no timeout run under
        // the host's plain claim-stuck tolerance, not the model's bound.
        ctx.set_tool_in_flight(None);
        let mut steps = vec![Step::Assistant {
            text: t.text.clone(),
            calls: t.tool_calls.clone(),
        }];
        for c in &t.tool_calls {
            let started = Instant::now();
            let out = if self.mcp.has_tool(&c.name) {
                // The declared timeout widens the host's stuck tolerance
                // while an external server works (SPEC §5.6).
                let timeout = self.mcp.timeout_of(&c.name).unwrap_or(Duration::from_secs(
                    pinch_proto::runner_config::MCP_DEFAULT_TIMEOUT_S,
                ));
                ctx.set_tool_in_flight(Some((&c.name, timeout.as_millis() as u64)));
                let r = self.mcp.call(&c.name, &c.arguments, None);
                ctx.set_tool_in_flight(None);
                match r {
                    Ok(r) => tools::ToolOutput {
                        content: r.content,
                        is_error: r.is_error,
                    },
                    Err(e) => tools::ToolOutput::err(e.to_string()),
                }
            } else {
                tools::call(&mut ctx, &c.name, &c.arguments)
            };
            tracing::info!(tool = %c.name, is_error = out.is_error, ms = started.elapsed().as_millis() as u64, "tool call");
            if out.is_error {
                tracing::debug!(tool = %c.name, "tool error: {}", out.content);
            }
            steps.push(Step::ToolResult {
                call_id: c.id.clone(),
                name: c.name.clone(),
                content: out.content,
                is_error: out.is_error,
                images: std::mem::take(&mut ctx.images),
            });
        }
        self.tool_counter = ctx.counter;
        turn.images_shown = crate::vision::MAX_IMAGES.saturating_sub(ctx.images_left);
        turn.image_bytes = crate::resize::MAX_TOTAL.saturating_sub(ctx.image_bytes_left);
        let acked = std::mem::take(&mut ctx.acked);
        drop(ctx);
        self.acked.extend(acked);
        steps
    }

    /// Due rows that arrived during the turn, to join it at a step boundary
    /// ([`plan::follow_ups`] decides which).
    fn follow_ups(&mut self, turn_ids: &[String]) -> Option<FollowUps> {
        // A runner the host asked to stop finishes its turn and takes no new
        // message: those wait for the next runner (e.g. one started with a
        // newly approved MCP server).
        if self.stop_file_names_me() {
            tracing::info!(
                "asked to stop: messages that arrived during the turn wait for the next runner"
            );
            return None;
        }
        let snap = match poll::snapshot(&self.cfg) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("polling for follow-ups failed (they wait for the next turn): {e}");
                return None;
            }
        };
        let now = Timestamp::now();
        let acked = &self.acked;
        let taken = |id: &str| acked.contains(id) || turn_ids.iter().any(|t| t == id);
        let mut rows = plan::follow_ups(
            &snap.pending,
            &taken,
            now,
            self.cfg.batch_size as usize,
            &waited_for,
        );
        if rows.is_empty() {
            return None;
        }
        self.transcribe(&mut rows);
        let items: Vec<format::Item<'_>> = rows
            .iter()
            .map(|(row, content)| format::Item { row, content })
            .collect();
        let prompt = format::format_batch(
            &items,
            &snap.destinations,
            &self.cfg.timezone,
            &self.tz,
            now,
        );
        Some(FollowUps {
            ids: rows.iter().map(|(r, _)| r.id.clone()).collect(),
            prompt,
            texts: plan::texts(&rows),
            in_max: snap.in_max,
        })
    }

    /// A provider call with retries (SPEC §5.5): retryable errors (429,
    /// 529, 5xx, timeouts, cut streams) back off with full jitter between
    /// the base and 60 s ([`crate::retry_wait`]: never less than the API's
    /// `retry-after`), up to `provider_tries` attempts; the heartbeat
    /// thread keeps beating meanwhile, and each wait is recorded as progress.
    pub(crate) fn provider_turn(
        &mut self,
        req: &TurnRequest,
    ) -> Result<pinch_providers::TurnResult, pinch_providers::ProviderError> {
        let tries = self.cfg.timings.provider_tries.max(1);
        let base = self.cfg.timings.provider_retry_base_ms.max(1);
        let mut attempt = 1;
        loop {
            // Each attempt is a call in flight with its bound (after a retry
            // wait too), so a model that thinks for longer than the host's
            // claim-stuck tolerance is not killed as stuck (decision 0040).
            self.model_in_flight(Duration::ZERO);
            match self.provider_call(req) {
                Err(e) if e.retryable && attempt < tries => {
                    let wait = crate::retry_wait(attempt, base, &e);
                    tracing::warn!(
                        attempt,
                        of = tries,
                        wait_ms = wait.as_millis() as u64,
                        "provider failed, retrying: {e}"
                    );
                    // The wait is part of the call in flight.
                    self.model_in_flight(wait);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// Records a model call in flight from now (`container_state`, as a
    /// tool declares itself), bounded by `before` (a retry wait) plus
    /// `model_wait_ms`; progress is recorded with it. The turn's first call
    /// was declared by the claim's commit and writes nothing here.
    fn model_in_flight(&mut self, before: Duration) {
        if std::mem::take(&mut self.model_marked) && before.is_zero() {
            return; // the claim's commit did it
        }
        let bound = before.as_millis() as u64 + self.cfg.timings.model_wait_ms;
        let r = pinch_proto::progress::set_tool(
            &self.out,
            &self.cfg.runner_id,
            Some((MODEL_CALL, i64::try_from(bound).unwrap_or(i64::MAX))),
            &time::now(),
        );
        if let Err(e) = r {
            tracing::warn!("could not record the model call in container_state: {e}");
        }
    }

    /// One provider call. Its events are liveness: progress is recorded (at
    /// most every PROGRESS_EVERY) so the host's stuck check sees a slow turn
    /// moving.
    fn provider_call(
        &mut self,
        req: &TurnRequest,
    ) -> Result<pinch_providers::TurnResult, pinch_providers::ProviderError> {
        let (out, provider, runner_id) = (
            &mut self.out,
            &mut self.provider,
            self.cfg.runner_id.clone(),
        );
        let streamer = match self.streaming_for.as_deref() {
            Some(reply_to) => {
                if self.streamer.is_none() {
                    self.streamer = crate::stream::Streamer::start(self.cfg.proxy_socket.clone());
                }
                self.streamer.as_ref().inspect(|s| s.begin(reply_to))
            }
            None => None,
        };
        let mut last_progress = Instant::now();
        let r = provider.turn(req, &mut |ev| {
            if let (Some(s), pinch_providers::Event::Text(t)) = (streamer, &ev) {
                s.push(t);
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                let now_s = time::now();
                if let Err(e) = pinch_proto::progress::touch(out, &runner_id, &now_s) {
                    tracing::warn!("could not record turn progress: {e}");
                }
            }
        });
        if let Ok(t) = &r {
            self.spent.add(t.usage);
        }
        r
    }
}
