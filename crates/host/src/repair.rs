//! Offline recovery of the central DB (issue 15): `pinch admin repair`
//! rebuilds it from the session folders, `pinch admin restore [BACKUP]`
//! puts a backup in place. Both run with the host stopped (they take the
//! host lock, so a running host refuses them), keep the current file aside
//! (`pinch.db.damaged-<time>`, with its `-wal`/`-shm`), never delete it,
//! and then adopt every session folder the new DB does not know.
//!
//! What a session folder tells: its agent group (the parent folder's name),
//! its id, and from `in/inbound.db` (written only by the host) the reply
//! address (`session_routing`) and the agent's destinations. From those the
//! repair recreates the agent group (default settings), the conversations
//! (messaging groups, `strict` unknown-sender policy), the destinations and
//! the session rows. Not recoverable from the folders: wirings other than
//! the terminal's (engage mode and pattern live only in the central DB),
//! users, roles and members other than the owner, group settings, tasks'
//! central bookkeeping, pending approvals and questions. The report names
//! each, with the command that sets it again.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::central_file::{session_folders, FolderSession};
use crate::db::central::Central;
use crate::db::repair as store;
use crate::paths::DataDir;
use anyhow::{Context, Result};

/// What a repair or restore did, for the owner.
#[derive(Debug, Default)]
pub struct Report {
    /// Where the previous `pinch.db` was moved (none if there was no file).
    pub kept_aside: Option<PathBuf>,
    pub restored_from: Option<PathBuf>,
    pub rebuilt: Vec<String>,
    pub not_rebuilt: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kept_aside {
            Some(p) => writeln!(f, "kept the previous central DB aside as {}", p.display())?,
            None => writeln!(f, "there was no central DB file to keep aside")?,
        }
        if let Some(b) = &self.restored_from {
            writeln!(f, "restored the central DB from {}", b.display())?;
        }
        writeln!(f, "rebuilt ({}):", self.rebuilt.len())?;
        for r in &self.rebuilt {
            writeln!(f, "  {r}")?;
        }
        writeln!(f, "not rebuilt ({}):", self.not_rebuilt.len())?;
        for r in &self.not_rebuilt {
            writeln!(f, "  {r}")?;
        }
        Ok(())
    }
}

fn stamp() -> String {
    pinch_proto::time::now()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// Moves `pinch.db` and its `-wal`/`-shm` aside under one new name; returns
/// the new name of the main file.
fn set_aside(data: &DataDir) -> Result<Option<PathBuf>> {
    let db = data.central_db();
    let aside = data.root().join(format!("pinch.db.damaged-{}", stamp()));
    let mut moved = None;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {
                if suffix.is_empty() {
                    moved = Some(to);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "moving {} aside to {}; check permissions in {}",
                        from.display(),
                        to.display(),
                        data.root().display()
                    )
                })
            }
        }
    }
    sync_dir(data.root())?;
    Ok(moved)
}

fn sync_dir(p: &Path) -> Result<()> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", p.display()))
}

/// `pinch admin repair`: a new central DB rebuilt from the session folders.
/// A healthy, bootstrapped `pinch.db` is refused unless `force`: a rebuild
/// from folders recovers less than it holds.
pub fn repair(data: &DataDir, owner_login: &str, force: bool) -> Result<Report> {
    let _lock = lock(data, "repair")?;
    if !force && healthy(&data.central_db()) {
        anyhow::bail!(
            "the central DB {} opens, passes SQLite's quick_check and holds an install: a rebuild from the session folders would recover less than it holds (wirings, users, roles, settings). Nothing changed. To rebuild anyway (the file is kept aside): pinch admin repair --force",
            data.central_db().display()
        );
    }
    let mut report = Report {
        kept_aside: set_aside(data)?,
        ..Default::default()
    };
    let mut central = Central::open(&data.central_db())?;
    central.bootstrap(owner_login)?;
    report.rebuilt.push(format!(
        "the owner cli:{owner_login}, agent group `main`, the terminal conversation and its wiring"
    ));
    adopt(&mut central, data, &mut report)?;
    Ok(report)
}

