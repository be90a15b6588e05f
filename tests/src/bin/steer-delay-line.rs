//! `steer-delay-line`: the lab's WAN delay emulator (see `steer_lab::delay_line`).
//!
//! Run it inside the core namespace, after `steer_lab::delay_line::iptables_queue_rule` is installed there:
//! `steer-delay-line --queue 0 --rules FILE [--rule "SRC DST DELAY_MS [LOSS_PCT]"]... [--queue-max N]`.
//! Prints `ready ...` when bound, `counters {json}` on SIGUSR1 and at exit (SIGTERM/SIGINT).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use steer_lab::delay_line::{self, Config, QUEUE_MAX_DEFAULT, Rule};

/// A userspace NFQUEUE delay line: per (source, destination) prefix pair, a constant one-way delay and a loss rate.
#[derive(Debug, Parser)]
#[command(name = "steer-delay-line")]
struct Args {
    /// NFQUEUE number to bind.
    #[arg(long, default_value_t = 0)]
    queue: u16,
    /// A file of rules, one `SRC_CIDR DST_CIDR DELAY_MS [LOSS_PCT]` per line (`#` comments).
    #[arg(long)]
    rules: Option<std::path::PathBuf>,
    /// A rule given inline, `"SRC_CIDR DST_CIDR DELAY_MS [LOSS_PCT]"`; after those of --rules.
    #[arg(long = "rule")]
    inline: Vec<String>,
    /// Packets held at most over all pairs; packets arriving beyond it are dropped and counted.
    #[arg(long, default_value_t = QUEUE_MAX_DEFAULT)]
    queue_max: usize,
    /// Seed of the loss PRNG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut rules = match &args.rules {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            delay_line::parse_rules(&text).with_context(|| format!("parse {}", path.display()))?
        }
        None => Vec::new(),
    };
    for r in &args.inline {
        rules.push(
            Rule::parse(r)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--rule {r:?}"))?,
        );
    }
    anyhow::ensure!(args.queue_max > 0, "--queue-max must be at least 1");
    Ok(Config {
        queue_num: args.queue,
        queue_max: args.queue_max,
        rules,
        seed: args.seed,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("steer-delay-line: {e:#}");
            return ExitCode::from(64);
        }
    };
    let mut out = std::io::stdout().lock();
    match delay_line::run(&config, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steer-delay-line: {e}");
            ExitCode::FAILURE
        }
    }
}
