//! Boot (SPEC §6.5): the data dir proved writable and locked, the boot
//! breaker, what an earlier host left running reaped, the sandbox prepared,
//! the channels, the admin socket and the HTTP listener bound, then every
//! active session recovered and its due work woken. Also the group folder
//! a spawn or a new agent needs.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use pinch_channels::cli_socket::CliChannel;
use pinch_channels::{Channel, ChannelEvent};
use tokio::sync::{mpsc, oneshot, watch};

use super::group_folder::ensure_group_folder;
use super::handoff::out_watcher;
use super::spawn::write_atomic;
use super::{a2a, now_ms, Event, Host};
use crate::config::HostConfig;
use crate::db::central::Central;
use crate::delivery::{Channels, Shared};
use crate::lock::HostLock;
use crate::paths::DataDir;
use crate::sandbox;
use crate::session;
use crate::Stats;

/// The admin socket's requests, each with where its reply goes.
pub(super) type AdminRx =
    mpsc::UnboundedReceiver<(crate::admin::Request, oneshot::Sender<crate::admin::Reply>)>;

/// A booted host and what its loop listens to.
pub(super) struct Booted {
    pub(super) host: Host,
    pub(super) ev_rx: mpsc::UnboundedReceiver<Event>,
    pub(super) ch_rx: mpsc::Receiver<ChannelEvent>,
    pub(super) admin_rx: AdminRx,
    /// The channels' sender (its free capacity is the queue gauge).
    pub(super) ch_tx: mpsc::Sender<ChannelEvent>,
    pub(super) http_server: Option<pinch_channels::http::Server>,
    /// Kept open until the loop ends.
    pub(super) cli: Arc<CliChannel>,
}

