//! What the probes told us: per region, per host (liveness, health, load, gate counters) and per
//! client prefix (an RTT estimate). Every table is bounded; old entries are evicted by age.

pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::policy::Policy;
use crate::prefix::Prefix;
use crate::time::UnixMs;
use wire::{GateMode, GateReport, LoadReport, Report};

/// Bounds of the telemetry store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Hosts remembered per region.
    pub hosts_per_region_max: usize,
    /// Client prefixes remembered per region; new prefixes are refused (and counted) when full.
    pub prefixes_per_region_max: usize,
    /// A prefix not refreshed for this long is evicted.
    pub prefix_max_age: Duration,
    /// A host not heard from for this long is forgotten.
    pub host_max_age: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            hosts_per_region_max: 1024,
            prefixes_per_region_max: 1 << 20,
            prefix_max_age: Duration::from_mins(30),
            host_max_age: Duration::from_mins(10),
        }
    }
}

/// Why a report was refused. Nothing in the store changes when a report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The report speaks another protocol version.
    #[error("unsupported protocol version {0} (this server speaks {v})", v = wire::PROTOCOL_VERSION)]
    UnsupportedVersion(u32),
    /// The region is not in the policy.
    #[error("unknown region {0:?}")]
    UnknownRegion(String),
    /// The host name is empty, too long or has characters other than [A-Za-z0-9._-].
    #[error("bad host name {0:?}: expected 1..=253 characters of [A-Za-z0-9._-]")]
    BadHost(String),
    /// More RTT entries than [`wire::PREFIXES_PER_REPORT_MAX`].
    #[error("{0} rtt entries, at most {max} allowed", max = wire::PREFIXES_PER_REPORT_MAX)]
    TooManyPrefixes(usize),
    /// More checks than [`wire::CHECKS_PER_REPORT_MAX`].
    #[error("{0} health checks, at most {max} allowed", max = wire::CHECKS_PER_REPORT_MAX)]
    TooManyChecks(usize),
    /// A field has a value outside its range.
    #[error("{field}: {reason}")]
    BadValue { field: String, reason: String },
    /// The report is not newer than the last one from this host (a replay or reordering).
    #[error("report seq {seq} from {host} is not newer than {last} (replayed or reordered)")]
    Stale { host: String, seq: u64, last: u64 },
    /// The region already has [`Limits::hosts_per_region_max`] hosts.
    #[error("region {0:?} already has the maximum number of hosts")]
    TooManyHosts(String),
}

/// A smoothed RTT estimate for one (region, prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RttEstimate {
    /// EWMA of the per-interval medians.
    pub srtt_us: u32,
    /// EWMA of the per-interval p90s.
    pub srtt_us_p90: u32,
    /// Lowest median-interval minimum seen (a floor for the path).
    pub srtt_us_min: u32,
    /// Samples folded in, in total.
    pub samples: u64,
    pub retrans: u64,
    pub updated_at: UnixMs,
}

impl RttEstimate {
    /// Weight of a new interval's median in the EWMA, in 1/16ths: 4/16 = 0.25.
    const ALPHA_SIXTEENTHS: u64 = 4;

    fn first(r: &wire::RttReport, now: UnixMs) -> RttEstimate {
        RttEstimate {
            srtt_us: r.srtt_us_p50,
            srtt_us_p90: r.srtt_us_p90,
            srtt_us_min: r.srtt_us_min,
            samples: u64::from(r.samples),
            retrans: u64::from(r.retrans),
            updated_at: now,
        }
    }

    fn fold(&mut self, r: &wire::RttReport, now: UnixMs) {
        let ewma = |old: u32, new: u32| -> u32 {
            let a = Self::ALPHA_SIXTEENTHS;
            ((u64::from(old) * (16 - a) + u64::from(new) * a) / 16) as u32
        };
        self.srtt_us = ewma(self.srtt_us, r.srtt_us_p50);
        self.srtt_us_p90 = ewma(self.srtt_us_p90, r.srtt_us_p90);
        self.srtt_us_min = self.srtt_us_min.min(r.srtt_us_min);
        self.samples = self.samples.saturating_add(u64::from(r.samples));
        self.retrans = self.retrans.saturating_add(u64::from(r.retrans));
        self.updated_at = now;
    }
}

