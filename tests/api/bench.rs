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
    assert_eq!(figures.len(), 50);
    assert!(figures
        .iter()
        .all(|f| f["values"].as_array().is_some_and(|v| !v.is_empty())));
    // The ingest figure's ceiling: the same clients against a gRPC server
    // that stores nothing, measured with the machine's reference.
    let bare = figures
        .iter()
        .find(|f| {
            f["scenario"] == "machine" && f["metric"] == "gRPC calls, nothing stored, 16 clients"
        })
        .expect("a bare gRPC reference");
    assert!(bare["values"][0].as_f64().unwrap() > 0.0, "{bare}");
    // Ingest, delivery and fanout are each followed by their rate's share
    // of the reference that bounds it, computed from the rows above.
    let value = |f: &serde_json::Value| f["values"][0].as_f64().unwrap();
    let reference = |prefix: &str| {
        figures
            .iter()
            .find(|f| {
                f["scenario"] == "machine" && f["metric"].as_str().unwrap().starts_with(prefix)
            })
            .map(value)
            .unwrap()
    };
    let mut shared = Vec::new();
    for (at, f) in figures.iter().enumerate() {
        let by = match f["metric"].as_str().unwrap() {
            "of bare gRPC calls/s" => reference("gRPC calls"),
            "of loopback HTTP requests/s" => reference("loopback HTTP"),
            _ => continue,
        };
        let rate = &figures[at - 1];
        assert_eq!(rate["scenario"], f["scenario"]);
        assert!((value(f) - 100.0 * value(rate) / by).abs() < 1e-9, "{f}");
        shared.push(f["scenario"].as_str().unwrap());
    }
    assert_eq!(shared, ["ingest", "delivery", "fanout"]);
    // Beside each ingest rate: the events per group commit (at least one,
    // at most one per client) and the commit time per event, from
    // Herald's own metrics.
    for load in ["16 clients", "16 clients, a delivery each"] {
        let named = |metric: String| {
            figures
                .iter()
                .find(|f| f["scenario"] == "ingest" && f["metric"] == metric.as_str())
                .map(value)
                .unwrap_or_else(|| panic!("no ingest row {metric:?}"))
        };
        let group = named(format!("events per group commit, {load}"));
        assert!((1.0..=16.0).contains(&group), "{load}: {group} per group");
        let commit = named(format!("group commit time per event, {load}"));
        assert!(commit > 0.0, "{load}: {commit} µs per event");
    }
    // Herald's CPU split: the kernel's share is a percentage, for each
    // scenario that reads the Herald process's CPU time.
    let shares: Vec<&serde_json::Value> = figures
        .iter()
        .filter(|f| f["metric"] == "of Herald's CPU, in the kernel")
        .collect();
    let scenarios: Vec<&str> = shares
        .iter()
        .filter_map(|f| f["scenario"].as_str())
        .collect();
    assert_eq!(
        scenarios,
        ["oneclient", "paced", "flatout", "delivery", "fanout"]
    );
    for share in shares {
        for value in share["values"].as_array().unwrap() {
            let percent = value.as_f64().unwrap();
            assert!((0.0..=100.0).contains(&percent), "{share}");
        }
    }
}
