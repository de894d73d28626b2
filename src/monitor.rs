//! The monitor: notices what did *not* happen. A running batch that
//! outlives its allowance is marked STALLED (once); a scheduled cube whose
//! refresh did not succeed in time raises `aggregate.refresh.overdue`
//! (once per episode, cleared by the next success); a dependency gate
//! not opened by its deadline raises `aggregate.gate.missed` (once per
//! deadline).
//!
//! Like the dispatcher, it runs in the background in production and is
//! driven by hand in tests ([`Monitor::run_once`]) with an injected clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::core::batch::BatchRecord;
use crate::core::gate::{Gate, GateRecord};
use crate::core::schedule::Schedule;
use crate::core::stall::StallPolicy;
use crate::ingest::{IngestError, Ingestor};
use crate::reload::Live;
use crate::store::Store;

#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    ingestor: Ingestor,
    clock: Arc<dyn Clock>,
    /// Replaced whole by a configuration reload; a check reads one version.
    rules: Live<Rules>,
    /// Dependency gates with deadlines (a restart changes them).
    gates: Vec<Gate>,
}

/// What the monitor checks against.
struct Rules {
    stalls: StallPolicy,
    schedules: Vec<Schedule>,
}

/// What one check found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Findings {
    pub stalled: usize,
    pub overdue: usize,
    pub cleared: usize,
    /// Email rules with reminders made due.
    pub reminded: usize,
}

