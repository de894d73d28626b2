//! The scenarios of `herald bench` and their targets (issue: benchmark
//! harness). Each returns its figures, one value per run.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::harness::{
    client, event, ingest, project_document, subscriptions, CpuTime, Herald, Process, Receiver,
};
use super::place::{Backend, Place};
use super::{Figure, Sizes};
use crate::api::pb::{self, query_service_client::QueryServiceClient};

type Run = fn(Sizes, Backend) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<Figure>>> + Send>>;

pub const ALL: [(&str, Run); 14] = [
    ("ingest", |s, b| Box::pin(ingest_throughput(s, b))),
    ("latency", |s, b| Box::pin(end_to_end_latency(s, b))),
    ("oneclient", |s, b| Box::pin(super::pace::one_client(s, b))),
    ("paced", |s, b| Box::pin(super::pace::paced(s, b))),
    ("flatout", |s, b| Box::pin(super::pace::flat_out(s, b))),
    ("delivery", |s, b| Box::pin(delivery_throughput(s, b))),
    ("fanout", |s, b| Box::pin(fan_out(s, b))),
    ("isolation", |s, b| Box::pin(isolation(s, b))),
    ("recovery", |s, b| Box::pin(recovery(s, b))),
    ("memory", |s, b| Box::pin(memory(s, b))),
    ("retention", |s, b| Box::pin(retention(s, b))),
    ("watch", |s, b| Box::pin(watch(s, b))),
    ("documents", |s, b| Box::pin(documents(s, b))),
    ("replicas", |s, b| Box::pin(super::replicas::replicas(s, b))),
];

/// Why scenario `name` cannot run on `backend`, if it cannot.
pub fn unfit(name: &str, backend: &Backend) -> Option<&'static str> {
    match (name, backend) {
        ("replicas", Backend::Sqlite) => {
            Some("several replicas need a shared store: run with --store postgres://…")
        }
        _ => None,
    }
}

/// The longest any one wait in a scenario may take.
pub(super) const LIMIT: Duration = Duration::from_secs(300);

pub(super) fn figure(
    scenario: &'static str,
    metric: impl Into<String>,
    unit: &'static str,
    target: &'static str,
) -> Figure {
    Figure {
        scenario,
        metric: metric.into(),
        unit,
        target,
        values: Vec::new(),
    }
}

pub(super) fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

async fn ingest_throughput(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let clients = format!("{} clients", s.ingest_clients);
    let mut plain = IngestFigures::new(&clients, b.pick("≥ 30,000", "≥ 10,000"));
    let mut enqueuing = IngestFigures::new(
        &format!("{clients}, a delivery each"),
        b.pick("≥ 20,000", ""),
    );
    // Nothing reaches it: deliveries are enqueued, not sent (no dispatcher).
    let receiver = Receiver::start(false).await?;
    let one_subscription = subscriptions(1, &receiver.url(), "");
    for run in 0..s.runs {
        // (figures, subscriptions, dispatcher on, run tag, deliveries each)
        for (f, config, background, tag, each) in [
            (&mut plain, "", true, "i", 0),
            (&mut enqueuing, one_subscription.as_str(), false, "ie", 1),
        ] {
            let place = Place::new(&b).await?;
            let herald = Herald::start(&place, config, background).await?;
            let run = format!("{tag}{run}");
            let before = herald.metrics.group_commits();
            let elapsed = ingest(herald.addr, s.ingest_clients, s.ingest_events, &run).await?;
            f.push(
                s.ingest_events,
                elapsed,
                before,
                herald.metrics.group_commits(),
            );
            // One more event of the same kind says how many deliveries
            // each enqueued: what the figure's name promises.
            let reply = client(herald.addr)
                .await?
                .batch_succeeded(event(&run, s.ingest_events))
                .await?
                .into_inner();
            herald.stop().await;
            if reply.deliveries != each {
                bail!(
                    "ingest: an event enqueued {} deliveries, not {each}",
                    reply.deliveries
                );
            }
        }
    }
    receiver.stop();
    Ok([plain, enqueuing]
        .into_iter()
        .flat_map(IngestFigures::into_figures)
        .collect())
}

