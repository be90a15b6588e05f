//! `steer-mock-infer`: a mock OpenAI-style inference server for the lab (see `steer_lab::mock_infer`).
//!
//! `steer-mock-infer --listen ADDR:PORT --tokens-per-s N --ttft-ms N [--region NAME] [--model NAME]`
//! Prints `listening ADDR` once bound. Exits 0 on SIGTERM/SIGINT, and exits 1 at once after `/control
//! {"die": true}`, like a crashed server.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use steer_lab::mock_infer::{self, Exit, MockConfig};

/// Mock OpenAI-style inference server with vLLM metrics and a control endpoint.
#[derive(Debug, Parser)]
#[command(name = "steer-mock-infer")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: std::net::SocketAddr,
    /// Tokens per second of each stream.
    #[arg(long, default_value_t = 50.0)]
    tokens_per_s: f64,
    /// Time to first token in milliseconds.
    #[arg(long, default_value_t = 50)]
    ttft_ms: u64,
    /// Region name reported in the `x-steer-region` header.
    #[arg(long, default_value = "mock")]
    region: String,
    /// Model name.
    #[arg(long, default_value = "mock")]
    model: String,
}

#[allow(clippy::print_stdout, reason = "the readiness line is this binary's output")]
fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.tokens_per_s > 0.0 && args.tokens_per_s <= 1e6) {
        eprintln!("steer-mock-infer: --tokens-per-s must be in (0, 1e6]");
        return ExitCode::from(64);
    }
    let cfg = MockConfig {
        tokens_per_s: args.tokens_per_s,
        ttft: Duration::from_millis(args.ttft_ms),
        region: args.region,
        model: args.model,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("steer-mock-infer: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening {}", listener.local_addr()?);
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        mock_infer::serve(listener, cfg, shutdown).await
    });
    match result {
        Ok(Exit::Shutdown) => ExitCode::SUCCESS,
        // A crash: exit without draining anything; the kernel cuts every connection.
        Ok(Exit::Died) => std::process::exit(1),
        Err(e) => {
            eprintln!("steer-mock-infer: {e}");
            ExitCode::FAILURE
        }
    }
}
