//! steerd: the authoritative DNS server that answers steered names from steering-core snapshots,
//! with the ingest, admin and metrics HTTP API.
//!
//! Architecture invariant: this is the only crate that knows the DNS wire format. Queries read the
//! current [`steering_core::Snapshot`] through an `ArcSwap` and never wait on ingest, reloads or
//! rebuilds, which happen on the control state behind a mutex that queries never take.

#![forbid(unsafe_code)]

pub mod config;
pub mod dns;
pub mod geo;
pub mod http;
pub mod log;
pub mod metrics;
pub mod state;
pub mod tokens;
pub mod wire;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ServeConfig;
use crate::geo::Geo;
use crate::state::Shared;
use crate::state::tokio_util_shutdown::Shutdown;
use crate::tokens::Tokens;
use crate::zone::Zone;

/// Attempts to find a port free for both UDP and TCP when port 0 is asked for.
const BIND_ATTEMPTS_MAX: usize = 16;

/// Pre-bound sockets for [`run`].
#[derive(Debug)]
pub struct Listeners {
    /// One per UDP worker, all on the same address (`SO_REUSEPORT`).
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: std::net::TcpListener,
    pub admin: std::net::TcpListener,
}

impl Listeners {
    #[must_use]
    pub fn dns_addr(&self) -> SocketAddr {
        self.tcp.local_addr().expect("bound socket has an address")
    }

    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound socket has an address")
    }
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Binds the DNS sockets (UDP and TCP on one port, `workers` UDP sockets) and the admin listener.
pub fn bind(dns: SocketAddr, admin: SocketAddr, workers: usize) -> anyhow::Result<Listeners> {
    let mut last_err = None;
    for _ in 0..BIND_ATTEMPTS_MAX {
        let first = udp_socket(dns).with_context(|| format!("cannot bind udp {dns}"))?;
        let addr = first.local_addr()?;
        let tcp = match tcp_listener(addr) {
            Ok(t) => t,
            Err(e) if dns.port() == 0 => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind tcp {addr}")),
        };
        let mut udp = vec![first];
        for _ in 1..workers {
            udp.push(udp_socket(addr).with_context(|| format!("cannot bind udp {addr}"))?);
        }
        let admin = tcp_listener(admin).with_context(|| format!("cannot bind admin {admin}"))?;
        return Ok(Listeners { udp, tcp, admin });
    }
    Err(anyhow::anyhow!("no port free for both udp and tcp: {last_err:?}"))
}

/// Reads and checks everything `serve` needs, before any port is bound.
pub fn prepare(cfg: &ServeConfig) -> anyhow::Result<Shared> {
    let policy = state::read_policy(&cfg.policy)?;
    let zone = Zone::load(&cfg.zone, &policy.zone)?;
    for s in &policy.services {
        let n = s.fqdn.trim_end_matches('.').as_bytes();
        if zone.names.contains(n) {
            anyhow::bail!(
                "{}: {} is steered by the policy and must not have records in the zone file",
                cfg.zone.display(),
                s.fqdn
            );
        }
    }
    let geo = cfg.geoip.as_deref().map(Geo::open).transpose()?;
    let tokens = if let Some(p) = &cfg.tokens {
        Tokens::load(p)?
    } else {
        tracing::warn!(admin = %cfg.admin, "no --tokens file: the admin API is open to local users");
        Tokens::open()
    };
    let saved = match cfg.state.as_deref().map(state::read_state).transpose() {
        Ok(s) => s.flatten(),
        Err(e) => {
            tracing::warn!(error = %e, "state file not loaded; starting cold");
            None
        }
    };
    if saved.is_some() {
        tracing::info!("warm start from the state file");
    }
    Ok(Shared::new(
        policy,
        cfg.policy.clone(),
        zone,
        geo,
        tokens,
        cfg.state.clone(),
        saved,
    ))
}

/// Serves until `shutdown` fires.
pub async fn run(shared: Arc<Shared>, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let slow_permits = Arc::new(tokio::sync::Semaphore::new(dns::SLOW_INFLIGHT_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    for s in listeners.udp {
        let socket = Arc::new(tokio::net::UdpSocket::from_std(s)?);
        tasks.spawn(dns::udp_worker(
            shared.clone(),
            socket,
            shutdown.clone(),
            slow_permits.clone(),
        ));
    }
    let tcp = tokio::net::TcpListener::from_std(listeners.tcp)?;
    tasks.spawn(dns::tcp_listener(shared.clone(), tcp, shutdown.clone()));
    let admin = tokio::net::TcpListener::from_std(listeners.admin)?;
    let app = http::router(shared.clone());
    let sd = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = axum::serve(admin, app)
            .with_graceful_shutdown(async move { sd.wait().await })
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tasks.spawn(state::background(shared.clone(), shutdown.clone()));
    while tasks.join_next().await.is_some() {}
    Ok(())
}
