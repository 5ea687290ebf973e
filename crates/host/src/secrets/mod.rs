//! The secret store (decision 0050): credentials for the services an
//! agent acts in, kept by the host and injected by the credential proxy
//! into requests to the hosts each is bound to — never given to the
//! sandbox. `secrets.db` in the data dir (0600) holds each secret's
//! binding (hosts, injection form, agent groups, approval rule) in the
//! clear and its value sealed ([`seal`]) with a key kept outside the data
//! dir; it also holds the owner's standing grants and the audit of every
//! use. The host reads it per tunnel, so `pinch secrets add|rotate|rm`
//! take effect on the next connection without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pinch_proto::rusqlite::{self, params, Connection, OptionalExtension};

pub mod ca;
pub mod channels;
pub mod oauth;
pub mod seal;

mod types;

pub use seal::{key_path, Key};
pub use types::*;

/// The store's file in the data dir.
pub const FILE: &str = "secrets.db";

/// What can go wrong; each message names the file or setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Key(String),
    #[error("the sealed value of secret {0:?} does not open with this key (the key file was replaced, or the store was edited); `pinch secrets rotate {0}` stores it anew")]
    Sealed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no secret is named {0:?} (`pinch secrets list` shows them)")]
    Unknown(String),
    #[error("a secret named {0:?} exists; `pinch secrets rotate {0}` changes its value, `pinch secrets rm {0}` removes it")]
    Exists(String),
    #[error("{path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS secrets(
  name TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  form TEXT NOT NULL,
  hosts TEXT NOT NULL,
  groups TEXT NOT NULL,
  approve TEXT NOT NULL,
  sealed BLOB NOT NULL,
  created_at TEXT NOT NULL,
  rotated_at TEXT,
  last_used_at TEXT
);
CREATE TABLE IF NOT EXISTS grants(
  secret TEXT NOT NULL,
  agent_group TEXT NOT NULL,
  granted_by TEXT NOT NULL,
  granted_at TEXT NOT NULL,
  PRIMARY KEY(secret, agent_group)
);
CREATE TABLE IF NOT EXISTS uses(
  id INTEGER PRIMARY KEY,
  at TEXT NOT NULL,
  agent_group TEXT NOT NULL,
  session TEXT NOT NULL,
  secret TEXT NOT NULL,
  method TEXT NOT NULL,
  host TEXT NOT NULL,
  path TEXT NOT NULL,
  status INTEGER NOT NULL,
  outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS uses_at ON uses(id);
";

/// Most audit rows kept (the oldest go first).
const MAX_USES: i64 = 100_000;

/// The store: `secrets.db` in `data_root` and the key at `key_file`.
pub struct Store {
    path: PathBuf,
    data_root: PathBuf,
    /// Where the key is, or why it has no place.
    key_file: Result<PathBuf, String>,
    conn: Mutex<Option<Connection>>,
    key: Mutex<Option<std::sync::Arc<Key>>>,
}

impl Store {
    /// A store for the data dir `data_root`; nothing is opened yet.
    pub fn new(data_root: &Path, key_file: PathBuf) -> Store {
        Store::with_key(data_root, Ok(key_file))
    }

    /// A store whose key file is `configured` (`[secrets] key_file`) or the
    /// default place ([`key_path`]).
    pub fn for_data_dir(data_root: &Path, configured: Option<&Path>) -> Store {
        Store::with_key(data_root, key_path(configured).map_err(|e| e.to_string()))
    }

    fn with_key(data_root: &Path, key_file: Result<PathBuf, String>) -> Store {
        Store {
            path: data_root.join(FILE),
            data_root: data_root.to_owned(),
            key_file,
            conn: Mutex::new(None),
            key: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The key file's path (or why there is none).
    pub fn key_file(&self) -> Result<&Path, &str> {
        self.key_file.as_deref().map_err(String::as_str)
    }

    fn db_err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` on the store's connection; `None` when the store does not
    /// exist and `create` is false (no secrets: nothing to read).
    fn with<T>(
        &self,
        create: bool,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<Option<T>, Error> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            if !create && std::fs::symlink_metadata(&self.path).is_err() {
                return Ok(None);
            }
            if create && !self.data_root.exists() {
                std::fs::create_dir_all(&self.data_root).map_err(|e| {
                    Error::Invalid(format!(
                        "cannot create the data dir {}: {e}",
                        self.data_root.display()
                    ))
                })?;
            }
            pinch_proto::open::ensure_regular(&self.path)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
            let c = Connection::open_with_flags(&self.path, flags).map_err(self.db_err())?;
            {
                use std::os::unix::fs::PermissionsExt;
                let _ =
                    std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600));
            }
            c.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(self.db_err())?;
            // WAL without a sync per commit: an audit row costs the next
            // request no fsync behind the store's lock; a power cut may lose
            // the last rows, a crash of the host none. The owner's own
            // changes (`pinch secrets`) are rare and are synced at the
            // checkpoint like the rest.
            c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
                .map_err(self.db_err())?;
            c.execute_batch(SCHEMA).map_err(self.db_err())?;
            *guard = Some(c);
        }
        let c = guard.as_ref().expect("opened above");
        f(c).map(Some).map_err(self.db_err())
    }

    /// The key, loaded once (made when `create`).
    fn key(&self, create: bool) -> Result<std::sync::Arc<Key>, Error> {
        let mut g = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = g.as_ref() {
            return Ok(k.clone());
        }
        let path = self.key_file.as_ref().map_err(|e| Error::Key(e.clone()))?;
        let k = std::sync::Arc::new(Key::load(path, &self.data_root, create)?);
        *g = Some(k.clone());
        Ok(k)
    }

    /// Adds a secret; refused if the name is taken.
    pub fn add(&self, s: &NewSecret, value: &Value) -> Result<(), Error> {
        if self.write(s, value, false)? == 0 {
            return Err(Error::Exists(s.name.clone()));
        }
        Ok(())
    }

    /// Writes a secret's binding and sealed value: a new row, or with
    /// `replace` over the row of that name (its grants kept only for the
    /// groups still listed). Returns the rows written.
    fn write(&self, s: &NewSecret, value: &Value, replace: bool) -> Result<usize, Error> {
        check_name(&s.name)?;
        check_binding(&s.hosts, &s.groups)?;
        check_form_hosts(&s.form, &s.hosts)?;
        let sealed = self
            .key(true)?
            .seal(&s.name, &serde_json::to_vec(value).expect("json"))?;
        let hosts = serde_json::to_string(&s.hosts).expect("json");
        let groups = serde_json::to_string(&s.groups).expect("json");
        let on_conflict = if replace {
            "ON CONFLICT(name) DO UPDATE SET kind = ?2, form = ?3, hosts = ?4, groups = ?5, approve = ?6, sealed = ?7, rotated_at = ?8"
        } else {
            "ON CONFLICT(name) DO NOTHING"
        };
        Ok(self
            .with(true, |c| {
                let n = c.execute(
                    &format!("INSERT INTO secrets(name, kind, form, hosts, groups, approve, sealed, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) {on_conflict}"),
                    params![s.name, value.kind(), s.form.as_string(), hosts, groups, s.approve.as_str(), sealed, pinch_proto::time::now()],
                )?;
                if replace {
                    c.execute(
                        "DELETE FROM grants WHERE secret = ?1 AND agent_group NOT IN (SELECT value FROM json_each(?2))",
                        params![s.name, groups],
                    )?;
                }
                Ok(n)
            })?
            .unwrap_or(0))
    }

    /// Replaces a secret's value (its binding stays; an OAuth secret's
    /// cached access token is dropped by the proxy on its next use).
    pub fn rotate(&self, name: &str, value: &Value) -> Result<(), Error> {
        let sealed = self
            .key(false)?
            .seal(name, &serde_json::to_vec(value).expect("json"))?;
        let n = self
            .with(false, |c| {
                c.execute(
                    "UPDATE secrets SET sealed = ?2, kind = ?3, rotated_at = ?4 WHERE name = ?1",
                    params![name, sealed, value.kind(), pinch_proto::time::now()],
                )
            })?
            .unwrap_or(0);
        if n == 0 {
            return Err(Error::Unknown(name.to_owned()));
        }
        Ok(())
    }

    /// Stores a refreshed OAuth value (a provider that rotates refresh
    /// tokens) without marking the secret rotated by the owner — only if the
    /// stored value is still `old` (the owner may have signed in again, or
    /// replaced the secret, while the refresh ran: theirs wins).
    pub fn update_oauth(
        &self,
        name: &str,
        old: &OAuthValue,
        new: &OAuthValue,
    ) -> Result<bool, Error> {
        let key = self.key(false)?;
        let sealed = key.seal(
            name,
            &serde_json::to_vec(&Value::OAuth(new.clone())).expect("json"),
        )?;
        let old = Value::OAuth(old.clone());
        // One immediate transaction: read, compare, write.
        let done = self.with(false, |c| {
            c.execute_batch("BEGIN IMMEDIATE")?;
            let r = (|| {
                let cur: Option<Vec<u8>> = c
                    .query_row(
                        "SELECT sealed FROM secrets WHERE name = ?1 AND kind = 'oauth'",
                        [name],
                        |r| r.get(0),
                    )
                    .optional()?;
                let same = cur
                    .and_then(|s| key.open(name, &s).ok())
                    .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
                    .is_some_and(|v| v == old);
                if same {
                    c.execute(
                        "UPDATE secrets SET sealed = ?2 WHERE name = ?1",
                        params![name, sealed],
                    )?;
                }
                Ok(same)
            })();
            c.execute_batch(if r.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
            r
        })?;
        Ok(done.unwrap_or(false))
    }

    /// Replaces a secret's value and binding at once (`pinch secrets oauth`
    /// signing in again); adds it if absent.
    pub fn replace(&self, s: &NewSecret, value: &Value) -> Result<(), Error> {
        self.write(s, value, true).map(drop)
    }

    /// Changes a secret's binding: each `Some` replaces that part. Groups
    /// no longer listed lose their standing grants.
    pub fn edit(
        &self,
        name: &str,
        form: Option<&Form>,
        hosts: Option<&[String]>,
        groups: Option<&[String]>,
        approve: Option<Approve>,
    ) -> Result<(), Error> {
        let cur = self
            .list()?
            .into_iter()
            .find(|b| b.name == name)
            .ok_or_else(|| Error::Unknown(name.to_owned()))?;
        let hosts = hosts.map_or(cur.hosts, <[String]>::to_vec);
        let groups = groups.map_or(cur.groups, <[String]>::to_vec);
        check_binding(&hosts, &groups)?;
        let form = form.cloned().unwrap_or(cur.form);
        check_form_hosts(&form, &hosts)?;
        let approve = approve.unwrap_or(cur.approve);
        let (h, g) = (
            serde_json::to_string(&hosts).expect("json"),
            serde_json::to_string(&groups).expect("json"),
        );
        self.with(false, |c| {
            c.execute(
                "UPDATE secrets SET form = ?2, hosts = ?3, groups = ?4, approve = ?5 WHERE name = ?1",
                params![name, form.as_string(), h, g, approve.as_str()],
            )?;
            let mut st = c.prepare("SELECT agent_group FROM grants WHERE secret = ?1")?;
            let granted = st
                .query_map([name], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            for gr in granted.iter().filter(|gr| !groups.contains(gr)) {
                c.execute(
                    "DELETE FROM grants WHERE secret = ?1 AND agent_group = ?2",
                    [name, gr.as_str()],
                )?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Removes a secret and its grants; false if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        Ok(self
            .with(false, |c| {
                c.execute("DELETE FROM grants WHERE secret = ?1", [name])?;
                c.execute("DELETE FROM secrets WHERE name = ?1", [name])
            })?
            .unwrap_or(0)
            > 0)
    }

    /// Every secret's binding, by name.
    pub fn list(&self) -> Result<Vec<Binding>, Error> {
        Ok(self
            .with(false, |c| {
                let mut st = c.prepare_cached(
                    "SELECT name, form, hosts, groups, approve, kind, created_at, rotated_at, last_used_at
                     FROM secrets ORDER BY name",
                )?;
                let rows = st.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                    ))
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            })?
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, form, hosts, groups, approve, kind, created_at, rotated_at, last_used_at)| {
                // A row edited by hand into nonsense binds nothing.
                Some(Binding {
                    form: Form::parse(&form).ok()?,
                    hosts: serde_json::from_str(&hosts).ok()?,
                    groups: serde_json::from_str(&groups).ok()?,
                    approve: Approve::parse(&approve).ok()?,
                    name,
                    kind,
                    created_at,
                    rotated_at,
                    last_used_at,
                })
            })
            .collect())
    }

    /// The secrets bound to `host:port`, by name.
    pub fn bound_to(&self, host: &str, port: u16) -> Result<Vec<Binding>, Error> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|b| b.matches(host, port))
            .collect())
    }

    /// A secret's value, opened with the key.
    pub fn value(&self, name: &str) -> Result<Value, Error> {
        let sealed: Option<Vec<u8>> = self
            .with(false, |c| {
                c.query_row("SELECT sealed FROM secrets WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()
            })?
            .flatten();
        let sealed = sealed.ok_or_else(|| Error::Unknown(name.to_owned()))?;
        let plain = self.key(false)?.open(name, &sealed)?;
        serde_json::from_slice(&plain).map_err(|_| Error::Sealed(name.to_owned()))
    }

    /// Records the owner's "always" for `group` using `secret`.
    pub fn grant(&self, secret: &str, group: &str, by: &str) -> Result<(), Error> {
        self.with(true, |c| {
            c.execute(
                "INSERT OR REPLACE INTO grants(secret, agent_group, granted_by, granted_at) VALUES (?1, ?2, ?3, ?4)",
                params![secret, group, by, pinch_proto::time::now()],
            )
        })?;
        Ok(())
    }

    /// Whether the owner allowed `group` to use `secret` always.
    pub fn granted(&self, secret: &str, group: &str) -> Result<bool, Error> {
        Ok(self
            .with(false, |c| {
                c.query_row(
                    "SELECT 1 FROM grants WHERE secret = ?1 AND agent_group = ?2",
                    [secret, group],
                    |_| Ok(()),
                )
                .optional()
            })?
            .flatten()
            .is_some())
    }

    /// Writes one audit row (and the secret's last use when it was injected).
    pub fn record(&self, u: &Use) -> Result<(), Error> {
        self.with(true, |c| {
            c.execute(
                "INSERT INTO uses(at, agent_group, session, secret, method, host, path, status, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![u.at, u.agent_group, u.session, u.secret, u.method, u.host, u.path, u.status, u.outcome],
            )?;
            if u.outcome == "injected" {
                c.execute(
                    "UPDATE secrets SET last_used_at = ?2 WHERE name = ?1",
                    params![u.secret, u.at],
                )?;
            }
            let id = c.last_insert_rowid();
            if id % 1000 == 0 {
                // Refusals are kept to the newest MAX_USES, apart from the
                // injected uses, so a flood of refusals never pushes out
                // the record of what was sent (kept to 10 × as many).
                c.execute(
                    "DELETE FROM uses WHERE outcome != 'injected' AND id <= (SELECT id FROM uses WHERE outcome != 'injected' ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                    [MAX_USES],
                )?;
                c.execute("DELETE FROM uses WHERE id <= ?1", [id - 10 * MAX_USES])?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The newest audit rows first.
    pub fn uses(&self, limit: usize, offset: usize) -> Result<Vec<Use>, Error> {
        Ok(self
            .with(false, |c| {
                let mut st = c.prepare_cached(
                    "SELECT at, agent_group, session, secret, method, host, path, status, outcome
                     FROM uses ORDER BY id DESC LIMIT ?1 OFFSET ?2",
                )?;
                let rows = st.query_map(params![limit as i64, offset as i64], |r| {
                    Ok(Use {
                        at: r.get(0)?,
                        agent_group: r.get(1)?,
                        session: r.get(2)?,
                        secret: r.get(3)?,
                        method: r.get(4)?,
                        host: r.get(5)?,
                        path: r.get(6)?,
                        status: r.get(7)?,
                        outcome: r.get(8)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            })?
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod oauth_tests;
#[cfg(test)]
mod tests;
