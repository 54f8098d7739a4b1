//! `reinado-otlp-sink`: the project's own OTLP/gRPC trace receiver as a program (feature `harness`). The
//! end-to-end tests run it as a container in Jaeger's place; it prints every span it receives to stdout as one
//! JSON object a line, so a test reads the spans back with `docker logs`.
//!
//! Usage: `reinado-otlp-sink [LISTEN]` (default `0.0.0.0:4317`); `reinado-otlp-sink health` exits 0 if something
//! listens on 127.0.0.1:4317 (the container health check).

use reinado_client::otlp_sink::OtlpSink;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("health") {
        // The container health check: something accepts connections on the OTLP port.
        return match tokio::net::TcpStream::connect("127.0.0.1:4317").await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("reinado-otlp-sink: nothing listens on 127.0.0.1:4317: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let listen = arg.unwrap_or_else(|| "0.0.0.0:4317".to_string());
    let listen: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("reinado-otlp-sink: `{listen}` is not an address to listen on: {e}");
            return ExitCode::from(2);
        }
    };
    let sink = match OtlpSink::start(listen).await {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("reinado-otlp-sink: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "reinado-otlp-sink: receiving OTLP/gRPC traces on {}",
        sink.addr
    );
    // As a container's first process it gets no default signal handling: stop on SIGTERM by hand.
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("reinado-otlp-sink: cannot watch for SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = tokio::signal::ctrl_c() => true,
            _ = term.recv() => true,
        };
        // Printed once each, then forgotten: the sink holds only what arrived since the last tick.
        let mut out = std::io::stdout().lock();
        for span in sink.take() {
            let line = serde_json::to_string(&span).expect("a span serializes");
            if writeln!(out, "{line}").is_err() {
                return ExitCode::FAILURE;
            }
        }
        let _ = out.flush();
        if stop {
            return ExitCode::SUCCESS;
        }
    }
}
