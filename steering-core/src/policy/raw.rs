//! The policy file as written: serde types that mirror the YAML one to one.
//!
//! Nothing here is validated beyond its shape. Values whose meaning needs a check with a location
//! (durations, addresses, country codes, region references, ranges) stay text or wide integers so
//! that `compile` can report every problem at once instead of serde stopping at the first.
//! Defaults are spelled out per field; `compile` turns these types into the ones in `super`.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

/// The whole policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map with zone, regions, services and optionally health")]
pub(super) struct RawPolicy {
    /// The DNS zone the services live under (`infer.example.com.`); the trailing dot is optional.
    pub(super) zone: String,
    /// Regions by name, in file order (the order gives each its `RegionId`). Required.
    pub(super) regions: Named<RawRegion>,
    /// Services by name (a DNS label under the zone, `"@"` for the apex), in file order. Required.
    pub(super) services: Named<RawService>,
    /// Health evaluation; the whole section and each field are optional.
    #[serde(default)]
    pub(super) health: RawHealth,
}

/// A map that keeps its entries in file order (serde's `HashMap` would not).
///
/// Duplicate keys never reach this type: the YAML layer rejects them with both locations.
#[derive(Debug)]
pub(super) struct Named<V>(pub(super) Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Named<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamedVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for NamedVisitor<V> {
            type Value = Named<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of name -> value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<V>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    entries.push((k, v));
                }
                Ok(Named(entries))
            }
        }

        deserializer.deserialize_map(NamedVisitor(PhantomData))
    }
}

/// One region: where its endpoints are and how much it weighs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a region: a map with endpoints and optionally location and weight")]
pub(super) struct RawRegion {
    /// IPv4 and IPv6 addresses handed out for this region; at least one. Required.
    pub(super) endpoints: Vec<String>,
    /// Where the region is, for `geo` mode and the great-circle latency guess. Default: none.
    #[serde(default)]
    pub(super) location: Option<RawLocation>,
    /// Relative weight, `1..=1_000_000`. Default: 100.
    #[serde(default = "default_weight")]
    pub(super) weight: i64,
}

fn default_weight() -> i64 {
    100
}

/// A point on the earth in degrees.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a location: a map with lat and lon")]
pub(super) struct RawLocation {
    /// Latitude, -90..=90. Required.
    pub(super) lat: f64,
    /// Longitude, -180..=180. Required.
    pub(super) lon: f64,
}

/// How a service picks its regions.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[serde(expecting = "one of latency, failover, weighted, geo")]
pub(super) enum RawMode {
    /// Lowest predicted latency (the default).
    #[default]
    Latency,
    /// First healthy region in the service's order.
    Failover,
    /// Spread by region weight.
    Weighted,
    /// Nearest by great-circle distance; every region of the service needs a `location`.
    Geo,
}

/// One service: a name under the zone and how its answers are chosen.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a service: a map with mode, regions, answers, ttl, ... (all optional)")]
pub(super) struct RawService {
    /// Selection mode. Default: `latency`.
    #[serde(default)]
    pub(super) mode: RawMode,
    /// Candidate regions in preference order. Default (absent): every region, in region order.
    #[serde(default)]
    pub(super) regions: Option<Vec<String>>,
    /// Addresses per answer, 1..=`ANSWERS_MAX`. Default: 1.
    #[serde(default = "default_answers")]
    pub(super) answers: i64,
    /// Answer TTLs. Default: `{ normal: 20s, min: 5s }`.
    #[serde(default)]
    pub(super) ttl: RawTtl,
    /// The band within which regions count as tied. Default: `{ ms: 10, pct: 10 }`.
    #[serde(default)]
    pub(super) stabilize: RawStabilize,
    /// Share of answers, 0..=0.5, sent to a non-best healthy region to keep its RTT data fresh.
    /// Default: 0.02.
    #[serde(default = "default_explore")]
    pub(super) explore: f64,
    /// What to answer when every candidate is down. Default: `open`.
    #[serde(default)]
    pub(super) when_all_down: RawWhenAllDown,
    /// How long a region that came back ramps up its share of answers; `0s` = no ramp. Default: `0s`.
    #[serde(default = "default_slow_start")]
    pub(super) slow_start: String,
    /// Data residency rules, checked in order; at most `FENCES_PER_SERVICE_MAX`. Default: none.
    #[serde(default)]
    pub(super) fences: Vec<RawFence>,
    /// Load shedding watermarks. Default: none (no shedding).
    #[serde(default)]
    pub(super) capacity: Option<RawCapacity>,
}

fn default_answers() -> i64 {
    1
}

fn default_explore() -> f64 {
    0.02
}

fn default_slow_start() -> String {
    "0s".to_owned()
}

