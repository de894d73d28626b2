//! The integration suite on PostgreSQL: the store-facing test files of
//! `tests/api` compiled again, each test on a database of its own (see
//! `helpers::TestDir`), plus what only a shared store has — several
//! `herald serve` replicas on one database (`replicas`).
//!
//! Needs a PostgreSQL with trust auth (`HERALD_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`); without one a developer's
//! run skips this half with one line, and CI fails.

// Helpers serve both targets; some are used only by files not compiled here.
#![allow(dead_code)]

#[path = "../api/admin.rs"]
mod admin;
mod bench;
#[path = "../api/console.rs"]
mod console;
#[path = "../api/delivery.rs"]
mod delivery;
#[path = "../api/email.rs"]
mod email;
#[path = "../api/gates.rs"]
mod gates;
#[path = "../api/git.rs"]
mod git;
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/ingest.rs"]
mod ingest;
#[path = "../api/integrations.rs"]
mod integrations;
mod migrate;
#[path = "../api/monitor.rs"]
mod monitor;
#[path = "../api/openlineage.rs"]
mod openlineage;
#[path = "../api/ops.rs"]
mod ops;
#[path = "../api/ordering.rs"]
mod ordering;
mod outage;
#[path = "../api/projects.rs"]
mod projects;
#[path = "../api/query.rs"]
mod query;
#[path = "../api/reload.rs"]
mod reload;
mod replicas;
#[path = "../api/restart.rs"]
mod restart;
#[path = "../api/retention.rs"]
mod retention;
#[path = "../api/silences.rs"]
mod silences;
#[path = "../api/smtp.rs"]
mod smtp;
#[path = "../api/subscriptions.rs"]
mod subscriptions;
#[path = "../api/validation.rs"]
mod validation;
#[path = "../api/watch.rs"]
mod watch;
