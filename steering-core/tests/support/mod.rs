//! A compact world for engine tests: policy YAML, then one line per fact, then queries.
//!
//! ```text
//! rtt us-east 198.18.1.0/24 20ms      # measured RTT of a region for a client prefix
//! down eu-west                        # region health (regions are up unless said otherwise)
//! drain eu-west                       # operator drain
//! ramp us-east 30%                    # recovered from an outage, 30% into its slow start
//! load us-east q=100 kv=0.95          # a live host's load (capacity stage)
//! ```
//! Queries: `A api client=198.18.1.7/24 resolver=198.18.0.53 country=DE continent=EU loc=53.3,-6.2`.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support module"
)]

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use steering_core::engine::{Decision, Query, Snapshot};
use steering_core::geo::{Continent, Country, GeoPoint};
use steering_core::policy::Policy;
use steering_core::prefix::{Family, Prefix};
use steering_core::region_health::{HealthState, RegionHealth, Status};
use steering_core::telemetry::wire::{GateMode, LoadReport};
use steering_core::telemetry::{GateTotals, HostState, RegionLoad, RttEstimate, Telemetry};
use steering_core::time::UnixMs;

pub(crate) const NOW: UnixMs = UnixMs(1_800_000_000_000);

pub(crate) struct World {
    pub(crate) policy: Arc<Policy>,
    pub(crate) telemetry: Telemetry,
    pub(crate) health: HealthState,
}

impl World {
    pub(crate) fn new(policy_yaml: &str) -> World {
        let policy =
            Arc::new(Policy::from_yaml("fixture.yaml", policy_yaml).unwrap_or_else(|e| panic!("{e}")));
        let mut health = HealthState::default();
        for r in &policy.regions {
            health.regions.insert(
                r.name.clone(),
                RegionHealth {
                    status: Status::Up,
                    streak: 0,
                    recovered_at: None,
                    changed_at: NOW,
                    last: RegionLoad::default(),
                    last_bad_reason: None,
                },
            );
        }
        World {
            policy,
            telemetry: Telemetry::default(),
            health,
        }
    }

    pub(crate) fn set_rtt(&mut self, region: &str, prefix: Prefix, us: u32) {
        self.telemetry
            .regions
            .entry(region.to_owned())
            .or_default()
            .prefixes
            .insert(
                prefix,
                RttEstimate {
                    srtt_us: us,
                    srtt_us_p90: us + us / 10,
                    srtt_us_min: us - us / 10,
                    samples: 50,
                    retrans: 0,
                    updated_at: NOW,
                },
            );
    }

    pub(crate) fn set_status(&mut self, region: &str, status: Status) {
        self.health
            .regions
            .get_mut(region)
            .unwrap_or_else(|| panic!("no region {region}"))
            .status = status;
    }

    pub(crate) fn fact(&mut self, line: &str) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["rtt", region, prefix, ms] => {
                let us = parse_ms(ms);
                self.set_rtt(region, prefix.parse().unwrap(), us);
            }
            ["down", region] => self.set_status(region, Status::Down),
            ["drain", region] => {
                self.health.drain(region);
            }
            ["ramp", region, pct] => {
                let pct: u64 = pct.trim_end_matches('%').parse().unwrap();
                let slow = HealthState::slow_start_of(&self.policy, region);
                let into = slow.as_millis() as u64 * pct / 100;
                let h = self.health.regions.get_mut(*region).unwrap();
                h.status = Status::Up;
                h.recovered_at = Some(UnixMs(NOW.0 - into));
            }
            ["load", region, rest @ ..] => {
                let mut load = LoadReport::default();
                for kv in rest {
                    let (k, v) = kv.split_once('=').unwrap();
                    match k {
                        "q" => load.queue_depth = v.parse().unwrap(),
                        "kv" => load.kv_cache_usage = v.parse().unwrap(),
                        other => panic!("unknown load key {other}"),
                    }
                }
                let rt = self.telemetry.regions.entry((*region).to_owned()).or_default();
                let n = rt.hosts.len();
                rt.hosts.insert(
                    format!("h{n}"),
                    HostState {
                        last_report_at: NOW,
                        seq: 1,
                        sent_at_ms: NOW.0,
                        interval_ms: 1000,
                        healthy: true,
                        failed_checks: Vec::new(),
                        load,
                        gate_mode: GateMode::Open,
                        gate_totals: GateTotals::default(),
                    },
                );
            }
            _ => panic!("bad fact line {line:?}"),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot::build(self.policy.clone(), &self.telemetry, &self.health, NOW, 7, None)
    }
}

fn parse_ms(s: &str) -> u32 {
    if let Some(v) = s.strip_suffix("ms") {
        (v.parse::<f64>().unwrap() * 1000.0) as u32
    } else if let Some(v) = s.strip_suffix("us") {
        v.parse().unwrap()
    } else {
        panic!("rtt needs ms or us: {s}")
    }
}

pub(crate) fn parse_query(snap: &Snapshot, line: &str) -> Query {
    let mut w = line.split_whitespace();
    let family = match w.next() {
        Some("A") => Family::V4,
        Some("AAAA") => Family::V6,
        other => panic!("query type {other:?}"),
    };
    let name = w.next().expect("service");
    let fqdn = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.{}", snap.policy.zone)
    };
    let service = snap
        .service_for(fqdn.as_bytes())
        .unwrap_or_else(|| panic!("no service {fqdn}"));
    let mut resolver: IpAddr = "198.18.0.53".parse().unwrap();
    let mut ecs = None;
    let mut q_country = None;
    let mut q_continent = None;
    let mut loc = None;
    for kv in w {
        let (k, v) = kv
            .split_once('=')
            .unwrap_or_else(|| panic!("bad query word {kv}"));
        match k {
            "client" => {
                let (a, l) = v.split_once('/').unwrap();
                ecs = Some((a.parse().unwrap(), l.parse().unwrap()));
            }
            "resolver" => resolver = v.parse().unwrap(),
            "country" => q_country = Some(Country::parse(v).unwrap()),
            "continent" => q_continent = Some(Continent::parse(v).unwrap()),
            "loc" => {
                let (a, b) = v.split_once(',').unwrap();
                loc = Some(GeoPoint {
                    lat: a.parse().unwrap(),
                    lon: b.parse().unwrap(),
                });
            }
            other => panic!("unknown query key {other}"),
        }
    }
    let mut q = Query::from_resolver(service, family, resolver);
    if let Some((a, l)) = ecs {
        q = q.with_ecs(a, l);
    }
    q.country = q_country;
    q.continent = q_continent;
    q.location = loc;
    q
}

/// Runs a fixture: `POLICY---\nFACTS---\nQUERIES`, returning each query's explanation.
pub(crate) fn run_fixture(fixture: &str) -> String {
    let mut parts = fixture.split("\n---\n");
    let policy = parts.next().expect("policy");
    let facts = parts.next().expect("facts");
    let queries = parts.next().expect("queries");
    let mut world = World::new(policy);
    for line in facts
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        world.fact(line);
    }
    let snap = world.snapshot();
    let mut out = String::new();
    for line in queries.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let q = parse_query(&snap, line);
        let d: Decision = snap.decide(&q);
        let _ = writeln!(out, "> {line}");
        out.push_str(&steering_core::explain::render(&snap, &q, &d));
    }
    out
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
