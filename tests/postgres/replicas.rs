//! Several real `herald serve` processes on one PostgreSQL database:
//! ingest on any replica, deliveries shared, leaders for once-only work,
//! live state everywhere — and nothing lost when replicas are killed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::api::pb::{
    self, admin_service_client::AdminServiceClient, ingest_service_client::IngestServiceClient,
    query_service_client::QueryServiceClient,
    subscription_service_client::SubscriptionServiceClient,
};
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::{batch_ref, dead_address, eventually, webhook, Receiver, TestDir};

/// A fleet of replicas sharing one test database.
struct Fleet {
    /// Declared first so the replicas stop before their database is dropped.
    replicas: Vec<Option<Replica>>,
    dir: Arc<TestDir>,
    config: String,
    /// One fleet at a time: a fleet's processes share two cores with the
    /// tests around them already.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Replica {
    child: Child,
    grpc: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fleet {
    /// Starts `n` replicas, each with `config` (subscriptions, stalls…).
    async fn start(n: usize, config: &str) -> Fleet {
        let mut fleet = Fleet {
            _turn: TURN.lock().await,
            dir: TestDir::create().await,
            config: config.to_owned(),
            replicas: Vec::new(),
        };
        for i in 0..n {
            let replica = fleet.launch(i).await;
            fleet.replicas.push(Some(replica));
        }
        for i in 0..n {
            fleet.client(i).await;
        }
        fleet
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("herald-{i}.toml"))
    }

    async fn launch(&self, i: usize) -> Replica {
        let grpc = dead_address().await.port();
        let toml = format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{grpc}\"\nhttp_listen = \"off\"\n\
             replica_name = \"r{i}\"\nshutdown_grace = \"1s\"\n\
             [store]\nurl = \"{}\"\n[delivery]\npoll_interval = \"200ms\"\nlease_margin = \"1s\"\n\
             [egress]\nallow = [\"127.0.0.0/8\"]\n{}",
            self.dir.store_url(),
            self.config
        );
        std::fs::write(self.config_path(i), toml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--config"])
            .arg(self.config_path(i))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env("HERALD_LOG", "warn")
            .spawn()
            .expect("herald binary starts");
        Replica { child, grpc }
    }

    fn port(&self, i: usize) -> u16 {
        self.replicas[i].as_ref().expect("replica runs").grpc
    }

    async fn channel(&self, i: usize) -> Channel {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port(i)))
                .unwrap();
        for _ in 0..500 {
            if let Ok(channel) = endpoint.connect().await {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("replica {i} did not start listening");
    }

    async fn client(&self, i: usize) -> IngestServiceClient<Channel> {
        IngestServiceClient::new(self.channel(i).await)
    }

    /// SIGKILL: no shutdown, leases left behind.
    fn kill(&mut self, i: usize) {
        drop(self.replicas[i].take());
    }

    /// The replica (index) holding a leader lease now.
    async fn leader(&self, work: &str) -> Option<usize> {
        let pool = sqlx::PgPool::connect(&self.dir.store_url()).await.unwrap();
        let holder: Option<String> =
            sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1")
                .bind(work)
                .fetch_optional(&pool)
                .await
                .unwrap();
        pool.close().await;
        let holder = holder?;
        holder.strip_prefix('r')?.split('/').next()?.parse().ok()
    }
}

fn meta(event_id: &str) -> Option<pb::EventMeta> {
    Some(pb::EventMeta {
        event_id: event_id.into(),
        occurred_at: Some(herald::api::timestamp_to_proto(chrono::Utc::now())),
        source: "engine".into(),
    })
}

fn started(event_id: &str, batch_id: &str, cube: &str) -> pb::BatchStartedRequest {
    pb::BatchStartedRequest {
        meta: meta(event_id),
        batch: Some(batch_ref(batch_id, "prod", cube)),
        build_kind: pb::BuildKind::Full as i32,
        aggregate_count: 2,
    }
}

fn succeeded(event_id: &str, batch_id: &str, cube: &str) -> pb::BatchSucceededRequest {
    pb::BatchSucceededRequest {
        meta: meta(event_id),
        batch: Some(batch_ref(batch_id, "prod", cube)),
        build_kind: pb::BuildKind::Full as i32,
        aggregate_count: 2,
        aggregates_built: 2,
        rows_written: 10,
    }
}

