//! Steering policy: YAML text -> (parse) raw serde types -> (validate) located errors -> (compile) the
//! internal types below, which do not derive serde and are what the engine reads.
//!
//! Entry point: [`Policy::from_yaml`].

mod compile;
mod error;
mod raw;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

pub use error::{Location, PolicyError, PolicyErrors};

use crate::geo::{Continent, Country, GeoPoint};
use crate::region_set::{RegionId, RegionSet};

/// At most this many endpoints per region and family.
pub const ENDPOINTS_PER_REGION_MAX: usize = 16;
/// At most this many services per policy.
pub const SERVICES_MAX: usize = 1024;
/// At most this many addresses in one answer.
pub const ANSWERS_MAX: usize = 8;
/// At most this many fences per service.
pub const FENCES_PER_SERVICE_MAX: usize = 32;
/// A policy file larger than this is rejected before parsing.
pub const POLICY_BYTES_MAX: usize = 4 << 20;

/// A compiled, validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The zone apex, lower case, with the trailing dot (`infer.example.com.`).
    pub zone: String,
    /// Regions in file order; a [`RegionId`] indexes this.
    pub regions: Vec<Region>,
    /// Services in file order; a [`ServiceId`] indexes this.
    pub services: Vec<Service>,
    pub health: HealthPolicy,
}

/// Index of a service in [`Policy::services`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub u16);

#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub id: RegionId,
    pub name: String,
    pub endpoints_v4: Vec<Ipv4Addr>,
    pub endpoints_v6: Vec<Ipv6Addr>,
    pub location: Option<GeoPoint>,
    /// Relative weight (default 100) for `weighted` mode and for choosing among tied regions.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lowest predicted latency for the client's prefix.
    Latency,
    /// The first healthy region in policy order.
    Failover,
    /// Spread by weight.
    Weighted,
    /// Nearest by great-circle distance from the client's `GeoIP` location.
    Geo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhenAllDown {
    /// Answer with every candidate as if healthy (fail open).
    Open,
    /// Answer with no address (NODATA).
    Closed,
    /// Answer with these regions.
    Fallback(RegionSet),
}

/// Data residency: clients from these countries/continents may only be sent to `allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub countries: Vec<Country>,
    pub continents: Vec<Continent>,
    pub allow: RegionSet,
    /// A strict fence is never left, even when every allowed region is down.
    pub strict: bool,
}

impl Fence {
    #[must_use]
    pub fn matches(&self, country: Option<Country>, continent: Option<Continent>) -> bool {
        country.is_some_and(|c| self.countries.contains(&c))
            || continent.is_some_and(|c| self.continents.contains(&c))
    }
}

/// Shed load from a region whose average load is past a high watermark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub queue_depth_high: Option<u32>,
    /// Fraction 0..=1.
    pub kv_cache_high: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub id: ServiceId,
    /// The label under the zone (`api`), lower case; `@` is the apex.
    pub name: String,
    /// The full name, lower case, trailing dot (`api.infer.example.com.`).
    pub fqdn: String,
    pub mode: Mode,
    /// Candidate regions in policy order (the order `failover` and the last fallback use).
    pub regions: Vec<RegionId>,
    pub region_set: RegionSet,
    /// Addresses per answer, 1..=[`ANSWERS_MAX`].
    pub answers: u8,
    pub ttl_normal_s: u32,
    pub ttl_min_s: u32,
    /// Regions within `stabilize_us` or `stabilize_pct` percent of the best count as tied.
    pub stabilize_us: u32,
    pub stabilize_pct: u32,
    /// Share of answers that go to a non-best healthy region, in parts per million.
    pub explore_ppm: u32,
    pub when_all_down: WhenAllDown,
    pub slow_start: Duration,
    pub fences: Vec<Fence>,
    pub capacity: Option<Capacity>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive bad evaluations before a region goes down.
    pub fall: u32,
    /// Consecutive good evaluations before a down region comes back (then ramps for `slow_start`).
    pub rise: u32,
    /// A host whose last report is older than this is not live.
    pub stale_after: Duration,
    /// A region is good when at least this fraction of its known hosts is live and healthy...
    pub min_healthy_fraction: f64,
    /// ... and at least this many hosts are.
    pub min_healthy_hosts: u32,
}

impl Default for HealthPolicy {
    fn default() -> HealthPolicy {
        HealthPolicy {
            fall: 2,
            rise: 3,
            stale_after: Duration::from_secs(3),
            min_healthy_fraction: 0.5,
            min_healthy_hosts: 1,
        }
    }
}

impl Policy {
    /// Parses, validates and compiles a policy. `file` is only used to label errors.
    pub fn from_yaml(file: &str, text: &str) -> Result<Policy, PolicyErrors> {
        compile::from_yaml(file, text)
    }

    #[must_use]
    pub fn region(&self, id: RegionId) -> &Region {
        &self.regions[id.index()]
    }

    #[must_use]
    pub fn region_by_name(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    #[must_use]
    pub fn service(&self, id: ServiceId) -> &Service {
        &self.services[usize::from(id.0)]
    }

    /// The service whose fqdn is `name` (ASCII case-insensitive, trailing dot optional).
    #[must_use]
    pub fn service_by_fqdn(&self, name: &str) -> Option<&Service> {
        let name = name.strip_suffix('.').unwrap_or(name);
        self.services
            .iter()
            .find(|s| s.fqdn[..s.fqdn.len() - 1].eq_ignore_ascii_case(name))
    }

    /// Every region, as a set.
    #[must_use]
    pub fn all_regions(&self) -> RegionSet {
        RegionSet::from_ids(&self.regions.iter().map(|r| r.id).collect::<Vec<_>>())
    }
}
