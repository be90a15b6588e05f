//! `steer-probe`: run the agent, show the pinned state, or set the gate by hand.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use steer_probe::agent::{self, AgentConfig};
use steer_probe::gate::{self, command_of};
use steer_probe::maps::{Maps, prefix_of};
use steer_probe::metrics::{self, AgentStats};
use steer_probe::{LoadOptions, PIN_DIR_DEFAULT, Probe, bpffs};
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
    ///
    /// SIGTERM or SIGINT stops the loop and exits 0. The pinned gate is left as it is: it keeps
    /// enforcing its last state (a drain keeps draining) while no agent runs, and the next agent
    /// takes it over. Bad settings exit 64 before anything is attached.
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
    /// TOML (`.toml`) or YAML (`.yaml`, `.yml`) file with the same settings as the flags (snake
    /// case: `token_file`, `servers = [...]`, `ports = [...]`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: RunSettings,
}

/// The settings of `run`, from flags or a config file. Everything is optional here so that the
/// two can be merged; `validate` says what is missing.
#[derive(Debug, Default, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunSettings {
    /// Policy region of this host (required).
    #[arg(long)]
    region: Option<String>,
    /// This host's name (default: `NODE_NAME`, else the kernel host name).
    #[arg(long)]
    host: Option<String>,
    /// steerd base URL; repeat for every replica (at least one).
    #[arg(long = "server")]
    servers: Option<Vec<String>>,
    /// File holding the region's bearer token (required).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// cgroup v2 directory of the inference server, or the cgroup2 root (required).
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Ingress interface for the gate (required).
    #[arg(long)]
    iface: Option<String>,
    /// Inference server ports (watched and gated), comma separated (required).
    #[arg(long, value_delimiter = ',')]
    ports: Option<Vec<u16>>,
    /// Inference server health URL.
    #[arg(long)]
    health_url: Option<String>,
    /// Inference server Prometheus metrics URL.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Pin directory on a bpffs [default: /sys/fs/bpf/steer].
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Report interval until steerd asks for another [default: 1000].
    #[arg(long)]
    interval_ms: Option<u32>,
    /// Time over which a surge rate ramps up to steerd's target [default: 30000].
    #[arg(long)]
    surge_ramp_ms: Option<u64>,
    /// Timeout of every HTTP request [default: 2000].
    #[arg(long)]
    http_timeout_ms: Option<u64>,
    /// Address of the agent's own /metrics [default: 127.0.0.1:9464].
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

/// Defaults of the optional settings.
const INTERVAL_MS_DEFAULT: u32 = 1000;
const SURGE_RAMP_MS_DEFAULT: u64 = 30_000;
const HTTP_TIMEOUT_MS_DEFAULT: u64 = 2000;
/// Bounds of `http_timeout_ms`: a report must be able to finish well within a long interval.
const HTTP_TIMEOUT_MS_MAX: u64 = 60_000;
/// A config file larger than this is refused (it is a handful of settings).
const CONFIG_BYTES_MAX: u64 = 1 << 20;

impl RunSettings {
    /// `self` (the flags) over `file`.
    fn over(self, file: RunSettings) -> RunSettings {
        RunSettings {
            region: self.region.or(file.region),
            host: self.host.or(file.host),
            servers: self.servers.or(file.servers),
            token_file: self.token_file.or(file.token_file),
            cgroup: self.cgroup.or(file.cgroup),
            iface: self.iface.or(file.iface),
            ports: self.ports.or(file.ports),
            health_url: self.health_url.or(file.health_url),
            metrics_url: self.metrics_url.or(file.metrics_url),
            pin_dir: self.pin_dir.or(file.pin_dir),
            interval_ms: self.interval_ms.or(file.interval_ms),
            surge_ramp_ms: self.surge_ramp_ms.or(file.surge_ramp_ms),
            http_timeout_ms: self.http_timeout_ms.or(file.http_timeout_ms),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
        }
    }
}