fn failed(event_id: &str, batch_id: &str, cube: &str) -> pb::BatchFailedRequest {
    pb::BatchFailedRequest {
        meta: meta(event_id),
        batch: Some(batch_ref(batch_id, "prod", cube)),
        build_kind: pb::BuildKind::Full as i32,
        aggregate_count: 2,
        error_message: "disk full".into(),
        failed_aggregates: Vec::new(),
    }
}

/// The event ids a receiver got, with how often each came.
fn arrivals(receiver: &Receiver) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in receiver.received() {
        let id = r.json()["id"].as_str().unwrap_or_default().to_owned();
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

/// 20 engine clients spread over 3 replicas send 10,000 events; two
/// replicas are SIGKILLed mid-delivery, one after the other. Every acked
/// event is delivered; only what was in flight at a kill may come twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_on_three_replicas_survive_two_kills() {
    const EVENTS: usize = 10_000;
    const CLIENTS: usize = 20;
    let receiver = Receiver::start().await;
    let hook = webhook(
        "etl",
        &receiver.url(),
        "events = [\"aggregate.batch.started\"]\ntimeout = \"2s\"\nmax_in_flight = 16",
    );
    let mut fleet = Fleet::start(3, &hook).await;
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut channels = Vec::new();
    for i in 0..3 {
        channels.push(fleet.channel(i).await);
    }
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (acked, sent, channels) = (acked.clone(), sent.clone(), channels.clone());
        clients.spawn(async move {
            let mut replica = c % 3;
            loop {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                if n >= EVENTS {
                    return;
                }
                let id = format!("ev-{n}");
                // A replica that died: the engine retries on another.
                for _ in 0..3 {
                    let mut client = IngestServiceClient::new(channels[replica].clone());
                    let request = started(&id, &format!("b-{n}"), "sales");
                    match client.batch_started(request).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(id.clone());
                            break;
                        }
                        Err(_) => replica = (replica + 1) % 3,
                    }
                }
            }
        });
    }
    // Kill one replica a third of the way, another at two thirds.
    assert!(
        eventually(Duration::from_secs(300), || acked.lock().unwrap().len()
            >= EVENTS / 3)
        .await
    );
    fleet.kill(0);
    assert!(
        eventually(Duration::from_secs(300), || acked.lock().unwrap().len()
            >= 2 * EVENTS / 3)
        .await
    );
    fleet.kill(1);
    while clients.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= EVENTS * 9 / 10,
        "most events were acked: {}",
        acked.len()
    );
    let all_arrived = eventually(Duration::from_secs(240), || {
        let got = arrivals(&receiver);
        acked.iter().all(|id| got.contains_key(id))
    })
    .await;
    let got = arrivals(&receiver);
    let missing: Vec<_> = acked.iter().filter(|id| !got.contains_key(*id)).collect();
    assert!(
        all_arrived,
        "{} acked events never arrived, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    // Twice only what two killed replicas had in flight (16 each).
    let twice = got.values().filter(|n| **n > 1).count();
    assert!(twice <= 2 * 16, "{twice} events arrived more than once");
}

/// The same event sent to two replicas at once (an engine retrying on
/// another node): both get the first answer, one event is stored.
#[tokio::test]
async fn a_duplicate_racing_on_two_replicas_gets_one_answer_and_one_event() {
    let fleet = Fleet::start(2, "").await;
    let (mut a, mut b) = (fleet.client(0).await, fleet.client(1).await);
    for n in 0..20 {
        let id = format!("dup-{n}");
        let request = started(&id, &format!("db-{n}"), "sales");
        let (first, second) =
            tokio::join!(a.batch_started(request.clone()), b.batch_started(request));
        let (first, second) = (first.unwrap().into_inner(), second.unwrap().into_inner());
        assert_eq!(
            first.sequence, second.sequence,
            "round {n}: one event, one answer"
        );
        assert!(
            first.new_event != second.new_event,
            "round {n}: one of the two was the first"
        );
    }
    let pool = sqlx::PgPool::connect(&fleet.dir.store_url()).await.unwrap();
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(events, 20);
}

