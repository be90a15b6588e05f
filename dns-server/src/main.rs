//! steerd: authoritative DNS for steered names. `serve`, `check` and `explain`.

#![allow(
    clippy::print_stdout,
    reason = "a binary: explain prints its answer, serve its listening line"
)]

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dns_server::config::{FileConfig, LogFormat, ServeConfig};
use dns_server::state::tokio_util_shutdown;

/// Exit status for bad configuration (sysexits `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;
/// How long `explain` waits for the admin API.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest explain reply read.
const EXPLAIN_BYTES_MAX: u64 = 1 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "steerd",
    version,
    about = "Authoritative DNS that steers clients to the best region"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve DNS and the admin API.
    Serve {
        /// A TOML file with the same settings as the flags (flags win).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        zone: Option<PathBuf>,
        /// DNS listener (UDP and TCP) [default: 127.0.0.1:5353].
        #[arg(long)]
        dns: Option<SocketAddr>,
        /// Admin and ingest HTTP listener [default: 127.0.0.1:8053].
        #[arg(long)]
        admin: Option<SocketAddr>,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        geoip: Option<PathBuf>,
        #[arg(long)]
        tokens: Option<PathBuf>,
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        #[arg(long)]
        udp_workers: Option<usize>,
    },
    /// Validate a policy (and a zone file); exit 1 with located errors.
    Check {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        zone: Option<PathBuf>,
    },
    /// Explain the live server's decision for a client (or, with --state and --policy, the
    /// decision a saved state file leads to).
    Explain {
        #[arg(long, default_value = dns_server::config::ADMIN_DEFAULT)]
        admin: SocketAddr,
        /// Explain offline from this state file instead of asking the admin API.
        #[arg(long, requires = "policy")]
        state: Option<PathBuf>,
        /// The policy to explain with, offline.
        #[arg(long, requires = "state")]
        policy: Option<PathBuf>,
        /// The resolver's (or client's) address.
        #[arg(long)]
        client: IpAddr,
        /// The ECS client subnet, e.g. 10.2.3.0/24.
        #[arg(long)]
        ecs: Option<String>,
        /// An admin token (or set `STEER_TOKEN`).
        #[arg(long, env = "STEER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        name: String,
        #[arg(value_name = "TYPE", default_value = "A")]
        qtype: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            policy,
            zone,
            dns,
            admin,
            state,
            geoip,
            tokens,
            log_format,
            udp_workers,
        } => {
            let flags = FileConfig {
                policy,
                zone,
                dns,
                admin,
                state,
                geoip,
                tokens,
                log_format,
                udp_workers,
            };
            serve(config.as_deref(), flags)
        }
        Command::Check { policy, zone } => check(&policy, zone.as_deref()),
        Command::Explain {
            admin,
            state,
            policy,
            client,
            ecs,
            token,
            name,
            qtype,
        } => match match (state, policy) {
            (Some(s), Some(p)) => explain_offline(&s, &p, client, ecs.as_deref(), &name, &qtype),
            _ => explain(admin, client, ecs.as_deref(), token.as_deref(), &name, &qtype),
        } {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("steerd explain: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn serve(config: Option<&std::path::Path>, flags: FileConfig) -> ExitCode {
    let bad = |e: anyhow::Error| {
        eprintln!("steerd: {e:#}");
        ExitCode::from(EXIT_CONFIG)
    };
    let file = match config.map(dns_server::config::read_file).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return bad(e),
    };
    let cfg = match ServeConfig::merge(flags, file) {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    dns_server::log::init(cfg.log_format);
    let shared = match dns_server::prepare(&cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => return bad(e),
    };
    let listeners = match dns_server::bind(cfg.dns, cfg.admin, cfg.udp_workers) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("steerd: {e:#}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("steerd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (dns, admin) = (listeners.dns_addr(), listeners.admin_addr());
    // Tests and scripts read this line to learn the ports chosen for port 0.
    println!("steerd listening dns={dns} admin={admin}");
    let _ = std::io::stdout().flush();
    tracing::info!(%dns, %admin, zone = %shared.zone.apex, "serving");
    let result = rt.block_on(async move {
        let (trigger, shutdown) = tokio_util_shutdown::channel();
        tokio::spawn(async move {
            wait_for_stop().await;
            tracing::info!("stopping");
            trigger.fire();
        });
        dns_server::run(shared, listeners, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steerd: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn wait_for_stop() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn check(path: &std::path::Path, zone: Option<&std::path::Path>) -> ExitCode {
    let policy = match dns_server::state::read_policy(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(1);
        }
    };
    if let Some(z) = zone {
        match dns_server::zone::Zone::load(z, &policy.zone) {
            Ok(zone) => {
                for s in &policy.services {
                    if zone.names.contains(s.fqdn.trim_end_matches('.').as_bytes()) {
                        eprintln!(
                            "{}: {} is steered by the policy and must not have records here",
                            z.display(),
                            s.fqdn
                        );
                        return ExitCode::from(1);
                    }
                }
                eprintln!("{}: ok ({} names)", z.display(), zone.names.len());
            }
            Err(e) => {
                eprintln!("{e:#}");
                return ExitCode::from(1);
            }
        }
    }
    eprintln!(
        "{}: ok ({} regions, {} services)",
        path.display(),
        policy.regions.len(),
        policy.services.len()
    );
    ExitCode::SUCCESS
}

/// Explains from a saved state file: the snapshot it leads to now, without a server.
fn explain_offline(
    state: &std::path::Path,
    policy: &std::path::Path,
    client: IpAddr,
    ecs: Option<&str>,
    name: &str,
    qtype: &str,
) -> anyhow::Result<String> {
    use steering_core::prefix::{Family, Prefix};
    let policy = Arc::new(dns_server::state::read_policy(policy)?);
    let saved = dns_server::state::read_state(state)?
        .with_context(|| format!("{}: no such file", state.display()))?;
    let now = dns_server::state::now_ms();
    let snap = steering_core::Snapshot::build(policy, &saved.telemetry, &saved.health, now, 0, None);
    let family = match qtype.to_ascii_uppercase().as_str() {
        "A" => Family::V4,
        "AAAA" => Family::V6,
        other => anyhow::bail!("{other}: expected A or AAAA"),
    };
    let service = snap
        .service_for(name.as_bytes())
        .with_context(|| format!("{name} is not a steered name"))?;
    let mut q = steering_core::Query::from_resolver(service, family, client);
    if let Some(e) = ecs {
        let p: Prefix = e.parse().map_err(|e| anyhow::anyhow!("--ecs: {e}"))?;
        q = q.with_ecs(p.network(), p.len());
    }
    let d = snap.decide(&q);
    Ok(steering_core::explain::render(&snap, &q, &d))
}

/// Percent-encodes a query parameter value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET /v1/explain` over a plain HTTP/1.1 connection.
fn explain(
    admin: SocketAddr,
    client: IpAddr,
    ecs: Option<&str>,
    token: Option<&str>,
    name: &str,
    qtype: &str,
) -> anyhow::Result<String> {
    let mut path = format!(
        "/v1/explain?name={}&type={}&client={}",
        enc(name),
        enc(qtype),
        enc(&client.to_string())
    );
    if let Some(e) = ecs {
        path.push_str("&ecs=");
        path.push_str(&enc(e));
    }
    let mut s = std::net::TcpStream::connect_timeout(&admin, EXPLAIN_TIMEOUT)
        .with_context(|| format!("cannot connect to {admin}"))?;
    s.set_read_timeout(Some(EXPLAIN_TIMEOUT))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.take(EXPLAIN_BYTES_MAX).read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("malformed HTTP reply")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        anyhow::bail!("{admin}: HTTP {status}: {}", body.trim());
    }
    Ok(body.to_owned())
}
