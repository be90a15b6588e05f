//! The report loop: every interval read the maps, check the inference server, report to every
//! steerd, apply the gate state that comes back.
//!
//! Deltas are kept per steerd: each server has its own baseline (the kernel counters as of its
//! last accepted report), so a server that was unreachable receives the merged deltas of the
//! intervals it missed, bounded by the RTT map's size and [`PREFIXES_PER_REPORT_MAX`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use steering_core::telemetry::wire::{
    GateCommand, GateMode, GateReport, HealthReport, LoadReport, PREFIXES_PER_REPORT_MAX, PROTOCOL_VERSION,
    Report, ReportReply, RttReport,
};

use crate::gate::{self, command_of, ramped_rate};
use crate::load::{fetch_load, health_check};
use crate::loader::{Probe, ProbeError};
use crate::maps::{GateCounts, RttSnapshot};
use crate::metrics::AgentStats;

/// Reply intervals outside this range are clamped.
pub const INTERVAL_MS_MIN: u32 = 100;
/// See [`INTERVAL_MS_MIN`].
pub const INTERVAL_MS_MAX: u32 = 60_000;
/// A failing server is retried after 1, 2, 4, ... intervals, at most this many.
pub const BACKOFF_INTERVALS_MAX: u32 = 32;

/// Settings of `steer-probe run` after validation.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Policy region of this host.
    pub region: String,
    /// This host's stable name.
    pub host: String,
    /// Base URLs of every steerd (`/v1/reports` is appended unless present).
    pub servers: Vec<String>,
    /// Bearer token for steerd.
    pub token: String,
    /// Inference server health URL.
    pub health_url: Option<String>,
    /// Inference server Prometheus URL.
    pub metrics_url: Option<String>,
    /// Report interval until steerd asks for another.
    pub interval_ms: u32,
    /// Time over which a surge rate ramps up to steerd's target.
    pub surge_ramp_ms: u64,
    /// Timeout of every HTTP request.
    pub http_timeout: Duration,
    /// Pin dir of the maps.
    pub pin_dir: PathBuf,
}

#[derive(Debug)]
struct Server {
    url: String,
    rtt_base: RttSnapshot,
    gate_base: GateCounts,
    /// Intervals to skip before the next try, and the current backoff.
    skip: u32,
    backoff: u32,
}

/// The report endpoint of a steerd base URL.
#[must_use]
pub fn reports_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/reports") {
        base.to_owned()
    } else {
        format!("{base}/v1/reports")
    }
}

/// Wall clock in ms since the epoch (the protocol's `sent_at_ms`).
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Surge ramp state: which target it ramps to and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ramp {
    target: GateCommand,
    started_ms: u64,
}

