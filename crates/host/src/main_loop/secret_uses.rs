//! The owner's approval of a secret's use (decision 0050): the proxy asks
//! ([`crate::proxy::UseAsk`]), this raises one card per request the owner
//! is shown — secret, group, method, host and path (owners only: "allow
//! once", "allow always", "deny") — and answers the requests waiting on
//! that card, identical to what it shows, when someone decides.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::db::permissions::{Approval, ApprovalOption};
use crate::main_loop::{Event, Host};
use crate::proxy::{SecretAccess, UseAsk, Verdict};
use crate::secrets::{ca::Ca, oauth::Tokens, Store};

/// An open card's id and the requests waiting on it.
type OpenCard = (String, Vec<oneshot::Sender<Verdict>>);

/// What a card shows and decides: secret, group, method, host, path.
type UseKey = (String, String, String, String, String);

/// How long an "allow once" given after its request stopped waiting
/// stays good for the same request.
const ONCE_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// Most cards open at once per secret and agent group.
const MAX_OPEN_CARDS: usize = 5;

fn key_of(q: &UseAsk) -> UseKey {
    (
        q.secret.clone(),
        q.group.clone(),
        q.method.clone(),
        q.host.clone(),
        q.path.clone(),
    )
}

/// What every session's proxy shares for secrets, and the open asks.
pub(super) struct Secrets {
    pub(super) store: Arc<Store>,
    pub(super) ca: Arc<Ca>,
    pub(super) tokens: Arc<Tokens>,
    ask: mpsc::UnboundedSender<UseAsk>,
    /// Open cards by what they show: the card and the requests waiting.
    open: HashMap<UseKey, OpenCard>,
    /// "Allow once" given when no request was waiting any more: the same
    /// request, made again within [`ONCE_FOR`], goes through once.
    once: HashMap<UseKey, std::time::Instant>,
}

impl Secrets {
    /// Opens the store, loads (or makes) the CA, and forwards the proxies'
    /// questions to the main loop as [`Event::SecretUse`].
    pub(super) fn new(
        cfg: &crate::HostConfig,
        data_root: &std::path::Path,
        tls: &rustls::ClientConfig,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<Secrets> {
        let store = Arc::new(Store::for_data_dir(
            data_root,
            cfg.secrets_key_file.as_deref(),
        ));
        let ca = Arc::new(
            Ca::load_or_create(data_root).map_err(|e| anyhow::anyhow!("the sandbox CA: {e}"))?,
        );
        let tokens = match &cfg.channel_secrets {
            Some(c) => c.tokens(),
            None => Arc::new(Tokens::new(tls).map_err(|e| anyhow::anyhow!("{e}"))?),
        };
        let (ask, mut rx) = mpsc::unbounded_channel::<UseAsk>();
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                if let Err(tokio::sync::mpsc::error::SendError(Event::SecretUse(q))) =
                    events.send(Event::SecretUse(q))
                {
                    let _ = q
                        .reply
                        .send(Verdict::Deny("the host is shutting down".into()));
                }
            }
        });
        Ok(Secrets {
            store,
            ca,
            tokens,
            ask,
            open: HashMap::new(),
            once: HashMap::new(),
        })
    }

    /// The access a session of `group` gets.
    pub(super) fn access(&self, group: &str, wait: std::time::Duration) -> SecretAccess {
        SecretAccess {
            store: self.store.clone(),
            ca: self.ca.clone(),
            tokens: self.tokens.clone(),
            group: group.to_owned(),
            ask: Some(self.ask.clone()),
            approval_wait: wait,
        }
    }
}