/// One ingest load's rate, and what it depends on: how many events each
/// group commit took, and how long a commit took per event in it (from the
/// transaction's start to its durable COMMIT, read from Herald's metrics).
/// The committer commits one group at a time, so the rate cannot pass a
/// million over that time; when it nears it, the committer is the limit.
struct IngestFigures {
    rate: Figure,
    group: Figure,
    commit: Figure,
}

impl IngestFigures {
    fn new(load: &str, target: &'static str) -> Self {
        Self {
            rate: figure(
                "ingest",
                format!("events acked, {load}"),
                "events/s",
                target,
            ),
            group: figure(
                "ingest",
                format!("events per group commit, {load}"),
                "events",
                "",
            ),
            commit: figure(
                "ingest",
                format!("group commit time per event, {load}"),
                "µs",
                "",
            ),
        }
    }

    fn push(
        &mut self,
        events: u64,
        elapsed: Duration,
        before: crate::metrics::GroupCommits,
        after: crate::metrics::GroupCommits,
    ) {
        self.rate.values.push(per_second(events, elapsed));
        let jobs = (after.jobs - before.jobs).max(1.0);
        let groups = after.groups.saturating_sub(before.groups).max(1);
        self.group.values.push(jobs / groups as f64);
        self.commit
            .values
            .push(1e6 * (after.seconds - before.seconds) / jobs);
    }

    fn into_figures(self) -> [Figure; 3] {
        [self.rate, self.group, self.commit]
    }
}

/// Loads `events` into `place` with deliveries paused (Herald in this
/// process), then starts `herald serve` on the same store as its own
/// process and waits until `expected` requests reached `receiver`. The
/// time runs from the first arrival to the last (Herald's start-up is not
/// delivery); the CPU is the Herald process's alone, its start included.
async fn drain(
    place: &Place,
    config: &str,
    receiver: &Receiver,
    events: u64,
    expected: u64,
    run: &str,
) -> anyhow::Result<(Duration, CpuTime)> {
    let loader = Herald::start(place, config, false).await?;
    ingest(loader.addr, 64, events, run).await?;
    loader.stop().await;
    let herald = Process::spawn(place, "", &format!("{DRAIN_SETTINGS}{config}"))?;
    // Fails fast on a Herald that does not start; deliveries run meanwhile.
    herald.wait_listening().await?;
    let done = receiver.wait_for(expected, LIMIT).await;
    let cpu = herald.cpu()?;
    herald.stop().await?;
    match (receiver.first_arrival(), done) {
        (Some(first), Some(last)) => Ok((last - first, cpu)),
        _ => bail!(
            "only {} of {expected} deliveries arrived within {LIMIT:?}",
            receiver.count()
        ),
    }
}

/// What `herald serve` needs beside the subscriptions to deliver as the
/// in-process Herald of [`Herald::start`] does.
const DRAIN_SETTINGS: &str = "[stalls]\nmax_duration = \"off\"\nlearn = false\n\
                              [egress]\nallow = [\"127.0.0.0/8\"]\n";

async fn end_to_end_latency(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut p50 = figure(
        "latency",
        "engine send → receiver, p50",
        "ms",
        b.pick("≤ 1 ms at 1,000 events/s", "at 1,000 events/s"),
    );
    let mut p99 = figure(
        "latency",
        "engine send → receiver, p99",
        "ms",
        b.pick("≤ 5 ms", "≤ 20 ms"),
    );
    for run in 0..s.runs {
        let place = Place::new(&b).await?;
        let receiver = Receiver::start(false).await?;
        let herald = Herald::start(&place, &subscriptions(1, &receiver.url(), ""), true).await?;
        let [l50, l99] = latencies(&[herald.addr], &receiver, s, &format!("l{run}")).await?;
        p50.values.push(l50);
        p99.values.push(l99);
        herald.stop().await;
        receiver.stop();
    }
    Ok(vec![p50, p99])
}

