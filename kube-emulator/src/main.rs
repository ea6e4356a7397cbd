use clap::Parser;
use kube_emulator::{AccessPolicy, Emulator};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A wire-faithful Kubernetes API emulator with simulated (KWOK-style) pod lifecycles.
#[derive(Debug, Parser)]
#[command(name = "kube-emulator", version)]
struct Args {
    /// Address to listen on (loopback recommended).
    #[arg(long, env = "KUBE_EMULATOR_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Write a kubeconfig for this cluster to FILE.
    #[arg(long, env = "KUBE_EMULATOR_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Bearer token clients must present (random when omitted).
    #[arg(long, env = "KUBE_EMULATOR_TOKEN")]
    token: Option<String>,
    /// Accept requests without a token.
    #[arg(long)]
    no_auth: bool,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    no_tls: bool,
    /// Simulated seconds per real second (e.g. 10 makes lifecycles ten times faster).
    #[arg(long, env = "KUBE_EMULATOR_SCENARIO_SPEED", default_value_t = 1.0)]
    scenario_speed: f64,
    /// Extra namespaces to create at start (comma separated).
    #[arg(
        long,
        env = "KUBE_EMULATOR_NAMESPACES",
        value_delimiter = ',',
        default_value = "hivegraph"
    )]
    namespaces: Vec<String>,
    /// Access policy: admin, read-only, or deploy-only:ns1,ns2.
    #[arg(long, default_value = "admin")]
    access: String,
    /// Install the ToolHive CRDs (MCPServer, MCPRemoteProxy) and run a simulated ToolHive operator.
    #[arg(long, env = "KUBE_EMULATOR_TOOLHIVE_OPERATOR")]
    toolhive_operator: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let policy = match args.access.as_str() {
        "admin" => AccessPolicy::Admin,
        "read-only" | "readonly" => AccessPolicy::ReadOnly,
        other => match other.strip_prefix("deploy-only:") {
            Some(list) => AccessPolicy::DeployOnly(list.split(',').map(String::from).collect()),
            None => anyhow::bail!(
                "unknown --access {other:?}: use admin, read-only or deploy-only:ns1,ns2"
            ),
        },
    };
    let mut b = Emulator::builder()
        .listen(args.listen)
        .tls(!args.no_tls)
        .speed(args.scenario_speed)
        .namespaces(args.namespaces.iter().filter(|n| !n.is_empty()).cloned())
        .policy(policy)
        .toolhive_operator(args.toolhive_operator);
    if args.no_auth {
        b = b.token(None);
    } else if let Some(t) = args.token {
        b = b.token(Some(t));
    }
    let emu = b.start().await?;
    if let Some(path) = &args.kubeconfig {
        emu.write_kubeconfig(path)?;
        eprintln!("kube-emulator: wrote kubeconfig {}", path.display());
    }
    println!(
        "kube-emulator: serving the simulated cluster at {}",
        emu.url()
    );
    println!(
        "kube-emulator: scenario speed x{}; press Ctrl-C to stop",
        args.scenario_speed
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("kube-emulator: stopping");
    Ok(())
}
