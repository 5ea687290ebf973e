//! `[sandbox]`: the backend and the limits every runner's sandbox gets.
//!
//! The numeric limits are not listed here: each row of
//! `pinch_sandbox::limits::SETTINGS` is a `[sandbox]` key with its floor,
//! so a new limit is added in the sandbox crate alone. Keys that are
//! neither this section's own nor a limit are refused like any unknown key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use anyhow::Result;
use pinch_host::sandbox::limits::{Setting, SETTINGS};
use pinch_host::sandbox::{Choice, Limits};
use pinch_host::HostConfig;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::validate::Count;
use super::{Env, Overrides};

#[derive(Debug, Default)]
pub struct SandboxSection {
    pub backend: Option<String>,
    /// Disk quota per session over its writable folders (default 2048 MiB).
    pub disk_mb: Option<u64>,
    /// A cgroup per sandbox for `pids` and total memory (default true).
    pub cgroup: Option<bool>,
    /// The mount allowlist (default: `mount-allowlist.toml` beside the
    /// default `pinch.toml`).
    pub mount_allowlist: Option<PathBuf>,
    /// The limits the file or a variable set, by their `SETTINGS` key
    /// (defaults: [`Limits::default`]).
    pub limits: BTreeMap<&'static str, u64>,
}

/// This section's own keys, then every limit's.
const OWN: [&str; 4] = ["backend", "disk_mb", "cgroup", "mount_allowlist"];
static KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    OWN.iter()
        .copied()
        .chain(SETTINGS.iter().map(|s| s.key))
        .collect()
});

/// `sandbox.<key>` of every limit, for messages.
static DOTTED: LazyLock<Vec<String>> = LazyLock::new(|| {
    SETTINGS
        .iter()
        .map(|s| format!("sandbox.{}", s.key))
        .collect()
});

impl<'de> Deserialize<'de> for SandboxSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        let mut out = SandboxSection::default();
        for (k, v) in table {
            let field = |e: toml::de::Error| D::Error::custom(format!("sandbox.{k}: {e}"));
            match k.as_str() {
                "backend" => out.backend = Some(v.try_into().map_err(field)?),
                "disk_mb" => out.disk_mb = Some(v.try_into().map_err(field)?),
                "cgroup" => out.cgroup = Some(v.try_into().map_err(field)?),
                "mount_allowlist" => out.mount_allowlist = Some(v.try_into().map_err(field)?),
                _ => match SETTINGS.iter().find(|s| s.key == k) {
                    Some(s) => {
                        out.limits.insert(s.key, v.try_into().map_err(field)?);
                    }
                    None => return Err(D::Error::unknown_field(&k, KEYS.as_slice())),
                },
            }
        }
        Ok(out)
    }
}

impl SandboxSection {
    fn limit(&self, s: &Setting) -> Option<u64> {
        self.limits.get(s.key).copied()
    }

    /// The floors [`super::validate`] checks.
    pub(super) fn counts(&self) -> Vec<Count<'static>> {
        let mut v = vec![Count::new(
            "sandbox.disk_mb",
            self.disk_mb,
            1,
            "0 would stop every runner",
        )];
        v.extend(
            SETTINGS
                .iter()
                .zip(DOTTED.iter())
                .map(|(s, key)| Count::new(key.as_str(), self.limit(s), s.floor, s.why)),
        );
        v
    }

    /// The backend (the `--sandbox` flag beats the file), the limits, the
    /// disk quota and the mount allowlist.
    pub(super) fn apply(&self, c: &mut HostConfig, o: &Overrides, env: &Env) -> Result<()> {
        let backend = o
            .sandbox
            .clone()
            .or_else(|| self.backend.clone())
            .unwrap_or_else(|| "auto".into());
        c.sandbox = backend
            .parse::<Choice>()
            .map_err(|e| anyhow::anyhow!("sandbox: {e}"))?;
        let positive = |name: &str, v: Option<u64>, default: u64| -> Result<u64> {
            match v {
                Some(0) => anyhow::bail!("[sandbox] {name} = 0 would stop every runner; give a positive number or leave it out for {default}"),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        // The floors were checked with every other problem before this.
        let mut limits = Limits {
            cgroup: self.cgroup.unwrap_or(Limits::default().cgroup),
            ..Limits::default()
        };
        for s in SETTINGS {
            if let Some(v) = self.limit(s) {
                (s.set)(&mut limits, v.max(s.floor));
            }
        }
        c.sandbox_limits = limits;
        c.disk_quota_mb = positive("disk_mb", self.disk_mb, c.disk_quota_mb)?;
        c.mount_allowlist = Some(
            self.mount_allowlist
                .clone()
                .unwrap_or_else(|| super::default_mount_allowlist(env)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;
    use super::*;

    #[test]
    fn every_limit_is_a_key_and_reaches_the_host_config() {
        let text: String = std::iter::once("[sandbox]\n".to_owned())
            .chain(
                SETTINGS
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("{} = {}\n", s.key, 100_000 + i)),
            )
            .collect();
        let c = resolve_str(&text).unwrap();
        for (i, s) in SETTINGS.iter().enumerate() {
            assert_eq!((s.get)(&c.sandbox_limits), 100_000 + i as u64, "{}", s.key);
        }
    }

    #[test]
    fn a_limit_set_by_a_variable_and_an_unknown_key_refused() {
        let f = parse(
            "/etc/pinch/pinch.toml".into(),
            Some("[sandbox]\nbackend = \"process\"\n"),
            &env_of(&[("PINCH__SANDBOX__PIDS", "77")]),
        )
        .unwrap();
        assert_eq!(f.sandbox.limits.get("pids"), Some(&77));
        let e = parse(
            "/etc/pinch/pinch.toml".into(),
            Some("[sandbox]\nmemory_mib = 5\n"),
            &Env::default(),
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("memory_mib")
                && e.contains("memory_mb")
                && e.contains("/etc/pinch/pinch.toml"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            parse(
                "/x.toml".into(),
                Some("[sandbox]\npids = \"many\"\n"),
                &Env::default()
            )
            .unwrap_err()
        );
        assert!(e.contains("sandbox.pids"), "{e}");
    }
}
