//! Keeps the benchmark harness from rotting: `herald bench --quick` runs
//! every scenario on a few hundred events. Nothing here asserts speed.

use std::process::Command;

#[tokio::test]
async fn the_quick_bench_runs_every_scenario_and_reports_each_figure() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_herald"));
    bench.args(["bench", "--quick", "--json", json.to_str().unwrap()]);
    let out = tokio::task::spawn_blocking(move || bench.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for scenario in [
        "machine",
        "ingest",
        "latency",
        "oneclient",
        "paced",
        "flatout",
        "delivery",
        "fanout",
        "isolation",
        "recovery",
        "memory",
        "retention",
        "watch",
        "documents",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(scenario)),
            "no {scenario} row in\n{table}"
        );
    }
    let figures: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(figures.len(), 36);
    assert!(figures
        .iter()
        .all(|f| f["values"].as_array().is_some_and(|v| !v.is_empty())));
}
