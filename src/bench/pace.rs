//! Latency under load, and what each message costs: Herald runs as its own
//! process (`herald serve`, one subscription to a fast loopback receiver)
//! so its CPU time is read apart from the clients' and the receiver's.
//!
//! - `flatout`: 50 clients send as fast as they are acked; the backlog
//!   (acked but not yet received) is sampled every 250 ms and printed, so a
//!   delivery side that falls behind ingest shows as a growing series.
//! - `paced`: 50 clients together send 300 events/s.
//! - `oneclient`: one client sends, waits for its ack, sends the next.
//!
//! Each gives send → receive p50 and p99 and Herald's CPU time per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::harness::{client, event, subscriptions, IngestClient, Process, Receiver};
use super::place::{Backend, Place};
use super::scenarios::{figure, kernel_share, per_second, percentiles, LIMIT};
use super::{Figure, Sizes};

/// Concurrent clients of the flat-out and paced scenarios.
const CLIENTS: usize = 50;
/// The paced scenario's total rate.
const PACED_RATE: u64 = 300;
/// How often the flat-out scenario samples its backlog.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// How the clients send.
#[derive(Clone, Copy)]
enum Load {
    /// `clients` senders, each sending its next event once acked.
    FlatOut { clients: usize },
    /// Events at `rate` per second in all, each from its own task.
    Paced { rate: u64 },
}

/// What one run measured.
struct Measured {
    acked_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_ms_per_event: f64,
    kernel_percent: f64,
    /// Acked minus received, sampled every [`SAMPLE_EVERY`].
    backlog: Vec<u64>,
}

pub(super) async fn flat_out(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut acked = figure("flatout", "events acked, 50 clients", "events/s", "");
    let mut p50 = figure("flatout", "send → receive, p50", "ms", "≤ 20 ms");
    let mut p99 = figure("flatout", "send → receive, p99", "ms", "≤ 100 ms");
    let mut backlog = figure(
        "flatout",
        "largest backlog (acked, not received)",
        "events",
        "bounded",
    );
    let mut cpu = figure("flatout", "Herald CPU per event", "ms", "");
    let mut kernel = kernel_share("flatout");
    for run in 0..s.runs {
        let load = Load::FlatOut { clients: CLIENTS };
        let m = measure(&b, load, s.flatout_events, &format!("f{run}")).await?;
        let series: Vec<String> = m.backlog.iter().map(u64::to_string).collect();
        eprintln!(
            "bench: flatout run {}: backlog every {} ms: {}",
            run + 1,
            SAMPLE_EVERY.as_millis(),
            series.join(" ")
        );
        acked.values.push(m.acked_per_s);
        p50.values.push(m.p50_ms);
        p99.values.push(m.p99_ms);
        backlog
            .values
            .push(m.backlog.iter().copied().max().unwrap_or(0) as f64);
        cpu.values.push(m.cpu_ms_per_event);
        kernel.values.push(m.kernel_percent);
    }
    Ok(vec![acked, p50, p99, backlog, cpu, kernel])
}

pub(super) async fn paced(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut p50 = figure("paced", "send → receive at 300/s, p50", "ms", "≤ 3 ms");
    let mut p99 = figure("paced", "send → receive at 300/s, p99", "ms", "≤ 15 ms");
    let mut cpu = figure("paced", "Herald CPU per event", "ms", "");
    let mut kernel = kernel_share("paced");
    for run in 0..s.runs {
        let load = Load::Paced { rate: PACED_RATE };
        let total = PACED_RATE * s.latency_seconds;
        let m = measure(&b, load, total, &format!("p{run}")).await?;
        p50.values.push(m.p50_ms);
        p99.values.push(m.p99_ms);
        cpu.values.push(m.cpu_ms_per_event);
        kernel.values.push(m.kernel_percent);
    }
    Ok(vec![p50, p99, cpu, kernel])
}

