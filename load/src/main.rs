//! The `hearth-load` binary: parse the scenario, run it against a server, report plainly.

use clap::Parser;
use hearth_load::{run, LoadArgs};

#[derive(Debug, Parser)]
#[command(
    name = "hearth-load",
    version,
    about = "Load-test a running homeserver or relay over HTTP (127.0.0.1 only): put, replay, live, idle, slow, relay-catchup, relay-live"
)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse().load).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hearth-load: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
