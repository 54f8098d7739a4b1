//! `reinado-proxy`: parses the command line and the environment, then runs the proxy (see the library).

use reinado_proxy::config::{self, Config};
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
            println!("reinado-proxy {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("check-config") => match Config::from_env() {
            Ok(cfg) => {
                println!("{cfg:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Some("health") => health(args.get(1).cloned()),
        Some(other) => {
            eprintln!("reinado-proxy: unknown argument `{other}`; see reinado-proxy --help");
            ExitCode::from(2)
        }
    }
}

fn config_error(e: &config::ConfigError) -> ExitCode {
    eprintln!("reinado-proxy: configuration error: {e}");
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
    let result = runtime().block_on(async {
        let telemetry = reinado_client::telemetry::init("reinado-proxy", "info")?;
        let result = reinado_proxy::server::run(cfg, reinado_client::shutdown_signal()).await;
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reinado-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `reinado-proxy health [ADDR]`: exit 0 if the proxy knows a reachable leader.
fn health(addr: Option<String>) -> ExitCode {
    let addr = addr.unwrap_or_else(|| {
        let listen = std::env::var("REINADO_LISTEN")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "127.0.0.1:7000".into());
        reinado_client::health::local_addr(&listen)
    });
    match runtime().block_on(reinado_client::health::check(
        &addr,
        "",
        Duration::from_secs(3),
    )) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("{addr}: not serving (no reachable leader)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
