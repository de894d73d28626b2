//! The `herald` command: parse the command line and hand over to `cli`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    herald::memory::return_freed_memory();
    herald::cli::run().await
}
