use clap::Parser;

/// The executor allocates a future, a map and a value per field; mimalloc serves that pattern
/// with far less CPU than glibc's malloc (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // kube and reqwest share rustls; pick its crypto provider before either builds a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    hivegraph::telemetry::init();
    let result = hivegraph::cli::run(hivegraph::cli::Cli::parse()).await;
    // The batch exporter blocks while it flushes: not on a runtime thread.
    let _ = tokio::task::spawn_blocking(hivegraph::telemetry::shutdown).await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hivegraph: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
