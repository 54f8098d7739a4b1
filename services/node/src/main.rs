//! `reinado-node`: parses the command line and the environment, then runs the node (see the library).

use reinado_node::config::{self, Config};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => run(),
        Some("-h" | "--help" | "help") => {
            print!("{}", config::help());
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("reinado-node {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("check-config") => match Config::from_env() {
            Ok(cfg) => {
                println!("{cfg:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Some("health") => health(args.get(1).cloned(), args.iter().any(|a| a == "--ready")),
        Some(other) => {
            eprintln!("reinado-node: unknown argument `{other}`; see reinado-node --help");
            ExitCode::from(2)
        }
    }
}

fn config_error(e: &config::ConfigError) -> ExitCode {
    eprintln!("reinado-node: configuration error: {e}");
    ExitCode::from(2)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime")
}

fn run() -> ExitCode {
    let cfg = match Config::from_env() {
        Ok(cfg) => cfg,
        Err(e) => return config_error(&e),
    };
    let rt = runtime();
    let result = rt.block_on(async {
        let telemetry = reinado_client::telemetry::init("reinado-node", "info")?;
        let result = reinado_node::server::run(cfg, reinado_client::shutdown_signal()).await;
        if let Err(e) = &result {
            tracing::error!("{e:#}");
        }
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reinado-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `reinado-node health [ADDR] [--ready]`: exit 0 if the process at ADDR serves (with `--ready`: if it serves
/// clients, i.e. knows a leader and caught up with it).
fn health(addr: Option<String>, ready: bool) -> ExitCode {
    let addr = addr.filter(|a| !a.starts_with("--")).unwrap_or_else(|| {
        let listen = std::env::var("REINADO_CLIENT_ADDR")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "127.0.0.1:7070".into());
        reinado_client::health::local_addr(&listen)
    });
    let service = if ready { "reinado.v1.Kv" } else { "" };
    let result = runtime().block_on(reinado_client::health::check(
        &addr,
        service,
        Duration::from_secs(3),
    ));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("{addr}: not serving");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
