use std::process::ExitCode;

use clap::Parser;
use triggers_server::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"))
                // tokio-postgres logs every statement's parameters at debug level, API
                // keys and payloads among them: never, whatever RUST_LOG says.
                .add_directive(
                    "tokio_postgres::query=warn"
                        .parse()
                        .expect("a valid directive"),
                ),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("triggers: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The embedded cluster is spawned from this (the main) thread inside block_on; its
    // parent-death signal is tied to this thread, which lives until the process exits.
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => triggers_server::serve::serve(args).await,
            Command::Worker(args) => triggers_server::serve::worker(args).await,
            Command::Keys(command) => triggers_server::commands::keys(command).await,
            Command::Endpoints(command) => triggers_server::commands::endpoints(command).await,
            Command::Send(args) => triggers_server::commands::send(args).await,
            Command::Metrics(args) => triggers_server::commands::metrics(args).await,
            Command::Tail(args) => triggers_server::commands::tail(args).await,
            Command::Partitions(command) => triggers_server::partitions::partitions(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triggers: error: {e}");
            ExitCode::FAILURE
        }
    }
}
