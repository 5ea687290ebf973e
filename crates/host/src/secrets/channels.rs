//! The store as pinch's own channels read it (`[email] password_secret`):
//! a secret kept for channels only (`pinch secrets add NAME
//! --for-channels`: bound to no host and no agent group, so no sandbox is
//! ever given it), read at each login so a `rotate` applies at the next
//! one; an OAuth secret gives an access token from the same token cache
//! the proxy uses (one refresh in flight per secret, process-wide).
//! Every read is audited as the channel's.

use std::sync::Arc;

use pinch_channels::kind::{Credential, SecretSource};

use super::oauth::Tokens;
use super::{Store, Use, Value};

/// The channels' reader of the store.
pub struct ForChannels {
    store: Arc<Store>,
    tokens: Arc<Tokens>,
}

impl ForChannels {
    /// The store of `cfg`'s data dir and key file; tokens minted over the
    /// proxy's TLS roots.
    pub fn new(cfg: &crate::HostConfig) -> Result<Arc<ForChannels>, String> {
        let tls = crate::proxy::tls_config(&cfg.proxy_extra_roots)?;
        Ok(Arc::new(ForChannels {
            store: Arc::new(Store::for_data_dir(
                &cfg.data_dir,
                cfg.secrets_key_file.as_deref(),
            )),
            tokens: Arc::new(Tokens::new(&tls)?),
        }))
    }

    /// The OAuth token cache, shared with the credential proxy.
    pub fn tokens(&self) -> Arc<Tokens> {
        self.tokens.clone()
    }
}

impl SecretSource for ForChannels {
    fn credential(
        &self,
        name: &str,
        channel: &'static str,
        server: &str,
    ) -> pinch_channels::BoxFuture<'static, Result<Credential, String>> {
        let (store, tokens) = (self.store.clone(), self.tokens.clone());
        let (name, server) = (name.to_owned(), server.to_owned());
        Box::pin(async move {
            let (s2, n2) = (store.clone(), name.clone());
            let read = tokio::task::spawn_blocking(move || {
                let b = s2.list()?.into_iter().find(|b| b.name == n2);
                Ok::<_, super::Error>(match b {
                    None => None,
                    Some(b) => Some((b, s2.value(&n2)?)),
                })
            })
            .await
            .map_err(|e| e.to_string())?;
            let add = format!("pinch secrets add {name} --for-channels");
            let (binding, value) = match read {
                Ok(Some(found)) => found,
                Ok(None) => return Err(format!("the secret store has no secret {name:?}: {add}")),
                Err(e) => return Err(format!("the secret {name:?}: {e}")),
            };
            if !binding.hosts.is_empty() || !binding.groups.is_empty() {
                return Err(format!(
                    "the secret {name:?} is bound to agents (hosts {:?}, groups {:?}): a channel's login must be kept for channels only, so no sandbox can use it; add one with `{add}`",
                    binding.hosts, binding.groups
                ));
            }
            let cred = match value {
                Value::Token { value } => Credential::Password(value),
                Value::OAuth(o) => {
                    Credential::Bearer(tokens.access_token(&store, &name, &o).await?)
                }
            };
            let u = Use {
                at: pinch_proto::time::now(),
                agent_group: format!("channel:{channel}"),
                session: String::new(),
                secret: name,
                method: "LOGIN".into(),
                host: server,
                path: String::new(),
                status: 0,
                outcome: "injected".into(),
            };
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = store.record(&u) {
                    tracing::warn!("auditing a channel's use of a secret: {e}");
                }
            })
            .await;
            Ok(cred)
        })
    }
}
