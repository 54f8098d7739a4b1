//! The `reinado` command line: argument parsing and dispatch.
//!
//! ## Layout
//! - `mod.rs`: the arguments and [`run`].
//! - `kv.rs`: put, get, del, range, cas, watch, log.
//! - `cluster.rs`: status, member, leader, fault, health.
//! - `lease.rs`: lease grant, revoke, keep-alive, ttl, list, and put with a lease (etcd's v3 API).
//! - `coord.rs`: lock and elect (etcd's v3 Lock and Election), under a session lease.
//! - `bench.rs`: the closed-loop benchmark; `bench_api.rs`: what it sends through, Reinado's API or etcd's.
//! - `menu.rs`: the interactive menu.
//! - `output.rs`: tables, JSON, errors and exit codes.

mod bench;
mod bench_api;
mod cluster;
mod coord;
mod kv;
mod lease;
mod menu;
mod output;

use clap::{Parser, Subcommand, ValueEnum};
use output::Out;
use reinado_client::etcd::parse_lease_hex;
use reinado_client::{Client, ClientOptions, EtcdClient};
use std::time::Duration;
use tracing::Instrument;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "reinado",
    version,
    about = "Client for Reinado, a key-value store replicated with Raft.",
    after_help = "Exit codes: 0 done, 1 failed, 2 bad usage, 3 cluster unavailable, 4 not found, 5 invalid request, 6 quota reached, 7 compare-and-swap did not swap, 8 not serving (`health`).\nRun `reinado menu` for an interactive menu."
)]
pub struct Args {
    /// Proxies or nodes to talk to (host:port, comma-separated); the client fails over between them.
    #[arg(
        long,
        env = "REINADO_ENDPOINTS",
        default_value = "127.0.0.1:7000,127.0.0.1:7070",
        value_delimiter = ',',
        global = true
    )]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(
        long,
        short,
        value_enum,
        env = "REINADO_OUTPUT",
        default_value = "table",
        global = true
    )]
    pub output: Format,
    /// Give up on a request after this many milliseconds (retries included).
    #[arg(
        long,
        env = "REINADO_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub timeout_ms: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-friendly tables.
    Table,
    /// One JSON document per result, for scripts.
    Json,
}

/// Read consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    /// Sees every write acknowledged before the read (ReadIndex).
    Linearizable,
    /// Served from the answering node's state at once; may be stale.
    Serializable,
}