/// The p50 and p99 send → receive latencies (ms) of events sent at the
/// latency rate to the Heralds at `addrs` in turn; `receiver` is their
/// subscription's (other requests may have reached it before).
pub(super) async fn latencies(
    addrs: &[std::net::SocketAddr],
    receiver: &Receiver,
    s: Sizes,
    run: &str,
) -> anyhow::Result<[f64; 2]> {
    let total = s.latency_rate * s.latency_seconds;
    let before = receiver.count();
    let sent = paced_send(addrs, s.latency_rate, total, run).await?;
    if receiver.wait_for(before + total, LIMIT).await.is_none() {
        bail!(
            "latency: only {} of {total} arrived",
            receiver.count() - before
        );
    }
    percentiles(receiver, &sent)
}

/// p50 and p99 (ms) from each event's send to its first arrival.
pub(super) fn percentiles(
    receiver: &Receiver,
    sent: &[(String, Instant)],
) -> anyhow::Result<[f64; 2]> {
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            receiver
                .arrival(id)
                .map(|arrived| (arrived - *at).as_secs_f64() * 1000.0)
        })
        .collect();
    if latencies.is_empty() {
        bail!("latency: no event arrived");
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    Ok([pick(0.50), pick(0.99)])
}

/// Sends `total` events at `rate` per second to the Heralds at `addrs` in
/// turn, each from its own task so a slow ack never delays the next send;
/// returns each event's send time.
async fn paced_send(
    addrs: &[std::net::SocketAddr],
    rate: u64,
    total: u64,
    run: &str,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let mut clients = Vec::with_capacity(addrs.len());
    for addr in addrs {
        clients.push(client(*addr).await?);
    }
    let sent = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate as f64)).await;
        let mut client = clients[n as usize % clients.len()].clone();
        let (sent, run) = (sent.clone(), run.to_owned());
        tasks.push(tokio::spawn(async move {
            let request = event(&run, n);
            let id = request
                .meta
                .as_ref()
                .map(|m| m.event_id.clone())
                .unwrap_or_default();
            let at = Instant::now();
            client.batch_succeeded(request).await?;
            sent.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, at));
            Ok::<(), tonic::Status>(())
        }));
    }
    for task in tasks {
        task.await?.context("a paced send failed")?;
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(sent)
}

async fn delivery_throughput(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut f = figure(
        "delivery",
        "webhooks delivered, 1 subscription",
        "webhooks/s",
        b.pick("≥ 25,000", "≥ 8,000"),
    );
    let mut cpu = cpu_per_webhook("delivery");
    let mut kernel = kernel_share("delivery");
    for run in 0..s.runs {
        let rate = delivery_rate(&b, s.delivery_events, 1, false, &format!("d{run}")).await?;
        f.values.push(rate.per_second);
        cpu.values.push(rate.cpu_us);
        kernel.values.push(rate.kernel_percent);
    }
    Ok(vec![f, cpu, kernel])
}

async fn fan_out(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut f = figure(
        "fanout",
        "webhooks delivered, 20 subscriptions",
        "webhooks/s",
        b.pick("≥ 25,000", "≥ 8,000"),
    );
    let mut cpu = cpu_per_webhook("fanout");
    let mut kernel = kernel_share("fanout");
    for run in 0..s.runs {
        let rate = delivery_rate(
            &b,
            s.fanout_events,
            s.fanout_subscriptions,
            false,
            &format!("f{run}"),
        )
        .await?;
        f.values.push(rate.per_second);
        cpu.values.push(rate.cpu_us);
        kernel.values.push(rate.kernel_percent);
    }
    Ok(vec![f, cpu, kernel])
}

