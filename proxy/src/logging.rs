//! Lifecycle and error logs on stderr, JSON or text, through tracing; pingora's
//! `log` records reach the same stream through tracing-log, which `init()`
//! installs. The access log (stdout) is written by `access_log`.

use crate::config::{LogFormat, Logging};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

/// Install the global subscriber (`EDGE_PROXY_LOG` filters it, default `info`)
/// and the access log (`logging.access`).
pub fn init(logging: Logging) {
    crate::access_log::init(logging.access);
    let filter =
        EnvFilter::try_from_env("EDGE_PROXY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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
    .with_filter(filter);

    // A second init (tests) is harmless: the first subscriber stays.
    let _ = tracing_subscriber::registry().with(lifecycle).try_init();
}