/// Boots a host: everything before the loop's first event.
pub(super) async fn boot(cfg: HostConfig) -> Result<Booted> {
    // Private data dir (issue 14): nothing is created readable by others,
    // and what an older version left open is narrowed.
    crate::private::restrict_umask();
    let data = DataDir::new(cfg.data_dir.clone());
    data.check_socket_paths().map_err(anyhow::Error::msg)?;
    prepare_data_dir(&data)?;
    let lock = HostLock::acquire(&data.lock_file(), data.root())?;
    match crate::private::tighten(data.root()) {
        Ok(t) if t.dirs + t.files > 0 => tracing::warn!(dirs = t.dirs, files = t.files, failed = t.failed, "the data dir was readable by other users: removed group/other access from {} directories and {} files", t.dirs, t.files),
        Ok(_) => {}
        Err(e) => tracing::warn!("could not check the data dir's permissions: {e}"),
    }
    // A lost pinch.db beside session folders is not a first run (issue 15);
    // checked before the boot breaker, so a refusal is not counted as a crash.
    crate::central_file::check_before_open(&data)?;
    let mut central = Central::open(&data.central_db())?;
    crate::central_file::check_after_open(&data, central.is_bootstrapped()?)?;
    if cfg.boot_breaker {
        boot_breaker(&data).await;
    }
    let left = sandbox::reap::reap(&data.sessions_dir().to_string_lossy());
    if left > 0 {
        tracing::warn!(
            count = left,
            "killed sandboxes and runners left over from a previous host of this data dir"
        );
    }
    let mut sandbox = sandbox::select(cfg.sandbox).map_err(|e| anyhow::anyhow!(e))?;
    sandbox
        .prepare(&cfg.runner_exe, data.root(), &data.run_dir())
        .map_err(|e| anyhow::anyhow!("preparing the {} sandbox: {e}", sandbox.kind().as_str()))?;
    if sandbox.kind() == sandbox::Kind::Process {
        tracing::warn!("sandbox `process`: runners get NO isolation (they can read and write everything you can, and use the network); for development only");
    }
    if central.bootstrap(&cfg.login)? {
        tracing::info!(owner = %format!("cli:{}", cfg.login), "first run: created agent group `main`, the terminal conversation and its wiring");
    }
    if central.narrow_main_admin_scope()? {
        tracing::warn!("agent group `main` had admin_scope = global, the old default: narrowed to `group` (changes beyond its group now wait for your approval); to restore it: pinch admin groups config-set main --admin_scope global");
    }
    ensure_group_folder(&data, "main")?;
    std::fs::create_dir_all(data.group_dir("global"))
        .context("creating the global group folder")?;
    session::remove_stale_tmp(&data);

    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Event>();
    let (ch_tx, ch_rx) = mpsc::channel::<ChannelEvent>(1024);
    let cli = CliChannel::bind(&data.cli_socket(), cfg.login.clone(), ch_tx.clone())
        .with_context(|| format!("binding the CLI socket {}", data.cli_socket().display()))?;
    let about = format!("agent `main` · {}", describe_provider(&cfg.provider));
    cli.set_about(about.clone());
    let mut channels: Channels = HashMap::new();
    channels.insert(
        cli.channel_type().to_owned(),
        cli.clone() as Arc<dyn Channel>,
    );
    for make in &cfg.extra_channels {
        let ch = make(ch_tx.clone());
        channels.insert(ch.channel_type().to_owned(), ch);
    }
    let mut routes = Vec::new();
    for make in &cfg.platforms {
        let (ch, router) = make(ch_tx.clone()).map_err(|e| anyhow::anyhow!(e))?;
        if let Some(r) = router {
            if cfg.http.is_none() {
                anyhow::bail!("the {} channel serves HTTP but no listener is configured (set [http] listen in pinch.toml)", ch.channel_type());
            }
            routes.push(r);
        }
        channels.insert(ch.channel_type().to_owned(), ch);
    }
    if cfg.http.as_ref().is_some_and(|h| h.web) {
        central
            .ensure_web_owner(&cfg.login)
            .context("wiring web chat to the agent `main`")?;
    }
    let (admin_tx, admin_rx) = mpsc::unbounded_channel();
    let http_server = match &cfg.http {
        Some(h) => Some(
            start_http(
                h,
                &data,
                WebWho {
                    login: &cfg.login,
                    about: &about,
                },
                &ch_tx,
                &mut channels,
                routes,
                &admin_tx,
            )
            .await?,
        ),
        None => None,
    };

    let watch_map: Arc<Mutex<HashMap<PathBuf, Arc<Shared>>>> = Arc::default();
    let watcher = out_watcher(watch_map.clone());

    crate::admin::serve(&data.admin_socket(), admin_tx)
        .with_context(|| format!("binding the admin socket {}", data.admin_socket().display()))?;
    let (delivery_stop, _) = watch::channel(false);
    // Rolling online backups of pinch.db (issue 15), off the main loop.
    tokio::spawn(crate::backup::run_periodic(
        data.clone(),
        cfg.backup_every,
        cfg.backup_keep,
        delivery_stop.subscribe(),
    ));
    // The dashboard's charts: the counters sampled into a ring.
    tokio::spawn(crate::metrics_history::run(cfg.metrics_sample));
    let stats = Arc::new(Stats::default());
    let sandbox_kind = sandbox.kind();
    let channels = Arc::new(channels);
    let proxy_tls = crate::proxy::tls_config(&cfg.proxy_extra_roots)
        .map_err(|e| anyhow::anyhow!("proxy TLS: {e}"))?;
    let secrets = super::secret_uses::Secrets::new(&cfg, data.root(), &proxy_tls, ev_tx.clone())?;
    if !sandbox.kind().isolated() && secrets.store.list().is_ok_and(|l| !l.is_empty()) {
        tracing::warn!("the process sandbox gives agents no isolation, so no secret is offered to them (they could read the store themselves): use bwrap or docker to let agents use your secrets");
    }
    let mut host = Host {
        cfg: cfg.clone(),
        data: data.clone(),
        central,
        sandbox,
        live: crate::live::LiveHub::new(channels.clone()),
        channels,
        sessions: HashMap::new(),
        events: ev_tx,
        watcher,
        watch_map,
        delivery_stop,
        delivery_tasks: tokio::task::JoinSet::new(),
        proxies: HashMap::new(),
        proxy_tls: proxy_tls.clone(),
        secrets,
        proxy_budget: Arc::new(crate::proxy::Budget::new(
            cfg.proxy_limits.clone(),
            crate::proxy::raise_nofile(),
        )),
        web: Arc::new(
            pinch_web::Web::new(cfg.web.clone()).map_err(|e| anyhow::anyhow!("[web]: {e}"))?,
        ),
        regexes: HashMap::new(),
        slot_queue: VecDeque::new(),
        pending_writes: Vec::new(),
        pending_acks: Vec::new(),
        a2a_sends: a2a::PairLimiter::default(),
        published_sessions: usize::MAX,
        stats: stats.clone(),
        shutting_down: false,
        notices_in_flight: Mutex::default(),
        notices_reflush: Mutex::default(),
        cards_in_flight: Mutex::default(),
        cards_resend: Mutex::default(),
        _lock: lock,
    };
    // Rebuild the view from the DBs: every active session is recovered, its
    // deliveries resumed and its due work woken.
    for row in host.central.active_sessions()? {
        let id = row.id.clone();
        if let Err(e) = host.load_session(row) {
            tracing::error!(session_id = %id, "cannot recover session at boot: {e:#}");
        }
    }
    let ids: Vec<String> = host.sessions.keys().cloned().collect();
    for id in ids {
        host.try_wake(&id);
    }
    host.flush_notices(None);
    tracing::info!(data_dir = %data.root().display(), sandbox = sandbox_kind.as_str(), socket = %data.cli_socket().display(), "pinch host ready");
    Ok(Booted {
        host,
        ev_rx,
        ch_rx,
        admin_rx,
        ch_tx,
        http_server,
        cli,
    })
}

