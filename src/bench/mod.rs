//! `herald bench`: measures Herald on this machine — ingest throughput,
//! end-to-end latency, delivery throughput, fan-out, isolation from a dead
//! receiver, recovery after a restart, memory with a large backlog and
//! with large project documents, retention, watch streams (idle
//! watchers' cost to ingest, stuck ones' memory), and on PostgreSQL
//! several replicas sharing one database — and prints one table (median
//! of the runs, min–max), optionally JSON.
//!
//! Everything runs on loopback against a real Herald (durable settings as
//! shipped) and real HTTP receivers; every scenario is bounded in count
//! and in time. By default each run has a temporary SQLite file; with
//! `--store postgres://…` a fresh database on that server (see `place`).
//! `--quick` runs a few hundred events per scenario, to keep the harness
//! working (tests run it on both stores).

mod harness;
mod machine;
mod pace;
mod place;
mod replicas;
mod scenarios;

use std::path::PathBuf;

use serde::Serialize;

/// Sizes of one bench run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub runs: usize,
    pub ingest_events: u64,
    pub ingest_clients: usize,
    pub latency_rate: u64,
    pub latency_seconds: u64,
    /// Events the flat-out scenario's 50 clients send.
    pub flatout_events: u64,
    /// Events the one-client scenario sends, one at a time.
    pub one_client_events: u64,
    pub delivery_events: u64,
    pub fanout_events: u64,
    pub fanout_subscriptions: usize,
    pub isolation_events: u64,
    pub recovery_events: u64,
    pub memory_events: u64,
    pub retention_events: u64,
    /// Watch streams opened at once, and events ingested per CPU phase.
    pub watch_streams: usize,
    pub watch_events: u64,
    pub document_mib: usize,
    /// The delivery backlog each fleet of the replicas scenario drains.
    pub replica_events: u64,
}

impl Sizes {
    pub fn full(runs: usize) -> Self {
        Sizes {
            runs,
            ingest_events: 20_000,
            ingest_clients: 64,
            latency_rate: 1_000,
            latency_seconds: 5,
            flatout_events: 20_000,
            one_client_events: 1_000,
            delivery_events: 100_000,
            fanout_events: 10_000,
            fanout_subscriptions: 20,
            isolation_events: 20_000,
            recovery_events: 100_000,
            memory_events: 1_000_000,
            retention_events: 100_000,
            watch_streams: 1_000,
            watch_events: 20_000,
            document_mib: 60,
            replica_events: 50_000,
        }
    }

    pub fn quick() -> Self {
        Sizes {
            runs: 1,
            ingest_events: 300,
            ingest_clients: 16,
            latency_rate: 200,
            latency_seconds: 1,
            flatout_events: 300,
            one_client_events: 50,
            delivery_events: 300,
            fanout_events: 20,
            fanout_subscriptions: 20,
            isolation_events: 200,
            recovery_events: 300,
            memory_events: 1_000,
            retention_events: 500,
            watch_streams: 40,
            watch_events: 300,
            document_mib: 2,
            replica_events: 300,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A few hundred events per scenario: checks the harness, measures little.
    #[arg(long)]
    quick: bool,
    /// Runs per scenario (the memory and documents scenarios run once).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these scenarios (ingest, latency, oneclient, paced, flatout,
    /// delivery, fanout, isolation, recovery, memory, retention, watch,
    /// documents, replicas), comma separated or repeated.
    #[arg(long = "only", value_delimiter = ',')]
    only: Vec<String>,
    /// Run on PostgreSQL: a `postgres://` URL whose user may create
    /// databases; each run gets a fresh database on that server, dropped
    /// afterwards. Without it, each run has a temporary SQLite file.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub metric: String,
    pub unit: &'static str,
    pub target: &'static str,
    /// One value per run.
    pub values: Vec<f64>,
}

impl Figure {
    fn median(&self) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    }

    fn range(&self) -> (f64, f64) {
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full(args.runs.max(1))
    };
    if let Some(unknown) = args
        .only
        .iter()
        .find(|o| !scenarios::ALL.iter().any(|(name, _)| name == o))
    {
        anyhow::bail!("--only: no scenario named {unknown:?}");
    }
    let backend = place::Backend::from_arg(args.store.as_deref()).await?;
    eprintln!("bench: on {}", backend.describe());
    eprintln!("bench: machine reference (disk sync, loopback HTTP, bare gRPC) ...");
    let mut figures = machine::reference(sizes, args.quick).await?;
    for (name, scenario) in scenarios::ALL {
        let asked = args.only.iter().any(|o| o == name);
        if !(asked || args.only.is_empty()) {
            continue;
        }
        match scenarios::unfit(name, &backend) {
            Some(reason) if asked => anyhow::bail!("bench: {name}: {reason}"),
            Some(reason) => eprintln!("bench: {name} skipped: {reason}"),
            None => {
                eprintln!("bench: {name} ...");
                figures.extend(scenario(sizes, backend.clone()).await?);
            }
        }
    }
    machine::add_shares(&mut figures);
    print_table(&figures);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

fn print_table(figures: &[Figure]) {
    let header = ["scenario", "figure", "median", "min–max", "target"];
    let label = |f: &Figure| format!("{} ({})", f.metric, f.unit);
    // As wide as the longest label, so every median lines up.
    let width = figures
        .iter()
        .map(|f| label(f).chars().count())
        .fold(50, usize::max);
    println!(
        "{:<10} {:<width$} {:>9} {:>17}  {}",
        header[0], header[1], header[2], header[3], header[4]
    );
    for f in figures {
        let (min, max) = f.range();
        println!(
            "{:<10} {:<width$} {:>9} {:>17}  {}",
            f.scenario,
            label(f),
            format_value(f.median()),
            format!("{}–{}", format_value(min), format_value(max)),
            f.target
        );
    }
}

fn format_value(v: f64) -> String {
    if !v.is_finite() {
        "n/a".to_owned()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
