//! The parts every scenario uses: an in-process Herald built the way
//! `serve` builds it (on a [`Place`]'s store, durable settings as
//! shipped), Herald as processes of its own, a fast webhook receiver, and
//! concurrent gRPC engine clients. All on loopback; every wait is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::any;
use axum::Router;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::place::Place;
use crate::api::pb::{self, ingest_service_client::IngestServiceClient};
use crate::app::{Application, BuildOptions};
use crate::config::{Overrides, Settings};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A Herald running in this process.
pub struct Herald {
    pub addr: SocketAddr,
    pub pruner: crate::retention::Pruner,
    pub metrics: crate::metrics::Metrics,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Herald {
    /// Starts Herald on `place`'s store with `extra` configuration. Without
    /// `background`, nothing is delivered until the caller starts it.
    pub async fn start(place: &Place, extra: &str, background: bool) -> anyhow::Result<Herald> {
        Self::start_with(place, extra, background, BuildOptions::default().clock).await
    }

    /// As [`Herald::start`], on `clock`.
    pub async fn start_with(
        place: &Place,
        extra: &str,
        background: bool,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
    ) -> anyhow::Result<Herald> {
        let toml = format!(
            "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"off\"\nshutdown_grace = \"1s\"\n\
             [store]\nurl = \"{}\"\n[stalls]\nmax_duration = \"off\"\nlearn = false\n[egress]\nallow = [\"127.0.0.0/8\"]\n{extra}",
            place.store_url()
        );
        let settings = Settings::from_toml(&toml, &Overrides::default(), &|_| None)?;
        let options = BuildOptions {
            background_workers: background,
            clock,
        };
        let app = Application::build_with(settings, options).await?;
        let (addr, pruner, metrics) = (app.grpc_addr(), app.pruner(), app.metrics());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = app
                .run_until_stopped(async move { stopped.cancelled().await })
                .await
            {
                eprintln!("bench: Herald failed: {e}");
            }
        });
        Ok(Herald {
            addr,
            pruner,
            metrics,
            stop,
            task,
        })
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// `[[webhooks]]` tables for `count` subscriptions to `url`.
pub fn subscriptions(count: usize, url: &str, extra: &str) -> String {
    (0..count)
        .map(|i| {
            format!(
                "[[webhooks]]\nname = \"sub{i}\"\nurl = \"{url}\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\n\
                 max_in_flight = 64\nretry_schedule = [\"1s\", \"1s\", \"1s\"]\n{extra}\n"
            )
        })
        .collect()
}

/// A webhook receiver that answers 204 at once (or never), counts what
/// arrives and remembers when each event id first arrived.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    arrived: Arc<Mutex<HashMap<String, Instant>>>,
    notify: Arc<Notify>,
    task: Arc<JoinHandle<()>>,
}

impl Receiver {
    pub async fn start(hang: bool) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let (c, a, n) = (count.clone(), arrived.clone(), notify.clone());
        let app = Router::new()
            .fallback(any(move |body: Bytes| {
                let (c, a, n) = (c.clone(), a.clone(), n.clone());
                async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    let at = Instant::now();
                    if let Ok(event) = serde_json::from_slice::<EventId>(&body) {
                        a.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(event.id)
                            .or_insert(at);
                    }
                    c.fetch_add(1, Ordering::Relaxed);
                    n.notify_waiters();
                    StatusCode::NO_CONTENT
                }
            }))
            // Project documents are larger than axum's default limit.
            .layer(axum::extract::DefaultBodyLimit::disable());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            addr,
            count,
            arrived,
            notify,
            task: Arc::new(task),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// When the first request of all arrived.
    pub fn first_arrival(&self) -> Option<Instant> {
        self.arrived
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .min()
            .copied()
    }

    pub fn arrival(&self, event_id: &str) -> Option<Instant> {
        self.arrived
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(event_id)
            .copied()
    }

    /// Waits until `target` requests arrived; returns when the last did, or
    /// `None` when `limit` passed first.
    pub async fn wait_for(&self, target: u64, limit: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if self.count() >= target {
                return Some(Instant::now());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

#[derive(serde::Deserialize)]
struct EventId {
    id: String,
}

/// An engine's gRPC client of the ingest service.
pub type IngestClient = IngestServiceClient<tonic::transport::Channel>;

pub async fn client(addr: SocketAddr) -> anyhow::Result<IngestClient> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .context("connecting to Herald")?;
    Ok(IngestServiceClient::new(channel))
}

/// A `BatchSucceeded` for batch number `n` of run `run`.
pub fn event(run: &str, n: u64) -> pb::BatchSucceededRequest {
    pb::BatchSucceededRequest {
        meta: Some(pb::EventMeta {
            event_id: format!("{run}-{n}"),
            occurred_at: Some(crate::api::timestamp_to_proto(chrono::Utc::now())),
            source: "bench".to_owned(),
        }),
        batch: Some(pb::BatchRef {
            batch_id: format!("{run}-b{n}"),
            environment_id: "prod".to_owned(),
            project_id: "bench".to_owned(),
            cube_id: format!("cube{}", n % 50),
            cube_name: format!("Cube {}", n % 50),
        }),
        build_kind: pb::BuildKind::Full as i32,
        aggregate_count: 10,
        aggregates_built: 10,
        rows_written: 1000,
    }
}

/// Sends `total` events from `clients` concurrent clients (over a few
/// HTTP/2 connections) as fast as acks come back; returns the elapsed time.
pub async fn ingest(
    addr: SocketAddr,
    clients: usize,
    total: u64,
    run: &str,
) -> anyhow::Result<Duration> {
    ingest_spread(&[addr], clients, total, run).await
}

/// As [`ingest`], the clients spread evenly over the Heralds at `addrs`
/// (the same number of connections to each).
pub async fn ingest_spread(
    addrs: &[SocketAddr],
    clients: usize,
    total: u64,
    run: &str,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let per_herald = clients.clamp(1, 8).div_ceil(addrs.len().max(1));
    let mut pool = Vec::with_capacity(per_herald * addrs.len());
    for _ in 0..per_herald {
        for addr in addrs {
            pool.push(client(*addr).await?);
        }
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut client = pool[i % pool.len()].clone();
        let next = next.clone();
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), tonic::Status>(());
                }
                client.batch_succeeded(event(&run, n)).await?;
            }
        }));
    }
    for task in tasks {
        task.await?.context("an ingest call failed")?;
    }
    Ok(started.elapsed())
}

