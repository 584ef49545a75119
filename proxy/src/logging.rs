//! Lifecycle and error logs on stderr, JSON or text, through tracing. pingora
//! logs through the `log` crate; [`PingoraLogs`] re-emits its records as
//! tracing events (target `pingora`), so that they share the stream and the
//! filter, and so that what they carry follows our rules: no query string
//! (a URI's `?...` is cut), and what a client causes (a TLS probe, a closed
//! connection) at debug, not error. The access log (stdout) is written by
//! `access_log`.

use crate::config::{LogFormat, Logging};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{fmt, Layer};

/// Install the global subscriber (`EDGE_PROXY_LOG` filters it, default `info`),
/// pingora's log bridge, and the access log (`logging.access`).
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
    if tracing::subscriber::set_global_default(tracing_subscriber::registry().with(lifecycle))
        .is_ok()
        && log::set_boxed_logger(Box::new(PingoraLogs)).is_ok()
    {
        // pingora's debug! and trace! on the request path are not even
        // formatted unless the filter lets that level through.
        log::set_max_level(match LevelFilter::current().into_level() {
            None => log::LevelFilter::Off,
            Some(tracing::Level::ERROR) => log::LevelFilter::Error,
            Some(tracing::Level::WARN) => log::LevelFilter::Warn,
            Some(tracing::Level::INFO) => log::LevelFilter::Info,
            Some(tracing::Level::DEBUG) => log::LevelFilter::Debug,
            Some(tracing::Level::TRACE) => log::LevelFilter::Trace,
        });
    }
}

/// pingora's `log` records, re-emitted through tracing (see the module comment).
struct PingoraLogs;

impl log::Log for PingoraLogs {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let message = without_queries(&without_heads(record.args().to_string()));
        let level = if caused_by_client(&message) {
            log::Level::Debug
        } else {
            record.level()
        };
        let module = record.target();
        match level {
            log::Level::Error => tracing::error!(target: "pingora", module, "{message}"),
            log::Level::Warn => tracing::warn!(target: "pingora", module, "{message}"),
            log::Level::Info => tracing::info!(target: "pingora", module, "{message}"),
            log::Level::Debug => tracing::debug!(target: "pingora", module, "{message}"),
            log::Level::Trace => tracing::trace!(target: "pingora", module, "{message}"),
        }
    }

    fn flush(&self) {}
}

/// pingora's debug lines quote whole message heads (a head it could not
/// parse as raw bytes, parsed ones as `RequestHeader { .. headers .. }`):
/// cookies, tokens in headers. The quote is cut.
fn without_heads(mut message: String) -> String {
    const QUOTES: &[&str] = &["buf: ", "RequestHeader {", "ResponseHeader {", "headers: {"];
    if let Some(at) = QUOTES.iter().filter_map(|q| message.find(q)).min() {
        message.truncate(at);
        message.push_str("(the message head is not logged)");
    }
    message
}

/// What a client does to its own connection, which pingora logs as an error:
/// a TLS or HTTP/2 handshake that fails (scanners, probes, a client that
/// gives up), a connection closed or reset under a request.
fn caused_by_client(message: &str) -> bool {
    const CLIENT: &[&str] = &[
        "Downstream handshake error",
        "H2 handshake error",
        "Downstream ConnectionClosed",
        "Downstream ReadError",
        "Downstream WriteError",
        "Downstream ReadTimedout",
        "Downstream WriteTimedout",
        "Connection reset by peer",
        "Broken pipe",
    ];
    CLIENT.iter().any(|c| message.contains(c))
}

/// `message` with the query of every URI in it cut (`GET /a?token=x,` ->
/// `GET /a?…,`): a path or an absolute URI up to the next space or comma.
fn without_queries(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let uri =
            word.starts_with('/') || word.starts_with("http://") || word.starts_with("https://");
        match word.find('?').filter(|_| uri) {
            Some(q) => {
                out.push_str(&word[..=q]);
                out.push('…');
                if word.ends_with(',') {
                    out.push(',');
                }
            }
            None => out.push_str(word),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_cut_from_uris_and_nothing_else() {
        assert_eq!(
            without_queries("Fail to proxy: x, GET /?token=SECRET123, Host: a.test"),
            "Fail to proxy: x, GET /?…, Host: a.test"
        );
        assert_eq!(
            without_queries("GET https://a.test/p?q=1 HTTP/1.1"),
            "GET https://a.test/p?… HTTP/1.1"
        );
        assert_eq!(without_queries("what? no uri"), "what? no uri");
    }

    #[test]
    fn message_heads_are_cut() {
        assert_eq!(
            without_heads("Sending header to upstream RequestHeader { base: .. cookie .. }".into()),
            "Sending header to upstream (the message head is not logged)"
        );
        assert_eq!(
            without_heads("Fail to proxy: InvalidHTTPHeader context: buf: GET /?a HTTP/1.1".into()),
            "Fail to proxy: InvalidHTTPHeader context: (the message head is not logged)"
        );
        assert_eq!(without_heads("no quote".into()), "no quote");
    }

    #[test]
    fn client_faults_are_recognized() {
        assert!(caused_by_client(
            "Downstream handshake error from 1.2.3.4:5: bad"
        ));
        assert!(caused_by_client("H2 handshake error invalid preface"));
        assert!(!caused_by_client("Fail to proxy: Upstream ConnectRefused"));
    }
}
