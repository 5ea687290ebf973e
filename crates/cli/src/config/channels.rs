//! The chat platforms' sections (`[telegram]`, `[discord]`, `[slack]`, …):
//! every kind registered in [`pinch_channels::KINDS`], each on when its
//! section is present. Each channel's own module owns its section (keys,
//! defaults, secret variables, floors, how it is built; decision 0036);
//! this module takes those sections out of the file before the rest is
//! read strictly, and hands the host what the sections build. Tokens are
//! read from the variables the sections name, only here, and held only by
//! the adapters.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use pinch_channels::kind::{Host, SecretEnv, SecretSource};
use pinch_channels::{Configured, KINDS};
use pinch_host::secrets::channels::ForChannels;
use pinch_host::HostConfig;

use super::validate::Secs;
use super::{Env, FileConfig};

/// Takes every registered channel's section out of `table` and reads each
/// strictly (unknown keys name the section and key).
pub(super) fn take_sections(table: &mut toml::Table) -> Result<Vec<Configured>, toml::de::Error> {
    let mut out = Vec::new();
    for kind in KINDS {
        if let Some(v) = table.remove(kind.section) {
            out.push(kind.parse(v)?);
        }
    }
    Ok(out)
}

/// The registered section names, for the error about an unknown one.
pub(super) fn section_names() -> String {
    KINDS
        .iter()
        .map(|k| format!("`{}`", k.section))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The dotted keys (`telegram.stall_s`) of the channels' floors, with their
/// floors; [`stall_secs`] borrows from it.
pub(super) fn floors(f: &FileConfig) -> Vec<(String, pinch_channels::kind::Floor)> {
    f.channels
        .iter()
        .flat_map(|c| {
            c.section
                .floors()
                .into_iter()
                .map(|fl| (format!("{}.{}", c.kind.section, fl.key), fl))
        })
        .collect()
}

/// The channels' second floors [`super::validate`] checks.
pub(super) fn stall_secs(floors: &[(String, pinch_channels::kind::Floor)]) -> Vec<Secs<'_>> {
    floors
        .iter()
        .map(|(key, f)| Secs::new(key, f.value, f.min, f.why))
        .collect()
}

/// The variables the configured chat platforms read their secrets from
/// (for `pinch doctor`, which checks only whether each is set).
pub fn channel_envs(file: &FileConfig) -> Vec<SecretEnv> {
    file.channels
        .iter()
        .flat_map(|c| c.section.secret_envs())
        .collect()
}

