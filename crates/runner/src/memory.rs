//! Long-term memory, the runner's side (issue 17, decision 0043): its own
//! connection to the group's index (`pinch_proto::memory`,
//! `<workspace>/.pinch/memory.db`). At start and after every turn's commit
//! the session's new conversation rows are indexed ([`catch_up`]); a
//! memory file that cannot be used is a warning, never a failed turn: the
//! tools then say memory is unavailable.

use std::path::Path;
use std::time::Duration;

use pinch_proto::memory;
use pinch_proto::rusqlite::Connection;

/// Rows indexed per catch-up (a runner whose session has more catches up
/// over the next turns).
const BATCH: usize = 5_000;

/// Opens the index (creating `.pinch/`) and catches up on this session's
/// turns. `Err` says why memory is off.
pub fn open(
    out: &Connection,
    workspace: &Path,
    session_id: &str,
    busy: Duration,
) -> Result<Connection, String> {
    let path = workspace.join(memory::MEMORY_DB);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut mem = memory::open(&path, busy).map_err(|e| e.to_string())?;
    catch_up(out, &mut mem, session_id);
    Ok(mem)
}

/// Indexes the session's conversation rows not yet in memory. A failure
/// is logged; the rows stay for the next catch-up.
pub fn catch_up(out: &Connection, mem: &mut Connection, session_id: &str) {
    match memory::catch_up(out, mem, session_id, BATCH) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(entries = n, "indexed in long-term memory"),
        Err(e) => tracing::warn!(
            "long-term memory: could not index the latest turns ({e}); the next turn tries again"
        ),
    }
}