/// `pinch admin restore [BACKUP]`: the given (or newest) backup, checked,
/// becomes `pinch.db`; session folders it does not know are adopted.
pub fn restore(data: &DataDir, backup: Option<&Path>) -> Result<Report> {
    let _lock = lock(data, "restore")?;
    let backup = match backup {
        Some(b) => b.to_owned(),
        None => crate::backup::backups(data).into_iter().next().with_context(|| {
            format!(
                "there is no backup in {}; rebuild from the session folders with `pinch admin repair`",
                data.backups_dir().display()
            )
        })?,
    };
    crate::backup::verify(&backup).map_err(|e| {
        anyhow::anyhow!(
            "{e}; choose another backup (ls {}) or run `pinch admin repair`",
            data.backups_dir().display()
        )
    })?;
    let mut report = Report {
        kept_aside: set_aside(data)?,
        restored_from: Some(backup.clone()),
        ..Default::default()
    };
    let db = data.central_db();
    let tmp = data.root().join(".pinch.db.restore.tmp");
    let _ = std::fs::remove_file(&tmp);
    let copy = || -> std::io::Result<()> {
        let mut from = std::fs::File::open(&backup)?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.sync_all()?;
        std::fs::rename(&tmp, &db)
    };
    if let Err(e) = copy() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| {
            format!(
                "copying {} to {}; check free space and permissions in {}",
                backup.display(),
                db.display(),
                data.root().display()
            )
        });
    }
    sync_dir(data.root())?;
    let mut central = Central::open(&db)?;
    adopt(&mut central, data, &mut report)?;
    Ok(report)
}

/// Whether `path` is a bootstrapped central DB that passes `quick_check`.
fn healthy(path: &Path) -> bool {
    crate::db::repair::healthy(path)
}

fn lock(data: &DataDir, what: &str) -> Result<crate::lock::HostLock> {
    anyhow::ensure!(
        data.root().is_dir(),
        "there is no data dir at {}; give the one the host uses with --data-dir (or PINCH_HOME)",
        data.root().display()
    );
    std::fs::create_dir_all(data.run_dir())
        .with_context(|| format!("creating {}", data.run_dir().display()))?;
    crate::lock::HostLock::acquire(&data.lock_file(), data.root())
        .with_context(|| format!("pinch admin {what} works only with the host stopped"))
}

/// What one session folder's `inbound.db` says.
struct Found {
    s: FolderSession,
    routing: Option<pinch_proto::rows::Routing>,
    dests: Vec<pinch_proto::rows::Destination>,
    mtime: std::time::SystemTime,
}

