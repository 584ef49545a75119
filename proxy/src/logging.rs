//! Logs: lifecycle and errors on stderr, the access log on stdout (one line per
//! request, the Kubernetes way), JSON or text. pingora's `log` records reach the
//! same stream through tracing-log, which `init()` installs.

use crate::config::{LogFormat, Logging};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

/// The target of access log events: `tracing::info!(target: ACCESS, ...)`.
pub const ACCESS: &str = "access";

/// Install the global subscriber. `EDGE_PROXY_LOG` filters the lifecycle logs
/// (default `info`); the access log is governed by `logging.access` alone.
pub fn init(logging: Logging) {
    let filter =
        EnvFilter::try_from_env("EDGE_PROXY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let not_access = filter_fn(|m| m.target() != ACCESS);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lifecycle = match logging.format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(not_access)
    .with_filter(filter);

    let only_access = || filter_fn(|m| m.target() == ACCESS);
    let access = logging.access.map(|format| match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(false)
            .with_writer(std::io::stdout)
            .with_filter(only_access())
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_ansi(false)
            .with_target(false)
            .with_writer(std::io::stdout)
            .with_filter(only_access())
            .boxed(),
    });

    // A second init (tests) is harmless: the first subscriber stays.
    let _ = tracing_subscriber::registry()
        .with(lifecycle)
        .with(access)
        .try_init();
}
