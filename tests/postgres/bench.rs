//! Keeps the PostgreSQL path of `herald bench` from rotting: `--quick
//! --store <server>` runs ingest and the replicas scenario (1, 2 and 3
//! real `herald serve` processes on one database) on a few hundred events,
//! prints every figure, and drops each database it made. Nothing here
//! asserts speed.

use std::collections::HashSet;
use std::process::Command;

use crate::helpers::{postgres_admin_url, TestDir};

async fn bench_databases() -> HashSet<String> {
    let pool = sqlx::PgPool::connect(&postgres_admin_url()).await.unwrap();
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'herald_bench_%'")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    names.into_iter().collect()
}

#[tokio::test]
async fn the_quick_bench_on_postgres_reports_ingest_and_each_replica_count() {
    // The PostgreSQL half's rule for a machine without PostgreSQL, and a
    // directory for the JSON.
    let dir = TestDir::create().await;
    let before = bench_databases().await;
    let json = dir.path().join("bench.json");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_herald"));
    bench.args(["bench", "--quick", "--store", &postgres_admin_url()]);
    bench.args([
        "--only",
        "ingest,replicas",
        "--json",
        json.to_str().unwrap(),
    ]);
    let out = tokio::task::spawn_blocking(move || bench.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for row in [
        "machine    write 4 KiB + fdatasync p50",
        "machine    gRPC calls, nothing stored, 16 clients",
        "ingest     events acked, 16 clients",
        "ingest     events acked, 16 clients, a delivery each",
        "ingest     events per group commit, 16 clients",
        "ingest     group commit time per event, 16 clients",
        "replicas   ingest, 1 replica, 16 clients",
        "replicas   ingest, 3 replicas, 16 clients",
        "replicas   delivered, 2 replicas, 1 subscription",
        "replicas   p99 send → receiver at 200/s, 3 replicas",
        "replicas   3 vs 1 replica: delivery rate",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(row)),
            "no row {row:?} in\n{table}"
        );
    }
    let figures: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    // The machine reference: 4; ingest and ingest enqueuing a delivery per
    // event, each with its events per group commit and commit time per
    // event, and the first's share of bare gRPC: 7; replicas: ingest,
    // delivery and p99 for 1, 2 and 3, and three comparisons.
    assert_eq!(figures.len(), 4 + 7 + 9 + 3, "{figures:#?}");
    for f in &figures {
        let values = f["values"].as_array().unwrap();
        assert!(
            !values.is_empty() && values.iter().all(|v| v.as_f64().is_some_and(|v| v > 0.0)),
            "a figure without positive values: {f}"
        );
    }
    assert!(
        bench_databases().await.is_subset(&before),
        "the bench left databases behind"
    );
}

#[test]
fn the_replicas_scenario_refuses_to_run_without_postgres() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["bench", "--quick", "--only", "replicas"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replicas") && stderr.contains("--store postgres://"),
        "{stderr}"
    );
}
