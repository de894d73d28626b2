//! Random sequences of ingest calls, valid and invalid, against a real
//! server: whatever the order, no call panics Herald or gets INTERNAL for a
//! caller's mistake, batches only move along the state machine, a repeated
//! event_id gets its first answer, and every acked event has its
//! deliveries.

use std::collections::HashMap;

use herald::api::pb;
use proptest::prelude::*;
use tonic::Code;

use crate::helpers::{batch_ref, spawn_app, webhook, TestApp};

#[derive(Debug, Clone)]
enum Op {
    Start(u8),
    Succeed(u8),
    Fail(u8),
    /// Sends again the call made at this index (modulo the calls so far).
    Repeat(usize),
    /// A start with one field broken.
    Invalid(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Start),
        (0u8..4).prop_map(Op::Succeed),
        (0u8..4).prop_map(Op::Fail),
        (0usize..64).prop_map(Op::Repeat),
        (0u8..5).prop_map(Op::Invalid),
    ]
}

/// One call as sent, so that it can be sent again byte for byte.
#[derive(Debug, Clone)]
enum Call {
    Started(pb::BatchStartedRequest),
    Succeeded(pb::BatchSucceededRequest),
    Failed(pb::BatchFailedRequest),
}

async fn send(app: &TestApp, call: &Call) -> Result<pb::IngestReply, tonic::Status> {
    let mut ingest = app.ingest.clone();
    let reply = match call.clone() {
        Call::Started(r) => ingest.batch_started(r).await,
        Call::Succeeded(r) => ingest.batch_succeeded(r).await,
        Call::Failed(r) => ingest.batch_failed(r).await,
    };
    reply.map(|r| r.into_inner())
}

fn build(app: &TestApp, n: usize, op: &Op, calls: &[Call]) -> Call {
    let id = format!("ev-{n}");
    let batch = |b: u8| format!("b-{b}");
    let cube = |b: u8| format!("cube{}", b % 2);
    match op {
        Op::Start(b) => Call::Started(pb::BatchStartedRequest {
            meta: app.meta(&id),
            batch: Some(batch_ref(&batch(*b), "prod", &cube(*b))),
            build_kind: pb::BuildKind::Full as i32,
            aggregate_count: 3,
        }),
        Op::Succeed(b) => Call::Succeeded(app.succeeded(&id, &batch(*b), &cube(*b))),
        Op::Fail(b) => Call::Failed(app.failed(&id, &batch(*b), &cube(*b))),
        Op::Repeat(i) if !calls.is_empty() => calls[i % calls.len()].clone(),
        Op::Repeat(_) => build(app, n, &Op::Start(0), calls),
        Op::Invalid(kind) => {
            let mut r = pb::BatchStartedRequest {
                meta: app.meta(&id),
                batch: Some(batch_ref("b-0", "prod", "cube0")),
                build_kind: pb::BuildKind::Full as i32,
                aggregate_count: 3,
            };
            match kind {
                0 => r.meta = None,
                1 => r.batch.as_mut().unwrap().batch_id.clear(),
                2 => r.build_kind = 99,
                3 => r.batch.as_mut().unwrap().cube_id = "has space".into(),
                _ => r.meta.as_mut().unwrap().occurred_at = None,
            }
            Call::Started(r)
        }
    }
}

fn allowed(before: Option<i32>, after: i32) -> bool {
    use pb::BatchState::*;
    let (running, succeeded, failed) = (Running as i32, Succeeded as i32, Failed as i32);
    match before {
        None => true,
        Some(b) if b == running => [running, succeeded, failed].contains(&after),
        Some(b) => b == after,
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let app = spawn_app(&webhook(
        "all",
        "http://127.0.0.1:9/hook",
        "events = [\"aggregate.*\"]",
    ))
    .await;
    let mut calls: Vec<Call> = Vec::new();
    let mut states: HashMap<String, i32> = HashMap::new();
    let mut answers: HashMap<String, pb::IngestReply> = HashMap::new();
    let mut enqueued = 0u32;
    for (n, op) in ops.iter().enumerate() {
        let call = build(&app, n, op, &calls);
        match send(&app, &call).await {
            Ok(reply) => {
                let event_id = match &call {
                    Call::Started(r) => r.meta.as_ref().unwrap().event_id.clone(),
                    Call::Succeeded(r) => r.meta.as_ref().unwrap().event_id.clone(),
                    Call::Failed(r) => r.meta.as_ref().unwrap().event_id.clone(),
                };
                if let Some(first) = answers.get(&event_id) {
                    // The first answer, as it was then (the batch may have
                    // moved on since).
                    prop_assert!(!reply.new_event);
                    prop_assert_eq!(
                        &reply,
                        &pb::IngestReply {
                            new_event: false,
                            ..first.clone()
                        }
                    );
                    calls.push(call);
                    continue;
                }
                prop_assert!(reply.new_event);
                answers.insert(event_id, reply.clone());
                enqueued += reply.deliveries;
                let batch = reply.batch.expect("batch events answer with the batch");
                prop_assert!(
                    allowed(states.get(&batch.batch_id).copied(), batch.state),
                    "{:?} -> {}",
                    states.get(&batch.batch_id),
                    batch.state
                );
                states.insert(batch.batch_id, batch.state);
                calls.push(call);
            }
            Err(status) => {
                prop_assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument | Code::FailedPrecondition
                    ),
                    "a caller's mistake got {:?}: {}",
                    status.code(),
                    status.message()
                );
            }
        }
    }
    let stored = app
        .store
        .list_deliveries(&Default::default())
        .await
        .unwrap();
    prop_assert_eq!(
        stored.len() as u32,
        enqueued,
        "every acked event has exactly its deliveries"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_ingest_sequences_keep_every_invariant(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(run(ops))?;
    }
}
