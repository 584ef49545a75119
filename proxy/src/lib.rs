//! edge-proxy: a reverse proxy for small Kubernetes clusters, on pingora.
//!
//! The binary (`main.rs`) is the command line; everything it runs lives here,
//! a module per concern, so that fuzz targets and benchmarks reach the same code.

#[cfg(feature = "server")]
pub mod access_log;
#[cfg(feature = "server")]
pub mod admin;
pub mod affinity;
#[cfg(feature = "server")]
pub mod allocator;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod client_limits;
pub mod config;
#[cfg(feature = "server")]
pub mod connections;
#[cfg(feature = "server")]
pub mod discovery;
#[cfg(feature = "server")]
pub mod drain;
#[cfg(feature = "server")]
pub mod error_pages;
#[cfg(feature = "server")]
pub mod forwarding;
#[cfg(feature = "server")]
pub mod gateway;
#[cfg(feature = "server")]
pub mod ingress;
#[cfg(feature = "server")]
pub mod kube;
#[cfg(feature = "server")]
pub mod logging;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod mirror;
#[cfg(feature = "server")]
pub mod policy;
#[cfg(feature = "server")]
pub mod problems;
#[cfg(feature = "server")]
pub mod proxy;
#[cfg(feature = "server")]
pub mod reload;
pub mod route;
#[cfg(feature = "server")]
pub mod state;
#[cfg(feature = "server")]
pub mod subrequest;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod upstream;