impl Monitor {
    /// Builds the monitor and records the configured schedules.
    pub async fn new(
        store: Store,
        ingestor: Ingestor,
        clock: Arc<dyn Clock>,
        stalls: StallPolicy,
        schedules: Vec<Schedule>,
        gates: Vec<Gate>,
    ) -> Result<Self, IngestError> {
        sync_schedules(&store, &schedules, clock.now()).await?;
        let gate_names: Vec<String> = gates.iter().map(|g| g.name.clone()).collect();
        store.track_gates(&gate_names, clock.now()).await?;
        let inner = Inner {
            store,
            ingestor,
            clock,
            rules: Live::new(Rules { stalls, schedules }),
            gates,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Checks against new rules from the next check on (a configuration
    /// reload); new schedules are recorded first.
    pub async fn reload(
        &self,
        stalls: StallPolicy,
        schedules: Vec<Schedule>,
    ) -> Result<(), IngestError> {
        let inner = &self.inner;
        sync_schedules(&inner.store, &schedules, inner.clock.now()).await?;
        inner.rules.set(Rules { stalls, schedules });
        Ok(())
    }

    /// Checks every running batch and every schedule once.
    pub async fn run_once(&self) -> Result<Findings, IngestError> {
        let mut findings = Findings::default();
        let rules = self.inner.rules.get();
        let running = self.inner.store.running_batches().await?;
        let histories = self.inner.histories(&rules.stalls, &running).await?;
        for batch in &running {
            let key = (batch.environment_id.clone(), batch.cube_id.clone());
            let history = histories.get(&key).map_or(&[][..], Vec::as_slice);
            if self
                .inner
                .check_stall(&rules.stalls, batch, history)
                .await?
            {
                findings.stalled += 1;
            }
        }
        for schedule in &rules.schedules {
            self.inner.check_schedule(schedule, &mut findings).await?;
        }
        // Still-firing alerts mailed `repeat_interval` ago are mailed again
        // (see `deliver::email`); the email lanes pick them up.
        let reminded = self
            .inner
            .store
            .fire_reminders(self.inner.clock.now())
            .await?;
        findings.reminded = reminded.len();
        self.check_gates().await?;
        Ok(findings)
    }

    /// Judges every gate deadline passed since the last check; returns how
    /// many were missed.
    pub async fn check_gates(&self) -> Result<usize, IngestError> {
        let gates = &self.inner.gates;
        if !gates.iter().any(|g| g.deadline.is_some()) {
            return Ok(0);
        }
        let records = self.inner.store.gate_records().await?;
        let now = self.inner.clock.now();
        let mut missed = 0;
        for gate in gates {
            let record = records
                .get(&gate.name)
                .cloned()
                .unwrap_or_else(|| GateRecord::new(now));
            let Some(passed) = gate.passed_deadline(&record, now) else {
                continue;
            };
            if self
                .inner
                .ingestor
                .judge_gate_deadline(&gate.name, passed)
                .await?
            {
                tracing::warn!(gate = %gate.name, environment = %gate.environment_id, deadline = %passed.1, "gate missed its deadline");
                missed += 1;
            }
        }
        Ok(missed)
    }

    /// Checks every `interval` until `shutdown`.
    /// With several replicas only the leader of `monitor` checks: a stall
    /// is raised once, however many run.
    pub fn spawn(
        &self,
        shutdown: CancellationToken,
        interval: Duration,
        leadership: crate::fleet::Leadership,
    ) -> JoinHandle<()> {
        let monitor = self.clone();
        tokio::spawn(async move {
            loop {
                let mut pause = interval;
                if !leadership.leads("monitor").await {
                    // Not the leader: look again soon, to take over quickly.
                    pause = interval.min(crate::fleet::RENEW_EVERY);
                } else if let Err(e) = monitor.run_once().await {
                    tracing::error!(error = %e, "monitor check failed; retrying next interval");
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    }
}

/// Records the configured schedules (new ones start their baseline now).
async fn sync_schedules(
    store: &Store,
    schedules: &[Schedule],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), IngestError> {
    let names: Vec<_> = schedules
        .iter()
        .map(|s| (s.name.clone(), s.environment_id.clone(), s.cube_id.clone()))
        .collect();
    store.sync_schedules(&names, now).await?;
    Ok(())
}

/// Recent successful durations, by (environment, cube).
type Histories = HashMap<(String, String), Vec<Duration>>;

impl Inner {
    /// The history of every cube with a running batch, when the policy
    /// learns from it: one read for all of them, however many batches run.
    async fn histories(
        &self,
        stalls: &StallPolicy,
        running: &[BatchRecord],
    ) -> Result<Histories, IngestError> {
        let Some(learning) = &stalls.learning else {
            return Ok(Histories::new());
        };
        let cubes: BTreeSet<(&str, &str)> = running
            .iter()
            .filter(|b| b.started_at.is_some())
            .map(|b| (b.environment_id.as_str(), b.cube_id.as_str()))
            .collect();
        let cubes: Vec<_> = cubes.into_iter().collect();
        Ok(self.store.recent_durations(&cubes, learning.window).await?)
    }

    async fn check_stall(
        &self,
        stalls: &StallPolicy,
        batch: &BatchRecord,
        history: &[Duration],
    ) -> Result<bool, IngestError> {
        let Some(started_at) = batch.started_at else {
            return Ok(false);
        };
        let allowance = stalls.allowance(
            &batch.environment_id,
            &batch.cube_id,
            &batch.cube_name,
            history,
        );
        let Some(allowance) = allowance else {
            return Ok(false);
        };
        let deadline = crate::core::time::after(started_at, allowance);
        if self.clock.now() < deadline {
            return Ok(false);
        }
        let stalled = self
            .ingestor
            .raise_stall(&batch.batch_id, allowance)
            .await?;
        if stalled {
            tracing::warn!(batch = %batch.batch_id, cube = %batch.cube_id, environment = %batch.environment_id, allowance_s = allowance.as_secs(), "batch stalled");
        }
        Ok(stalled)
    }

    async fn check_schedule(
        &self,
        schedule: &Schedule,
        findings: &mut Findings,
    ) -> Result<(), IngestError> {
        let Some(state) = self.store.schedule_state(&schedule.name).await? else {
            return Ok(());
        };
        let last_success = self
            .store
            .last_success_at(&schedule.environment_id, &schedule.cube_id)
            .await?;
        if let Some(since) = state.overdue_since {
            // Overdue until a success newer than the moment it became so.
            if last_success.is_some_and(|at| at > since) {
                self.store.clear_overdue(&schedule.name).await?;
                findings.cleared += 1;
            }
            return Ok(());
        }
        let Some(overdue_at) = schedule.overdue_after(last_success, state.baseline_at) else {
            return Ok(());
        };
        if self.clock.now() >= overdue_at {
            self.ingestor
                .raise_overdue(schedule, last_success, overdue_at)
                .await?;
            tracing::warn!(schedule = %schedule.name, cube = %schedule.cube_id, environment = %schedule.environment_id, "refresh overdue");
            findings.overdue += 1;
        }
        Ok(())
    }
}