/// Runs until `stop` is set, recording what it does in `stats` (indexed like `cfg.servers`).
/// Errors reading the maps are returned, as is a failed write of the gate map, since the agent
/// cannot do its job without them. Stopping leaves the gate as it is: the pinned program keeps
/// enforcing the last state while no agent runs.
pub fn run(
    cfg: &AgentConfig,
    probe: &mut Probe,
    stop: &AtomicBool,
    stats: &AgentStats,
) -> Result<(), ProbeError> {
    let cpus = gate::online_cpus();
    let rtt0 = probe.maps().rtt_snapshot()?;
    let gate0 = probe.maps().gate_counts()?;
    let mut servers: Vec<Server> = cfg
        .servers
        .iter()
        .map(|u| Server {
            url: reports_url(u),
            rtt_base: rtt0.clone(),
            gate_base: gate0,
            skip: 0,
            backoff: 1,
        })
        .collect();
    let http = ureq::AgentBuilder::new()
        .timeout(cfg.http_timeout)
        .redirects(0)
        .build();
    let mut interval_ms = cfg.interval_ms;
    let mut seq = 0u64;
    let mut ramp: Option<Ramp> = None;
    while !stop.load(Ordering::Relaxed) {
        let span = tracing::info_span!("report", region = %cfg.region, host = %cfg.host, seq);
        let _enter = span.enter();
        let rtt = probe.maps().rtt_snapshot()?;
        let counts = probe.maps().gate_counts()?;
        let applied = probe.maps().gate_config()?;
        let health = check_health(cfg);
        if let Some(c) = health.checks.first() {
            stats.health_checked(c.ok, c.latency_ms);
        }
        let load = load_report(cfg, probe, stats);
        let mut reply: Option<ReportReply> = None;
        for (i, s) in servers.iter_mut().enumerate() {
            if s.skip > 0 {
                s.skip -= 1;
                continue;
            }
            let report = build_report(cfg, seq, interval_ms, &health, load, &applied, &counts, &rtt, s);
            match post(&http, &s.url, &cfg.token, &report) {
                Ok(r) => {
                    s.rtt_base = rtt.clone();
                    s.gate_base = counts;
                    s.backoff = 1;
                    stats.report_sent(i, now_ms());
                    reply.get_or_insert(r);
                }
                Err(e) => {
                    tracing::warn!(server = %s.url, error = %e, backoff = s.backoff, "report failed");
                    stats.report_failed(i);
                    s.skip = s.backoff;
                    s.backoff = (s.backoff * 2).min(BACKOFF_INTERVALS_MAX);
                }
            }
        }
        seq += 1;
        if let Some(r) = reply {
            interval_ms = r.interval_ms.clamp(INTERVAL_MS_MIN, INTERVAL_MS_MAX);
            // Read again: an operator may have set a hold while the reports were in flight.
            let current = probe.maps().gate_config()?;
            if gate::held(&current) {
                tracing::debug!("operator hold: steerd's gate state not applied");
            } else {
                let cmd = ramp_command(r.gate, &mut ramp, cfg.surge_ramp_ms, now_ms());
                if cmd != command_of(&current) {
                    tracing::info!(mode = ?cmd.mode, rate_per_s = cmd.rate_per_s, burst = cmd.burst, "gate");
                    gate::apply(probe.maps_mut(), &cmd, cpus)?;
                }
            }
        }
        // No reply: keep the last gate state (it lives in the kernel; nothing to do).
        sleep_unless_stopped(Duration::from_millis(u64::from(interval_ms)), stop);
    }
    Ok(())
}

/// The command to apply for steerd's `target`: surge rates ramp from a tenth of the target.
fn ramp_command(target: GateCommand, ramp: &mut Option<Ramp>, ramp_ms: u64, now_ms: u64) -> GateCommand {
    if target.mode != GateMode::Surge {
        *ramp = None;
        return target;
    }
    let r = match ramp {
        // A lower target takes effect at once; a higher one keeps ramping from where we are.
        Some(r) if r.target.rate_per_s <= target.rate_per_s => {
            r.target = target;
            *r
        }
        _ => *ramp.insert(Ramp {
            target,
            started_ms: now_ms,
        }),
    };
    let rate = ramped_rate(target.rate_per_s, now_ms.saturating_sub(r.started_ms), ramp_ms);
    GateCommand {
        rate_per_s: rate,
        ..target
    }
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let tick = Duration::from_millis(50);
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let d = left.min(tick);
        std::thread::sleep(d);
        left -= d;
    }
}

fn check_health(cfg: &AgentConfig) -> HealthReport {
    match &cfg.health_url {
        None => HealthReport {
            ok: true,
            checks: Vec::new(),
        },
        Some(url) => {
            let check = health_check(url, cfg.http_timeout);
            HealthReport {
                ok: check.ok,
                checks: vec![check],
            }
        }
    }
}