/// The Herald process's CPU time per delivered webhook while the backlog
/// drains (the receiver runs in the bench's process, apart).
fn cpu_per_webhook(scenario: &'static str) -> Figure {
    figure(scenario, "Herald CPU per webhook", "µs", "≤ 40 µs")
}

/// How much of the Herald process's CPU time the kernel spent for it:
/// high, the figure is bound by system calls, syncs and wake-ups rather
/// than by Herald's own code.
pub(super) fn kernel_share(scenario: &'static str) -> Figure {
    figure(scenario, "of Herald's CPU, in the kernel", "%", "")
}

async fn isolation(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut f = figure(
        "isolation",
        "healthy rate beside a dead receiver",
        "% of alone",
        "≥ 90 %",
    );
    for run in 0..s.runs {
        let alone = delivery_rate(&b, s.isolation_events, 1, false, &format!("a{run}"))
            .await?
            .per_second;
        let beside_dead = delivery_rate(&b, s.isolation_events, 1, true, &format!("b{run}"))
            .await?
            .per_second;
        f.values.push(100.0 * beside_dead / alone);
    }
    Ok(vec![f])
}

/// Webhooks per second reaching a healthy receiver from `subscriptions`
/// subscriptions to it, for `events` events loaded while delivery was
/// paused — optionally beside a subscription whose receiver never answers
/// (timeout 10 s).
async fn delivery_rate(
    b: &Backend,
    events: u64,
    subscriptions_to_it: usize,
    with_dead: bool,
    run: &str,
) -> anyhow::Result<Drained> {
    let place = Place::new(b).await?;
    let healthy = Receiver::start(false).await?;
    let dead = Receiver::start(true).await?;
    let mut config = subscriptions(subscriptions_to_it, &healthy.url(), "");
    if with_dead {
        config.push_str(&format!(
            "[[webhooks]]\nname = \"dead\"\nurl = \"{}\"\nevents = [\"*\"]\nsecret = \"{}\"\ntimeout = \"10s\"\n",
            dead.url(),
            super::harness::SECRET
        ));
    }
    let expected = events * subscriptions_to_it as u64;
    let (elapsed, cpu) = drain(&place, &config, &healthy, events, expected, run).await?;
    healthy.stop();
    dead.stop();
    Ok(Drained {
        per_second: per_second(expected, elapsed),
        cpu_us: cpu.total().as_secs_f64() * 1e6 / expected.max(1) as f64,
        kernel_percent: cpu.kernel_percent(),
    })
}

/// How fast a backlog drained, and the CPU each webhook took meanwhile.
struct Drained {
    per_second: f64,
    cpu_us: f64,
    kernel_percent: f64,
}

async fn recovery(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut f = figure(
        "recovery",
        "drain after restart, all delivered",
        "s",
        "≤ 15 s for 100,000",
    );
    for run in 0..s.runs {
        let place = Place::new(&b).await?;
        let receiver = Receiver::start(false).await?;
        let config = subscriptions(1, &receiver.url(), "");
        let loading = Herald::start(&place, &config, false).await?;
        ingest(loading.addr, 64, s.recovery_events, &format!("r{run}")).await?;
        loading.stop().await;
        let started = Instant::now();
        let restarted = Herald::start(&place, &config, true).await?;
        let done = receiver.wait_for(s.recovery_events, LIMIT).await;
        restarted.stop().await;
        let Some(at) = done else {
            bail!(
                "recovery: only {} of {} arrived",
                receiver.count(),
                s.recovery_events
            );
        };
        let distinct = (0..s.recovery_events)
            .filter(|n| receiver.arrival(&format!("r{run}-{n}")).is_some())
            .count() as u64;
        if distinct != s.recovery_events {
            bail!(
                "recovery: {} events never arrived",
                s.recovery_events - distinct
            );
        }
        f.values.push((at - started).as_secs_f64());
        receiver.stop();
    }
    Ok(vec![f])
}

