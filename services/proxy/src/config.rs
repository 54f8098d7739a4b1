//! The proxy's configuration, from `REINADO_*` environment variables (see [`VARIABLES`]).

pub use reinado_client::envconfig::{ConfigError, Variable};
use reinado_client::envconfig::{default_of, parse_addrs, parse_listen, positive, var};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Every `REINADO_*` variable the proxy reads.
pub const VARIABLES: &[Variable] = &[
    var(
        "REINADO_LISTEN",
        "127.0.0.1:7000",
        "Where to listen for clients (Kv, Cluster, etcd's v3 API, health).",
    ),
    var(
        "REINADO_NODES",
        "127.0.0.1:7070",
        "Client addresses of one or more nodes, comma-separated. The other members are learned from their status.",
    ),
    var(
        "REINADO_REQUEST_TIMEOUT_MS",
        "10000",
        "The longest a request may take, retries included (a shorter client deadline wins).",
    ),
    var(
        "REINADO_ATTEMPT_TIMEOUT_MS",
        "2000",
        "The longest one try on one node may take before the proxy retries elsewhere.",
    ),
    var(
        "REINADO_STATUS_INTERVAL_MS",
        "250",
        "How often the proxy asks every node for its status (leader, health, members).",
    ),
    var(
        "REINADO_MAX_CONCURRENT_REQUESTS",
        "1024",
        "Requests served at once per client connection; more wait.",
    ),
    var(
        "REINADO_MAX_REQUEST_BYTES",
        "2097152",
        "The largest gRPC request accepted.",
    ),
];

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
struct Raw {
    listen: String,
    nodes: String,
    request_timeout_ms: u64,
    attempt_timeout_ms: u64,
    status_interval_ms: u64,
    max_concurrent_requests: u64,
    max_request_bytes: u64,
}

impl Default for Raw {
    fn default() -> Self {
        let d = |name: &str| default_of(VARIABLES, name);
        let num = |name: &str| d(name).parse::<u64>().expect("numeric default");
        Raw {
            listen: d("REINADO_LISTEN"),
            nodes: d("REINADO_NODES"),
            request_timeout_ms: num("REINADO_REQUEST_TIMEOUT_MS"),
            attempt_timeout_ms: num("REINADO_ATTEMPT_TIMEOUT_MS"),
            status_interval_ms: num("REINADO_STATUS_INTERVAL_MS"),
            max_concurrent_requests: num("REINADO_MAX_CONCURRENT_REQUESTS"),
            max_request_bytes: num("REINADO_MAX_REQUEST_BYTES"),
        }
    }
}

/// The proxy's validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The seed nodes' client addresses.
    pub nodes: Vec<String>,
    /// A request's overall deadline.
    pub request_timeout: Duration,
    /// One attempt's deadline.
    pub attempt_timeout: Duration,
    /// The status poll period.
    pub status_interval: Duration,
    /// Requests served at once per connection.
    pub max_concurrent_requests: usize,
    /// The largest request.
    pub max_request_bytes: usize,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// Reads the configuration from `vars`; anything not starting with `REINADO_` is ignored.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let raw: Raw = reinado_client::envconfig::parse(VARIABLES, "reinado-proxy", vars)?;
        for (name, v) in [
            ("REINADO_REQUEST_TIMEOUT_MS", raw.request_timeout_ms),
            ("REINADO_ATTEMPT_TIMEOUT_MS", raw.attempt_timeout_ms),
            ("REINADO_STATUS_INTERVAL_MS", raw.status_interval_ms),
            (
                "REINADO_MAX_CONCURRENT_REQUESTS",
                raw.max_concurrent_requests,
            ),
            ("REINADO_MAX_REQUEST_BYTES", raw.max_request_bytes),
        ] {
            positive(name, v)?;
        }
        Ok(Config {
            listen: parse_listen("REINADO_LISTEN", &raw.listen)?,
            nodes: parse_addrs("REINADO_NODES", &raw.nodes)?,
            request_timeout: Duration::from_millis(raw.request_timeout_ms),
            attempt_timeout: Duration::from_millis(raw.attempt_timeout_ms),
            status_interval: Duration::from_millis(raw.status_interval_ms),
            max_concurrent_requests: raw.max_concurrent_requests as usize,
            max_request_bytes: raw.max_request_bytes as usize,
        })
    }
}

/// The text `reinado-proxy --help` prints.
pub fn help() -> String {
    let mut out = String::from(
        "reinado-proxy: routes writes to the leader and reads to followers of a Reinado cluster.\n\n\
         Usage:\n  reinado-proxy                 run the proxy, configured from the environment\n  \
         reinado-proxy health [ADDR]   exit 0 if the proxy at ADDR (default: REINADO_LISTEN) knows a reachable leader\n  \
         reinado-proxy check-config    validate the environment and print the configuration\n\n\
         Environment (with defaults):\n",
    );
    out.push_str(&reinado_client::envconfig::help_table(VARIABLES));
    out.push_str(
        "  RUST_LOG = info\n      Log filter (tracing EnvFilter syntax).\n  \
         OTEL_EXPORTER_OTLP_ENDPOINT = (none)\n      Export traces over OTLP/gRPC to this endpoint, e.g. http://jaeger:4317.\n  \
         OTEL_SERVICE_NAME = reinado-proxy\n      The service name traces carry.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_and_errors() {
        let cfg = config(&[]).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(cfg.nodes, ["127.0.0.1:7070"]);
        let cfg = config(&[("REINADO_NODES", "n1:7070, n2:7070")]).unwrap();
        assert_eq!(cfg.nodes, ["n1:7070", "n2:7070"]);
        assert_eq!(
            config(&[("REINADO_NODE", "x:1")]).unwrap_err().var,
            "REINADO_NODE"
        );
        assert_eq!(
            config(&[("REINADO_NODES", "x")]).unwrap_err().var,
            "REINADO_NODES"
        );
        assert_eq!(
            config(&[("REINADO_ATTEMPT_TIMEOUT_MS", "0")])
                .unwrap_err()
                .var,
            "REINADO_ATTEMPT_TIMEOUT_MS"
        );
        assert_eq!(
            config(&[("REINADO_LISTEN", "nope")]).unwrap_err().var,
            "REINADO_LISTEN"
        );
    }

    #[test]
    fn the_readme_documents_every_variable() {
        let readme = include_str!("../../../README.md");
        for v in VARIABLES {
            let row = format!("| `{}` | `{}` |", v.name, v.default);
            assert!(readme.contains(&row), "README.md has no table row `{row}`");
        }
    }
}
