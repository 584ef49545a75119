//! edge-proxy: the command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_proxy::{
    access_log, admin, config, connections, drain, gateway, ingress, logging, metrics, proxy,
    reload, state, tls,
};
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

// mimalloc, called the way it is fastest (allocator.rs).
#[global_allocator]
static GLOBAL: edge_proxy::allocator::MiMalloc = edge_proxy::allocator::MiMalloc;

#[derive(Parser)]
#[command(
    name = "edge-proxy",
    version,
    about = "A reverse proxy for small Kubernetes clusters"
)]
struct Cli {
    /// The configuration file (before or after a subcommand).
    #[arg(long, global = true, default_value = "/etc/edge-proxy/proxy.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file: exit 0, or print every problem and exit 1.
    #[command(
        long_about = "Validate a configuration file as the proxy would load it: every key and \
                      value, and the certificate and key files that `tls` names. Exit 0 and \
                      print `FILE: ok (N routes)`, or print every problem, each naming its \
                      field (`routes[2].port: ...`), to stderr and exit 1. Reads nothing \
                      else: no API server, no DNS."
    )]
    Check {
        /// The configuration file to validate (YAML, at most 1 MiB).
        file: PathBuf,
    },
    /// What edge-proxy would serve of these Ingresses (offline): per Ingress,
    /// its routes, what differs from ingress-nginx, what is ignored or
    /// refused. Exit 0 when all are served as written, 1 otherwise.
    #[command(
        name = "ingress-check",
        long_about = "What edge-proxy would serve of these Ingresses, offline: no API server, \
                      no certificates read. FILE holds Ingresses as YAML or JSON (several \
                      documents, or a List as `kubectl get ingress -A -o yaml` prints); `-` \
                      reads standard input. Every Ingress is checked as if it were of our \
                      class. Per Ingress: each route (host, path, backends, what it does), \
                      where an annotation differs from ingress-nginx, what is ignored, what \
                      is refused, and conflicts. Exit 0 when every Ingress is served as \
                      written, 1 when any is served differently or not at all, 2 when the \
                      input cannot be read."
    )]
    IngressCheck {
        /// Files of Ingresses (`-`: standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Ask the running proxy's admin listener (from --config) for /readyz:
    /// exit 0 when ready. A container HEALTHCHECK with no shell in the image.
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { file }) => {
            let checked = config::load(&file).and_then(|loaded| {
                // The certificate files too: a proxy would not start on them.
                let problems = tls::file_problems(&loaded.config.tls);
                if problems.is_empty() {
                    Ok(loaded)
                } else {
                    Err(config::ConfigError {
                        source_name: file.display().to_string(),
                        problems,
                    })
                }
            });
            match checked {
                Ok(loaded) => {
                    println!(
                        "{}: ok ({} routes)",
                        file.display(),
                        loaded.config.routes.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::IngressCheck { files }) => {
            let mut inputs = Vec::new();
            for file in &files {
                let read = if file.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())
                } else {
                    std::fs::read_to_string(file)
                };
                match read {
                    Ok(text) => inputs.push((file.display().to_string(), text)),
                    Err(e) => {
                        eprintln!("edge-proxy ingress-check: {}: {e}", file.display());
                        return ExitCode::from(2);
                    }
                }
            }
            match ingress::check::check(&inputs) {
                Ok(report) => {
                    print!("{}", report.text);
                    if report.as_written {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("edge-proxy ingress-check: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Health) => {
            let admin = config::load(&cli.config)
                .map_err(|e| e.to_string())
                .and_then(|loaded| {
                    loaded.config.admin.ok_or_else(|| {
                        format!("{}: no `admin` address to ask", cli.config.display())
                    })
                });
            match admin.and_then(admin::probe_ready) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("edge-proxy health: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => match run(&cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edge-proxy: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config::Loaded { config, hash } = config::load(path)?;
    logging::init(config.logging);
    let listen = config.listen.clone();
    let admin_addr = config.admin;
    let threads = config.threads;

    // The control plane (discovery watches, reloads) runs on a runtime of its
    // own, apart from the proxy's threads, for the life of the process.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("control")
        .enable_all()
        .build()
        .context("starting the control-plane runtime")?;
    // The first snapshot is built before serving: a proxy that cannot reach its
    // discovery at start-up says so and exits instead of answering 503s.
    // With `ingress:`, its routes join once the Ingresses are listed.
    let mut waiting = Vec::new();
    if config.ingress.is_some() {
        waiting.push(state::SourceId::Ingress);
    }
    if config.gateway.is_some() {
        waiting.push(state::SourceId::Gateway);
    }
    let (snapshot, publisher) =
        control.block_on(state::Publisher::start(config.clone(), &waiting))?;
    let publisher = Arc::new(publisher);

    reload::record_loaded(hash, 1);
    metrics::publish_memory_limit();
    // SIGTERM: pingora stops accepting at once, lets in-flight requests run for
    // the grace period, then gives its runtimes one more second to exit.
    let drain_seconds = config.drain_timeout.as_secs_f64().ceil() as u64;
    let conf = ServerConf {
        threads,
        // Idle upstream connections kept for reuse, all upstreams together.
        // pingora's 128 is below what 512 busy clients keep in flight: each
        // request past it opened a new upstream connection and closed it after.
        upstream_keepalive_pool_size: 1024,
        // Each worker its own single-threaded runtime (nginx's model): it
        // runs ready connections first come, first served, where one
        // work-stealing worker kept 256 in its local queue and left the rest
        // to a queue it checks one turn in 61 (p99 at 512 clients 2.5x
        // lower), and no stealing is cheaper per request (~5%). Accepted
        // connections are dealt to the workers in turn, and each worker keeps
        // its own upstream connections (the pingora patches in third_party).
        work_stealing: false,
        grace_period_seconds: Some(drain_seconds),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Shutdown work registers here; the drain thread runs it (drain.rs).
    let hooks = Arc::new(drain::ShutdownHooks::default());
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    hooks.add({
        let draining = draining.clone();
        move || draining.store(true, std::sync::atomic::Ordering::Relaxed)
    });
    let mut proxy = pingora::proxy::HttpProxy::new(
        proxy::EdgeProxy::new(snapshot.clone(), draining),
        server.configuration.clone(),
    );
    proxy.handle_init_modules();
    // HTTP/2 without TLS too (h2c with prior knowledge: gRPC clients on
    // plain channels); HTTP/1.1 requests are unaffected.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    proxy.server_options = Some(options);
    // Keep idle keep-alive connections for half the drain time after SIGTERM,
    // so busy ones are closed between requests instead (see drain.rs).
    let linger = config.drain_timeout / 2;
    // Outermost first: a slot per client connection, a deadline per request
    // head, then pingora's proxy.
    let app = connections::ConnectionLimit::new(
        connections::HeaderDeadline::new(proxy, snapshot.clone()),
        config.limits.max_connections,
        config.limits.header_timeout,
        snapshot.clone(),
        linger,
    );
    let mut proxy = Service::new("edge-proxy".to_string(), app);
    // SO_REUSEPORT: a new proxy can bind the same port while the old one drains.
    let mut sock = TcpSocketOptions::default();
    sock.so_reuseport = Some(true);
    // No L4 read buffer on plain HTTP: pingora's default is a 64 KiB buffer per
    // client connection, allocated (and zeroed) at accept and held while the
    // connection idles: 96 KiB of RSS per idle keep-alive client. The HTTP/1
    // parser reads into its own header buffer, so nothing is read twice.
    proxy.add_listener(
        ListenerConfig::tcp(listen.http.to_string())
            .tcp_socket_options(sock.clone())
            .l4_buffer(L4BufferSettings::default().read(0)),
    );
    // HTTPS: certificates by SNI from a resolver that reloads can update;
    // HTTP/2 and HTTP/1.1 offered by ALPN.
    let certs = match listen.https {
        Some(https) => {
            let store = tls::CertStore::load(&config.tls)?;
            let resolver = Arc::new(tls::SniResolver::new(store));
            let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
                .context("TLS settings")?;
            settings.set_cert_resolver(resolver.clone());
            settings.enable_h2();
            // No L4 read buffer here either: rustls keeps its own buffer of
            // TLS records, so pingora's 64 KiB one only doubled it.
            proxy.add_listener(
                ListenerConfig::tcp(https.to_string())
                    .tcp_socket_options(sock)
                    .tls(settings)
                    .l4_buffer(L4BufferSettings::default().read(0)),
            );
            Some(resolver)
        }
        None => None,
    };
    server.add_service(proxy);

    if let Some(addr) = admin_addr {
        let mut admin = Service::new(
            "admin".to_string(),
            pingora::apps::http_app::HttpServer::new_app(admin::Admin::new(snapshot.clone())),
        );
        // SO_REUSEPORT here too: a replacement proxy binds the admin port as well.
        let mut sock = TcpSocketOptions::default();
        sock.so_reuseport = Some(true);
        admin.add_tcp_with_settings(&addr.to_string(), sock);
        server.add_service(admin);
    }

    if let Some(settings) = config.ingress.clone() {
        control.block_on(ingress::start(
            settings,
            publisher.clone(),
            certs.clone(),
            hooks.clone(),
        ))?;
    }
    if let Some(settings) = config.gateway.clone() {
        let ports = gateway::translate::Ports {
            http: listen.http.port(),
            https: listen.https.map(|a| a.port()),
        };
        control.block_on(gateway::start(
            settings,
            ports,
            publisher.clone(),
            certs.clone(),
            hooks.clone(),
        ))?;
    }
    control.spawn(reload::Reloader::new(path.to_path_buf(), publisher, config, hash, certs).run());

    drain::exit_when_drained(&server, linger, hooks);
    let admin = admin_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(http = %listen.http, %admin, version = env!("CARGO_PKG_VERSION"), "edge-proxy starting");
    server.run(pingora::server::RunArgs::default());
    access_log::flush();
    Ok(())
}