/// Herald as its own process (the binary, `serve`), one subscription whose
/// receiver never answers and takes one attempt at a time, so nearly all
/// deliveries stay pending; the figure is the process's peak RSS.
async fn memory(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut f = figure("memory", "peak RSS, 1,000,000 pending", "MiB", "≤ 150 MiB");
    let place = Place::new(&b).await?;
    let dead = Receiver::start(true).await?;
    let config = format!(
        "[egress]\nallow = [\"127.0.0.0/8\"]\n[[webhooks]]\nname = \"dead\"\nurl = \"{}\"\nevents = [\"*\"]\n\
         secret = \"{}\"\ntimeout = \"5m\"\nmax_in_flight = 1\n",
        dead.url(),
        super::harness::SECRET
    );
    let herald = Process::start(&place, "", &config).await?;
    ingest(herald.addr, 64, s.memory_events, "m").await?;
    f.values.push(herald.peak_rss_mib()?);
    herald.stop().await?;
    dead.stop();
    Ok(vec![f])
}

/// Ingest while retention prunes a backlog: `retention_events` events are
/// loaded, the clock moves 91 days on, and the next events are sent while
/// the pruner removes the backlog; the rate is compared with the same
/// number of events sent before the clock moved (same database, same run).
async fn retention(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut alone = figure(
        "retention",
        "ingest, 64 clients, no pruning",
        "events/s",
        "",
    );
    let mut pruning = figure("retention", "ingest while pruning", "events/s", "");
    let mut ratio = figure("retention", "rate while pruning vs none", "%", "≥ 90 %");
    let mut pruned = figure("retention", "events pruned per second", "rows/s", "");
    for run in 0..s.runs {
        let place = Place::new(&b).await?;
        let clock = crate::clock::ManualClock::new(chrono::Utc::now());
        let herald = Herald::start_with(&place, "", false, Arc::new(clock.clone())).await?;
        ingest(herald.addr, 64, s.retention_events, &format!("r{run}")).await?;
        let measured = s.retention_events / 5;
        let before = ingest(herald.addr, 64, measured, &format!("r{run}a")).await?;
        clock.advance(chrono::Duration::days(91));
        let pruner = herald.pruner.clone();
        let pruning_started = Instant::now();
        let prune = tokio::spawn(async move { pruner.run_once().await });
        let during = ingest(herald.addr, 64, measured, &format!("r{run}b")).await?;
        let removed = prune.await??;
        let prune_time = pruning_started.elapsed();
        alone.values.push(per_second(measured, before));
        pruning.values.push(per_second(measured, during));
        ratio
            .values
            .push(100.0 * before.as_secs_f64() / during.as_secs_f64().max(1e-9));
        pruned.values.push(per_second(removed.events, prune_time));
        if removed.events < s.retention_events {
            bail!(
                "retention: pruned {} of {} events",
                removed.events,
                s.retention_events
            );
        }
        herald.stop().await;
    }
    Ok(vec![alone, pruning, ratio, pruned])
}

