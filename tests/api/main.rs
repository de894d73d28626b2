//! Integration tests: a real Herald server, a real SQLite file, real HTTP
//! receivers, all on loopback.

mod admin;
mod auth;
mod bench;
mod bounds;
mod browser;
mod cli;
mod console;
mod delivery;
mod egress;
mod email;
mod gates;
mod git;
mod helpers;
mod ingest;
mod integrations;
mod monitor;
mod openlineage;
mod ops;
mod ordering;
mod projects;
mod properties;
mod python;
mod query;
mod readme;
mod reload;
mod restart;
mod retention;
mod silences;
mod smtp;
mod store_full;
mod subscriptions;
mod tls;
mod validation;
mod watch;
