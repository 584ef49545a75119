//! edge-proxy: the command line.

mod admin;
mod affinity;
mod config;
mod discovery;
mod proxy;
mod routing;
mod state;
mod upstream;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use pingora::listeners::TcpSocketOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "edge-proxy",
    version,
    about = "A reverse proxy for small Kubernetes clusters"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, default_value = "/etc/edge-proxy/proxy.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file: exit 0, or print every problem and exit 1.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { file }) => match config::load(&file) {
            Ok(c) => {
                println!("{}: ok ({} routes)", file.display(), c.routes.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        None => {
            init_logging();
            match run(&cli.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("edge-proxy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("EDGE_PROXY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::load(path)?;
    let listen = config.listen.clone();
    let admin_addr = config.admin;
    let threads = config.threads;

    // The first snapshot is built before serving: a proxy that cannot discover
    // its upstreams at start-up says so and exits instead of answering 503s.
    let initial = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the start-up runtime")?
        .block_on(state::Snapshot::build(config, None))?;
    let snapshot: state::SharedSnapshot = Arc::new(ArcSwap::from_pointee(initial));

    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(5),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        proxy::EdgeProxy::new(snapshot.clone()),
        "edge-proxy",
    );
    // SO_REUSEPORT: a new proxy can bind the same port while the old one drains.
    let mut sock = TcpSocketOptions::default();
    sock.so_reuseport = Some(true);
    proxy.add_tcp_with_settings(&listen.http.to_string(), sock);
    server.add_service(proxy);

    if let Some(addr) = admin_addr {
        let mut admin = Service::new(
            "admin".to_string(),
            pingora::apps::http_app::HttpServer::new_app(admin::Admin::new(snapshot.clone())),
        );
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }

    tracing::info!(http = %listen.http, admin = ?admin_addr, "edge-proxy starting");
    server.run(pingora::server::RunArgs::default());
    Ok(())
}