impl Host {
    /// The secrets `group` may use, named with their hosts for its prompt
    /// (a store that cannot be read lists none, and says why in the log).
    pub(super) fn credentials_for(
        &self,
        group: &str,
    ) -> Vec<pinch_proto::runner_config::Credential> {
        // The process sandbox is offered none (see `ensure_proxy`).
        if !self.sandbox.kind().isolated() {
            return Vec::new();
        }
        match self.secrets.store.list() {
            Ok(all) => all
                .into_iter()
                .filter(|b| b.allows_group(group))
                .map(|b| pinch_proto::runner_config::Credential {
                    name: b.name,
                    hosts: b.hosts,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(
                    agent_group_id = group,
                    "the secret store cannot be read, so the agent is told of no credentials: {e}"
                );
                Vec::new()
            }
        }
    }

    /// A proxy asks whether a use may go through.
    pub(super) fn on_secret_use(&mut self, q: UseAsk) {
        let key = key_of(&q);
        let now = std::time::Instant::now();
        self.secrets.once.retain(|_, until| *until > now);
        if self.secrets.once.remove(&key).is_some() {
            let _ = q.reply.send(Verdict::Allow);
            return;
        }
        // A card still open for this very request: wait on it too.
        if let Some((id, waiting)) = self.secrets.open.get_mut(&key) {
            if self
                .central
                .approval(id)
                .ok()
                .flatten()
                .is_some_and(|a| a.status == "pending")
            {
                waiting.retain(|w| !w.is_closed());
                waiting.push(q.reply);
                return;
            }
            self.secrets.open.remove(&key);
        }
        // At most a few cards open per secret and group: an agent trying
        // path after path does not flood the owner.
        let (sec, grp) = (q.secret.clone(), q.group.clone());
        let central = &self.central;
        self.secrets.open.retain(|k, (id, waiting)| {
            waiting.retain(|w| !w.is_closed());
            !(k.0 == sec && k.1 == grp)
                || central
                    .approval(id)
                    .ok()
                    .flatten()
                    .is_some_and(|a| a.status == "pending")
        });
        let open_here = self
            .secrets
            .open
            .keys()
            .filter(|k| k.0 == sec && k.1 == grp)
            .count();
        if open_here >= MAX_OPEN_CARDS {
            let _ = q.reply.send(Verdict::Deny(format!(
                "{open_here} requests of this agent to use this secret already wait for the owner; ask them to answer those first"
            )));
            return;
        }
        match self.raise_secret_card(&q) {
            Ok(id) => {
                self.secrets.open.insert(key, (id, vec![q.reply]));
            }
            Err(e) => {
                tracing::warn!(secret = %q.secret, group = %q.group, "cannot ask the owner about a secret's use: {e:#}");
                let _ = q.reply.send(Verdict::Deny(format!("{e:#}")));
            }
        }
    }

    fn raise_secret_card(&mut self, q: &UseAsk) -> Result<String> {
        let owners = self.central.approver_tiers(None)?.pop().unwrap_or_default();
        let Some(first) = owners.first().cloned() else {
            anyhow::bail!("there is no owner to ask; grant one with `pinch admin roles grant --user <id> --role owner`, or let the group use it without asking: `pinch secrets edit {} --approve never`", q.secret);
        };
        let title = format!(
            "agent `{}` wants to use `{}` for {} {}{} — allow?",
            q.group, q.secret, q.method, q.host, q.path
        );
        let opt = |l: &str, v: &str| ApprovalOption {
            label: l.into(),
            value: v.into(),
        };
        let a = self.new_approval(
            Some(&q.session),
            Some(&q.group),
            None,
            "secret_use",
            json!({"secret": q.secret, "group": q.group, "method": q.method, "host": q.host, "path": q.path, "owners_only": true}),
            title,
            vec![
                opt("Allow once", "once"),
                opt("Allow always", "always"),
                opt("Deny", "deny"),
            ],
            &first,
        );
        self.central.insert_approval(&a)?;
        let origin = self
            .sessions
            .get(&q.session)
            .and_then(|s| s.row.messaging_group_id.clone())
            .and_then(|mg| self.central.messaging_group_by_id(&mg).ok().flatten())
            .map(|mg| mg.channel_type)
            .unwrap_or_default();
        self.send_card(&a, vec![owners], &origin);
        tracing::info!(approval = %a.approval_id, secret = %q.secret, group = %q.group, "asked the owner about a secret's use");
        Ok(a.approval_id)
    }

    /// Carries out a decision on a `secret_use` card.
    pub(super) fn decide_secret_use(
        &mut self,
        a: &Approval,
        value: &str,
        by: &str,
    ) -> Result<String> {
        let secret = a.payload["secret"].as_str().unwrap_or_default().to_owned();
        let group = a.payload["group"].as_str().unwrap_or_default().to_owned();
        let (status, verdict) = match value {
            "once" | "always" => ("approved", Verdict::Allow),
            "deny" => (
                "rejected",
                Verdict::Deny(format!(
                    "the owner denied agent group {group:?} the use of secret {secret:?}"
                )),
            ),
            other => return Ok(format!("{other:?} is not a choice for this request.")),
        };
        if !self.central.decide_approval(
            &a.approval_id,
            status,
            by,
            Some(&json!({"choice": value})),
        )? {
            return Ok("That request was already decided.".into());
        }
        if value == "always" {
            self.secrets.store.grant(&secret, &group, by)?;
        }
        let field = |k: &str| a.payload[k].as_str().unwrap_or_default().to_owned();
        let key = (
            secret.clone(),
            group.clone(),
            field("method"),
            field("host"),
            field("path"),
        );
        let waiting = match self.secrets.open.get(&key) {
            Some((id, _)) if *id == a.approval_id => self
                .secrets
                .open
                .remove(&key)
                .map(|(_, w)| w)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut answered = 0;
        for w in waiting {
            if w.send(verdict.clone()).is_ok() {
                answered += 1;
            }
        }
        if value == "once" && answered == 0 {
            self.secrets
                .once
                .insert(key, std::time::Instant::now() + ONCE_FOR);
        }
        tracing::info!(approval = %a.approval_id, secret = %secret, group = %group, by = %by, choice = value, answered, "secret use decided");
        Ok(match value {
            "once" => format!("Allowed once: {group} may use {secret} for this request (if it stopped waiting, the same request within 10 minutes)."),
            "always" => format!("Allowed always: {group} may use {secret} from now on (revoke with `pinch secrets edit {secret} --group ...`)."),
            _ => format!("Denied: {group} will not use {secret} for this request."),
        })
    }
}