fn read_config(path: &Path) -> anyhow::Result<RunSettings> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).with_context(|| format!("reading config {}", path.display()))?;
    let mut text = String::new();
    f.take(CONFIG_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading config {}", path.display()))?;
    if text.len() as u64 > CONFIG_BYTES_MAX {
        bail!(
            "config {} is larger than {CONFIG_BYTES_MAX} bytes",
            path.display()
        );
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text).with_context(|| format!("config {}", path.display())),
        Some("yaml" | "yml") => {
            serde_yaml_ng::from_str(&text).with_context(|| format!("config {}", path.display()))
        }
        _ => bail!(
            "config {}: the file name must end in .toml, .yaml or .yml",
            path.display()
        ),
    }
}

/// Everything `run` needs, validated.
#[derive(Debug)]
struct RunPlan {
    agent: AgentConfig,
    load: LoadOptions,
    metrics_listen: SocketAddr,
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
            Ok(plan) => run(&plan),
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

fn validate(args: RunArgs) -> anyhow::Result<RunPlan> {
    let file = match &args.config {
        Some(p) => read_config(p)?,
        None => RunSettings::default(),
    };
    let a = args.settings.over(file);
    let region = a
        .region
        .filter(|r| !r.is_empty())
        .context("--region (or region) is required")?;
    let servers = a
        .servers
        .filter(|s| !s.is_empty())
        .context("at least one --server (or servers) is required")?;
    for s in &servers {
        if !s.starts_with("http://") {
            bail!("server {s:?}: only http:// URLs are supported");
        }
    }
    for (what, url) in [("health_url", &a.health_url), ("metrics_url", &a.metrics_url)] {
        if let Some(u) = url.as_deref().filter(|u| !u.starts_with("http://")) {
            bail!("{what} {u:?}: only http:// URLs are supported");
        }
    }
    let ports = a.ports.context("--ports (or ports) is required")?;
    if ports.is_empty() || ports.len() > steer_probe_common::PORTS_MAX || ports.contains(&0) {
        bail!(
            "ports takes 1 to {} non-zero ports, got {ports:?}",
            steer_probe_common::PORTS_MAX
        );
    }
    let token_file = a.token_file.context("--token-file (or token_file) is required")?;
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading token file {}", token_file.display()))?
        .trim()
        .to_owned();
    if token.is_empty() {
        bail!("token file {} is empty", token_file.display());
    }
    let cgroup = a.cgroup.context("--cgroup (or cgroup) is required")?;
    if !cgroup.join("cgroup.procs").exists() {
        bail!("cgroup {} is not a cgroup v2 directory", cgroup.display());
    }
    let iface = a.iface.context("--iface (or iface) is required")?;
    if !iface_exists(&iface) {
        bail!("interface {iface:?} does not exist (in this network namespace)");
    }
    let interval_ms = a.interval_ms.unwrap_or(INTERVAL_MS_DEFAULT);
    if !(agent::INTERVAL_MS_MIN..=agent::INTERVAL_MS_MAX).contains(&interval_ms) {
        bail!(
            "interval_ms {interval_ms} is outside {}..={}",
            agent::INTERVAL_MS_MIN,
            agent::INTERVAL_MS_MAX
        );
    }
    let http_timeout_ms = a.http_timeout_ms.unwrap_or(HTTP_TIMEOUT_MS_DEFAULT);
    if !(1..=HTTP_TIMEOUT_MS_MAX).contains(&http_timeout_ms) {
        bail!("http_timeout_ms {http_timeout_ms} is outside 1..={HTTP_TIMEOUT_MS_MAX}");
    }
    let host = match a.host {
        Some(h) => h,
        None => std::env::var("NODE_NAME")
            .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()))?,
    };
    if host.is_empty() || host.len() > steering_core::telemetry::wire::HOST_NAME_BYTES_MAX {
        bail!("host name {host:?} is empty or too long");
    }
    let pin_dir = a.pin_dir.unwrap_or_else(|| PathBuf::from(PIN_DIR_DEFAULT));
    let metrics_listen = match a.metrics_listen {
        Some(m) => m,
        None => metrics::METRICS_LISTEN_DEFAULT
            .parse()
            .context("default metrics address")?,
    };
    let cfg = AgentConfig {
        region,
        host,
        servers,
        token,
        health_url: a.health_url,
        metrics_url: a.metrics_url,
        interval_ms,
        surge_ramp_ms: a.surge_ramp_ms.unwrap_or(SURGE_RAMP_MS_DEFAULT),
        http_timeout: Duration::from_millis(http_timeout_ms),
        pin_dir: pin_dir.clone(),
    };
    let load = LoadOptions {
        pin_dir,
        cgroup: Some(cgroup),
        iface: Some(iface),
        ports,
    };
    Ok(RunPlan {
        agent: cfg,
        load,
        metrics_listen,
    })
}