impl From<ConsistencyArg> for reinado_proto::v1::Consistency {
    fn from(c: ConsistencyArg) -> Self {
        match c {
            ConsistencyArg::Linearizable => Self::Linearizable,
            ConsistencyArg::Serializable => Self::Serializable,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set a key's value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Attach the key to this lease (hex ID): it is deleted with the lease. Sent as etcd's KV.Put.
        #[arg(long, value_parser = parse_lease_hex)]
        lease: Option<i64>,
    },
    /// Read a key (exit code 4 if it does not exist).
    Get {
        /// The key.
        key: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ConsistencyArg,
    },
    /// Delete a key.
    #[command(alias = "delete", alias = "rm")]
    Del {
        /// The key.
        key: String,
    },
    /// List keys under a prefix, or in [--start, --end).
    #[command(alias = "ls")]
    Range {
        /// The prefix (all keys if omitted).
        prefix: Option<String>,
        /// First key, inclusive (instead of a prefix).
        #[arg(long, conflicts_with = "prefix")]
        start: Option<String>,
        /// Last key, exclusive.
        #[arg(long, conflicts_with = "prefix")]
        end: Option<String>,
        /// The most keys to list (0: the server's limit).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// List keys without values.
        #[arg(long)]
        keys_only: bool,
        /// Read consistency.
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ConsistencyArg,
    },
    /// Compare-and-swap: set KEY to NEW only if its value is --expect (or it is --absent); exit code 7 if not.
    Cas {
        /// The key.
        key: String,
        /// The new value.
        new: String,
        /// The value the key must have.
        #[arg(long, required_unless_present = "absent")]
        expect: Option<String>,
        /// The key must not exist.
        #[arg(long, conflicts_with = "expect")]
        absent: bool,
    },
    /// Print changes to a key or prefix as they happen.
    Watch {
        /// The key (or prefix, with --prefix).
        key: String,
        /// Watch every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start at this revision (0: changes from now on).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many events (0: never).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Stop after this many seconds (0: never).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
    },
    /// Show the committed operation at a log index.
    Log {
        /// The index.
        index: u64,
    },
    /// Show the cluster: every member's role, term, commit, applied index, lag and health.
    Status,
    /// Add, remove or list members.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Leadership.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Inject a fault into one node (it must run with REINADO_FAULT_INJECTION=true).
    Fault {
        /// The node's client address.
        #[arg(long)]
        node: String,
        /// The fault.
        #[command(subcommand)]
        fault: FaultCommand,
    },
    /// Exit 0 if the process at ADDR (default: the first endpoint) is healthy; for container health checks.
    Health {
        /// The address to check.
        addr: Option<String>,
        /// Also require that it serves clients (knows a leader and caught up).
        #[arg(long)]
        ready: bool,
    },
    /// Leases (etcd's v3 Lease API; IDs in hex).
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Take a lock (etcd's v3 Lock) under a session lease; print its key and fencing token; run COMMAND while
    /// holding it (exit code: the command's), or hold until Ctrl-C; then unlock.
    Lock {
        /// The lock's name.
        name: String,
        /// The session lease's TTL in seconds (it is kept alive while the lock is held).
        #[arg(long, default_value_t = 10)]
        ttl: i64,
        /// The command to run while holding the lock (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Campaign in an election (etcd's v3 Election) under a session lease; print when elected, hold until
    /// Ctrl-C, then resign. With --listen, print each leader's proposal instead.
    Elect {
        /// The election's name.
        name: String,
        /// What this candidate proposes (its value while it leads).
        #[arg(required_unless_present = "listen")]
        proposal: Option<String>,
        /// Observe the election: print each leader's proposal.
        #[arg(long, conflicts_with = "proposal")]
        listen: bool,
        /// The session lease's TTL in seconds.
        #[arg(long, default_value_t = 10)]
        ttl: i64,
    },
    /// Closed-loop load generator: throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// An interactive menu.
    Menu,
}

/// Membership commands.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a node (as a learner, promoted to voter once caught up unless --learner).
    Add {
        /// Its id.
        id: u64,
        /// Its peer address (host:port).
        peer_addr: String,
        /// Its client address (host:port).
        #[arg(long, default_value = "")]
        client_addr: String,
        /// Keep it a learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node.
    Remove {
        /// Its id.
        id: u64,
    },
    /// List the members.
    List,
}

/// Lease commands.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds; prints its ID.
    Grant {
        /// Its time to live, in seconds.
        ttl: i64,
    },
    /// Revoke a lease, deleting its keys.
    Revoke {
        /// The lease ID (hex).
        #[arg(value_parser = parse_lease_hex)]
        id: i64,
    },
    /// Keep a lease alive until Ctrl-C, printing each renewal.
    KeepAlive {
        /// The lease ID (hex).
        #[arg(value_parser = parse_lease_hex)]
        id: i64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Show a lease's remaining and granted TTL (exit code 4 if it expired or does not exist).
    Ttl {
        /// The lease ID (hex).
        #[arg(value_parser = parse_lease_hex)]
        id: i64,
        /// Also list the keys attached to it.
        #[arg(long)]
        keys: bool,
    },
    /// List every lease.
    List,
}

/// Leadership commands.
#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand leadership to a voter (the most caught-up one if no id is given).
    Transfer {
        /// The new leader.
        id: Option<u64>,
    },
}

/// Faults (the node's Fault API).
#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Make the node step down if it leads.
    StepDown,
    /// Drop the node's traffic with some peers (all if none given) for a while.
    Isolate {
        /// Peer ids to cut off (comma-separated; all if omitted).
        #[arg(long, value_delimiter = ',')]
        peers: Vec<u64>,
        /// For how long (0: until `heal`).
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
    },
    /// End an isolation.
    Heal,
    /// Make the node exit at once, like kill -9.
    Crash,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Put { .. } => "put",
            Command::Get { .. } => "get",
            Command::Del { .. } => "del",
            Command::Range { .. } => "range",
            Command::Cas { .. } => "cas",
            Command::Watch { .. } => "watch",
            Command::Log { .. } => "log",
            Command::Status => "status",
            Command::Member(_) => "member",
            Command::Leader(_) => "leader",
            Command::Fault { .. } => "fault",
            Command::Health { .. } => "health",
            Command::Lease(_) => "lease",
            Command::Lock { .. } => "lock",
            Command::Elect { .. } => "elect",
            Command::Bench(_) => "bench",
            Command::Menu => "menu",
        }
    }
}

