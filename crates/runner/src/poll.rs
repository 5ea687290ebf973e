//! One poll: a fresh read-only connection to `inbound.db`, read, close.

use std::time::Duration;

use pinch_proto::layout;
use pinch_proto::open::open_reader;
use pinch_proto::rows::{self, Destination, InboundRow, Routing};
use pinch_proto::runner_config::RunnerConfig;
use pinch_proto::ProtoError;

pub struct Snapshot {
    pub pending: Vec<InboundRow>,
    pub in_max: i64,
    pub destinations: Vec<Destination>,
    pub routing: Option<Routing>,
}

/// Reads everything a turn decision needs in one read transaction, on a
/// connection opened for this poll only (SPEC §3.3.4: cached readers went
/// stale across VM mounts).
pub fn snapshot(cfg: &RunnerConfig) -> Result<Snapshot, ProtoError> {
    let path = cfg.paths.in_dir.join(layout::INBOUND_DB);
    let mut conn = open_reader(&path, Duration::from_millis(cfg.timings.busy_timeout_ms))?;
    let tx = conn
        .transaction()
        .map_err(ProtoError::sqlite("begin read"))?;
    let pending = rows::pending_inbound(&tx)?;
    let in_max = pinch_proto::seq::max_seq(&tx, "messages_in")?;
    let destinations = rows::destinations(&tx)?;
    let routing = rows::routing(&tx)?;
    drop(tx);
    Ok(Snapshot {
        pending,
        in_max,
        destinations,
        routing,
    })
}