pub(super) async fn one_client(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut p50 = figure("oneclient", "send → receive, p50", "ms", "≤ 2 ms");
    let mut p99 = figure("oneclient", "send → receive, p99", "ms", "");
    let mut cpu = figure("oneclient", "Herald CPU per event", "ms", "≤ 0.5 ms");
    let mut kernel = kernel_share("oneclient");
    for run in 0..s.runs {
        let load = Load::FlatOut { clients: 1 };
        let m = measure(&b, load, s.one_client_events, &format!("o{run}")).await?;
        p50.values.push(m.p50_ms);
        p99.values.push(m.p99_ms);
        cpu.values.push(m.cpu_ms_per_event);
        kernel.values.push(m.kernel_percent);
    }
    Ok(vec![p50, p99, cpu, kernel])
}

async fn measure(b: &Backend, load: Load, total: u64, run: &str) -> anyhow::Result<Measured> {
    let place = Place::new(b).await?;
    let receiver = Receiver::start(false).await?;
    let config = format!(
        "[stalls]\nmax_duration = \"off\"\nlearn = false\n[egress]\nallow = [\"127.0.0.0/8\"]\n{}",
        subscriptions(1, &receiver.url(), "")
    );
    let herald = Process::start(&place, "", &config).await?;
    let cpu_before = herald.cpu()?;
    let acked = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampling = sample_backlog(acked.clone(), receiver.clone(), samples.clone());
    let started = Instant::now();
    let sent = send(herald.addr, load, total, run, acked).await;
    let acked_in = started.elapsed();
    let arrived = receiver.wait_for(total, LIMIT).await;
    sampling.abort();
    let backlog = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    let cpu = herald.cpu()?.since(cpu_before);
    herald.stop().await?;
    receiver.stop();
    let sent = sent?;
    if arrived.is_none() {
        bail!(
            "only {} of {total} events arrived within {LIMIT:?}",
            receiver.count()
        );
    }
    let [p50_ms, p99_ms] = percentiles(&receiver, &sent)?;
    Ok(Measured {
        acked_per_s: per_second(total, acked_in),
        p50_ms,
        p99_ms,
        cpu_ms_per_event: cpu.total().as_secs_f64() * 1000.0 / total as f64,
        kernel_percent: cpu.kernel_percent(),
        backlog,
    })
}

/// Samples acked − received into `samples` until aborted.
fn sample_backlog(
    acked: Arc<AtomicU64>,
    receiver: Receiver,
    samples: Arc<Mutex<Vec<u64>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let backlog = acked
                .load(Ordering::Relaxed)
                .saturating_sub(receiver.count());
            samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(backlog);
        }
    })
}

/// Sends `total` events as `load` says; returns each one's id and the time
/// it was sent.
async fn send(
    addr: std::net::SocketAddr,
    load: Load,
    total: u64,
    run: &str,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<Vec<(String, Instant)>> {
    // Several HTTP/2 connections, as several engine processes would hold.
    let connections = match load {
        Load::FlatOut { clients } => clients.clamp(1, 8),
        Load::Paced { .. } => 8,
    };
    let mut pool = Vec::with_capacity(connections);
    for _ in 0..connections {
        pool.push(client(addr).await?);
    }
    let log = Log {
        run: run.into(),
        sent: Arc::new(Mutex::new(Vec::with_capacity(total as usize))),
        acked,
    };
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    match load {
        Load::FlatOut { clients } => {
            for i in 0..clients {
                let (client, next, log) = (pool[i % pool.len()].clone(), next.clone(), log.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            return Ok(());
                        }
                        log.clone().send(n, client.clone()).await?;
                    }
                }));
            }
        }
        Load::Paced { rate } => {
            let start = tokio::time::Instant::now();
            for n in 0..total {
                let at = start + Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::time::sleep_until(at).await;
                let client = pool[n as usize % pool.len()].clone();
                tasks.push(tokio::spawn(log.clone().send(n, client)));
            }
        }
    }
    for task in tasks {
        task.await?.context("a send failed")?;
    }
    let sent = std::mem::take(&mut *log.sent.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(sent)
}

/// What the senders note of each event: when it was sent, that it was acked.
#[derive(Clone)]
struct Log {
    run: Arc<str>,
    sent: Arc<Mutex<Vec<(String, Instant)>>>,
    acked: Arc<AtomicU64>,
}

impl Log {
    async fn send(self, n: u64, mut client: IngestClient) -> Result<(), tonic::Status> {
        let request = event(&self.run, n);
        let at = Instant::now();
        client.batch_succeeded(request).await?;
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((format!("{}-{n}", self.run), at));
        Ok(())
    }
}
