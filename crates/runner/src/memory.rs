//! Long-term memory, the runner's side (issue 17): the group's index
//! (`pinch_proto::memory`, `<workspace>/.pinch/memory.db`) attached to the
//! runner's `outbound.db` connection, so each turn is indexed in the turn's
//! own commit. A memory file that cannot be used is a warning, never a
//! failed turn: the tools then say why memory is unavailable.

use std::path::Path;

use pinch_proto::memory;
use pinch_proto::open::write_tx;
use pinch_proto::rusqlite::Connection;

/// Attaches the index (creating `.pinch/`), and indexes this session's
/// earlier turns when it has none there yet. `Err` says why memory is off.
pub fn attach(out: &mut Connection, workspace: &Path, session_id: &str) -> Result<(), String> {
    let path = workspace.join(memory::MEMORY_DB);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    memory::attach(out, &path).map_err(|e| e.to_string())?;
    let mut backfill = || -> Result<usize, pinch_proto::ProtoError> {
        if memory::count_session(out, session_id)? > 0 {
            return Ok(0);
        }
        let turns = memory::unindexed_turns(out)?;
        if turns.is_empty() {
            return Ok(0);
        }
        let tx = write_tx(out)?;
        for (role, text, at) in &turns {
            memory::index(&tx, session_id, "turn", role, at, text)?;
        }
        tx.commit()
            .map_err(pinch_proto::ProtoError::sqlite("indexing earlier turns"))?;
        Ok(turns.len())
    };
    match backfill() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            entries = n,
            "indexed this session's earlier turns in memory"
        ),
        Err(e) => tracing::warn!("could not index this session's earlier turns in memory: {e}"),
    }
    Ok(())
}
