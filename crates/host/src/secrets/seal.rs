//! The secret store's key and its sealing (decision 0050): AES-256-GCM
//! from `ring` (the TLS stack's own crypto; no new crypto crate). A value
//! is sealed with a fresh random 96-bit nonce and the secret's name as
//! associated data, so a sealed value copied onto another name's row does
//! not open. The key is 32 random bytes in a file the owner alone can
//! read, kept outside the data dir: a copy of the data dir (a backup, a
//! synced folder) reveals no secret without it.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::Error;

/// The key file's name in its default folder.
const KEY_FILE: &str = "secrets.key";
/// The key's length (AES-256).
const KEY_LEN: usize = 32;
/// Bound to every sealed value with its name.
const AAD_PREFIX: &[u8] = b"pinch-secret-v1\0";

/// Where the key lives: `PINCH_SECRETS_KEY_FILE`, else the configured
/// `[secrets] key_file`, else `$XDG_CONFIG_HOME/pinch/secrets.key`
/// (`~/.config/pinch/secrets.key`).
pub fn key_path(configured: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("PINCH_SECRETS_KEY_FILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = configured {
        return Ok(p.to_owned());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => return Err(Error::Key("neither HOME nor XDG_CONFIG_HOME is set, so the secrets key has no default place; set [secrets] key_file in pinch.toml or PINCH_SECRETS_KEY_FILE".into())),
        },
    };
    Ok(base.join("pinch").join(KEY_FILE))
}

/// The store's key, loaded or (with `create`) made.
pub struct Key {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Key {
    /// Loads the key at `path`; with `create`, makes it first if it does
    /// not exist (0600, its folder 0700). Refused: a key inside the data
    /// dir `data_root`, a file others may read, a file not the owner's, a
    /// link, a file of the wrong length.
    pub fn load(path: &Path, data_root: &Path, create: bool) -> Result<Key, Error> {
        let shown = path.display();
        if inside(path, data_root) {
            return Err(Error::Key(format!("the secrets key {shown} is inside the data dir {}; keep it apart (a copy of the data dir must not carry it): set [secrets] key_file to a path outside it", data_root.display())));
        }
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
        };
        let mut f = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                make(path)?;
                open()
                    .map_err(|e| Error::Key(format!("cannot open the secrets key {shown}: {e}")))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Key(format!("the secrets key {shown} does not exist: secrets stored with another key cannot be opened; add a secret with `pinch secrets add` to make a new key (and a new store)")));
            }
            Err(e) => {
                return Err(Error::Key(format!(
                    "cannot open the secrets key {shown}: {e} (a link is never followed)"
                )))
            }
        };
        let md = f
            .metadata()
            .map_err(|e| Error::Key(format!("cannot read {shown}: {e}")))?;
        if !md.is_file() {
            return Err(Error::Key(format!("the secrets key {shown} is not a file")));
        }
        if md.mode() & 0o077 != 0 {
            return Err(Error::Key(format!(
                "the secrets key {shown} may be read by others (mode {:o}); run `chmod 600 {shown}`",
                md.mode() & 0o777
            )));
        }
        if md.uid() != rustix::process::geteuid().as_raw() {
            return Err(Error::Key(format!(
                "the secrets key {shown} belongs to another user (uid {})",
                md.uid()
            )));
        }
        let mut raw = Vec::with_capacity(KEY_LEN + 1);
        (&mut f)
            .take(KEY_LEN as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(|e| Error::Key(format!("cannot read {shown}: {e}")))?;
        if raw.len() != KEY_LEN {
            return Err(Error::Key(format!(
                "the secrets key {shown} is {} bytes, not {KEY_LEN}: it is not a pinch key",
                raw.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| Error::Key("bad key".into()))?;
        Ok(Key {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// Seals `plain` for the secret `name`: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Key("the system's random source failed".into()))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name)),
                &mut buf,
            )
            .map_err(|_| Error::Key("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens what [`Key::seal`] made for `name`; any change to it, its
    /// name or the key is refused.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let refused = || Error::Sealed(name.to_owned());
        if sealed.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(name)), &mut buf)
            .map_err(|_| refused())?;
        Ok(plain.to_vec())
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut a = AAD_PREFIX.to_vec();
    a.extend_from_slice(name.as_bytes());
    a
}

/// Whether `path` is beneath `root`, comparing real paths where they exist.
fn inside(path: &Path, root: &Path) -> bool {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let parent = path.parent().map(real).unwrap_or_default();
    let root = real(root);
    !root.as_os_str().is_empty() && (parent.starts_with(&root) || path.starts_with(&root))
}

/// Makes a new key file (never replacing one).
fn make(path: &Path) -> Result<(), Error> {
    let shown = path.display();
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Key(format!("cannot create {}: {e}", dir.display())))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Error::Key("the system's random source failed".into()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::Key(format!("cannot create the secrets key {shown}: {e}")))?;
    f.write_all(&key)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::Key(format!("cannot write the secrets key {shown}: {e}")))?;
    tracing::info!(key = %shown, "made a new secrets key");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let path = dir.path().join("cfg/secrets.key");
        assert!(
            matches!(Key::load(&path, &data, false), Err(Error::Key(m)) if m.contains("does not exist"))
        );
        let k = Key::load(&path, &data, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = k.seal("github", b"ghp_token").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"ghp_token"));
        assert_eq!(k.open("github", &sealed).unwrap(), b"ghp_token");
        // Another name, a flipped bit, another key: refused.
        assert!(matches!(k.open("gitlab", &sealed), Err(Error::Sealed(_))));
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(k.open("github", &bad).is_err());
        let other = Key::load(&dir.path().join("other.key"), &data, true).unwrap();
        assert!(other.open("github", &sealed).is_err());
        // The same key loads again and opens it; two seals differ (nonces).
        let again = Key::load(&path, &data, false).unwrap();
        assert_eq!(again.open("github", &sealed).unwrap(), b"ghp_token");
        assert_ne!(
            k.seal("github", b"x").unwrap(),
            k.seal("github", b"x").unwrap()
        );
    }

    #[test]
    fn a_loose_misplaced_or_linked_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let inside_data = data.join("secrets.key");
        let e = Key::load(&inside_data, &data, true)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("inside the data dir") && e.contains("key_file"),
            "{e}"
        );
        assert!(!inside_data.exists());
        let path = dir.path().join("k");
        Key::load(&path, &data, true).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Key::load(&path, &data, false).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(Key::load(&link, &data, false).is_err());
        std::fs::write(dir.path().join("short"), b"abc").unwrap();
        std::fs::set_permissions(
            dir.path().join("short"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let e = Key::load(&dir.path().join("short"), &data, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a pinch key"), "{e}");
    }
}
