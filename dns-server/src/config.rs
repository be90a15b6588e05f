//! `steerd serve` settings: flags, or a TOML file (`--config`) with the same names; flags win.
//! Everything is validated here, before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The DNS listener when none is given: loopback and an unprivileged port, safe for a first run.
pub const DNS_DEFAULT: &str = "127.0.0.1:5353";
/// The admin listener when none is given.
pub const ADMIN_DEFAULT: &str = "127.0.0.1:8053";
/// Most UDP workers (`SO_REUSEPORT` sockets) whatever the core count.
pub const UDP_WORKERS_MAX: usize = 64;
/// A config file larger than this is refused.
pub const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The steering policy (YAML).
    pub policy: Option<PathBuf>,
    /// The zone file (RFC 1035) with the static records.
    pub zone: Option<PathBuf>,
    /// DNS listener, UDP and TCP.
    pub dns: Option<SocketAddr>,
    /// Admin and ingest HTTP listener.
    pub admin: Option<SocketAddr>,
    /// Where telemetry and health are saved for a warm start.
    pub state: Option<PathBuf>,
    /// A `MaxMind` City or Country database.
    pub geoip: Option<PathBuf>,
    /// Bearer tokens (`admin TOKEN`, `region NAME TOKEN` lines).
    pub tokens: Option<PathBuf>,
    /// `text` (default) or `json`.
    pub log_format: Option<LogFormat>,
    /// UDP workers; default one per core.
    pub udp_workers: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub policy: PathBuf,
    pub zone: PathBuf,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub state: Option<PathBuf>,
    pub geoip: Option<PathBuf>,
    pub tokens: Option<PathBuf>,
    pub log_format: LogFormat,
    pub udp_workers: usize,
}

pub fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if meta.len() > CONFIG_BYTES_MAX {
        bail!("{}: larger than {CONFIG_BYTES_MAX} bytes", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

impl ServeConfig {
    /// Merges flags over the file and checks what can be checked without reading the data files.
    pub fn merge(flags: FileConfig, file: FileConfig) -> anyhow::Result<ServeConfig> {
        let policy = flags
            .policy
            .or(file.policy)
            .context("--policy FILE is required")?;
        let zone = flags.zone.or(file.zone).context("--zone FILE is required")?;
        let dns = flags
            .dns
            .or(file.dns)
            .unwrap_or_else(|| DNS_DEFAULT.parse().expect("valid default"));
        let admin = flags
            .admin
            .or(file.admin)
            .unwrap_or_else(|| ADMIN_DEFAULT.parse().expect("valid default"));
        let tokens = flags.tokens.or(file.tokens);
        if tokens.is_none() && !admin.ip().is_loopback() {
            bail!("the admin listener {admin} is not on loopback: --tokens FILE is required");
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let udp_workers = flags.udp_workers.or(file.udp_workers).unwrap_or(cores);
        if udp_workers == 0 || udp_workers > UDP_WORKERS_MAX {
            bail!("udp_workers: expected 1..={UDP_WORKERS_MAX}");
        }
        Ok(ServeConfig {
            policy,
            zone,
            dns,
            admin,
            state: flags.state.or(file.state),
            geoip: flags.geoip.or(file.geoip),
            tokens,
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            udp_workers,
        })
    }
}