/// Answer TTLs; both in whole seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map with normal and min")]
pub(super) struct RawTtl {
    /// The TTL of a clear-cut answer. Default: `20s`.
    #[serde(default = "default_ttl_normal")]
    pub(super) normal: String,
    /// The TTL when the margin is thin or a region is ramping; at most `normal`.
    /// Default: `5s`, or `normal` when that is shorter.
    #[serde(default)]
    pub(super) min: Option<String>,
}

fn default_ttl_normal() -> String {
    "20s".to_owned()
}

impl Default for RawTtl {
    fn default() -> RawTtl {
        RawTtl {
            normal: default_ttl_normal(),
            min: None,
        }
    }
}

/// Regions within `ms` milliseconds or `pct` percent of the best count as tied.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map with ms and pct")]
pub(super) struct RawStabilize {
    /// Absolute band in milliseconds, `0..=10_000`. Default: 10.
    #[serde(default = "default_stabilize_ms")]
    pub(super) ms: i64,
    /// Relative band in percent, 0..=100. Default: 10.
    #[serde(default = "default_stabilize_pct")]
    pub(super) pct: i64,
}

fn default_stabilize_ms() -> i64 {
    10
}

fn default_stabilize_pct() -> i64 {
    10
}

impl Default for RawStabilize {
    fn default() -> RawStabilize {
        RawStabilize {
            ms: default_stabilize_ms(),
            pct: default_stabilize_pct(),
        }
    }
}

/// `open`, `closed` or `{ fallback: [region, ...] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[serde(expecting = "open, closed or { fallback: [region, ...] }")]
pub(super) enum RawWhenAllDown {
    /// Answer with every candidate as if healthy (the default).
    #[default]
    Open,
    /// Answer with no address.
    Closed,
    /// Answer with these regions, which must be among the service's regions.
    Fallback(Vec<String>),
}

/// Clients from `countries` or `continents` may only be sent to `allow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a fence: a map with countries and/or continents, allow and strict")]
pub(super) struct RawFence {
    /// ISO 3166-1 alpha-2 codes (`DE`). Default: none; at least one of `countries`/`continents`.
    #[serde(default)]
    pub(super) countries: Vec<String>,
    /// Continent codes (`AF AN AS EU NA OC SA`). Default: none.
    #[serde(default)]
    pub(super) continents: Vec<String>,
    /// The regions these clients may be sent to; non-empty, among the service's regions. Required.
    pub(super) allow: Vec<String>,
    /// A strict fence is never left, even when every allowed region is down. Default: `true`,
    /// because a residency rule that quietly opens under failure is not one.
    #[serde(default = "default_strict")]
    pub(super) strict: bool,
}

fn default_strict() -> bool {
    true
}

/// High watermarks past which a region sheds answers; at least one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map with queue_depth_high and/or kv_cache_high")]
pub(super) struct RawCapacity {
    /// Average queue depth per host, >= 1. Default: no limit.
    #[serde(default)]
    pub(super) queue_depth_high: Option<i64>,
    /// KV-cache use as a fraction, 0..=1. Default: no limit.
    #[serde(default)]
    pub(super) kv_cache_high: Option<f64>,
}

/// Health evaluation. The defaults are those of `HealthPolicy::default()` (a unit test checks it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map with fall, rise, stale_after, min_healthy_fraction, min_healthy_hosts")]
pub(super) struct RawHealth {
    /// Consecutive bad evaluations before a region goes down, >= 1. Default: 2.
    #[serde(default = "default_fall")]
    pub(super) fall: i64,
    /// Consecutive good evaluations before a down region comes back, >= 1. Default: 3.
    #[serde(default = "default_rise")]
    pub(super) rise: i64,
    /// A host whose last report is older than this is not live; > 0. Default: `3s`.
    #[serde(default = "default_stale_after")]
    pub(super) stale_after: String,
    /// Fraction of known hosts, 0..=1, that must be live and healthy. Default: 0.5.
    #[serde(default = "default_min_healthy_fraction")]
    pub(super) min_healthy_fraction: f64,
    /// Hosts that must be live and healthy, >= 0. Default: 1.
    #[serde(default = "default_min_healthy_hosts")]
    pub(super) min_healthy_hosts: i64,
}

fn default_fall() -> i64 {
    2
}

fn default_rise() -> i64 {
    3
}

fn default_stale_after() -> String {
    "3s".to_owned()
}

fn default_min_healthy_fraction() -> f64 {
    0.5
}

fn default_min_healthy_hosts() -> i64 {
    1
}

impl Default for RawHealth {
    fn default() -> RawHealth {
        RawHealth {
            fall: default_fall(),
            rise: default_rise(),
            stale_after: default_stale_after(),
            min_healthy_fraction: default_min_healthy_fraction(),
            min_healthy_hosts: default_min_healthy_hosts(),
        }
    }
}
