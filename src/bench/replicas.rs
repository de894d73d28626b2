//! The `replicas` scenario (PostgreSQL only): 1, 2 and 3 `herald serve`
//! processes — this very binary — on one fresh database, under the same
//! load each time:
//!
//! - **ingest**: the engine clients spread evenly over the replicas, no
//!   subscription, events acked per second;
//! - **delivery**: a backlog for one subscription loaded with deliveries
//!   paused (an in-process Herald without workers), then drained by the
//!   replicas together, timed from the first webhook to the last;
//! - **latency**: events sent at a fixed rate to the replicas in turn, p99
//!   from the engine's send to the receiver.
//!
//! Then each run compares 3 replicas with 1. On one machine the replicas
//! share its cores with each other, the database and the bench itself:
//! the figures say what sharing one database costs, not what more
//! machines would add.

use anyhow::{bail, Context};

use super::harness::{ingest, ingest_spread, subscriptions, Herald, Process, Receiver};
use super::place::{Backend, Place};
use super::scenarios::{figure, latencies, per_second, LIMIT};
use super::{Figure, Sizes};

/// How many replicas each fleet has, in order; the comparison is of the
/// last with the first.
const FLEETS: [usize; 3] = [1, 2, 3];

/// Configuration every replica shares besides its subscriptions.
const SHARED: &str = "[stalls]\nmax_duration = \"off\"\nlearn = false\n\
                      [egress]\nallow = [\"127.0.0.0/8\"]\n";

/// What one fleet measured in one run.
struct Measured {
    ingest: f64,
    delivery: f64,
    p99: f64,
}

pub async fn replicas(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    if let Some(reason) = super::scenarios::unfit("replicas", &b) {
        bail!("replicas: {reason}");
    }
    let plural = |n: usize| if n == 1 { "replica" } else { "replicas" };
    let mut ingest_f: Vec<Figure> = FLEETS
        .iter()
        .map(|&n| {
            let metric = format!("ingest, {n} {}, {} clients", plural(n), s.ingest_clients);
            figure("replicas", metric, "events/s", "≥ 10,000")
        })
        .collect();
    let mut delivery_f: Vec<Figure> = FLEETS
        .iter()
        .map(|&n| {
            let metric = format!("delivered, {n} {}, 1 subscription", plural(n));
            figure("replicas", metric, "webhooks/s", "≥ 8,000")
        })
        .collect();
    let mut p99_f: Vec<Figure> = FLEETS
        .iter()
        .map(|&n| {
            let metric = format!(
                "p99 send → receiver at {}/s, {n} {}",
                s.latency_rate,
                plural(n)
            );
            figure("replicas", metric, "ms", "≤ 20 ms")
        })
        .collect();
    let mut ratios = [
        figure("replicas", "3 vs 1 replica: ingest rate", "×", "≥ 0.8×"),
        figure("replicas", "3 vs 1 replica: delivery rate", "×", "≥ 0.8×"),
        figure("replicas", "3 vs 1 replica: p99 (1's ÷ 3's)", "×", "≥ 0.8×"),
    ];
    for run in 0..s.runs {
        let mut measured = Vec::with_capacity(FLEETS.len());
        for (i, &n) in FLEETS.iter().enumerate() {
            let m = one_fleet(s, &b, n, &format!("x{run}n{n}")).await?;
            ingest_f[i].values.push(m.ingest);
            delivery_f[i].values.push(m.delivery);
            p99_f[i].values.push(m.p99);
            measured.push(m);
        }
        let (one, three) = (&measured[0], &measured[FLEETS.len() - 1]);
        ratios[0].values.push(three.ingest / one.ingest);
        ratios[1].values.push(three.delivery / one.delivery);
        ratios[2].values.push(one.p99 / three.p99);
    }
    Ok([ingest_f, delivery_f, p99_f, ratios.into()].concat())
}

/// The three phases with `n` replicas on a database of their own.
async fn one_fleet(s: Sizes, b: &Backend, n: usize, run: &str) -> anyhow::Result<Measured> {
    let place = Place::new(b).await?;
    let receiver = Receiver::start(false).await?;

    let fleet = Fleet::start(&place, n, "").await?;
    let took = ingest_spread(
        &fleet.addrs(),
        s.ingest_clients,
        s.ingest_events,
        &format!("{run}i"),
    )
    .await?;
    fleet.stop().await?;

    let config = subscriptions(1, &receiver.url(), "");
    let loader = Herald::start(&place, &config, false).await?;
    ingest(
        loader.addr,
        s.ingest_clients,
        s.replica_events,
        &format!("{run}d"),
    )
    .await?;
    loader.stop().await;
    let fleet = Fleet::start(&place, n, &config).await?;
    let Some(last) = receiver.wait_for(s.replica_events, LIMIT).await else {
        bail!(
            "replicas: {n} replicas delivered {} of {} within {LIMIT:?}",
            receiver.count(),
            s.replica_events
        );
    };
    let first = receiver.first_arrival().context("no webhook arrived")?;

    let [_, p99] = latencies(&fleet.addrs(), &receiver, s, &format!("{run}l")).await?;
    fleet.stop().await?;
    receiver.stop();
    Ok(Measured {
        ingest: per_second(s.ingest_events, took),
        // Intervals between the first arrival and the last.
        delivery: per_second(s.replica_events.saturating_sub(1), last - first),
        p99,
    })
}

/// `herald serve` replicas on one place, started together.
struct Fleet {
    replicas: Vec<Process>,
}

impl Fleet {
    async fn start(place: &Place, n: usize, config: &str) -> anyhow::Result<Fleet> {
        let replicas = (0..n)
            .map(|i| {
                let server = format!("replica_name = \"r{i}\"\nshutdown_grace = \"1s\"");
                Process::spawn(place, &server, &format!("{SHARED}{config}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for replica in &replicas {
            replica.wait_listening().await?;
        }
        Ok(Fleet { replicas })
    }

    fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.replicas.iter().map(|r| r.addr).collect()
    }

    /// SIGKILL: every run uses a database of its own, so leases left
    /// behind stay there.
    async fn stop(self) -> anyhow::Result<()> {
        for replica in self.replicas {
            replica.stop().await?;
        }
        Ok(())
    }
}
