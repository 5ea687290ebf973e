//! `pinch secrets add|list|rm|rotate|edit|oauth|audit` (decision 0050):
//! the owner's credentials, kept by the host and injected by its proxy.
//! Works on the store file directly (no host needed); a running host sees
//! every change on its next connection. Values come from standard input
//! or a prompt that does not echo, never from the command line (which
//! other users can read in `/proc` and the shell keeps in its history).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use pinch_host::secrets::{Approve, Form, NewSecret, OAuthValue, Store, Value};

use crate::secrets_oauth::{DeviceFlow, Outcome, Provider};

#[derive(clap::Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Binding {
    /// A host it is sent to: `api.github.com`, `*.example.com`, `host:port` (port 443 unless given). Repeat for more.
    #[arg(long = "host", required_unless_present = "for_channels")]
    hosts: Vec<String>,
    /// An agent group that may use it (e.g. main). Repeat for more.
    #[arg(long = "group", required_unless_present = "for_channels")]
    groups: Vec<String>,
    /// Keep it for pinch's own channels only (e.g. `[email] password_secret`): no agent and no host gets it.
    #[arg(long, conflicts_with_all = ["hosts", "groups"])]
    for_channels: bool,
    /// How it goes in: bearer (Authorization: Bearer), basic (value user:password), header:<Name>, query:<name>.
    #[arg(long, default_value = "bearer")]
    form: String,
    /// Ask the owner: first (each group's first use), every (every use), never.
    #[arg(long, default_value = "first")]
    approve: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Add a secret; its value is read from standard input, or asked for without echo.
    Add {
        name: String,
        #[command(flatten)]
        binding: Binding,
    },
    /// The secrets: names, hosts, groups, form, last use. Never values.
    List,
    /// Remove a secret (and the groups' standing approvals of it).
    Rm { name: String },
    /// Replace a secret's value (read like `add`).
    Rotate { name: String },
    /// Change a secret's hosts, groups, form or approval rule (each given flag replaces that part).
    Edit {
        name: String,
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long)]
        form: Option<String>,
        #[arg(long)]
        approve: Option<String>,
    },
    /// Sign in with OAuth 2 (device code, from this terminal) and keep the refresh token.
    Oauth {
        name: String,
        /// github, google or generic (generic needs --device-url and --token-url).
        #[arg(long)]
        provider: String,
        /// The OAuth app's client id (registered with the provider by you).
        #[arg(long)]
        client_id: String,
        /// Also read the app's client secret (stdin or a prompt; Google needs it).
        #[arg(long)]
        with_client_secret: bool,
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        device_url: Option<String>,
        #[arg(long)]
        token_url: Option<String>,
        #[command(flatten)]
        binding: Binding,
    },
    /// The newest uses of secrets (also `pinch admin audit list`).
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `pinch secrets` command against the store of `data_dir`.
pub fn run(data_dir: &Path, key_file: Option<&Path>, args: SecretsArgs) -> Result<()> {
    let store = Store::for_data_dir(data_dir, key_file);
    let mut out = std::io::stdout().lock();
    match args.cmd {
        Cmd::Add { name, binding } => {
            pinch_host::secrets::check_name(&name)?;
            let s = new_secret(name, binding)?;
            if store.list()?.iter().any(|b| b.name == s.name) {
                bail!(pinch_host::secrets::Error::Exists(s.name));
            }
            let value = read_value(&format!("Value of {}", s.name))?;
            store.add(&s, &Value::Token { value })?;
            if s.hosts.is_empty() {
                writeln!(
                    out,
                    "Added {} for pinch's channels only (name it in a channel's section, e.g. [email] password_secret = \"{}\"). The key is {}.",
                    s.name,
                    s.name,
                    key_shown(&store)
                )?;
            } else {
                writeln!(
                    out,
                    "Added {} for {} (groups: {}; sent as {}; approval: {}). The key is {}.",
                    s.name,
                    s.hosts.join(", "),
                    s.groups.join(", "),
                    s.form.as_string(),
                    s.approve.as_str(),
                    key_shown(&store)
                )?;
            }
        }
        Cmd::List => {
            let all = store.list()?;
            if all.is_empty() {
                writeln!(out, "No secrets. Add one: printf %s \"$TOKEN\" | pinch secrets add github --host api.github.com --group main")?;
            }
            for b in all {
                let channels_only = "none (for pinch's channels only)".to_owned();
                let (hosts, groups) = if b.hosts.is_empty() && b.groups.is_empty() {
                    (channels_only.clone(), channels_only)
                } else {
                    (b.hosts.join(", "), b.groups.join(", "))
                };
                writeln!(
                    out,
                    "{}  {}  hosts: {}  groups: {}  form: {}  approve: {}  last used: {}",
                    b.name,
                    b.kind,
                    hosts,
                    groups,
                    b.form.as_string(),
                    b.approve.as_str(),
                    b.last_used_at.as_deref().unwrap_or("never")
                )?;
            }
        }
        Cmd::Rm { name } => {
            if !store.remove(&name)? {
                bail!(pinch_host::secrets::Error::Unknown(name));
            }
            writeln!(out, "Removed {name}.")?;
        }
        Cmd::Rotate { name } => {
            let kind = store
                .list()?
                .into_iter()
                .find(|b| b.name == name)
                .ok_or_else(|| pinch_host::secrets::Error::Unknown(name.clone()))?
                .kind;
            if kind == "oauth" {
                bail!("{name} is an OAuth sign-in: run `pinch secrets oauth {name} ...` again to replace it");
            }
            let value = read_value(&format!("New value of {name}"))?;
            store.rotate(&name, &Value::Token { value })?;
            writeln!(out, "Rotated {name}; the next request uses the new value.")?;
        }
        Cmd::Edit {
            name,
            hosts,
            groups,
            form,
            approve,
        } => {
            let form = form.as_deref().map(Form::parse).transpose()?;
            let approve = approve.as_deref().map(Approve::parse).transpose()?;
            fn some(v: &[String]) -> Option<&[String]> {
                (!v.is_empty()).then_some(v)
            }
            store.edit(&name, form.as_ref(), some(&hosts), some(&groups), approve)?;
            writeln!(out, "Changed {name}.")?;
        }
        Cmd::Oauth {
            name,
            provider,
            client_id,
            with_client_secret,
            scope,
            device_url,
            token_url,
            binding,
        } => {
            pinch_host::secrets::check_name(&name)?;
            let s = new_secret(name, binding)?;
            let p = match provider.as_str() {
                "github" => Provider::Github,
                "google" => Provider::Google,
                "generic" => Provider::Generic,
                other => bail!("--provider {other:?} is not one of: github, google, generic"),
            };
            let client_secret = if with_client_secret {
                Some(read_value("The OAuth app's client secret")?)
            } else {
                None
            };
            let flow = DeviceFlow::for_provider(
                p,
                client_id.clone(),
                client_secret.clone(),
                scope.clone(),
                device_url,
                token_url,
            )?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = rt.block_on(crate::secrets_oauth::run(
                &flow,
                &mut std::io::stderr(),
                Duration::from_secs(900),
            ))?;
            let value = match outcome {
                Outcome::Refresh { refresh_token } => Value::OAuth(OAuthValue {
                    refresh_token,
                    client_id,
                    client_secret,
                    token_url: flow.token_url.clone(),
                    scope,
                }),
                // A token that does not expire (a classic GitHub OAuth app).
                Outcome::AccessOnly { access_token } => Value::Token {
                    value: access_token,
                },
            };
            let kind = if matches!(value, Value::OAuth(_)) {
                "refreshed by the host before it expires"
            } else {
                "a token that does not expire"
            };
            store.replace(&s, &value)?;
            writeln!(
                out,
                "Signed in: {} is kept ({kind}) for {}.",
                s.name,
                s.hosts.join(", ")
            )?;
        }
        Cmd::Audit {
            limit,
            offset,
            json,
        } => audit(&store, limit, offset, json, &mut out)?,
    }
    Ok(())
}

