//! Herald: aggregate refresh notifications.
//!
//! The engine reports batch lifecycle events over gRPC ([`api`]); Herald
//! validates them into domain events ([`core`]), commits the event, the
//! batch state and the outbox rows in one transaction ([`ingest`],
//! [`store`]), and the dispatcher delivers signed webhooks from the outbox
//! ([`deliver`]). [`app`] wires it together; [`cli`] is the command line.

pub mod api;
pub mod app;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod core;
pub mod deliver;
pub mod feed;
pub mod fleet;
pub mod ingest;
pub mod memory;
pub mod metrics;
pub mod monitor;
pub mod ops;
pub mod registry;
pub mod reload;
pub mod retention;
pub mod store;
pub mod telemetry;
