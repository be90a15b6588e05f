//! Health per region with hysteresis, the slow-start ramp after recovery, and operator drains.
//!
//! Health-checking (the probes) and selection (the engine) are separate: this module turns the
//! telemetry of a region's hosts into one of three states, flipping only after `fall` (or `rise`)
//! consecutive evaluations agree.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::policy::{HealthPolicy, Policy};
use crate::telemetry::wire::{GateCommand, GateMode};
use crate::telemetry::{RegionLoad, Telemetry};
use crate::time::UnixMs;

/// The state of one region as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    /// Never evaluated good: no host has reported healthy enough yet.
    Unknown,
    Up,
    Down,
}

/// Health bookkeeping of one region.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegionHealth {
    pub status: Status,
    /// Consecutive good evaluations (while not up) or bad ones (while up).
    pub streak: u32,
    /// When the region last came back from down; it ramps for `slow_start` from here.
    pub recovered_at: Option<UnixMs>,
    /// When the status last changed.
    pub changed_at: UnixMs,
    /// The last evaluation's inputs, for `/v1/state` and explain.
    pub last: RegionLoad,
    /// Why the last evaluation was bad, if it was.
    #[serde(skip)]
    pub last_bad_reason: Option<&'static str>,
}

impl RegionHealth {
    fn new(now: UnixMs) -> RegionHealth {
        RegionHealth {
            status: Status::Unknown,
            streak: 0,
            recovered_at: None,
            changed_at: now,
            last: RegionLoad::default(),
            last_bad_reason: None,
        }
    }

    /// The slow-start factor at `now`, in parts per million: 1e6 when not ramping.
    /// The factor rises linearly from [`RAMP_FLOOR_PPM`] to 1e6 over `slow_start`.
    #[must_use]
    pub fn ramp_ppm(&self, slow_start: Duration, now: UnixMs) -> u32 {
        let Some(at) = self.recovered_at else { return PPM };
        if self.status != Status::Up || slow_start.is_zero() {
            return PPM;
        }
        let elapsed = now.since(at).as_millis() as u64;
        let total = slow_start.as_millis() as u64;
        if elapsed >= total {
            return PPM;
        }
        let f = (elapsed * u64::from(PPM) / total) as u32;
        f.max(RAMP_FLOOR_PPM)
    }
}

/// One million: factors and shares are carried as parts per million.
pub const PPM: u32 = 1_000_000;
/// A recovering region gets at least this share of its full weight from its first second on.
pub const RAMP_FLOOR_PPM: u32 = 20_000;

/// How the gate's surge admission rate ramps with the slow-start factor (per host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurgeRamp {
    pub start_per_s: u32,
    pub full_per_s: u32,
    pub burst: u32,
}

impl Default for SurgeRamp {
    fn default() -> SurgeRamp {
        SurgeRamp {
            start_per_s: 20,
            full_per_s: 2000,
            burst: 32,
        }
    }
}

/// Health of every region plus the operator's drains. Keyed by region name (survives reloads).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthState {
    pub regions: BTreeMap<String, RegionHealth>,
    /// Regions an operator drained: never answered, their gates set to drain.
    pub drained: BTreeSet<String>,
}

/// Whether one evaluation of a region is good, and why not.
fn judge(h: &HealthPolicy, load: &RegionLoad) -> Result<(), &'static str> {
    if load.hosts_live == 0 {
        return Err("no live host");
    }
    if load.hosts_healthy < h.min_healthy_hosts {
        return Err("fewer healthy hosts than min_healthy_hosts");
    }
    if f64::from(load.hosts_healthy) < h.min_healthy_fraction * f64::from(load.hosts_known) {
        return Err("healthy fraction below min_healthy_fraction");
    }
    Ok(())
}

impl HealthState {
    /// One evaluation tick for every region of the policy.
    pub fn evaluate(&mut self, policy: &Policy, telemetry: &Telemetry, now: UnixMs) {
        let hp = policy.health;
        self.regions
            .retain(|name, _| policy.region_by_name(name).is_some());
        for region in &policy.regions {
            let load = telemetry.region_load(&region.name, hp.stale_after, now);
            let rh = self
                .regions
                .entry(region.name.clone())
                .or_insert_with(|| RegionHealth::new(now));
            let verdict = judge(&hp, &load);
            rh.last = load;
            rh.last_bad_reason = verdict.err();
            let good = verdict.is_ok();
            match (rh.status, good) {
                (Status::Up, true) | (Status::Down | Status::Unknown, false) => rh.streak = 0,
                (Status::Up, false) => {
                    rh.streak += 1;
                    if rh.streak >= hp.fall {
                        rh.status = Status::Down;
                        rh.streak = 0;
                        rh.changed_at = now;
                        rh.recovered_at = None;
                    }
                }
                (Status::Down | Status::Unknown, true) => {
                    rh.streak += 1;
                    // The first time a region is seen good it comes up without a ramp: there is no
                    // queue of clients waiting for it. After an outage it ramps.
                    if rh.streak >= hp.rise || rh.status == Status::Unknown {
                        rh.recovered_at = (rh.status == Status::Down).then_some(now);
                        rh.status = Status::Up;
                        rh.streak = 0;
                        rh.changed_at = now;
                    }
                }
            }
        }
    }

    #[must_use]
    pub fn status(&self, region: &str) -> Status {
        self.regions.get(region).map_or(Status::Unknown, |r| r.status)
    }

    pub fn drain(&mut self, region: &str) -> bool {
        self.drained.insert(region.to_owned())
    }

    pub fn undrain(&mut self, region: &str) -> bool {
        self.drained.remove(region)
    }

    /// The longest slow start among the services that use `region`.
    #[must_use]
    pub fn slow_start_of(policy: &Policy, region: &str) -> Duration {
        let Some(r) = policy.region_by_name(region) else {
            return Duration::ZERO;
        };
        policy
            .services
            .iter()
            .filter(|s| s.region_set.contains(r.id))
            .map(|s| s.slow_start)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// The gate state steerd wants for the hosts of `region`: drain when an operator drained it,
    /// surge (rate rising with the slow-start factor) while it ramps after an outage, open otherwise.
    #[must_use]
    pub fn gate_for(&self, policy: &Policy, region: &str, ramp: SurgeRamp, now: UnixMs) -> GateCommand {
        if self.drained.contains(region) {
            return GateCommand {
                mode: GateMode::Drain,
                rate_per_s: 0,
                burst: 0,
            };
        }
        let Some(rh) = self.regions.get(region) else {
            return GateCommand {
                mode: GateMode::Open,
                rate_per_s: 0,
                burst: 0,
            };
        };
        let f = rh.ramp_ppm(Self::slow_start_of(policy, region), now);
        if f >= PPM {
            return GateCommand {
                mode: GateMode::Open,
                rate_per_s: 0,
                burst: 0,
            };
        }
        let span = u64::from(ramp.full_per_s.saturating_sub(ramp.start_per_s));
        let rate = ramp.start_per_s + (span * u64::from(f) / u64::from(PPM)) as u32;
        GateCommand {
            mode: GateMode::Surge,
            rate_per_s: rate,
            burst: ramp.burst,
        }
    }
}
