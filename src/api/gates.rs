//! Where each configured dependency gate stands, for `GetGate` and
//! `ListGates`: the stored record read with the same rules that open it.

use chrono::{DateTime, Utc};

use super::convert::timestamp_to_proto;
use super::pb;
use crate::core::gate::{Gate, GateCube, GateRecord};
use crate::store::{Store, StoreError};

/// Each gate's status at `now`, in configuration order.
pub async fn gate_statuses(
    store: &Store,
    gates: &[&Gate],
    now: DateTime<Utc>,
) -> Result<Vec<pb::Gate>, StoreError> {
    let records = store.gate_records().await?;
    Ok(gates
        .iter()
        .map(|gate| {
            // A gate the monitor has not recorded yet counts from now.
            let record = records
                .get(&gate.name)
                .cloned()
                .unwrap_or_else(|| GateRecord::new(now));
            gate_to_proto(gate, &record, now)
        })
        .collect())
}

fn gate_to_proto(gate: &Gate, record: &GateRecord, now: DateTime<Utc>) -> pb::Gate {
    let state = if record.open {
        pb::GateState::Open
    } else {
        pb::GateState::Waiting
    };
    let duration = |d| prost_types::Duration::try_from(d).ok();
    pb::Gate {
        name: gate.name.clone(),
        environment_id: gate.environment_id.clone(),
        requires: gate
            .requires
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        within: duration(gate.within),
        state: state as i32,
        waiting_for: if record.open {
            Vec::new()
        } else {
            gate.waiting_for(record, now)
        },
        opened_at: record.opened_at.map(timestamp_to_proto),
        opened_count: record.opened_count,
        cubes: record
            .cubes
            .iter()
            .filter(|c| gate.requires_cube(&gate.environment_id, &c.cube_id, &c.cube_name))
            .map(cube_to_proto)
            .collect(),
        blocked_by: record.blocked.as_ref().map(cube_to_proto),
        deadline_cron: gate
            .deadline
            .as_ref()
            .map(|d| d.cron.as_str().to_owned())
            .unwrap_or_default(),
        deadline_grace: gate.deadline.as_ref().and_then(|d| duration(d.grace)),
        next_deadline: gate.next_deadline(record).map(timestamp_to_proto),
    }
}

fn cube_to_proto(cube: &GateCube) -> pb::GateCube {
    pb::GateCube {
        cube_id: cube.cube_id.clone(),
        cube_name: cube.cube_name.clone(),
        batch_id: cube.batch_id.clone(),
        succeeded: cube.succeeded,
        finished_at: Some(timestamp_to_proto(cube.finished_at)),
        fresh: cube.fresh,
        error_message: cube.error_message.clone().unwrap_or_default(),
    }
}