/// Watch streams against Herald as its own process: ingest CPU per event
/// with idle watchers filtered to quiet cubes against none, then memory
/// with watchers that never read (each with a 1,000-batch snapshot and the
/// 64 KiB window of a typical gRPC client), and after they left.
async fn watch(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let mut cpu = figure(
        "watch",
        "ingest CPU/event, 1,000 quiet watchers vs none",
        "×",
        "≤ 1.2×",
    );
    let mut peak = figure(
        "watch",
        "peak RSS with 1,000 stuck streams",
        "MiB",
        "< 100 MiB",
    );
    let mut held = figure(
        "watch",
        "RSS kept after the stuck clients left",
        "MiB",
        "≈ 0",
    );
    for run in 0..s.runs {
        let place = Place::new(&b).await?;
        let server = format!("max_watch_streams = {}", s.watch_streams);
        let herald = Process::start(&place, &server, "").await?;
        // Enough batches that every unfiltered watch starts with a full
        // snapshot.
        ingest(herald.addr, 64, 2_000, &format!("w{run}-load")).await?;
        cpu.values
            .push(quiet_watcher_cost(&herald, s, &format!("w{run}")).await?);
        let idle = herald.rss_mib()?;
        let streams = open_watches(herald.addr, s.watch_streams, |_| {
            pb::WatchBatchesRequest::default()
        })
        .await?;
        ingest(herald.addr, 64, 2_000, &format!("w{run}-stuck")).await?;
        peak.values.push(herald.peak_rss_mib()?);
        drop(streams);
        // Let the server notice that the connections closed.
        tokio::time::sleep(Duration::from_secs(1)).await;
        held.values.push(herald.rss_mib()? - idle);
        herald.stop().await?;
    }
    Ok(vec![cpu, peak, held])
}

/// Herald's CPU per ingested event with `s.watch_streams` watchers of
/// quiet cubes, relative to none. Phases alternate (none, watchers, none,
/// watchers, none) so that drift and neighbours' noise fall on both sides.
async fn quiet_watcher_cost(herald: &Process, s: Sizes, run: &str) -> anyhow::Result<f64> {
    let cpu_of = |phase: String| async move {
        let before = herald.cpu_time()?;
        ingest(herald.addr, 64, s.watch_events, &phase).await?;
        Ok::<_, anyhow::Error>((herald.cpu_time()? - before).as_secs_f64())
    };
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    for round in 0..2 {
        alone.push(cpu_of(format!("{run}-alone{round}")).await?);
        let watchers = open_watches(herald.addr, s.watch_streams, |i| pb::WatchBatchesRequest {
            cube_id: format!("quiet{i}"),
            ..Default::default()
        })
        .await?;
        // Opening them is not what is measured: let their first reads end.
        tokio::time::sleep(Duration::from_secs(1)).await;
        beside.push(cpu_of(format!("{run}-quiet{round}")).await?);
        drop(watchers);
    }
    alone.push(cpu_of(format!("{run}-alone2")).await?);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(mean(&beside) / mean(&alone).max(1e-9))
}

/// Opens `count` watches (20 per connection), none of which is read; the
/// clients ask for the 64 KiB flow-control windows of a typical gRPC
/// client instead of this library's larger defaults.
async fn open_watches(
    addr: std::net::SocketAddr,
    count: usize,
    request: impl Fn(usize) -> pb::WatchBatchesRequest,
) -> anyhow::Result<Vec<tonic::Streaming<pb::BatchChange>>> {
    let mut streams = Vec::with_capacity(count);
    let mut client = None;
    for i in 0..count {
        if i % 20 == 0 {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535)
                .connect()
                .await
                .context("connecting to Herald")?;
            client = Some(QueryServiceClient::new(channel));
        }
        let client = client.as_mut().context("a client for every stream")?;
        let stream = client
            .watch_batches(request(i))
            .await
            .context("opening a watch")?;
        streams.push(stream.into_inner());
    }
    Ok(streams)
}