fn iface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

fn run(plan: &RunPlan) -> anyhow::Result<()> {
    // Signals first, so that a SIGTERM during loading is not lost: it stops the loop as soon as
    // it starts.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    let pin_dir = &plan.load.pin_dir;
    bpffs::ensure(pin_dir).context("preparing the pin dir")?;
    let listener = TcpListener::bind(plan.metrics_listen)
        .with_context(|| format!("binding /metrics on {}", plan.metrics_listen))?;
    let reports: Vec<String> = plan.agent.servers.iter().map(|s| agent::reports_url(s)).collect();
    let stats = Arc::new(
        AgentStats::new(&reports, plan.agent.metrics_url.is_some())
            .with_identity(&plan.agent.region, &plan.agent.host),
    );
    metrics::serve(listener, Arc::clone(&stats), pin_dir.clone()).context("starting /metrics")?;
    tracing::info!(listen = %plan.metrics_listen, "serving /metrics");
    let mut probe = Probe::load(&plan.load).context("loading the probe")?;
    agent::run(&plan.agent, &mut probe, &stop, &stats).context("report loop")?;
    let mode = probe.maps().gate_config().map(|c| command_of(&c).mode);
    // Dropping the probe leaves the pinned links attached: the gate keeps enforcing its last
    // state (a drain keeps draining) until the next agent takes over.
    tracing::info!(gate = ?mode, "stopped; the pinned gate keeps its state");
    Ok(())
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
        if gate::held(&cfg) { " (held)" } else { "" }
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
    gate::apply_by_hand(&mut maps, &cmd, hold, gate::online_cpus())?;
    tracing::info!(?mode, rate, burst, hold, "gate set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_flags_override_it() {
        let file: RunSettings =
            toml::from_str(include_str!("../steer-probe.example.toml")).expect("example config");
        assert_eq!(file.ports.as_deref(), Some(&[8000][..]));
        assert_eq!(file.servers.as_ref().map(Vec::len), Some(2));
        let flags = RunSettings {
            region: Some("us-east".into()),
            ..RunSettings::default()
        };
        let merged = flags.over(file);
        assert_eq!(merged.region.as_deref(), Some("us-east"));
        assert_eq!(merged.iface.as_deref(), Some("eth0"));
        assert_eq!(
            merged.metrics_listen,
            Some("127.0.0.1:9464".parse().expect("addr"))
        );
    }

    #[test]
    fn yaml_has_the_same_settings_and_unknown_keys_fail() {
        let y: RunSettings =
            serde_yaml_ng::from_str("region: eu\nports: [8000, 8001]\ninterval_ms: 500\n").expect("yaml");
        assert_eq!((y.ports, y.interval_ms), (Some(vec![8000, 8001]), Some(500)));
        let e = serde_yaml_ng::from_str::<RunSettings>("region: eu\nport: 8000\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `port`"), "{e}");
    }
}