/// `succeeded` on one replica and `failed` on another for the same batch at
/// the same moment: one wins, the other is refused, every time.
#[tokio::test]
async fn one_batch_completed_on_two_replicas_has_one_winner() {
    let fleet = Fleet::start(2, "").await;
    let (mut a, mut b) = (fleet.client(0).await, fleet.client(1).await);
    for n in 0..20 {
        let batch = format!("race-{n}");
        a.batch_started(started(&format!("s-{n}"), &batch, "sales"))
            .await
            .unwrap();
        let mut a2 = a.clone();
        let (ok, fail) = tokio::join!(
            a2.batch_succeeded(succeeded(&format!("ok-{n}"), &batch, "sales")),
            b.batch_failed(failed(&format!("ko-{n}"), &batch, "sales")),
        );
        let codes = [
            ok.as_ref().err().map(|s| s.code()),
            fail.as_ref().err().map(|s| s.code()),
        ];
        let winners = codes.iter().filter(|c| c.is_none()).count();
        assert_eq!(winners, 1, "round {n}: {ok:?} / {fail:?}");
        assert!(
            codes.contains(&Some(Code::FailedPrecondition)),
            "round {n}: the loser is refused as a conflict: {codes:?}"
        );
        let mut query = QueryServiceClient::new(fleet.channel(1).await);
        let batch_now = query
            .get_batch(pb::GetBatchRequest {
                batch_id: batch.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let state = batch_now.state;
        let expected = if ok.is_ok() {
            pb::BatchState::Succeeded
        } else {
            pb::BatchState::Failed
        };
        assert_eq!(
            state, expected as i32,
            "round {n}: the winner's state is stored"
        );
    }
}

/// A stall and an overdue schedule with three replicas are raised once
/// each; when the monitor's leader is killed, another takes over and the
/// next stall is raised, once.
#[tokio::test]
async fn a_stall_is_raised_once_by_three_replicas_and_after_the_leader_dies() {
    let receiver = Receiver::start().await;
    let config = format!(
        "[stalls]\nmax_duration = \"1s\"\nlearn = false\ncheck_interval = \"200ms\"\n\
         [[schedules]]\nname = \"stock-hourly\"\nenvironment = \"prod\"\ncube = \"stock\"\n\
         every = \"1s\"\ngrace = \"0s\"\n{}",
        webhook(
            "ops",
            &receiver.url(),
            "events = [\"aggregate.batch.stalled\", \"aggregate.refresh.overdue\"]"
        )
    );
    let overdue = |receiver: &Receiver| {
        receiver
            .received()
            .iter()
            .filter(|r| r.json()["type"] == "aggregate.refresh.overdue")
            .count()
    };
    let mut fleet = Fleet::start(3, &config).await;
    let stalls = |receiver: &Receiver, batch: &str| {
        receiver
            .received()
            .iter()
            .filter(|r| r.json()["data"]["batch_id"] == batch)
            .count()
    };
    let mut client = fleet.client(1).await;
    client
        .batch_started(started("st-1", "slow-1", "sales"))
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(20), || stalls(&receiver, "slow-1") >= 1).await);
    let leader = fleet
        .leader("monitor")
        .await
        .expect("a replica leads the monitor");
    // Several more checks by every replica: still one of each.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stalls(&receiver, "slow-1"), 1);
    assert_eq!(overdue(&receiver), 1, "the schedule is overdue once");

    fleet.kill(leader);
    let survivor = (leader + 1) % 3;
    let mut client = fleet.client(survivor).await;
    client
        .batch_started(started("st-2", "slow-2", "sales"))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || stalls(&receiver, "slow-2") >= 1).await,
        "the next leader raises the stall"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stalls(&receiver, "slow-2"), 1);
    let next = fleet.leader("monitor").await.expect("a new leader");
    assert_ne!(next, leader);
}