/// Creates the data dir layout, proving it is writable.
fn prepare_data_dir(data: &DataDir) -> Result<()> {
    let hint = "choose a writable location with --data-dir or PINCH_HOME";
    for d in [
        data.root().to_owned(),
        data.run_dir(),
        data.logs_dir(),
        data.groups_dir(),
        data.sessions_dir(),
    ] {
        std::fs::create_dir_all(&d)
            .with_context(|| format!("cannot create {} ({hint})", d.display()))?;
    }
    let probe = data
        .run_dir()
        .join(format!(".probe-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&[0u8; 4096])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    res.with_context(|| {
        format!(
            "the data dir {} is not writable (or is full) ({hint})",
            data.root().display()
        )
    })?;
    Ok(())
}

pub(super) const BREAKER_FILE: &str = "circuit-breaker.json";

/// Whom web chat is for (the owner's login) and what its header names
/// (the agent and model).
struct WebWho<'a> {
    login: &'a str,
    about: &'a str,
}

/// Builds the HTTP-facing adapters, registers them as channels, and binds
/// and serves their routes on the one listener.
async fn start_http(
    h: &crate::config::HttpSettings,
    data: &DataDir,
    WebWho { login, about }: WebWho<'_>,
    ch_tx: &mpsc::Sender<ChannelEvent>,
    channels: &mut Channels,
    routes: Vec<pinch_channels::http::Router>,
    admin_tx: &mpsc::UnboundedSender<(
        crate::admin::Request,
        tokio::sync::oneshot::Sender<crate::admin::Reply>,
    )>,
) -> Result<pinch_channels::http::Server> {
    let mut router = pinch_channels::http::Router::new();
    for r in routes {
        router = router.merge(r);
    }
    if !h.hooks.is_empty() {
        let hooks = pinch_channels::webhook::WebhookChannel::new(h.hooks.clone(), ch_tx.clone())
            .map_err(|e| anyhow::anyhow!("webhooks: {e}"))?;
        router = router.merge(hooks.router());
        channels.insert(pinch_channels::webhook::CHANNEL_TYPE.to_owned(), hooks);
    }
    crate::config::check_listen(h).map_err(|e| anyhow::anyhow!("{e}"))?;
    if h.web {
        let auth = pinch_channels::http::WebAuth::new(crate::web_token(data.root())?);
        let web = pinch_channels::web::WebChannel::new(
            auth.clone(),
            data.root().join("web"),
            login.to_owned(),
            ch_tx.clone(),
        )
        .map_err(|e| anyhow::anyhow!("web chat: {e}"))?;
        web.set_about(about.to_owned());
        router = router.merge(web.router());
        channels.insert(pinch_channels::web::CHANNEL_TYPE.to_owned(), web);
        // The dashboard, behind the same sign-in.
        router = router.merge(crate::dashboard::router(
            auth,
            admin_tx.clone(),
            data.clone(),
        ));
    }
    if h.metrics {
        // Loopback: open, like any local exporter. Otherwise the web token
        // as a bearer token.
        let token = if h.listen.ip().is_loopback() {
            None
        } else {
            Some(crate::web_token(data.root())?)
        };
        router = router.route(
            "/metrics",
            pinch_channels::http::axum::routing::get(move |headers: pinch_channels::http::axum::http::HeaderMap| {
                let token = token.clone();
                async move {
                    use pinch_channels::http::axum::http::{header, StatusCode};
                    if let Some(t) = token {
                        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
                        if !pinch_channels::http::secret_eq(given.as_bytes(), t.as_bytes()) {
                            return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "text/plain")], "metrics need `Authorization: Bearer <web token>` (pinch admin web-token)\n".to_owned());
                        }
                    }
                    let body = tokio::task::spawn_blocking(|| crate::metrics::METRICS.render()).await.unwrap_or_default();
                    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
                }
            }),
        );
    }
    if !h.listen.ip().is_loopback() {
        tracing::warn!(listen = %h.listen, "the HTTP listener is reachable from other machines over plain HTTP ([http] allow_plaintext_remote = true)");
    }
    let listener = pinch_channels::http::bind(h.listen).await?;
    Ok(pinch_channels::http::serve(
        listener,
        router,
        h.hosts.clone(),
    )?)
}