/// Runs the command; returns the exit code.
pub async fn run(args: Args) -> u8 {
    let telemetry = match reinado_client::telemetry::init("reinado", "warn") {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("reinado: telemetry disabled: {e}");
            None
        }
    };
    let out = Out::new(args.output);
    let opts = ClientOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        ..ClientOptions::default()
    };
    let code = match Client::new(args.endpoints.clone(), opts) {
        Ok(client) => {
            let span = tracing::info_span!(
                "reinado.cli",
                otel.name = format!("reinado {}", args.command.name()),
                otel.kind = "client"
            );
            dispatch(args.command, &client, &out).instrument(span).await
        }
        Err(e) => out.error(&e),
    };
    if let Some(t) = telemetry {
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    code
}

/// An etcd v3 client on the same endpoints and channels.
fn etcd(client: &Client) -> EtcdClient {
    EtcdClient::new(client.clone())
}

async fn dispatch(command: Command, client: &Client, out: &Out) -> u8 {
    match command {
        Command::Put {
            key,
            value,
            lease: Some(lease),
        } => lease::put(&etcd(client), out, &key, &value, lease).await,
        Command::Put { key, value, .. } => kv::put(client, out, &key, &value).await,
        Command::Get { key, consistency } => kv::get(client, out, &key, consistency).await,
        Command::Del { key } => kv::del(client, out, &key).await,
        Command::Range {
            prefix,
            start,
            end,
            limit,
            keys_only,
            consistency,
        } => {
            let q = kv::RangeArgs {
                prefix,
                start,
                end,
                limit,
                keys_only,
                consistency,
            };
            kv::range(client, out, q).await
        }
        Command::Cas {
            key,
            new,
            expect,
            absent: _,
        } => kv::cas(client, out, &key, expect.as_deref(), &new).await,
        Command::Watch {
            key,
            prefix,
            from,
            count,
            seconds,
        } => kv::watch(client, out, key, prefix, from, count, seconds).await,
        Command::Log { index } => kv::log(client, out, index).await,
        Command::Status => cluster::status(client, out).await,
        Command::Member(m) => cluster::member(client, out, m).await,
        Command::Leader(LeaderCommand::Transfer { id }) => {
            cluster::transfer(client, out, id.unwrap_or(0)).await
        }
        Command::Fault { node, fault } => cluster::fault(client, out, &node, fault).await,
        Command::Health { addr, ready } => {
            let addr = addr.unwrap_or_else(|| client.endpoints()[0].clone());
            cluster::health(out, &addr, ready).await
        }
        Command::Lease(l) => lease::run(&etcd(client), out, l).await,
        Command::Lock { name, ttl, command } => {
            let then = if command.is_empty() {
                coord::Holding::Until(reinado_client::shutdown_signal())
            } else {
                coord::Holding::Run(command)
            };
            coord::lock(&etcd(client), out, &name, ttl, then).await
        }
        Command::Elect {
            name, listen: true, ..
        } => coord::listen(&etcd(client), out, &name).await,
        Command::Elect {
            name,
            proposal,
            ttl,
            ..
        } => {
            let proposal = proposal.unwrap_or_default();
            let c = coord::Candidacy {
                name: &name,
                proposal: &proposal,
                ttl_s: ttl,
            };
            coord::elect(&etcd(client), out, c, reinado_client::shutdown_signal()).await
        }
        Command::Bench(b) => bench::run(client, out, b).await,
        Command::Menu => menu::run(client).await,
    }
}

#[cfg(test)]
mod tests {
    use super::Args;
    use clap::CommandFactory;

    /// The servers skip exactly the variables the CLI reads.
    #[test]
    fn the_servers_skip_list_is_the_clis_variables() {
        let mut envs: Vec<String> = Args::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        envs.sort();
        let mut listed: Vec<&str> = reinado_client::envconfig::CLI_VARIABLES.to_vec();
        listed.sort();
        assert_eq!(envs, listed);
    }
}