/// A subscription created over the API on one replica is live on the
/// others at once: with the creator gone, they deliver to it.
#[tokio::test]
async fn a_subscription_created_on_one_replica_delivers_from_the_others() {
    let receiver = Receiver::start().await;
    let mut fleet = Fleet::start(3, "").await;
    let mut subs = SubscriptionServiceClient::new(fleet.channel(0).await);
    subs.create_subscription(pb::CreateSubscriptionRequest {
        spec: Some(pb::SubscriptionSpec {
            name: "api-hook".into(),
            kind: pb::SubscriptionKind::Webhook as i32,
            url: receiver.url(),
            events: vec!["aggregate.batch.started".into()],
            retry_schedule: vec!["1s".into()],
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    fleet.kill(0);
    // The others hear of it by notification, within milliseconds (their
    // registry is what GetSubscription reads); bounded, for a loaded CI.
    for i in [1, 2] {
        let mut subs = SubscriptionServiceClient::new(fleet.channel(i).await);
        let mut live = false;
        for _ in 0..100 {
            let name = pb::SubscriptionName {
                name: "api-hook".into(),
            };
            if subs.get_subscription(name).await.is_ok() {
                live = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(live, "replica {i} never saw the new subscription");
    }
    for i in [1, 2] {
        let mut client = fleet.client(i).await;
        client
            .batch_started(started(&format!("via-{i}"), &format!("b-{i}"), "sales"))
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(20), || {
            let got = arrivals(&receiver);
            got.contains_key("via-1") && got.contains_key("via-2")
        })
        .await,
        "both surviving replicas' events were delivered: {:?}",
        arrivals(&receiver)
    );
}

/// A subscription applies on every replica from the moment its create
/// call returns, not from when its notification arrives: each one is made
/// on replica 0, and at once an event only it matches (its own cube) is
/// ingested on replica 1. Before the ingest transaction compared the
/// stored subscriptions' version with its replica's set, an event could
/// beat the notification and get no delivery at all.
#[tokio::test]
async fn an_event_ingested_right_after_a_subscription_is_made_elsewhere_is_delivered_to_it() {
    const ROUNDS: usize = 20;
    let receiver = Receiver::start().await;
    let fleet = Fleet::start(2, "").await;
    let mut subs = SubscriptionServiceClient::new(fleet.channel(0).await);
    let mut elsewhere = fleet.client(1).await;
    for i in 0..ROUNDS {
        subs.create_subscription(pb::CreateSubscriptionRequest {
            spec: Some(pb::SubscriptionSpec {
                name: format!("new-{i}"),
                kind: pb::SubscriptionKind::Webhook as i32,
                url: receiver.url(),
                events: vec!["aggregate.batch.started".into()],
                cubes: vec![format!("cube-{i}")],
                retry_schedule: vec!["1s".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
        let reply = elsewhere
            .batch_started(started(
                &format!("right-after-{i}"),
                &format!("b-{i}"),
                &format!("cube-{i}"),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.deliveries, 1,
            "round {i}: the event found its subscription"
        );
    }
    assert!(
        eventually(Duration::from_secs(20), || arrivals(&receiver).len()
            == ROUNDS)
        .await,
        "every event was delivered: {:?}",
        arrivals(&receiver)
    );
}

/// A silence made through one replica holds on the others: with its
/// maker gone, the silenced cube's failure is suppressed and another
/// cube's delivered.
#[tokio::test]
async fn a_silence_made_on_one_replica_holds_on_the_others() {
    let receiver = Receiver::start().await;
    let hook = webhook(
        "etl",
        &receiver.url(),
        "events = [\"aggregate.batch.failed\"]\nrespect_silences = true",
    );
    let mut fleet = Fleet::start(2, &hook).await;
    let mut admin = AdminServiceClient::new(fleet.channel(0).await);
    let silence = admin
        .create_silence(pb::CreateSilenceRequest {
            cube: "sales".into(),
            duration: "1h".into(),
            comment: "reindex".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .silence
        .unwrap();
    fleet.kill(0);
    let mut client = fleet.client(1).await;
    client
        .batch_failed(failed("ev-sales", "b-1", "sales"))
        .await
        .unwrap();
    client
        .batch_failed(failed("ev-stock", "b-2", "stock"))
        .await
        .unwrap();
    let mut admin = AdminServiceClient::new(fleet.channel(1).await);
    let mut suppressed = Vec::new();
    let settled = eventually(Duration::from_secs(20), || {
        arrivals(&receiver).contains_key("ev-stock")
    })
    .await;
    assert!(
        settled,
        "the other cube is delivered: {:?}",
        arrivals(&receiver)
    );
    for _ in 0..100 {
        suppressed = admin
            .list_deliveries(pb::ListDeliveriesRequest {
                state: pb::DeliveryState::Suppressed as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if !suppressed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(suppressed.len(), 1, "{suppressed:?}");
    assert_eq!(suppressed[0].event_id, "ev-sales");
    assert_eq!(suppressed[0].silence_id, silence.silence_id);
    assert!(!arrivals(&receiver).contains_key("ev-sales"));
}

/// A watch on one replica sees, within moments, a batch ingested on
/// another.
#[tokio::test]
async fn a_watch_on_one_replica_sees_events_ingested_on_another() {
    let fleet = Fleet::start(3, "").await;
    let mut query = QueryServiceClient::new(fleet.channel(2).await);
    let mut stream = query
        .watch_batches(pb::WatchBatchesRequest {
            cube_id: "sales".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut client = fleet.client(0).await;
    client
        .batch_started(started("w-1", "watched", "sales"))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(update) = stream.message().await.unwrap() {
            if update
                .batch
                .as_ref()
                .is_some_and(|b| b.batch_id == "watched")
            {
                return update;
            }
        }
        panic!("the stream ended");
    })
    .await
    .expect("the change reached the other replica's watcher");
    assert_eq!(seen.batch.unwrap().state, pb::BatchState::Running as i32);
}

/// `max_in_flight = 2` holds across three replicas: a slow receiver never
/// sees more than two requests at once, and gets everything.
#[tokio::test]
async fn max_in_flight_holds_across_the_fleet() {
    let receiver = Receiver::start().await;
    receiver.always(crate::helpers::Reply::Slow(Duration::from_millis(200)));
    let hook = webhook(
        "slow",
        &receiver.url(),
        "events = [\"aggregate.batch.started\"]\nmax_in_flight = 2\ntimeout = \"5s\"",
    );
    let fleet = Fleet::start(3, &hook).await;
    for n in 0..30 {
        let mut client = fleet.client(n % 3).await;
        client
            .batch_started(started(&format!("f-{n}"), &format!("fb-{n}"), "sales"))
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(60), || arrivals(&receiver).len() == 30).await,
        "all 30 delivered: {}",
        arrivals(&receiver).len()
    );
    assert!(
        receiver.most_concurrent() <= 2,
        "the receiver saw {} requests at once",
        receiver.most_concurrent()
    );
    assert_eq!(receiver.most_concurrent(), 2, "the fleet used both slots");
    // Each attempt names the replica that made it.
    let mut admin = pb::admin_service_client::AdminServiceClient::new(fleet.channel(0).await);
    let listed = admin
        .list_deliveries(pb::ListDeliveriesRequest {
            subscription: "slow".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut replicas = HashSet::new();
    for delivery in listed.deliveries {
        let detail = admin
            .get_delivery(pb::GetDeliveryRequest {
                delivery_id: delivery.delivery_id,
            })
            .await
            .unwrap()
            .into_inner();
        replicas.extend(detail.attempts.into_iter().map(|a| a.replica));
    }
    assert!(
        !replicas.is_empty()
            && replicas
                .iter()
                .all(|r| ["r0", "r1", "r2"].contains(&r.as_str())),
        "{replicas:?}"
    );
}

/// Email grouping and the Git archive with three replicas: failures of six
/// cubes ingested through all of them are one mail per cube (the group),
/// never two; project versions published through all of them are one
/// commit each, in order.
#[tokio::test]
async fn three_replicas_send_one_mail_per_group_and_one_commit_per_event_in_order() {
    let smtp = crate::smtp::SmtpServer::start().await;
    let archive = tempfile::tempdir().unwrap();
    let repo = archive.path().join("archive");
    let config = format!(
        "{}[[email]]\nname = \"dataops\"\nto = [\"dataops@example.com\"]\n\
         group_by = [\"cube\"]\ngroup_wait = \"1s\"\nretry_schedule = [\"1s\"]\n\
         [[git_archives]]\nname = \"archive\"\npath = \"{}\"\nretry_schedule = [\"1s\"]\n",
        smtp.config(""),
        repo.display()
    );
    let fleet = Fleet::start(3, &config).await;
    for n in 0..6 {
        let mut client = fleet.client(n % 3).await;
        let batch = format!("mb-{n}");
        let cube = format!("cube-{n}");
        client
            .batch_failed(failed(&format!("mf-{n}"), &batch, &cube))
            .await
            .unwrap();
    }
    for n in 0..6 {
        let mut client = fleet.client(n % 3).await;
        client
            .project_event(pb::ProjectEventRequest {
                meta: meta(&format!("pv-{n}")),
                kind: pb::ProjectEventKind::Published as i32,
                organization_id: "acme".into(),
                project_id: "finance".into(),
                project_name: "Finance".into(),
                user: "ada@example.com".into(),
                snapshot_id: format!("snap-{n}"),
                snapshot_tag: format!("v{n}"),
                project_xml: format!("<project v=\"{n}\"/>").into_bytes().into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let commits = || {
        Command::new("git")
            .args(["log", "--reverse", "--format=%B"])
            .current_dir(&repo)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let trailers = |log: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| l.strip_prefix("Herald-Event: "))
            .map(str::to_owned)
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(60), || trailers(&commits()).len() >= 6).await,
        "six commits: {}",
        commits()
    );
    assert!(eventually(Duration::from_secs(60), || smtp.mails().len() >= 6).await);
    // Every replica has had time to mail or commit again if it would.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let expected: Vec<String> = (0..6).map(|n| format!("pv-{n}")).collect();
    assert_eq!(
        trailers(&commits()),
        expected,
        "one commit per event, in order"
    );
    let mails = smtp.mails();
    let mut cubes: Vec<String> = mails
        .iter()
        .map(|m| {
            let text = m.parsed().body_text(0).unwrap_or_default().to_lowercase();
            (0..6)
                .map(|n| format!("cube-{n}"))
                .find(|cube| text.contains(&format!("refresh of {cube} ")))
                .unwrap_or_else(|| panic!("a mail names its cube: {text}"))
        })
        .collect();
    cubes.sort();
    let expected: Vec<String> = (0..6).map(|n| format!("cube-{n}")).collect();
    assert_eq!(cubes, expected, "one mail per group, none twice");
}

/// `rate_limit = "10/s"` holds across two replicas: one bucket for the
/// fleet (burst 10, then 10 a second), not one per replica — which would
/// let 20 through at once and 20 a second.
#[tokio::test]
async fn a_rate_limit_holds_across_the_fleet() {
    let (receiver, url) = crate::ordering::FlakyReceiver::start().await;
    let hook = webhook(
        "limited",
        &url,
        "events = [\"aggregate.batch.succeeded\"]\nrate_limit = \"10/s\"\nmax_in_flight = 64",
    );
    let fleet = Fleet::start(2, &hook).await;
    for n in 0..30 {
        let mut client = fleet.client(n % 2).await;
        client
            .batch_succeeded(succeeded(&format!("r-{n}"), &format!("rb-{n}"), "sales"))
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(60), || receiver.delivered().len() >= 30).await,
        "all 30 delivered: {}",
        receiver.delivered().len()
    );
    let mut times: Vec<_> = receiver.arrivals().iter().map(|a| a.at).collect();
    times.sort();
    let first = times[0];
    // 30 at 10/s after a burst of 10 take two seconds; generous bounds.
    assert!(
        times[29] - first >= Duration::from_millis(1500),
        "30 arrived within {:?}",
        times[29] - first
    );
    let in_first_second = times
        .iter()
        .filter(|t| **t - first < Duration::from_secs(1))
        .count();
    assert!(
        in_first_second <= 21,
        "{in_first_second} in the first second"
    );
    let mut batches = receiver.delivered();
    batches.sort();
    batches.dedup();
    assert_eq!(batches.len(), 30, "none lost, none twice");
}

/// `ordering = "cube"` holds across two replicas: with the first attempt
/// of every `started` failing, no cube's `succeeded` overtakes its
/// `started`, whichever replica ingested or claimed either.
#[tokio::test]
async fn cube_ordering_holds_across_the_fleet() {
    let (receiver, url) = crate::ordering::FlakyReceiver::start().await;
    let hook = format!(
        "[[webhooks]]\nname = \"ordered\"\nurl = \"{url}\"\nsecret = \"{}\"\n\
         events = [\"aggregate.batch.*\"]\nordering = \"cube\"\n\
         retry_schedule = [\"300ms\", \"300ms\", \"300ms\"]\n",
        crate::helpers::SECRET
    );
    let fleet = Fleet::start(2, &hook).await;
    let batches: Vec<String> = (0..6).map(|n| format!("ob-{n}")).collect();
    for (n, batch) in batches.iter().enumerate() {
        let cube = format!("cube-{n}");
        let mut one = fleet.client(n % 2).await;
        let mut other = fleet.client((n + 1) % 2).await;
        one.batch_started(started(&format!("os-{n}"), batch, &cube))
            .await
            .unwrap();
        other
            .batch_succeeded(succeeded(&format!("oc-{n}"), batch, &cube))
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(60), || receiver.delivered().len() >= 12).await,
        "all 12 delivered: {:?}",
        receiver.delivered()
    );
    assert!(receiver.in_order(&batches), "{:?}", receiver.delivered());
}
