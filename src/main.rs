//! The `hearth` binary: parse the command line, run it, report errors plainly.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = hearth::cli::Cli::parse();
    hearth::logging::init(cli.log_format);
    match hearth::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hearth: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
