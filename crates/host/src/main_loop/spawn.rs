//! Starting a runner: its folders, `runner.json`, its credential proxy,
//! the sandbox command, the liveness pipe, the exit watch and the stuck
//! timer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use pinch_proto::runner_config::{random_hex, RunnerConfig, VERSION};
use pinch_proto::time;

use super::runner_log::prune_logs;
use super::{ensure_group_folder, now_ms, Event, Host, Live};
use crate::sandbox::{self, Mounts};
use crate::session;

impl Host {
    /// The group's extra folders that pass the allowlist (SPEC §7.8); the
    /// rest are logged with their reasons and left out.
    pub(super) fn extra_mounts(&self, ag: &str) -> Vec<pinch_policy::mounts::Granted> {
        let requests: Option<String> = self.central.extra_mounts_requested(ag).ok().flatten();
        if requests
            .as_deref()
            .is_none_or(|r| r.trim().is_empty() || r.trim() == "[]")
        {
            return Vec::new();
        }
        let Some(path) = &self.cfg.mount_allowlist else {
            tracing::warn!(agent_group = %ag, "extra folders are configured but no mount allowlist is: none are mounted");
            return Vec::new();
        };
        let allow = match crate::mounts::load(path) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(agent_group = %ag, "no extra folders mounted: {e:#}");
                return Vec::new();
            }
        };
        let mut protected =
            vec![std::fs::canonicalize(self.data.root())
                .unwrap_or_else(|_| self.data.root().to_owned())];
        if let Some(dir) = path.parent() {
            protected.push(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned()));
        }
        let (ok, refused) = crate::mounts::resolve(requests.as_deref(), &allow, &protected);
        for r in refused {
            tracing::warn!(agent_group = %ag, "extra folder not mounted: {r}");
        }
        ok
    }

    pub(super) fn spawn(&mut self, id: &str) -> Result<()> {
        let s = self.sessions.get(id).expect("session exists");
        let span =
            tracing::info_span!("session", session_id = %id, agent_group = %s.row.agent_group_id);
        let _g = span.enter();
        let dir = s.dir.clone();
        let row = s.row.clone();
        self.project(&row, &dir)?;
        let runner_id = format!("r{}", random_hex(6));
        let (agent_dir, agent_md) = ensure_group_folder(&self.data, &row.folder)?;
        // The sandbox gets the host's copy of the instructions, from a
        // folder no sandbox binds (issue 14).
        crate::safe_fs::Dir::open_trusted(self.data.root())?
            .dir(
                dir.root()
                    .strip_prefix(self.data.root())
                    .context("the session folder is inside the data dir")?,
            )?
            .write_atomic("AGENT.md", &agent_md, 0o600)?;
        let local_model = (self.cfg.provider.kind == "local")
            .then(|| self.cfg.provider.model.clone().map(PathBuf::from))
            .flatten();
        let mounts = Mounts {
            in_dir: match &self.cfg.in_dir_view {
                Some(view) => view(&dir.in_dir()).context("preparing the sandbox's view of in/")?,
                None => dir.in_dir(),
            },
            out_dir: dir.out_dir(),
            inbox_dir: dir.inbox(),
            outbox_dir: dir.outbox(),
            agent_dir,
            global_dir: self.data.group_dir("global"),
            proxy_dir: Some(self.ensure_proxy(&row.id, &row.agent_group_id)?),
            models_dir: Some(self.data.models_dir()),
            model_file: local_model.clone(),
            extra: self.extra_mounts(&row.agent_group_id),
            tools_dir: Some(self.data.tools_dir(&row.folder)),
            agent_md: Some(dir.agent_md()),
            trust_dir: Some(self.secrets.ca.trust_dir().to_owned()),
            data_root: self.data.root().to_owned(),
        };
        // `local`: runner.json names the model as the runner will see it.
        let mut provider = self.cfg.provider.clone();
        if let Some(host_path) = &local_model {
            provider.model = Some(
                self.sandbox
                    .model_path(&mounts, host_path)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        let proxy_socket = match self.sandbox.kind() {
            sandbox::Kind::Bwrap | sandbox::Kind::Docker => "/pinch/run/llm.sock".to_owned(),
            sandbox::Kind::Process => mounts
                .proxy_dir
                .as_ref()
                .map(|d| d.join("llm.sock").to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let rc = RunnerConfig {
            version: VERSION,
            session_id: row.id.clone(),
            runner_id: runner_id.clone(),
            agent_group_id: row.agent_group_id.clone(),
            agent_name: row.agent_group_id.clone(),
            assistant_name: self
                .central
                .assistant_name(&row.agent_group_id)
                .unwrap_or_else(|e| {
                    tracing::warn!(
                        "reading the assistant name failed (the prompt uses the agent id): {e}"
                    );
                    None
                }),
            paths: self.sandbox.runner_paths(&mounts),
            provider,
            timezone: self.cfg.timezone.clone(),
            timings: pinch_proto::runner_config::Timings {
                model_wait_ms: model_wait(&self.cfg.proxy_limits),
                web_fetch_ms: u64::try_from(self.cfg.web.timeout.as_millis())
                    .unwrap_or(u64::MAX / 2)
                    .saturating_add(10_000),
                voice_ms: self
                    .cfg
                    .web
                    .voice
                    .as_ref()
                    .map(|v| u64::try_from(v.timeout.as_millis()).unwrap_or(u64::MAX / 4))
                    .map_or(self.cfg.runner.voice_ms, |ms| {
                        ms.saturating_mul(2).saturating_add(10_000)
                    }),
                ..self.cfg.runner.clone()
            },
            batch_size: self.cfg.batch_size,
            proxy_socket: Some(proxy_socket.clone().into()),
            web: match self.central.web_policy(&row.agent_group_id) {
                Ok(p) => pinch_proto::runner_config::WebTools {
                    fetch: self.web.fetch_on(&p),
                    search: self.web.search_on(&p),
                    voice: self.web.voice_on(&p),
                    speech: self.web.speech_on(&p),
                },
                // Told when a tool is called (the proxy refuses with the reason).
                Err(_) => pinch_proto::runner_config::WebTools {
                    fetch: true,
                    search: self.web.settings().search.is_some(),
                    voice: self.cfg.web.voice.is_some(),
                    speech: self.cfg.web.speech.is_some(),
                },
            },
            mcp_servers: self.cfg.mcp_servers_for(
                &row.agent_group_id,
                self.central.agent_mcp_servers(&row.agent_group_id)?,
            ),
            credentials: self.credentials_for(&row.agent_group_id),
        };
        let _ = std::fs::remove_file(dir.stop_file());
        write_atomic(
            &dir.runner_json(),
            serde_json::to_string_pretty(&rc)?.as_bytes(),
        )?;
        pinch_proto::open::recovery_open(&dir.outbound_db(), session::BUSY)?;
        match std::fs::remove_file(dir.heartbeat()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("deleting the old heartbeat"),
        }
        let log_dir = self.data.runner_logs(&row.id);
        std::fs::create_dir_all(&log_dir)?;
        prune_logs(&log_dir, 4);
        let log_path = log_dir.join(format!("{runner_id}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        // Approved packages (SPEC §7.6) come first on PATH.
        let tools_root = if self.sandbox.kind().isolated() {
            PathBuf::from(crate::sandbox::mounts::SANDBOX_TOOLS)
        } else {
            mounts.tools_dir.clone().unwrap_or_default()
        };
        let (mut tool_path, python_path) = crate::tools_dir::env_for(&tools_root);
        tool_path.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(str::to_owned));
        let mut env = vec![
            ("PINCH_PROXY".to_owned(), proxy_socket),
            ("PATH".to_owned(), tool_path.join(":")),
            ("PYTHONPATH".to_owned(), python_path),
            (
                "HOME".to_owned(),
                if self.sandbox.kind().isolated() {
                    "/workspace/agent/.home".to_owned()
                } else {
                    mounts
                        .agent_dir
                        .join(".home")
                        .to_string_lossy()
                        .into_owned()
                },
            ),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("TZ".to_owned(), self.cfg.timezone.clone()),
            ("PINCH_LOG".to_owned(), self.cfg.runner_log.clone()),
            ("PINCH_SESSION_ID".to_owned(), row.id.clone()),
        ];
        // Programs in the sandbox trust the install's CA (decision 0050):
        // the bundle over the system's own path, and the variables that
        // name a bundle for the tools that ignore that path.
        let trust_at = if self.sandbox.kind().isolated() {
            PathBuf::from(crate::sandbox::mounts::SANDBOX_TRUST)
        } else {
            self.secrets.ca.trust_dir().to_owned()
        };
        env.extend(crate::secrets::ca::trust_env(&trust_at));
        // The runner holds the liveness pipe (decision 0006) where the
        // backend can pass it, and exits on its EOF.
        let child = self.sandbox.start(sandbox::RunnerSpec {
            session_id: &row.id,
            exe: &self.cfg.runner_exe,
            mounts: &mounts,
            env,
            limits: self.cfg.sandbox_limits,
            log,
        })?;
        let pid = child.pid().unwrap_or(0);
        let started_at = time::now();
        // The child is running: from here nothing may abort the bookkeeping,
        // or the exit would never be watched.
        if let Err(e) = self
            .central
            .set_runner_state(&row.id, "running", Some(&runner_id))
        {
            tracing::warn!("could not record the runner state: {e:#}");
        }
        if let Some(w) = self.watcher.as_mut() {
            use notify::Watcher;
            if let Err(e) = w.watch(&dir.out_dir(), notify::RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", dir.out_dir().display());
            }
        }
        self.watch_map
            .lock()
            .unwrap()
            .insert(dir.out_dir(), self.sessions[id].shared.clone());
        let events = self.events.clone();
        let (sid, rid) = (row.id.clone(), runner_id.clone());
        let exited = child.wait();
        tokio::spawn(async move {
            let e = exited.await;
            let _ = events.send(Event::RunnerExited {
                session_id: sid,
                runner_id: rid,
                code: e.code,
                signal: e.signal,
            });
        });
        self.stats
            .spawns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::METRICS
            .spawns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(runner_id = %runner_id, pid, sandbox = self.sandbox.kind().as_str(), log = %log_path.display(), "runner spawned");
        let disk_watch = self.watch_disk(id, &runner_id);
        let spawned_ms = now_ms();
        // The runner's stuck timer: first due when its earliest deadline
        // could pass, then at each next deadline its state gives.
        self.schedule_stuck_check(
            id,
            &runner_id,
            pinch_policy::sweep::first_deadline(spawned_ms, &self.cfg.stuck),
        );
        let s = self.sessions.get_mut(id).expect("session exists");
        *s.shared.runner.lock().unwrap() = Some(runner_id.clone());
        s.runner = Some(Live {
            runner_id,
            pid,
            started_at,
            spawned_ms,
            stop_requested_at: None,
            kill_reason: None,
            stopped_by_user: false,
            stuck_read_failures: 0,
            stuck_read_error: None,
            child,
            _disk_watch: disk_watch,
        });
        Ok(())
    }

    /// Starts the session's credential proxy if it is not running; returns
    /// its directory (what the sandbox binds at `/pinch/run`). Its egress
    /// allowlist is the host's `proxy.egress_allow` plus the agent group's
    /// `agent_configs.egress_allow`, read when the proxy starts.
    pub(super) fn ensure_proxy(&mut self, id: &str, ag_id: &str) -> Result<PathBuf> {
        let dir = self.data.run_dir().join("proxy").join(id);
        let running = self.proxies.get(id).is_some_and(|h| !h.is_finished());
        if !running {
            let sock = dir.join("llm.sock");
            if sock.as_os_str().len() > 107 {
                anyhow::bail!("the proxy socket path {} is longer than a Unix socket allows (107 bytes): use a shorter --data-dir", sock.display());
            }
            let mut egress = crate::proxy::EgressAllow::parse(&self.cfg.proxy_egress_allow)
                .map_err(|e| anyhow::anyhow!("proxy.{e}"))?;
            let group = self.central.egress_allow(ag_id)?;
            egress.extend(
                crate::proxy::EgressAllow::parse(&group)
                    .map_err(|e| anyhow::anyhow!("agent group {ag_id:?}: {e}"))?,
            );
            // A policy that does not parse (edited by hand) turns the
            // group's web_fetch off with the reason, never the session.
            let policy = self.central.web_policy(ag_id).map_err(|e| {
                tracing::warn!(agent_group_id = ag_id, "{e:#}");
                format!("{e:#}")
            });
            let web = crate::proxy::WebAccess::new(
                self.web.clone(),
                ag_id.to_owned(),
                policy,
                self.data.session(ag_id, id).inbox(),
            )
            .with_stream(crate::proxy::StreamAccess::new(
                self.live.clone(),
                self.data.session(ag_id, id).inbound_db(),
            ));
            // Without isolation the agent runs as the owner and could read
            // the store and the key itself: no secret is offered then.
            let web = if self.sandbox.kind().isolated() {
                web.with_secrets(self.secrets.access(ag_id, self.cfg.secrets_approval_wait))
            } else {
                web
            };
            let h = crate::proxy::serve(
                &sock,
                id.to_owned(),
                Arc::new(self.cfg.proxy_upstreams.clone()),
                Arc::new(egress),
                self.proxy_tls.clone(),
                self.proxy_budget.clone(),
                Some(Arc::new(web)),
            )
            .with_context(|| format!("starting the credential proxy on {}", sock.display()))?;
            self.proxies.insert(id.to_owned(), h);
        }
        Ok(dir)
    }
}

/// Writes a file via a temporary name and rename, so readers never see half.
/// Not fsynced: these files (`runner.json`, `in/stop`, the breaker list) are
/// rewritten when needed, and readers share our page cache.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}

/// How long a model call may go without a sign of life before the host's
/// claim-stuck check may count it against the runner (decision 0040): the
/// credential proxy gives the upstream `upstream_timeout` to accept the
/// connection, again for the TLS handshake, and again for the first byte
/// of its answer, and answers 504 after that.
pub(crate) fn model_wait(lim: &crate::proxy::Limits) -> u64 {
    u64::try_from(lim.upstream_timeout.as_millis().saturating_mul(3)).unwrap_or(u64::MAX)
}