/// The folder an agent group id most likely had: `main` → `main`,
/// `ag-<folder>` → `<folder>`, preferring one that exists under `groups/`.
fn folder_for(data: &DataDir, ag: &str) -> String {
    let valid = |f: &str| {
        f != "global"
            && (1..=40).contains(&f.len())
            && f.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let guesses = [ag.strip_prefix("ag-").unwrap_or(ag), ag];
    guesses
        .iter()
        .find(|g| valid(g) && data.group_dir(g).is_dir())
        .or_else(|| guesses.iter().find(|g| valid(g)))
        .map(|g| g.to_string())
        .unwrap_or_else(|| format!("recovered-{}", pinch_proto::runner_config::random_hex(3)))
}

/// Adds a row for every session folder the central DB does not know.
fn adopt(central: &mut Central, data: &DataDir, report: &mut Report) -> Result<()> {
    let known: HashSet<String> = store::session_ids(&central.conn)?;
    let mut found = Vec::new();
    for s in session_folders(data) {
        if known.contains(&s.session_id) {
            continue;
        }
        let read = || -> Result<_> {
            let c = pinch_proto::open::open_reader(&s.dir.inbound_db(), crate::session::BUSY)?;
            Ok((
                pinch_proto::rows::routing(&c)?,
                pinch_proto::rows::destinations(&c)?,
            ))
        };
        match read() {
            Ok((routing, dests)) => {
                let mtime = std::fs::metadata(s.dir.inbound_db())
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push(Found {
                    s,
                    routing,
                    dests,
                    mtime,
                })
            }
            Err(e) => report.not_rebuilt.push(format!(
                "session {} ({}): its inbound.db cannot be read ({e:#}); the folder is left as it is",
                s.session_id,
                s.dir.root().display()
            )),
        }
    }
    // Newest first, so the newest folder of a conversation is its active session.
    found.sort_by_key(|f| std::cmp::Reverse(f.mtime));
    let t = crate::db::central::now();
    let tx = central.conn.transaction()?;
    let mut groups_done: HashSet<String> = HashSet::new();
    let mut mg_of: HashMap<(String, String), String> = HashMap::new();
    let mut ensure_mg = |tx: &pinch_proto::rusqlite::Transaction<'_>,
                         ct: &str,
                         pid: &str,
                         report: &mut Report|
     -> Result<String> {
        if let Some(id) = mg_of.get(&(ct.to_owned(), pid.to_owned())) {
            return Ok(id.clone());
        }
        let existing = store::messaging_group_id(tx, ct, pid)?;
        let id = match existing {
            Some(id) => id,
            None => {
                let id = format!("mg-{ct}-{}", pinch_proto::runner_config::random_hex(4));
                store::insert_recovered_messaging_group(tx, &id, ct, pid, &t)?;
                report.rebuilt.push(format!(
                    "conversation {id} ({ct} {pid}), unknown senders `strict`: set its name and policy with `pinch admin messaging-groups update {id} --name … --unknown-sender-policy …`"
                ));
                id
            }
        };
        mg_of.insert((ct.to_owned(), pid.to_owned()), id.clone());
        Ok(id)
    };
    for f in &found {
        let ag = &f.s.agent_group_id;
        if groups_done.insert(ag.clone()) {
            let exists = store::agent_group_exists(&tx, ag)?;
            if !exists {
                let folder = folder_for(data, ag);
                store::insert_recovered_agent_group(&tx, ag, &folder, &t)?;
                report
                    .rebuilt
                    .push(format!("agent group {ag} (folder groups/{folder})"));
                report.not_rebuilt.push(format!(
                    "agent group {ag}: its settings (model, assistant name, admin scope, egress, mounts, packages) and its admins and members; set them again with `pinch admin groups config-set {ag} --…`, `pinch admin roles grant …`, `pinch admin members add …`"
                ));
            }
        }
        // Destinations: the agent's address book as last projected.
        for d in &f.dests {
            let target = match (
                d.kind.as_str(),
                &d.channel_type,
                &d.platform_id,
                &d.agent_group_id,
            ) {
                ("channel", Some(ct), Some(pid), _) => {
                    Some(("channel", ensure_mg(&tx, ct, pid, report)?))
                }
                ("agent", _, _, Some(a)) => Some(("agent", a.clone())),
                _ => None,
            };
            if let Some((kind, target)) = target {
                if store::insert_destination_if_absent(&tx, ag, &d.name, kind, &target, &t)? {
                    report.rebuilt.push(format!(
                        "destination `{}` of {ag} → {kind} {target}",
                        d.name
                    ));
                }
            }
        }
        let (mg, thread) = match &f.routing {
            Some(pinch_proto::rows::Routing {
                channel_type: Some(ct),
                platform_id: Some(pid),
                thread_id,
            }) => (Some(ensure_mg(&tx, ct, pid, report)?), thread_id.clone()),
            _ => (None, None),
        };
        if let Some(mg) = &mg {
            let wired = store::is_wired(&tx, mg, ag)?;
            if !wired {
                report.not_rebuilt.push(format!(
                    "the wiring of conversation {mg} to {ag} (how the agent engages there is not kept in session folders): `pinch admin wirings create --mg {mg} --ag {ag} --engage-mode pattern --engage-pattern .` (or mention); until then its replies still reach the conversation but new messages there do not reach the agent"
                ));
            }
        }
        let active_taken = store::active_session_taken(&tx, ag, mg.as_deref(), thread.as_deref())?;
        let status = if active_taken { "closed" } else { "active" };
        store::insert_recovered_session(
            &tx,
            &f.s.session_id,
            ag,
            mg.as_deref(),
            thread.as_deref(),
            status,
            &t,
        )?;
        report.rebuilt.push(format!(
            "session {} of {ag}{} ({status}{})",
            f.s.session_id,
            mg.as_ref().map(|m| format!(" in {m}")).unwrap_or_default(),
            if active_taken {
                ": a newer session of that conversation is the active one"
            } else {
                ""
            }
        ));
        if mg.is_none() {
            report.not_rebuilt.push(format!(
                "session {}: no reply address in its inbound.db; its replies wait until it gets one",
                f.s.session_id
            ));
        }
    }
    tx.commit()?;
    if !found.is_empty() {
        report.not_rebuilt.push(
            "users, roles and members other than the owner, pending approvals and questions, and the crash history of each session".to_owned(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_proto::rows::{Destination, Routing};

    fn folder(data: &DataDir, ag: &str, sid: &str, routing: &Routing, dests: &[Destination]) {
        let dir = crate::session::create_folder(data, ag, sid).unwrap();
        crate::session::project(&dir, dests, routing).unwrap();
    }

    #[test]
    fn repair_rebuilds_groups_conversations_destinations_and_sessions_from_folders() {
        let t = tempfile::tempdir().unwrap();
        let data = DataDir::new(t.path());
        std::fs::create_dir_all(data.group_dir("research")).unwrap();
        let tg = Routing {
            channel_type: Some("telegram".into()),
            platform_id: Some("-100123".into()),
            thread_id: Some("7".into()),
        };
        let dests = vec![
            Destination {
                name: "family".into(),
                display_name: None,
                kind: "channel".into(),
                channel_type: Some("telegram".into()),
                platform_id: Some("-100123".into()),
                agent_group_id: None,
            },
            Destination {
                name: "boss".into(),
                display_name: None,
                kind: "agent".into(),
                channel_type: None,
                platform_id: None,
                agent_group_id: Some("main".into()),
            },
        ];
        folder(&data, "ag-research", "sold", &tg, &dests);
        // The newer folder of the same conversation becomes the active one.
        std::thread::sleep(std::time::Duration::from_millis(20));
        folder(&data, "ag-research", "snew", &tg, &dests);
        // A damaged pinch.db (not SQLite at all).
        std::fs::write(data.central_db(), b"garbage, not a database").unwrap();

        let report = repair(&data, "tester", false).unwrap();
        let text = report.to_string();
        let aside = report.kept_aside.clone().unwrap();
        assert_eq!(std::fs::read(&aside).unwrap(), b"garbage, not a database");

        let c = Central::open(&data.central_db()).unwrap();
        let folder: String = c
            .conn
            .query_row(
                "SELECT folder FROM agent_groups WHERE id = 'ag-research'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(folder, "research");
        let (mg, policy): (String, String) = c
            .conn
            .query_row(
                "SELECT id, unknown_sender_policy FROM messaging_groups WHERE channel_type = 'telegram' AND platform_id = '-100123'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(policy, "strict");
        let mut st = c
            .conn
            .prepare("SELECT id, status, messaging_group_id, thread_id FROM sessions WHERE agent_group_id = 'ag-research' ORDER BY id")
            .unwrap();
        let rows: Vec<(String, String, String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        drop(st);
        assert_eq!(
            rows,
            vec![
                ("snew".into(), "active".into(), mg.clone(), "7".into()),
                ("sold".into(), "closed".into(), mg.clone(), "7".into()),
            ]
        );
        let dests: Vec<(String, String, String)> = c
            .conn
            .prepare("SELECT local_name, target_type, target_id FROM agent_destinations WHERE agent_group_id = 'ag-research' ORDER BY local_name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            dests,
            vec![
                ("boss".into(), "agent".into(), "main".into()),
                ("family".into(), "channel".into(), mg.clone()),
            ]
        );
        // The wiring is not guessed: the report gives the command.
        let wired: i64 = c
            .conn
            .query_row(
                "SELECT count(*) FROM wirings WHERE agent_group_id = 'ag-research'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(wired, 0);
        assert!(
            text.contains(&format!(
                "pinch admin wirings create --mg {mg} --ag ag-research"
            )),
            "{text}"
        );
        assert!(c.is_bootstrapped().unwrap());
        drop(c);
        // A healthy DB is not rebuilt unless asked; then it is kept aside too.
        let e = repair(&data, "tester", false).unwrap_err().to_string();
        assert!(
            e.contains("--force") && e.contains("Nothing changed"),
            "{e}"
        );
        let again = repair(&data, "tester", true).unwrap();
        assert_ne!(again.kept_aside, report.kept_aside);
    }
}
