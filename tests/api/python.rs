//! Herald from Python, as the README shows it: stubs generated from
//! `proto/` with grpcio-tools, the README's example client, and Python's
//! reflection client (which speaks only reflection v1alpha).
//!
//! These need a Python with grpcio, grpcio-tools and grpcio-reflection;
//! `.ci/run` makes one and runs them with `HERALD_TEST_PYTHON` naming it:
//! `HERALD_TEST_PYTHON=… cargo test --test api python -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::spawn_app;

fn python() -> PathBuf {
    std::env::var_os("HERALD_TEST_PYTHON")
        .map(PathBuf::from)
        .expect("HERALD_TEST_PYTHON names a Python with grpcio, grpcio-tools and grpcio-reflection")
}

/// Runs Python with `gen` on its path, off the test's runtime.
async fn run_python(gen: &Path, args: Vec<String>) -> String {
    let gen = gen.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .args(&args)
            .env("PYTHONPATH", &gen)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Python stubs for Herald's protos, in a fresh directory.
async fn generate_stubs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let mut args: Vec<String> = ["-m", "grpc_tools.protoc", "-Iproto"]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend([
        format!("--python_out={out}"),
        format!("--grpc_python_out={out}"),
    ]);
    for file in ["common", "ingest", "query", "admin"] {
        args.push(format!("proto/herald/v1/{file}.proto"));
    }
    run_python(dir.path(), args).await;
    dir
}

#[tokio::test]
#[ignore = "needs HERALD_TEST_PYTHON; run by .ci/run"]
async fn the_python_example_reads_a_batch() {
    let app = spawn_app("").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    let stubs = generate_stubs().await;
    let line = run_python(
        stubs.path(),
        vec![
            "examples/python/get_batch.py".into(),
            app.addr.to_string(),
            "b-1".into(),
        ],
    )
    .await;
    assert_eq!(line.trim_end(), "b-1 sales BATCH_STATE_RUNNING");
}

#[tokio::test]
#[ignore = "needs HERALD_TEST_PYTHON; run by .ci/run"]
async fn pythons_v1alpha_reflection_client_lists_herald_services() {
    let app = spawn_app("").await;
    let script = format!(
        "import grpc\n\
         from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase\n\
         db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel('{}'))\n\
         print(' '.join(sorted(db.get_services())))\n\
         print(db.FindFileContainingSymbol('herald.v1.QueryService').name)",
        app.addr
    );
    let out = run_python(Path::new("."), vec!["-c".into(), script]).await;
    let mut lines = out.lines();
    let services = lines.next().unwrap_or_default();
    for service in [
        "herald.v1.IngestService",
        "herald.v1.QueryService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(service),
            "{service} missing from {services}"
        );
    }
    assert_eq!(lines.next(), Some("herald/v1/query.proto"));
}