/// The last word from one host.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostState {
    pub last_report_at: UnixMs,
    pub seq: u64,
    pub sent_at_ms: u64,
    pub interval_ms: u32,
    pub healthy: bool,
    /// Names of the checks that failed in the last report.
    pub failed_checks: Vec<String>,
    pub load: LoadReport,
    pub gate_mode: GateMode,
    /// Gate counters summed over every report (the reports carry deltas).
    pub gate_totals: GateTotals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct GateTotals {
    pub syn_seen: u64,
    pub syn_admitted: u64,
    pub syn_dropped: u64,
}

/// Everything known about one region.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegionTelemetry {
    pub hosts: BTreeMap<String, HostState>,
    pub prefixes: HashMap<Prefix, RttEstimate>,
    /// New prefixes refused because the table was full.
    pub prefixes_refused: u64,
}

/// Aggregates of a region's live hosts at some `now`.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RegionLoad {
    pub hosts_known: u32,
    pub hosts_live: u32,
    pub hosts_healthy: u32,
    pub queue_depth_mean: f64,
    pub kv_cache_usage_mean: f64,
    pub active_connections: u64,
}

/// What a successful ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub prefixes_updated: usize,
    pub prefixes_refused: usize,
    pub new_host: bool,
}

/// The telemetry store, keyed by region *name* so it survives policy reloads that reorder regions.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Telemetry {
    pub limits: Limits,
    pub regions: BTreeMap<String, RegionTelemetry>,
    /// Bumped whenever an RTT estimate changes (ingest, expiry), so that a snapshot can tell whether its
    /// RTT table is still current. Not persisted: a loaded store starts a new count.
    #[serde(skip)]
    pub rtt_generation: u64,
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= wire::HOST_NAME_BYTES_MAX
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> IngestError {
    IngestError::BadValue {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks everything about a report that does not depend on stored state.
fn validate(policy: &Policy, r: &Report) -> Result<(), IngestError> {
    if r.version != wire::PROTOCOL_VERSION {
        return Err(IngestError::UnsupportedVersion(r.version));
    }
    if policy.region_by_name(&r.region).is_none() {
        return Err(IngestError::UnknownRegion(r.region.clone()));
    }
    if !valid_host(&r.host) {
        return Err(IngestError::BadHost(r.host.clone()));
    }
    if r.rtt.len() > wire::PREFIXES_PER_REPORT_MAX {
        return Err(IngestError::TooManyPrefixes(r.rtt.len()));
    }
    if r.health.checks.len() > wire::CHECKS_PER_REPORT_MAX {
        return Err(IngestError::TooManyChecks(r.health.checks.len()));
    }
    if !(100..=600_000).contains(&r.interval_ms) {
        return Err(bad("interval_ms", "expected 100..=600000"));
    }
    let kv = r.load.kv_cache_usage;
    if !kv.is_finite() || !(0.0..=1.0).contains(&kv) {
        return Err(bad("load.kv_cache_usage", format!("{kv} is not in 0..=1")));
    }
    for (i, c) in r.health.checks.iter().enumerate() {
        if c.name.is_empty() || c.name.len() > 64 {
            return Err(bad(format!("health.checks[{i}].name"), "expected 1..=64 bytes"));
        }
        if c.detail.as_ref().is_some_and(|d| d.len() > 512) {
            return Err(bad(format!("health.checks[{i}].detail"), "longer than 512 bytes"));
        }
    }
    for (i, e) in r.rtt.iter().enumerate() {
        let f = e.prefix.family();
        if e.prefix.len() < f.covering_len() {
            return Err(bad(
                format!("rtt[{i}].prefix"),
                format!("{} is shorter than /{}", e.prefix, f.covering_len()),
            ));
        }
        if e.samples == 0 {
            return Err(bad(
                format!("rtt[{i}].samples"),
                "entries without samples must be left out",
            ));
        }
        if !(e.srtt_us_min <= e.srtt_us_p50 && e.srtt_us_p50 <= e.srtt_us_p90) {
            return Err(bad(
                format!("rtt[{i}]"),
                "expected srtt_us_min <= srtt_us_p50 <= srtt_us_p90",
            ));
        }
        if e.srtt_us_p90 > 60_000_000 {
            return Err(bad(format!("rtt[{i}].srtt_us_p90"), "more than 60 s"));
        }
    }
    Ok(())
}

impl Telemetry {
    #[must_use]
    pub fn new(limits: Limits) -> Telemetry {
        Telemetry {
            limits,
            regions: BTreeMap::new(),
            rtt_generation: 0,
        }
    }

    /// Folds a report in. On error nothing changes.
    pub fn ingest(&mut self, policy: &Policy, r: &Report, now: UnixMs) -> Result<Ingested, IngestError> {
        validate(policy, r)?;
        let limits = self.limits;
        let region = self.regions.entry(r.region.clone()).or_default();
        let new_host = if let Some(h) = region.hosts.get(&r.host) {
            // A restarted agent begins its seq again, but its clock moves on.
            if r.seq <= h.seq && r.sent_at_ms <= h.sent_at_ms {
                return Err(IngestError::Stale {
                    host: r.host.clone(),
                    seq: r.seq,
                    last: h.seq,
                });
            }
            false
        } else {
            if region.hosts.len() >= limits.hosts_per_region_max {
                return Err(IngestError::TooManyHosts(r.region.clone()));
            }
            true
        };
        // Validated: from here on the report is applied whole.
        let totals = region
            .hosts
            .get(&r.host)
            .map(|h| h.gate_totals)
            .unwrap_or_default();
        let GateReport {
            mode,
            syn_seen,
            syn_admitted,
            syn_dropped,
        } = r.gate;
        region.hosts.insert(
            r.host.clone(),
            HostState {
                last_report_at: now,
                seq: r.seq,
                sent_at_ms: r.sent_at_ms,
                interval_ms: r.interval_ms,
                healthy: r.health.ok,
                failed_checks: r
                    .health
                    .checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| c.name.clone())
                    .collect(),
                load: r.load,
                gate_mode: mode,
                gate_totals: GateTotals {
                    syn_seen: totals.syn_seen.saturating_add(syn_seen),
                    syn_admitted: totals.syn_admitted.saturating_add(syn_admitted),
                    syn_dropped: totals.syn_dropped.saturating_add(syn_dropped),
                },
            },
        );
        let mut updated = 0;
        let mut refused = 0;
        for e in &r.rtt {
            if let Some(est) = region.prefixes.get_mut(&e.prefix) {
                est.fold(e, now);
                updated += 1;
            } else if region.prefixes.len() < limits.prefixes_per_region_max {
                region.prefixes.insert(e.prefix, RttEstimate::first(e, now));
                updated += 1;
            } else {
                refused += 1;
            }
        }
        region.prefixes_refused += refused as u64;
        if updated > 0 {
            self.rtt_generation += 1;
        }
        Ok(Ingested {
            prefixes_updated: updated,
            prefixes_refused: refused,
            new_host,
        })
    }

    /// Evicts prefixes and hosts older than the limits allow. Returns (prefixes, hosts) evicted.
    pub fn expire(&mut self, now: UnixMs) -> (usize, usize) {
        let (mut p, mut h) = (0, 0);
        let limits = self.limits;
        for region in self.regions.values_mut() {
            let before = region.prefixes.len();
            region
                .prefixes
                .retain(|_, e| now.since(e.updated_at) <= limits.prefix_max_age);
            p += before - region.prefixes.len();
            let before = region.hosts.len();
            region
                .hosts
                .retain(|_, s| now.since(s.last_report_at) <= limits.host_max_age);
            h += before - region.hosts.len();
        }
        if p > 0 {
            self.rtt_generation += 1;
        }
        (p, h)
    }

    /// Liveness, health and load of a region's hosts at `now`.
    #[must_use]
    pub fn region_load(&self, region: &str, stale_after: Duration, now: UnixMs) -> RegionLoad {
        let Some(r) = self.regions.get(region) else {
            return RegionLoad::default();
        };
        let mut out = RegionLoad {
            hosts_known: r.hosts.len() as u32,
            ..RegionLoad::default()
        };
        for h in r.hosts.values() {
            if now.since(h.last_report_at) > stale_after {
                continue;
            }
            out.hosts_live += 1;
            out.hosts_healthy += u32::from(h.healthy);
            out.queue_depth_mean += f64::from(h.load.queue_depth);
            out.kv_cache_usage_mean += h.load.kv_cache_usage;
            out.active_connections += u64::from(h.load.active_connections);
        }
        if out.hosts_live > 0 {
            out.queue_depth_mean /= f64::from(out.hosts_live);
            out.kv_cache_usage_mean /= f64::from(out.hosts_live);
        }
        out
    }

    /// Number of (region, prefix) RTT entries.
    #[must_use]
    pub fn prefix_count(&self) -> usize {
        self.regions.values().map(|r| r.prefixes.len()).sum()
    }
}