/// The configured channels' live checks for `pinch doctor`, run here
/// (each within 30 s): (section, what worked or what failed).
pub fn channel_probes(
    file: &FileConfig,
    data_dir: &Path,
    env: &Env,
) -> Vec<(&'static str, Result<String, String>)> {
    let lookup = |var: &str| env.get(var).map(str::to_owned);
    let mut c = pinch_host::HostConfig::new(data_dir.to_owned());
    c.secrets_key_file = file.secrets.key_file.clone();
    let store = file
        .proxy
        .apply(&mut c)
        .ok()
        .and_then(|()| ForChannels::new(&c).ok())
        .map(|s| s as Arc<dyn SecretSource>);
    let host = Host {
        data_dir,
        env: &lookup,
        store,
    };
    let probes: Vec<_> = file
        .channels
        .iter()
        .filter_map(|c| Some((c.kind.section, c.section.probe(&host)?)))
        .collect();
    if probes.is_empty() {
        return Vec::new();
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    rt.block_on(async {
        let mut out = Vec::new();
        for (section, p) in probes {
            let r = match tokio::time::timeout(std::time::Duration::from_secs(30), p).await {
                Ok(r) => r,
                Err(_) => Err("no answer within 30 s".to_owned()),
            };
            out.push((section, r));
        }
        out
    })
}

/// Whether a configured channel serves a route on the HTTP listener.
pub(super) fn need_listener(file: &FileConfig) -> bool {
    file.channels.iter().any(|c| c.section.needs_listener())
}

/// The chat platforms configured in the file, as adapter factories.
/// Tokens are read here (and only held by the adapters): never logged,
/// never in `runner.json`.
pub(super) fn platforms(
    file: &FileConfig,
    c: &HostConfig,
    env: &Env,
) -> Result<Vec<pinch_host::config::PlatformFactory>> {
    let lookup = |var: &str| env.get(var).map(str::to_owned);
    let host = Host {
        data_dir: &c.data_dir,
        env: &lookup,
        store: c
            .channel_secrets
            .clone()
            .map(|s| s as Arc<dyn SecretSource>),
    };
    // A `SectionError` already names its section (`[telegram]: …`).
    file.channels
        .iter()
        .map(|c| Ok(c.section.build(&host)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn platform_sections() {
        let parse = file_of;
        let o = scripted();
        // The variables the sections name: passed in, not set on the process.
        let env = env_of(&[
            ("PINCH_CFGTEST_TG", "123:abc"),
            ("PINCH_CFGTEST_BAD_TG", "not-a-token"),
            ("PINCH_CFGTEST_DC", "dc-token"),
            ("PINCH_CFGTEST_XAPP", "xapp-1-x"),
            ("PINCH_CFGTEST_XOXB", "xoxb-1-x"),
            ("PINCH_CFGTEST_HOOK", "0123456789abcdef0123"),
            ("PINCH_CFGTEST_BLANK", "   "),
        ]);
        let good = "[telegram]\ntoken_env = \"PINCH_CFGTEST_TG\"\n[discord]\ntoken_env = \"PINCH_CFGTEST_DC\"\nstall_s = 5\n\
                    [slack]\napp_token_env = \"PINCH_CFGTEST_XAPP\"\nbot_token_env = \"PINCH_CFGTEST_XOXB\"\n";
        let c = resolve("/tmp/x".into(), &parse(good), &o, &env).unwrap();
        assert_eq!(c.platforms.len(), 3);
        let e = resolve("/tmp/x".into(), &parse(good), &o, &Env::default()).unwrap_err();
        assert!(format!("{e:#}").contains("PINCH_CFGTEST_TG"), "{e:#}");
        assert!(c.http.is_none(), "long-poll and sockets need no listener");
        let envs = channel_envs(&parse(good));
        assert_eq!(
            envs.iter().map(|e| e.var.as_str()).collect::<Vec<_>>(),
            [
                "PINCH_CFGTEST_TG",
                "PINCH_CFGTEST_DC",
                "PINCH_CFGTEST_XAPP",
                "PINCH_CFGTEST_XOXB"
            ]
        );
        // Telegram's webhook mode turns the listener on.
        let hook = "[telegram]\ntoken_env = \"PINCH_CFGTEST_TG\"\nwebhook_url = \"https://x.example/telegram\"\nwebhook_secret_env = \"PINCH_CFGTEST_HOOK\"\n";
        assert!(resolve("/tmp/x".into(), &parse(hook), &o, &env)
            .unwrap()
            .http
            .is_some());
        for (toml, want) in [
            ("[telegram]\ntoken_env = \"PINCH_CFGTEST_UNSET\"\n", "PINCH_CFGTEST_UNSET (named by token_env) is not set"),
            ("[telegram]\ntoken_env = \"PINCH_CFGTEST_BAD_TG\"\n", "does not look like a bot token"),
            ("[telegram]\ntoken_env = \"PINCH_CFGTEST_TG\"\nwebhook_url = \"https://x/telegram\"\nwebhook_secret_env = \"PINCH_CFGTEST_TG\"\n", "webhook secret"),
            ("[discord]\ntoken_env = \"PINCH_CFGTEST_DC\"\nbase_url = \"ftp://x\"\n", "must start with http"),
            ("[discord]\ntoken_env = \"PINCH_CFGTEST_DC\"\nstall_s = 0\n", "stall_s"),
            ("[slack]\napp_token_env = \"PINCH_CFGTEST_XOXB\"\nbot_token_env = \"PINCH_CFGTEST_XOXB\"\n", "app-level token (xapp-"),
            ("[slack]\napp_token_env = \"PINCH_CFGTEST_XAPP\"\nbot_token_env = \"PINCH_CFGTEST_UNSET\"\n", "bot_token_env"),
            ("[discord]\ntoken_env = \"PINCH_CFGTEST_BLANK\"\n", "PINCH_CFGTEST_BLANK (named by token_env) is not set"),
        ] {
            let e = format!("{:#}", resolve("/tmp/x".into(), &parse(toml), &o, &env).err().unwrap_or_else(|| panic!("accepted: {toml}")));
            assert!(e.contains(want), "{toml} → {e}");
            assert!(!e.contains("123:abc") && !e.contains("dc-token") && !e.contains("xoxb-1-x"), "a secret in an error: {e}");
        }
    }

    #[test]
    fn a_registered_section_is_read_strictly_and_an_unknown_one_is_refused() {
        for kind in pinch_channels::KINDS {
            let e = parse(
                "/etc/pinch.toml".into(),
                Some(&format!("[{}]\ntoken_envv = \"X\"\n", kind.section)),
                &Env::default(),
            )
            .unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains("/etc/pinch.toml")
                    && e.contains("unknown field `token_envv`")
                    && e.contains(&format!("in `{}`", kind.section)),
                "{e}"
            );
        }
        // The same through a variable.
        let e = parse(
            "/etc/pinch.toml".into(),
            None,
            &env_of(&[("PINCH__DISCORD__STALL", "5")]),
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("unknown field `stall`")
                && e.contains("in `discord`")
                && e.contains("PINCH__* variables"),
            "{e}"
        );
        // A section no kind registered is refused, naming it and the
        // channel sections there are.
        let e = parse(
            "/etc/pinch.toml".into(),
            Some("[telegramm]\ntoken_env = \"X\"\n"),
            &Env::default(),
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("/etc/pinch.toml")
                && e.contains("unknown field `telegramm`")
                && e.contains("`telegram`, `discord`, `slack`"),
            "{e}"
        );
        // A variable for a channel's key lands in that channel's section.
        let f = parse(
            "/etc/pinch.toml".into(),
            Some("[slack]\nstall_s = 5\n"),
            &env_of(&[("PINCH__SLACK__STALL_S", "0")]),
        )
        .unwrap();
        let p = problems(&f);
        assert!(
            p.len() == 1
                && p[0]
                    .starts_with("environment variable PINCH__SLACK__STALL_S: slack.stall_s = 0 "),
            "{p:?}"
        );
    }
}
