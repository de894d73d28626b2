//! The `herald` command: parse the command line and hand over to `cli`.

use std::process::ExitCode;

/// mimalloc for Rust's allocations: glibc's malloc cost a third of the
/// delivery path's CPU (arena locks, consolidating free lists) — see the
/// README's "where the time goes". SQLite allocates through the C library
/// still, with the thresholds `memory` sets.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    herald::memory::return_freed_memory();
    herald::cli::run().await
}