/// Herald as its own process (`herald serve`), so its memory and CPU can
/// be read apart from the clients'.
pub struct Process {
    pub addr: SocketAddr,
    child: tokio::process::Child,
}

/// The environment variable naming a command that runs each `herald
/// serve` the bench starts as its own process (see `Process::spawn`).
pub const WRAPPER: &str = "HERALD_BENCH_WRAPPER";

impl Process {
    /// Starts `herald serve` on `place`'s store with `server` lines for
    /// `[server]` and `extra` configuration, and waits until it listens.
    pub async fn start(place: &Place, server: &str, extra: &str) -> anyhow::Result<Process> {
        let process = Self::spawn(place, server, extra)?;
        process.wait_listening().await?;
        Ok(process)
    }

    /// Starts `herald serve` without waiting for it: several may start at
    /// once on one place (replicas, on PostgreSQL).
    pub fn spawn(place: &Place, server: &str, extra: &str) -> anyhow::Result<Process> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let config = format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\nhttp_listen = \"off\"\n{server}\n\
             [store]\nurl = \"{}\"\n{extra}",
            place.store_url()
        );
        let file = format!("herald-{port}.toml");
        std::fs::write(place.path().join(&file), config)?;
        let herald = std::env::current_exe()?;
        // A profiler to run the process under, e.g. `valgrind
        // --tool=callgrind`: its instruction counts hold still on a noisy
        // machine where times do not.
        let wrapper = std::env::var(WRAPPER).unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = tokio::process::Command::new(program);
                command.args(words).arg(herald);
                command
            }
            None => tokio::process::Command::new(herald),
        };
        let child = command
            .args(["serve", "--config", &file])
            .current_dir(place.path())
            .env("HERALD_LOG", "warn")
            .kill_on_drop(true)
            .spawn()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        Ok(Process { addr, child })
    }

    /// Waits (10 s at most) until the process takes gRPC connections.
    pub async fn wait_listening(&self) -> anyhow::Result<()> {
        for _ in 0..500 {
            if client(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("Herald did not start listening")
    }

    /// Peak resident set size in MiB.
    pub fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        status_mib(self.child.id(), "VmHWM:").context("reading the peak RSS of Herald")
    }

    /// Current resident set size in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        status_mib(self.child.id(), "VmRSS:").context("reading the RSS of Herald")
    }

    /// Starts the peak resident set size again from the current one
    /// (Linux); false when that is not possible here.
    pub fn reset_peak_rss(&self) -> bool {
        let Some(pid) = self.child.id() else {
            return false;
        };
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
    }

    /// CPU time used so far (user and system).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        Ok(self.cpu()?.total())
    }

    /// Its CPU time so far, in user space and in the kernel apart.
    pub fn cpu(&self) -> anyhow::Result<CpuTime> {
        process_cpu(self.child.id().context("Herald has exited")?)
    }

    /// Kills the process; under a wrapper (a profiler, which writes its
    /// report on the way out) it is asked to stop and given a minute.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let (true, Some(pid)) = (std::env::var_os(WRAPPER).is_some(), self.child.id()) {
            let asked = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
            let waited = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
            if asked.success() && waited.is_ok() {
                return Ok(());
            }
        }
        Ok(self.child.kill().await?)
    }
}