/// Large project documents through a Herald process of its own: one
/// subscription takes the document inline (signed) and, when `git` is
/// installed, a Git archive writes it. Measures the resident set at rest,
/// its peak above that during one publish (until delivered and archived),
/// during four publishes at once to four projects (one of which has a
/// previous document to compare), and what is still held afterwards.
async fn documents(s: Sizes, b: Backend) -> anyhow::Result<Vec<Figure>> {
    let size = s.document_mib * 1024 * 1024;
    let mut document = figure("documents", "document size", "MiB", "");
    let mut idle = figure("documents", "RSS at rest, before", "MiB", "");
    let mut one = figure(
        "documents",
        "one publish: peak above rest",
        "MiB",
        "< 2× document",
    );
    let mut four = figure(
        "documents",
        "four at once: peak above rest",
        "MiB",
        "< 4× document",
    );
    let mut after = figure("documents", "RSS after, above rest before", "MiB", "near 0");
    let place = Place::new(&b).await?;
    let receiver = Receiver::start(false).await?;
    let repo = place.path().join("archive");
    let archive = git_available().then(|| {
        format!(
            "[[git_archives]]\nname = \"archive\"\npath = \"{}\"\n",
            repo.display()
        )
    });
    let config = format!(
        "[[webhooks]]\nname = \"inline\"\nurl = \"{}\"\nevents = [\"project.*\"]\nsecret = \"{}\"\nproject_xml = \"inline\"\n{}",
        receiver.url(),
        super::harness::SECRET,
        archive.as_deref().unwrap_or_default()
    );
    let config = format!("[egress]\nallow = [\"127.0.0.0/8\"]\n{config}");
    let herald = Process::start(&place, "", &config).await?;
    let (addr, rss) = (herald.addr, || herald.rss_mib());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rest = rss()?;
    let v1 = bytes::Bytes::from(project_document(size, "v1"));
    let v2 = bytes::Bytes::from(project_document(size, "v2"));
    document.values.push(v1.len() as f64 / 1024.0 / 1024.0);

    herald.reset_peak_rss();
    publish(addr, "one", "p0", v1).await?;
    delivered(&receiver, archive.as_ref().map(|_| repo.as_path()), 1).await?;
    one.values.push(herald.peak_rss_mib()? - rest);

    herald.reset_peak_rss();
    let mut publishes = tokio::task::JoinSet::new();
    for n in 0..4 {
        let v2 = v2.clone();
        publishes
            .spawn(async move { publish(addr, &format!("four-{n}"), &format!("p{n}"), v2).await });
    }
    while let Some(done) = publishes.join_next().await {
        done??;
    }
    delivered(&receiver, archive.as_ref().map(|_| repo.as_path()), 5).await?;
    four.values.push(herald.peak_rss_mib()? - rest);

    tokio::time::sleep(Duration::from_secs(2)).await;
    after.values.push(rss()? - rest);
    idle.values.push(rest);
    herald.stop().await?;
    receiver.stop();
    Ok(vec![document, idle, one, four, after])
}

/// One `project.published` with `xml`, over a connection of its own.
async fn publish(
    addr: std::net::SocketAddr,
    event_id: &str,
    project: &str,
    xml: bytes::Bytes,
) -> anyhow::Result<()> {
    let request = crate::api::pb::ProjectEventRequest {
        meta: Some(crate::api::pb::EventMeta {
            event_id: event_id.to_owned(),
            occurred_at: Some(crate::api::timestamp_to_proto(chrono::Utc::now())),
            source: "bench".to_owned(),
        }),
        kind: crate::api::pb::ProjectEventKind::Published as i32,
        organization_id: "bench".to_owned(),
        project_id: project.to_owned(),
        user: "bench@example.com".to_owned(),
        project_xml: xml,
        ..Default::default()
    };
    client(addr)
        .await?
        .project_event(request)
        .await
        .context("publishing a document")?;
    Ok(())
}

/// Waits until `count` webhooks arrived and, with an archive, `count`
/// commits are in it.
async fn delivered(
    receiver: &Receiver,
    repo: Option<&std::path::Path>,
    count: u64,
) -> anyhow::Result<()> {
    if receiver.wait_for(count, LIMIT).await.is_none() {
        bail!(
            "documents: only {} of {count} webhooks arrived",
            receiver.count()
        );
    }
    let Some(repo) = repo else { return Ok(()) };
    let deadline = Instant::now() + LIMIT;
    while commits(repo) < count {
        if Instant::now() > deadline {
            bail!(
                "documents: only {} of {count} commits archived",
                commits(repo)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn commits(repo: &std::path::Path) -> u64 {
    std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-list", "--count", "HEAD"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

fn git_available() -> bool {
    std::process::Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}