/// Waits as the boot circuit breaker says (SPEC §6.5): boots within the
/// last hour are listed in `run/circuit-breaker.json`; a graceful exit
/// deletes it. A missing or unreadable file counts as a clean history.
async fn boot_breaker(data: &DataDir) {
    let path = data.run_dir().join(BREAKER_FILE);
    let earlier: Vec<i64> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let (boots, wait) = pinch_policy::breaker::decide(&earlier, now_ms());
    if let Err(e) = write_atomic(
        &path,
        serde_json::to_string(&boots).unwrap_or_default().as_bytes(),
    ) {
        tracing::warn!("cannot write the boot breaker file: {e:#}");
    }
    if !wait.is_zero() {
        tracing::warn!(
            boots_last_hour = boots.len(),
            wait_s = wait.as_secs(),
            "the host has restarted repeatedly without a clean exit: waiting before booting"
        );
        // Another `pinch` finding the lock taken says why (issue 15).
        let lock = data.lock_file();
        crate::lock::BootWait::write(&lock, now_ms() + wait.as_millis() as i64, boots.len());
        tokio::time::sleep(wait).await;
        crate::lock::BootWait::clear(&lock);
    }
}

/// The model an agent talks through, in a few words (`pinch chat`'s
/// banner).
pub(crate) fn describe_provider(p: &pinch_proto::runner_config::ProviderSettings) -> String {
    match p.kind.as_str() {
        "scripted" => "the scripted provider (tests and demos, no model)".into(),
        "local" => {
            let file = p
                .model
                .as_deref()
                .and_then(|m| std::path::Path::new(m).file_name())
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "?".into());
            format!("the offline model {file}")
        }
        "cli" => format!(
            "the agent CLI {}",
            p.cli.as_ref().map_or("?", |c| c.command.as_str())
        ),
        kind => format!(
            "model {} ({kind})",
            p.model.as_deref().unwrap_or("the provider's default")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::describe_provider;
    use pinch_proto::runner_config::{CliEngineSettings, ProviderSettings};

    #[test]
    fn providers_are_described_in_a_few_words() {
        let p = |kind: &str, model: Option<&str>| ProviderSettings {
            kind: kind.into(),
            model: model.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(
            describe_provider(&p("anthropic", Some("claude-sonnet-4-5"))),
            "model claude-sonnet-4-5 (anthropic)"
        );
        assert_eq!(
            describe_provider(&p("openai", None)),
            "model the provider's default (openai)"
        );
        assert_eq!(
            describe_provider(&p("local", Some("/pinch/models/SmolLM2.gguf"))),
            "the offline model SmolLM2.gguf"
        );
        let mut cli = p("cli", None);
        cli.cli = Some(CliEngineSettings {
            command: "claude".into(),
            ..Default::default()
        });
        assert_eq!(describe_provider(&cli), "the agent CLI claude");
    }
}