/// CPU time a process used: in user space, and in the kernel on its behalf
/// (system calls, page faults, its share of disk syncs and wake-ups).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The kernel's part of the total, in per cent (0 for no time at all).
    pub fn kernel_percent(&self) -> f64 {
        let total = self.total().as_secs_f64();
        if total == 0.0 {
            return 0.0;
        }
        self.system.as_secs_f64() * 100.0 / total
    }

    /// The time used since `earlier`.
    pub fn since(&self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// CPU time process `pid` has used so far.
pub fn process_cpu(pid: u32) -> anyhow::Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu(&stat)
}

/// The CPU times of a `/proc/<pid>/stat` line.
fn parse_cpu(stat: &str) -> anyhow::Result<CpuTime> {
    // Fields after the command name (which may hold spaces), from the
    // third on: utime and stime are the 14th and 15th.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Linux reports these in USER_HZ, which is 100 on every platform
    // Herald runs on.
    let ticks = |i: usize| -> anyhow::Result<Duration> {
        let n: u64 = fields.get(i).context("short /proc stat line")?.parse()?;
        Ok(Duration::from_millis(n * 10))
    };
    Ok(CpuTime {
        user: ticks(11)?,
        system: ticks(12)?,
    })
}

fn status_mib(pid: Option<u32>, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A project document of about `bytes` bytes, shaped like a design tool's:
/// cubes with dimensions and levels, measures, and datasets whose columns
/// and SQL make most of the bulk (about one model element per KiB).
/// `variant` changes one measure in a hundred, so two variants differ.
pub fn project_document(bytes: usize, variant: &str) -> Vec<u8> {
    use std::fmt::Write;
    let mut xml = String::with_capacity(bytes + 64 * 1024);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<project name=\"Bench\">\n");
    let mut cube = 0;
    while xml.len() < bytes {
        let _ = writeln!(
            xml,
            "  <cube name=\"Cube{cube}\" caption=\"Cube number {cube}\">"
        );
        for d in 0..10 {
            let _ = writeln!(
                xml,
                "    <dimension name=\"D{d}\" table=\"dim_{d}\" key=\"id\">"
            );
            for l in 0..4 {
                let _ = writeln!(
                    xml,
                    "      <level name=\"L{l}\" column=\"col_{l}\" type=\"string\"/>"
                );
            }
            xml.push_str("    </dimension>\n");
        }
        for m in 0..20 {
            let expr = if (cube * 20 + m) % 100 == 0 {
                variant
            } else {
                "net"
            };
            let _ = writeln!(
                xml,
                "    <measure name=\"M{m}\" expr=\"sum(fact.{expr}_{m})\" format=\"#,##0.00\"/>"
            );
        }
        let _ = writeln!(xml, "    <dataset name=\"facts{cube}\">\n      <sql>SELECT f.id, f.day, f.amount, f.quantity");
        for c in 0..60 {
            let _ = write!(xml, ", f.attribute_{c} AS a{c}");
        }
        xml.push_str(" FROM warehouse.facts f WHERE f.deleted = false</sql>\n");
        for c in 0..150 {
            let _ = writeln!(xml, "      <column name=\"attribute_{c}\" type=\"decimal(18,4)\" nullable=\"true\" description=\"column {c} of facts {cube}\"/>");
        }
        xml.push_str("    </dataset>\n  </cube>\n");
        cube += 1;
    }
    xml.push_str("</project>\n");
    xml.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are read after the command name, which may hold
    /// spaces and parentheses of its own.
    #[test]
    fn cpu_times_are_read_after_the_command_name() {
        let stat = "4242 (herald (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        let cpu = parse_cpu(stat).unwrap();
        assert_eq!(cpu.user, Duration::from_millis(2500));
        assert_eq!(cpu.system, Duration::from_millis(750));
        assert_eq!(cpu.total(), Duration::from_millis(3250));
        assert!((cpu.kernel_percent() - 750.0 * 100.0 / 3250.0).abs() < 1e-9);
        let later = CpuTime {
            user: Duration::from_millis(3000),
            system: Duration::from_millis(1750),
        };
        assert_eq!(
            later.since(cpu),
            CpuTime {
                user: Duration::from_millis(500),
                system: Duration::from_millis(1000),
            }
        );
        assert_eq!(CpuTime::default().kernel_percent(), 0.0);
        assert!(parse_cpu("4242 (herald) S 1 2").is_err());
    }
}