/// `pinch admin audit list` and `pinch secrets audit`.
pub fn audit(
    store: &Store,
    limit: usize,
    offset: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let uses = store.uses(limit, offset)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&uses)?)?;
        return Ok(());
    }
    if uses.is_empty() {
        writeln!(out, "No secret has been used.")?;
    }
    for u in uses {
        writeln!(
            out,
            "{}  {}  {}  {} {}{}  {}  {}  (session {})",
            u.at, u.agent_group, u.secret, u.method, u.host, u.path, u.status, u.outcome, u.session
        )?;
    }
    Ok(())
}

fn new_secret(name: String, b: Binding) -> Result<NewSecret> {
    let s = NewSecret {
        name,
        form: Form::parse(&b.form)?,
        hosts: b.hosts,
        groups: b.groups,
        approve: Approve::parse(&b.approve)?,
    };
    pinch_host::secrets::check_binding(&s.hosts, &s.groups)?;
    pinch_host::secrets::check_form_hosts(&s.form, &s.hosts)?;
    Ok(s)
}

fn key_shown(store: &Store) -> String {
    match store.key_file() {
        Ok(p) => format!(
            "{} (keep it; without it the store cannot be opened)",
            p.display()
        ),
        Err(e) => e.to_owned(),
    }
}

/// A value from standard input (all of it, without the final line end),
/// or typed at a prompt that does not echo.
fn read_value(prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let v = if stdin.is_terminal() {
        eprint!("{prompt} (not shown): ");
        let _echo = NoEcho::new();
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the value")?;
        eprintln!();
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let mut s = String::new();
        stdin
            .lock()
            .take(1 << 20)
            .read_to_string(&mut s)
            .context("reading the value from standard input")?;
        s.trim_end_matches(['\r', '\n']).to_owned()
    };
    if v.is_empty() {
        bail!("the value is empty: pipe it in (printf %s \"$TOKEN\" | pinch secrets add ...) or type it at the prompt");
    }
    if v.contains(['\r', '\n']) {
        bail!("the value has a line break inside; a header cannot carry it");
    }
    Ok(v)
}

/// Terminal echo off while it lives.
struct NoEcho(Option<libc::termios>);

impl NoEcho {
    fn new() -> NoEcho {
        // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed struct it fills.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return NoEcho(None);
            }
            let old = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            NoEcho(Some(old))
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            // SAFETY: restores what tcgetattr returned.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &old);
            }
        }
    }
}
