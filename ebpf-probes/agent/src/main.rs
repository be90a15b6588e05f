//! `steer-probe`: run the agent, show the pinned state, or set the gate by hand.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use steer_probe::agent::{self, AgentConfig};
use steer_probe::gate::{self, command_of};
use steer_probe::maps::{Maps, prefix_of};
use steer_probe::{LoadOptions, PIN_DIR_DEFAULT, Probe};
use steer_probe_common::{GateMode as BpfMode, Verdict};
use steering_core::telemetry::wire::{GateCommand, GateMode};

/// The bad-config exit status (`EX_USAGE`).
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "steer-probe",
    version,
    about = "steer's per-host probe: kernel RTT, XDP gate, reports to steerd"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and attach the programs and report to steerd every interval.
    Run(Box<RunArgs>),
    /// Print the gate mode, counters and the top prefixes from the pinned maps.
    Status {
        #[arg(long, default_value = PIN_DIR_DEFAULT)]
        pin_dir: PathBuf,
        /// How many prefixes to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Set the gate by hand (steerd's next reply overrides it unless --hold).
    Gate {
        #[arg(value_enum)]
        mode: ModeArg,
        /// Admission rate in surge mode (new flows per second).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Burst in surge mode.
        #[arg(long, default_value_t = 0)]
        burst: u32,
        /// Keep this state until the next `gate` command, ignoring steerd.
        #[arg(long)]
        hold: bool,
        #[arg(long, default_value = PIN_DIR_DEFAULT)]
        pin_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Open,
    Drain,
    Surge,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Policy region of this host.
    #[arg(long)]
    region: String,
    /// This host's name (default: `NODE_NAME`, else the kernel host name).
    #[arg(long)]
    host: Option<String>,
    /// steerd base URL; repeat for every replica.
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    /// File holding the region's bearer token.
    #[arg(long)]
    token_file: PathBuf,
    /// cgroup v2 directory of the inference server (or the cgroup2 root).
    #[arg(long)]
    cgroup: PathBuf,
    /// Ingress interface for the gate.
    #[arg(long)]
    iface: String,
    /// Inference server ports (watched and gated), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    ports: Vec<u16>,
    /// Inference server health URL.
    #[arg(long)]
    health_url: Option<String>,
    /// Inference server Prometheus metrics URL.
    #[arg(long)]
    metrics_url: Option<String>,
    #[arg(long, default_value = PIN_DIR_DEFAULT)]
    pin_dir: PathBuf,
    /// Report interval until steerd asks for another.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u32,
    /// Time over which a surge rate ramps up to steerd's target.
    #[arg(long, default_value_t = 30_000)]
    surge_ramp_ms: u64,
    /// Timeout of every HTTP request.
    #[arg(long, default_value_t = 2000)]
    http_timeout_ms: u64,
}

fn init_logging(format: LogFormat) {
    let filter = std::env::var("STEER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let res = match cli.command {
        Command::Run(args) => match validate(*args) {
            Ok((cfg, load)) => run(&cfg, &load),
            Err(e) => {
                tracing::error!("invalid configuration: {e:#}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Command::Status { pin_dir, top } => status(&pin_dir, top),
        Command::Gate {
            mode,
            rate,
            burst,
            hold,
            pin_dir,
        } => set_gate(&pin_dir, mode, rate, burst, hold),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(a: RunArgs) -> anyhow::Result<(AgentConfig, LoadOptions)> {
    if a.ports.is_empty() || a.ports.len() > steer_probe_common::PORTS_MAX || a.ports.contains(&0) {
        bail!(
            "--ports takes 1 to {} non-zero ports",
            steer_probe_common::PORTS_MAX
        );
    }
    if a.region.is_empty() {
        bail!("--region is empty");
    }
    for s in &a.servers {
        if !s.starts_with("http://") {
            bail!("--server {s:?}: only http:// URLs are supported");
        }
    }
    let token = std::fs::read_to_string(&a.token_file)
        .with_context(|| format!("reading token file {}", a.token_file.display()))?
        .trim()
        .to_owned();
    if token.is_empty() {
        bail!("token file {} is empty", a.token_file.display());
    }
    let host = match a.host {
        Some(h) => h,
        None => std::env::var("NODE_NAME")
            .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()))?,
    };
    let cfg = AgentConfig {
        region: a.region,
        host,
        servers: a.servers,
        token,
        health_url: a.health_url,
        metrics_url: a.metrics_url,
        interval_ms: a
            .interval_ms
            .clamp(agent::INTERVAL_MS_MIN, agent::INTERVAL_MS_MAX),
        surge_ramp_ms: a.surge_ramp_ms,
        http_timeout: Duration::from_millis(a.http_timeout_ms.max(1)),
        pin_dir: a.pin_dir.clone(),
    };
    let load = LoadOptions {
        pin_dir: a.pin_dir,
        cgroup: Some(a.cgroup),
        iface: Some(a.iface),
        ports: a.ports,
    };
    Ok((cfg, load))
}

fn run(cfg: &AgentConfig, load: &LoadOptions) -> anyhow::Result<()> {
    let mut probe = Probe::load(load).context("loading the probe")?;
    let stop = AtomicBool::new(false);
    agent::run(cfg, &mut probe, &stop).context("report loop")
}

fn status(pin_dir: &std::path::Path, top: usize) -> anyhow::Result<()> {
    let maps =
        Maps::open(pin_dir).with_context(|| format!("opening the maps pinned in {}", pin_dir.display()))?;
    let cfg = maps.gate_config()?;
    let counts = maps.gate_counts()?;
    let mut out = std::io::stdout().lock();
    let cmd = command_of(&cfg);
    writeln!(
        out,
        "gate: {:?} rate_per_s={} burst={}{}",
        cmd.mode,
        cmd.rate_per_s,
        cmd.burst,
        if gate::held(pin_dir) { " (held)" } else { "" }
    )?;
    let ports: Vec<u16> = cfg.ports.iter().copied().filter(|&p| p != 0).collect();
    writeln!(out, "gated ports: {ports:?}")?;
    writeln!(out, "active connections: {}", maps.active_connections()?)?;
    writeln!(
        out,
        "new flows: seen={} admitted={} dropped={}",
        counts.syn_seen(),
        counts.syn_admitted(),
        counts.syn_dropped()
    )?;
    writeln!(
        out,
        "{:<8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "mode", "pass", "unparsed", "admitted", "drop_drain", "drop_rate", "drop_prefix"
    )?;
    for mode in [BpfMode::Open, BpfMode::Drain, BpfMode::Surge] {
        write!(out, "{:<8}", format!("{mode:?}").to_lowercase())?;
        for v in Verdict::ALL {
            write!(out, " {:>12}", counts.get(mode, v))?;
        }
        writeln!(out)?;
    }
    let snapshot = maps.rtt_snapshot()?;
    let mut rows: Vec<_> = snapshot.0.iter().collect();
    rows.sort_by_key(|(_, v)| std::cmp::Reverse(v.count));
    writeln!(
        out,
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "prefix", "samples", "p50_us", "p90_us", "min_us", "retrans"
    )?;
    for (k, v) in rows.into_iter().take(top) {
        let q = v.quantiles();
        writeln!(
            out,
            "{:<24} {:>10} {:>10} {:>10} {:>10} {:>8}",
            prefix_of(k).to_string(),
            v.count,
            q.map_or(0, |q| q.p50_us),
            q.map_or(0, |q| q.p90_us),
            v.min_us,
            v.retrans
        )?;
    }
    Ok(())
}

fn set_gate(
    pin_dir: &std::path::Path,
    mode: ModeArg,
    rate: u32,
    burst: u32,
    hold: bool,
) -> anyhow::Result<()> {
    let mode = match mode {
        ModeArg::Open => GateMode::Open,
        ModeArg::Drain => GateMode::Drain,
        ModeArg::Surge => GateMode::Surge,
    };
    if mode == GateMode::Surge && rate == 0 {
        bail!("surge needs --rate N (new flows per second) and --burst N");
    }
    let mut maps =
        Maps::open(pin_dir).with_context(|| format!("opening the maps pinned in {}", pin_dir.display()))?;
    let cmd = GateCommand {
        mode,
        rate_per_s: rate,
        burst: burst.max(1),
    };
    gate::apply(&mut maps, &cmd, gate::online_cpus())?;
    gate::set_hold(pin_dir, hold)?;
    tracing::info!(?mode, rate, burst, hold, "gate set");
    Ok(())
}
