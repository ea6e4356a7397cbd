use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // kube and reqwest share rustls; pick its crypto provider before either builds a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    hivegraph::telemetry::init();
    match hivegraph::cli::run(hivegraph::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hivegraph: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