fn load_report(cfg: &AgentConfig, probe: &Probe, stats: &AgentStats) -> LoadReport {
    let fetched = cfg
        .metrics_url
        .as_deref()
        .and_then(|u| fetch_load(u, cfg.http_timeout));
    if cfg.metrics_url.is_some() {
        stats.load_read(fetched);
    }
    let server = fetched.unwrap_or_default();
    let active = probe.maps().active_connections().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "reading active connections");
        0
    });
    LoadReport {
        queue_depth: server
            .queue_depth
            .map_or(0, |q| q.min(f64::from(u32::MAX)) as u32),
        kv_cache_usage: server.kv_cache_usage.unwrap_or(0.0),
        active_connections: active.min(u64::from(u32::MAX)) as u32,
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn build_report(
    cfg: &AgentConfig,
    seq: u64,
    interval_ms: u32,
    health: &HealthReport,
    load: LoadReport,
    applied: &steer_probe_common::GateConfig,
    counts: &GateCounts,
    rtt: &RttSnapshot,
    s: &Server,
) -> Report {
    let g = counts.since(&s.gate_base);
    let mut prefixes = rtt.since(&s.rtt_base);
    // The agent's own health checks are connections too: they are not client traffic, so the prefix they
    // come from (loopback, or the host's own address) is not reported.
    let own = cfg.health_url.as_deref().and_then(url_host);
    prefixes.retain(|p| {
        let net = p.prefix.network();
        !net.is_loopback() && !own.is_some_and(|a| p.prefix.contains(a))
    });
    prefixes.sort_by_key(|p| std::cmp::Reverse(p.samples));
    prefixes.truncate(PREFIXES_PER_REPORT_MAX);
    Report {
        version: PROTOCOL_VERSION,
        region: cfg.region.clone(),
        host: cfg.host.clone(),
        seq,
        sent_at_ms: now_ms(),
        interval_ms,
        health: health.clone(),
        load,
        gate: GateReport {
            mode: gate::wire_mode(applied.mode()),
            syn_seen: g.syn_seen(),
            syn_admitted: g.syn_admitted(),
            syn_dropped: g.syn_dropped(),
        },
        rtt: prefixes
            .into_iter()
            .map(|p| RttReport {
                prefix: p.prefix,
                samples: p.samples.min(u64::from(u32::MAX)) as u32,
                srtt_us_p50: p.srtt_us_p50,
                srtt_us_p90: p.srtt_us_p90,
                srtt_us_min: p.srtt_us_min,
                retrans: p.retrans,
            })
            .collect(),
    }
}

/// The IP address in an `http://ADDR[:PORT]/...` URL, if it names one (not a host name).
fn url_host(url: &str) -> Option<std::net::IpAddr> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .parse()
        .ok()
}

/// Why a report was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// Transport error or non-2xx status.
    #[error("{0}")]
    Http(Box<ureq::Error>),
    /// The reply was not a `ReportReply`.
    #[error("bad reply: {0}")]
    Reply(std::io::Error),
}

fn post(http: &ureq::Agent, url: &str, token: &str, report: &Report) -> Result<ReportReply, PostError> {
    let resp = http
        .post(url)
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(report)
        .map_err(|e| PostError::Http(Box::new(e)))?;
    resp.into_json::<ReportReply>().map_err(PostError::Reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("http://198.18.10.10:8000/health"),
            Some("198.18.10.10".parse().unwrap())
        );
        assert_eq!(
            url_host("http://[2001:db8::1]:8000/health"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            url_host("http://127.0.0.1/health"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(url_host("http://infer.local:8000/health"), None);
    }

    #[test]
    fn report_urls() {
        assert_eq!(reports_url("http://a:8080"), "http://a:8080/v1/reports");
        assert_eq!(reports_url("http://a:8080/"), "http://a:8080/v1/reports");
        assert_eq!(reports_url("http://a/v1/reports"), "http://a/v1/reports");
    }

    #[test]
    fn surge_ramps_and_other_modes_pass_through() {
        let surge = GateCommand {
            mode: GateMode::Surge,
            rate_per_s: 1000,
            burst: 50,
        };
        let mut ramp = None;
        assert_eq!(ramp_command(surge, &mut ramp, 10_000, 0).rate_per_s, 100);
        assert_eq!(ramp_command(surge, &mut ramp, 10_000, 5_000).rate_per_s, 500);
        assert_eq!(ramp_command(surge, &mut ramp, 10_000, 20_000), surge);
        let drain = GateCommand {
            mode: GateMode::Drain,
            rate_per_s: 0,
            burst: 0,
        };
        assert_eq!(ramp_command(drain, &mut ramp, 10_000, 21_000), drain);
        assert_eq!(ramp, None);
        assert_eq!(
            ramp_command(surge, &mut ramp, 10_000, 22_000).rate_per_s,
            100,
            "a new surge ramps again"
        );
    }
}
