//! The answer engine: a [`Snapshot`] precomputed from policy + telemetry + health at `now`, and
//! [`Snapshot::decide`], a filter chain whose every stage is recorded in a [`Trace`]:
//!
//! 1. candidates (regions with endpoints of the family) 2. admin (drained out) 3. fence (residency)
//! 4. health (+ `when_all_down`) 5. capacity 6. latency (source chain, stabilize band, stickiness)
//! 7. weight + ramp + exploration 8. select (addresses, TTL, ECS scope).
//!
//! `decide` does not allocate: every set is a [`RegionSet`] and the trace is `Copy`.

mod rtt_table;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rtt_table::{NO_RTT, RttTable};

use crate::geo::{Continent, Country, GeoPoint};
use crate::policy::{ANSWERS_MAX, Mode, Policy, ServiceId, WhenAllDown};
use crate::prefix::{Family, Prefix};
use crate::region_health::{HealthState, PPM, Status};
use crate::region_set::{REGIONS_MAX, RegionId, RegionSet};
use crate::telemetry::{RegionLoad, Telemetry};
use crate::time::UnixMs;

/// splitmix64's finalizer: a cheap, well-mixed 64-bit hash step.
#[must_use]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where the client of a query is, as far as the server can tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Query {
    pub service: ServiceId,
    /// A -> V4, AAAA -> V6.
    pub family: Family,
    /// The client subnet: the ECS address, or the resolver's address when the query had no ECS.
    pub client: IpAddr,
    /// The ECS SOURCE PREFIX-LENGTH, or the full address length without ECS.
    pub client_len: u8,
    /// Whether `client` came from ECS (and so the answer's scope matters).
    pub ecs: bool,
    /// The address the query came from (the resolver).
    pub resolver: IpAddr,
    /// `GeoIP` of the client subnet.
    pub country: Option<Country>,
    pub continent: Option<Continent>,
    pub location: Option<GeoPoint>,
}

impl Query {
    /// A query from `resolver` without ECS and without `GeoIP` data.
    #[must_use]
    pub fn from_resolver(service: ServiceId, family: Family, resolver: IpAddr) -> Query {
        Query {
            service,
            family,
            client: resolver,
            client_len: match resolver {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            },
            ecs: false,
            resolver,
            country: None,
            continent: None,
            location: None,
        }
    }

    /// The same query with an ECS client subnet.
    #[must_use]
    pub fn with_ecs(mut self, client: IpAddr, source_len: u8) -> Query {
        self.client = client;
        self.client_len = source_len;
        self.ecs = true;
        self
    }
}

/// Which data decided the latency ranking (stage 6), best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatencySource {
    /// Measured RTT for the client's own prefix (/24, /56).
    Measured,
    /// Measured RTT aggregated over the covering prefix (/16, /40).
    Covering,
    /// Measured RTT for the resolver's prefix.
    Resolver,
    /// Great-circle distance from the client's `GeoIP` location.
    Distance,
    /// No data: policy order.
    #[default]
    PolicyOrder,
    /// The mode does not rank by latency (failover, weighted).
    NotRanked,
}

/// What `when_all_down` did when no candidate was healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllDown {
    Open,
    Closed,
    Fallback,
}

/// Why the answer's TTL is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlReason {
    #[default]
    Normal,
    /// The best and second-best regions are close: a shift is likely soon.
    ThinMargin,
    /// The chosen region is ramping after an outage.
    Ramping,
    /// An exploration answer.
    Explore,
    /// Every candidate was down.
    AllDown,
}

/// Every stage of one decision. `Copy`, fixed size, no allocation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trace {
    pub service: ServiceId,
    pub family: Family,
    pub mode: Mode,
    /// Stage 1: regions of the service with endpoints of the family.
    pub candidates: RegionSet,
    /// Stage 2: minus operator-drained regions.
    pub after_admin: RegionSet,
    /// Stage 3: the fence that matched the client (index into the service's fences).
    pub fence: Option<u8>,
    pub fence_strict: bool,
    /// A non-strict fence was left because every region inside it was down.
    pub fence_left: bool,
    pub after_fence: RegionSet,
    /// Stage 4: up regions (or what `when_all_down` chose).
    pub after_health: RegionSet,
    pub all_down: Option<AllDown>,
    /// Stage 5: regions shed for load.
    pub shed: RegionSet,
    /// Every healthy region was over capacity, so none was shed.
    pub capacity_all_over: bool,
    pub after_capacity: RegionSet,
    /// Stage 6.
    pub source: LatencySource,
    /// The prefix whose data decided (the client's, its covering one, or the resolver's).
    pub data_prefix: Option<Prefix>,
    /// Predicted RTT per region (µs), `u32::MAX` without data.
    pub rtt_us: [u32; REGIONS_MAX],
    pub best: Option<RegionId>,
    pub band_us: u32,
    /// Regions tied with the best (within the stabilize band).
    pub tied: RegionSet,
    /// The previous choice for this prefix was kept (within the band).
    pub sticky: bool,
    /// Stage 7.
    pub explored: bool,
    /// The ramping best region yielded this answer to the next one (slow start).
    pub ramp_deferred: bool,
    pub epoch: u64,
    /// Stage 8.
    pub chosen: Option<RegionId>,
    pub ttl_reason: TtlReason,
}

/// The outcome of a decision. "No healthy region" is an outcome, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Addresses to answer with.
    Answer,
    /// The service has no endpoint of this family (NODATA).
    NoCandidates,
    /// Nothing may be answered (all down with `closed`, or everything drained/fenced): NODATA.
    NoHealthy,
}

/// The answer to one query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    addrs: [IpAddr; ANSWERS_MAX],
    addrs_len: u8,
    pub ttl_s: u32,
    /// ECS SCOPE PREFIX-LENGTH for the answer.
    pub scope_len: u8,
    pub trace: Trace,
}

impl Decision {
    #[must_use]
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs[..usize::from(self.addrs_len)]
    }

    #[must_use]
    pub fn region(&self) -> Option<RegionId> {
        self.trace.chosen
    }
}

/// Per-region state frozen into a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionView {
    pub status: Status,
    pub drained: bool,
    /// Slow-start factor in ppm (1e6 = full).
    pub ramp_ppm: u32,
    pub load: RegionLoad,
}

#[derive(Debug, Clone)]
struct ServiceView {
    /// Candidates per family: [V4, V6].
    candidates: [RegionSet; 2],
    shed: RegionSet,
    /// Lower-cased fqdn without the trailing dot, for allocation-free lookups.
    fqdn: Box<[u8]>,
}

/// An immutable view built on every tick; queries read it and never wait.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub policy: Arc<Policy>,
    pub built_at: UnixMs,
    pub seed: u64,
    pub regions: Vec<RegionView>,
    up: RegionSet,
    drained: RegionSet,
    ramping: RegionSet,
    services: Vec<ServiceView>,
    /// Shared with the previous snapshot when no RTT estimate changed (see [`Snapshot::build_with`]).
    rtt: Arc<RttTable>,
    rtt_generation: u64,
    rtt_built_at: UnixMs,
    /// (region, prefix) estimates the table was built from.
    rtt_prefixes: usize,
}

fn family_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// The stabilize band around `best_us`: the larger of the absolute and the relative band.
fn band(best_us: u32, stabilize_us: u32, stabilize_pct: u32) -> u32 {
    let rel = (u64::from(best_us) * u64::from(stabilize_pct) / 100) as u32;
    stabilize_us.max(rel)
}

/// Aggregates child cells into covering rows as sample-weighted means.
#[derive(Default, Clone, Copy)]
struct Acc {
    sum: u64,
    weight: u64,
}

impl Snapshot {
    /// Builds a snapshot. `prev` (the snapshot being replaced) carries each prefix's previous choice
    /// forward so that answers do not flap between regions inside the stabilize band.
    #[must_use]
    pub fn build(
        policy: Arc<Policy>,
        telemetry: &Telemetry,
        health: &HealthState,
        now: UnixMs,
        seed: u64,
        prev: Option<&Snapshot>,
    ) -> Snapshot {
        Self::build_with(policy, telemetry, health, now, seed, prev, Duration::ZERO)
    }

    /// Like [`build`](Self::build), but the RTT table — by far the costliest part at a million prefixes —
    /// is taken over from `prev` (shared, not copied) when no RTT estimate changed since it was built, or when
    /// it is younger than `rtt_refresh` and no new prefix appeared. Health, drains, ramps and load are always current: they are cheap.
    #[must_use]
    pub fn build_with(
        policy: Arc<Policy>,
        telemetry: &Telemetry,
        health: &HealthState,
        now: UnixMs,
        seed: u64,
        prev: Option<&Snapshot>,
        rtt_refresh: Duration,
    ) -> Snapshot {
        let n = policy.regions.len();
        let mut regions = Vec::with_capacity(n);
        let (mut up, mut drained, mut ramping) = (RegionSet::EMPTY, RegionSet::EMPTY, RegionSet::EMPTY);
        for r in &policy.regions {
            let status = health.status(&r.name);
            let is_drained = health.drained.contains(&r.name);
            let slow_start = HealthState::slow_start_of(&policy, &r.name);
            let ramp_ppm = health
                .regions
                .get(&r.name)
                .map_or(PPM, |h| h.ramp_ppm(slow_start, now));
            let load = telemetry.region_load(&r.name, policy.health.stale_after, now);
            if status == Status::Up {
                up = up.with(r.id);
            }
            if is_drained {
                drained = drained.with(r.id);
            }
            if ramp_ppm < PPM {
                ramping = ramping.with(r.id);
            }
            regions.push(RegionView {
                status,
                drained: is_drained,
                ramp_ppm,
                load,
            });
        }

        let services = policy
            .services
            .iter()
            .map(|s| {
                let mut c = [RegionSet::EMPTY; 2];
                let mut shed = RegionSet::EMPTY;
                for &id in &s.regions {
                    let r = policy.region(id);
                    if !r.endpoints_v4.is_empty() {
                        c[0] = c[0].with(id);
                    }
                    if !r.endpoints_v6.is_empty() {
                        c[1] = c[1].with(id);
                    }
                    if let Some(cap) = s.capacity {
                        let l = &regions[id.index()].load;
                        let over_q = cap
                            .queue_depth_high
                            .is_some_and(|h| l.queue_depth_mean > f64::from(h));
                        let over_kv = cap.kv_cache_high.is_some_and(|h| l.kv_cache_usage_mean > h);
                        if l.hosts_live > 0 && (over_q || over_kv) {
                            shed = shed.with(id);
                        }
                    }
                }
                let fqdn = s
                    .fqdn
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
                    .into_bytes()
                    .into_boxed_slice();
                ServiceView {
                    candidates: c,
                    shed,
                    fqdn,
                }
            })
            .collect();

        // New prefixes are news (a client seen for the first time): they never wait for the refresh.
        let prefixes = telemetry.prefix_count();
        let reusable = prev.filter(|p| {
            Self::same_regions(&p.policy, &policy)
                && (p.rtt_generation == telemetry.rtt_generation
                    || (now.since(p.rtt_built_at) < rtt_refresh && p.rtt_prefixes == prefixes))
        });
        let (rtt, rtt_generation, rtt_built_at, rtt_prefixes) = if let Some(p) = reusable {
            (p.rtt.clone(), p.rtt_generation, p.rtt_built_at, p.rtt_prefixes)
        } else {
            let t = Self::build_rtt(&policy, telemetry, up, prev);
            (Arc::new(t), telemetry.rtt_generation, now, prefixes)
        };
        Snapshot {
            policy,
            built_at: now,
            seed,
            regions,
            up,
            drained,
            ramping,
            services,
            rtt,
            rtt_generation,
            rtt_built_at,
            rtt_prefixes,
        }
    }

    fn same_regions(a: &Policy, b: &Policy) -> bool {
        a.regions.len() == b.regions.len() && a.regions.iter().zip(&b.regions).all(|(x, y)| x.name == y.name)
    }

    /// When the RTT table in this snapshot was built (it is shared while no estimate changes).
    #[must_use]
    pub fn rtt_built_at(&self) -> UnixMs {
        self.rtt_built_at
    }

    fn build_rtt(policy: &Policy, telemetry: &Telemetry, up: RegionSet, prev: Option<&Snapshot>) -> RttTable {
        let n = policy.regions.len();
        let mut table = RttTable::new(n);
        let mut covering: rtt_table::PrefixMap<Vec<Acc>> = rtt_table::PrefixMap::default();
        for r in &policy.regions {
            let Some(rt) = telemetry.regions.get(&r.name) else {
                continue;
            };
            table.index.reserve(rt.prefixes.len());
            for (p, est) in &rt.prefixes {
                let row = table.row_mut(*p);
                table.cells[row * n + r.id.index()] = est.srtt_us;
                let cov = p.truncate(p.family().covering_len());
                if cov != *p {
                    let accs = covering.entry(cov).or_insert_with(|| vec![Acc::default(); n]);
                    let w = est.samples.clamp(1, 1 << 20);
                    accs[r.id.index()].sum += u64::from(est.srtt_us) * w;
                    accs[r.id.index()].weight += w;
                }
            }
        }
        for (p, accs) in covering {
            // A measured covering prefix (a probe keyed at /16) wins over the aggregate of its children.
            if table.index.contains_key(&p) {
                continue;
            }
            let row = table.row_mut(p);
            for (i, a) in accs.iter().enumerate() {
                if let Some(mean) = a.sum.checked_div(a.weight) {
                    table.cells[row * n + i] = mean as u32;
                }
            }
        }

        // Stickiness: each prefix keeps its previous region while that stays within the widest
        // stabilize band of the policy's latency services.
        let (bus, bpct) = policy
            .services
            .iter()
            .filter(|s| s.mode == Mode::Latency)
            .fold((0, 0), |(u, p), s| {
                (u.max(s.stabilize_us), p.max(s.stabilize_pct))
            });
        let prev = prev.filter(|p| Self::same_regions(&p.policy, policy));
        let prefixes: Vec<(Prefix, u32)> = table.index.iter().map(|(p, r)| (*p, *r)).collect();
        for (p, row) in prefixes {
            let row = row as usize;
            let cells = &table.cells[row * n..(row + 1) * n];
            let mut best: Option<(u32, usize)> = None;
            for (i, &c) in cells.iter().enumerate() {
                if c != NO_RTT && up.contains(RegionId(i as u8)) && best.is_none_or(|(b, _)| c < b) {
                    best = Some((c, i));
                }
            }
            let Some((best_us, best_i)) = best else { continue };
            let mut choice = best_i as u8;
            if let Some((prow, _)) = prev.and_then(|s| s.rtt.get(&p)) {
                let s = prev.map_or(u8::MAX, |s| s.rtt.sticky[prow]);
                if s != u8::MAX
                    && up.contains(RegionId(s))
                    && cells[usize::from(s)] != NO_RTT
                    && cells[usize::from(s)] <= best_us.saturating_add(band(best_us, bus, bpct))
                {
                    choice = s;
                }
            }
            table.sticky[row] = choice;
        }
        table
    }

    /// Number of RTT rows (measured plus covering prefixes).
    #[must_use]
    pub fn rtt_rows(&self) -> usize {
        self.rtt.rows()
    }

    /// The steered service named `qname` (ASCII case-insensitive, with or without the trailing dot).
    /// Does not allocate.
    #[must_use]
    pub fn service_for(&self, qname: &[u8]) -> Option<ServiceId> {
        let qname = qname.strip_suffix(b".").unwrap_or(qname);
        self.services
            .iter()
            .position(|s| s.fqdn.eq_ignore_ascii_case(qname))
            .map(|i| ServiceId(i as u16))
    }

    /// The predicted RTT for `region` from a prefix's row, if measured (for explain and state).
    #[must_use]
    pub fn measured_rtt_us(&self, prefix: &Prefix, region: RegionId) -> Option<u32> {
        let (_, cells) = self.rtt.get(prefix)?;
        cells.get(region.index()).copied().filter(|&c| c != NO_RTT)
    }

    /// Stage 6's source chain: fills `rtt` for `pool` from the first source that has data.
    fn predict(&self, q: &Query, pool: RegionSet, t: &mut Trace) -> Option<usize> {
        let fam = q.family;
        let _ = fam;
        let client_fam = match q.client {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        };
        let mut sources: [(LatencySource, Option<Prefix>); 4] = [(LatencySource::PolicyOrder, None); 4];
        let m = client_fam.measured_len();
        let c = client_fam.covering_len();
        if q.client_len >= m {
            sources[0] = (LatencySource::Measured, Some(Prefix::of(q.client, m)));
        }
        if q.client_len >= c {
            sources[1] = (LatencySource::Covering, Some(Prefix::of(q.client, c)));
        }
        if q.ecs {
            let rf = match q.resolver {
                IpAddr::V4(_) => Family::V4,
                IpAddr::V6(_) => Family::V6,
            };
            sources[2] = (
                LatencySource::Resolver,
                Some(Prefix::of(q.resolver, rf.measured_len())),
            );
            sources[3] = (
                LatencySource::Resolver,
                Some(Prefix::of(q.resolver, rf.covering_len())),
            );
        }
        for (src, p) in sources {
            let Some(p) = p else { continue };
            let Some((row, cells)) = self.rtt.get(&p) else {
                continue;
            };
            if !pool.iter().any(|r| cells[r.index()] != NO_RTT) {
                continue;
            }
            for r in pool.iter() {
                let v = cells[r.index()];
                t.rtt_us[r.index()] = if v == NO_RTT {
                    self.distance_us(q, r).unwrap_or(NO_RTT)
                } else {
                    v
                };
            }
            t.source = src;
            t.data_prefix = Some(p);
            return Some(row);
        }
        if q.location.is_some() {
            for r in pool.iter() {
                t.rtt_us[r.index()] = self.distance_us(q, r).unwrap_or(NO_RTT);
            }
            if pool.iter().any(|r| t.rtt_us[r.index()] != NO_RTT) {
                t.source = LatencySource::Distance;
                return None;
            }
        }
        t.source = LatencySource::PolicyOrder;
        None
    }

    fn distance_us(&self, q: &Query, r: RegionId) -> Option<u32> {
        Some(q.location?.estimated_rtt_us(self.policy.region(r).location?))
    }

    /// Regions of `pool` ranked best first: by predicted RTT, then policy order of the service.
    fn rank(svc_regions: &[RegionId], pool: RegionSet, t: &Trace, out: &mut [u8; REGIONS_MAX]) -> usize {
        let mut len = 0;
        for &r in svc_regions {
            if pool.contains(r) {
                out[len] = r.0;
                len += 1;
            }
        }
        if matches!(t.source, LatencySource::NotRanked | LatencySource::PolicyOrder) {
            return len;
        }
        // Insertion sort, stable: ties keep policy order. At most REGIONS_MAX entries.
        for i in 1..len {
            let mut j = i;
            while j > 0 && t.rtt_us[usize::from(out[j - 1])] > t.rtt_us[usize::from(out[j])] {
                out.swap(j - 1, j);
                j -= 1;
            }
        }
        len
    }

    /// Answers one query. Does not allocate.
    #[must_use]
    pub fn decide(&self, q: &Query) -> Decision {
        let svc = self.policy.service(q.service);
        let sv = &self.services[usize::from(q.service.0)];
        let mut t = Trace {
            service: q.service,
            family: q.family,
            mode: svc.mode,
            candidates: RegionSet::EMPTY,
            after_admin: RegionSet::EMPTY,
            fence: None,
            fence_strict: false,
            fence_left: false,
            after_fence: RegionSet::EMPTY,
            after_health: RegionSet::EMPTY,
            all_down: None,
            shed: RegionSet::EMPTY,
            capacity_all_over: false,
            after_capacity: RegionSet::EMPTY,
            source: LatencySource::NotRanked,
            data_prefix: None,
            rtt_us: [NO_RTT; REGIONS_MAX],
            best: None,
            band_us: 0,
            tied: RegionSet::EMPTY,
            sticky: false,
            explored: false,
            ramp_deferred: false,
            epoch: self.built_at.0 / (u64::from(svc.ttl_normal_s.max(1)) * 1000),
            chosen: None,
            ttl_reason: TtlReason::Normal,
        };
        let mut d = Decision {
            outcome: Outcome::NoCandidates,
            addrs: [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED); ANSWERS_MAX],
            addrs_len: 0,
            ttl_s: svc.ttl_normal_s,
            scope_len: 0,
            trace: t,
        };

        // 1. candidates
        let cand = sv.candidates[family_index(q.family)];
        t.candidates = cand;
        if cand.is_empty() {
            d.trace = t;
            return d;
        }
        // 2. admin
        let admitted = cand.minus(self.drained);
        t.after_admin = admitted;
        // 3. fence
        let fence = svc
            .fences
            .iter()
            .enumerate()
            .find(|(_, f)| f.matches(q.country, q.continent));
        let fenced = match fence {
            Some((i, f)) => {
                t.fence = Some(i as u8);
                t.fence_strict = f.strict;
                admitted.intersect(f.allow)
            }
            None => admitted,
        };
        t.after_fence = fenced;
        // 4. health
        let mut healthy = fenced.intersect(self.up);
        if healthy.is_empty()
            && fence.is_some_and(|(_, f)| !f.strict)
            && !admitted.intersect(self.up).is_empty()
        {
            t.fence_left = true;
            healthy = admitted.intersect(self.up);
        }
        if healthy.is_empty() {
            // Fallback regions obey a strict fence and the operator's drains too.
            let inside = match fence {
                Some((_, f)) if f.strict => f.allow,
                _ => RegionSet(u64::MAX),
            };
            healthy = match &svc.when_all_down {
                WhenAllDown::Open => {
                    t.all_down = Some(AllDown::Open);
                    fenced
                }
                WhenAllDown::Closed => {
                    t.all_down = Some(AllDown::Closed);
                    RegionSet::EMPTY
                }
                WhenAllDown::Fallback(set) => {
                    t.all_down = Some(AllDown::Fallback);
                    let fb = set.intersect(cand).intersect(inside).minus(self.drained);
                    if fb.is_empty() { fenced } else { fb }
                }
            };
        }
        t.after_health = healthy;
        if healthy.is_empty() {
            d.outcome = Outcome::NoHealthy;
            d.ttl_s = svc.ttl_min_s;
            t.ttl_reason = TtlReason::AllDown;
            d.trace = t;
            return d;
        }
        // 5. capacity
        let mut pool = healthy.minus(sv.shed);
        t.shed = healthy.intersect(sv.shed);
        if pool.is_empty() {
            t.capacity_all_over = true;
            t.shed = RegionSet::EMPTY;
            pool = healthy;
        }
        t.after_capacity = pool;

        // 6. latency
        let key = Prefix::of(
            q.client,
            q.client_len.min(match q.client {
                IpAddr::V4(_) => 24,
                IpAddr::V6(_) => 56,
            }),
        );
        let h = mix64(
            mix64(key.bits() as u64 ^ (key.bits() >> 64) as u64 ^ u64::from(key.len()) << 56)
                ^ mix64(self.seed ^ t.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        let h_explore = (h % u64::from(PPM)) as u32;
        let h_ramp = ((h >> 20) % u64::from(PPM)) as u32;
        let h_pick = h >> 40;

        let mut row = None;
        let mut sticky_pick = None;
        match svc.mode {
            Mode::Latency | Mode::Geo => {
                if svc.mode == Mode::Latency {
                    row = self.predict(q, pool, &mut t);
                } else if q.location.is_some() {
                    for r in pool.iter() {
                        t.rtt_us[r.index()] = self.distance_us(q, r).unwrap_or(NO_RTT);
                    }
                    t.source = LatencySource::Distance;
                } else {
                    t.source = LatencySource::PolicyOrder;
                }
                if matches!(t.source, LatencySource::PolicyOrder) {
                    let first = svc.regions.iter().copied().find(|&r| pool.contains(r));
                    t.best = first;
                    t.tied = first.map_or(RegionSet::EMPTY, RegionSet::single);
                } else {
                    let best = pool.iter().min_by_key(|r| t.rtt_us[r.index()]);
                    t.best = best;
                    let best_us = best.map_or(NO_RTT, |b| t.rtt_us[b.index()]);
                    t.band_us = band(best_us, svc.stabilize_us, svc.stabilize_pct);
                    let limit = best_us.saturating_add(t.band_us);
                    t.tied = RegionSet(
                        pool.iter()
                            .filter(|r| t.rtt_us[r.index()] <= limit)
                            .fold(0, |s, r| s | (1 << r.0)),
                    );
                    if let Some(row) = row {
                        let s = self.rtt.sticky[row];
                        t.sticky = s != u8::MAX && t.tied.len() > 1 && t.tied.contains(RegionId(s));
                        if t.sticky {
                            sticky_pick = Some(RegionId(s));
                        }
                    }
                }
            }
            Mode::Failover => {
                let first = svc.regions.iter().copied().find(|&r| pool.contains(r));
                t.best = first;
                t.tied = first.map_or(RegionSet::EMPTY, RegionSet::single);
            }
            Mode::Weighted => {
                t.tied = pool;
            }
        }

        // 7. weight + ramp + exploration
        let mut ranked = [0u8; REGIONS_MAX];
        let ranked_len = Self::rank(&svc.regions, pool, &t, &mut ranked);
        let others = pool.minus(t.tied);
        let pick_set = sticky_pick.map_or(t.tied, RegionSet::single);
        let chosen = if svc.mode == Mode::Latency && !others.is_empty() && h_explore < svc.explore_ppm {
            t.explored = true;
            let k = (h_pick % others.len() as u64) as usize;
            others.iter().nth(k)
        } else {
            let weight = |r: RegionId| {
                u64::from(self.policy.region(r).weight) * u64::from(self.regions[r.index()].ramp_ppm) / 1000
            };
            let total: u64 = pick_set.iter().map(weight).sum();
            let mut pick = if total == 0 { 0 } else { h_pick % total };
            let mut chosen = pick_set.iter().next();
            for r in pick_set.iter() {
                let w = weight(r);
                if pick < w {
                    chosen = Some(r);
                    break;
                }
                pick -= w;
            }
            // A lone ramping region hands the rest of its share to the next ranked region.
            if let Some(c) = chosen
                && pick_set.len() == 1
                && h_ramp >= self.regions[c.index()].ramp_ppm
                && let Some(next) = ranked[..ranked_len]
                    .iter()
                    .map(|&i| RegionId(i))
                    .find(|&r| r != c)
            {
                t.ramp_deferred = true;
                chosen = Some(next);
            }
            chosen
        };
        t.chosen = chosen;

        // 8. select
        let Some(chosen) = chosen else {
            d.outcome = Outcome::NoHealthy;
            d.trace = t;
            return d;
        };
        let want = usize::from(svc.answers).min(ANSWERS_MAX);
        let mut n = 0;
        let push_region = |r: RegionId, n: &mut usize, addrs: &mut [IpAddr; ANSWERS_MAX]| {
            let reg = self.policy.region(r);
            let len = match q.family {
                Family::V4 => reg.endpoints_v4.len(),
                Family::V6 => reg.endpoints_v6.len(),
            };
            let rot = (h as usize) % len.max(1);
            for i in 0..len {
                if *n == want {
                    return;
                }
                let j = (i + rot) % len;
                addrs[*n] = match q.family {
                    Family::V4 => IpAddr::V4(reg.endpoints_v4[j]),
                    Family::V6 => IpAddr::V6(reg.endpoints_v6[j]),
                };
                *n += 1;
            }
        };
        push_region(chosen, &mut n, &mut d.addrs);
        for &r in &ranked[..ranked_len] {
            if n == want {
                break;
            }
            if r != chosen.0 {
                push_region(RegionId(r), &mut n, &mut d.addrs);
            }
        }
        d.addrs_len = n as u8;
        d.outcome = Outcome::Answer;

        // TTL: short while anything is in motion, so resolvers come back soon.
        let second = ranked[..ranked_len]
            .iter()
            .map(|&r| t.rtt_us[usize::from(r)])
            .nth(1);
        let thin = matches!(
            t.source,
            LatencySource::Measured | LatencySource::Covering | LatencySource::Resolver
        ) && t.best.is_some_and(|b| {
            second.is_some_and(|s| s != NO_RTT && s <= t.rtt_us[b.index()].saturating_add(2 * t.band_us))
        });
        t.ttl_reason = if t.all_down.is_some() {
            TtlReason::AllDown
        } else if t.explored {
            TtlReason::Explore
        } else if self.ramping.contains(chosen) || t.ramp_deferred {
            TtlReason::Ramping
        } else if thin {
            TtlReason::ThinMargin
        } else {
            TtlReason::Normal
        };
        d.ttl_s = if t.ttl_reason == TtlReason::Normal {
            svc.ttl_normal_s
        } else {
            svc.ttl_min_s
        };

        // ECS scope: the prefix length of the client data that decided the answer.
        if q.ecs {
            let fam = match q.client {
                IpAddr::V4(_) => Family::V4,
                IpAddr::V6(_) => Family::V6,
            };
            let mut scope = match t.source {
                LatencySource::Measured | LatencySource::Distance => fam.measured_len(),
                LatencySource::Covering => fam.covering_len(),
                _ => 0,
            };
            // The answer depended on the client's country: resolvers must not share it beyond the subnet.
            if t.fence.is_some() {
                scope = scope.max(fam.measured_len());
            }
            if t.explored || t.ramp_deferred || svc.mode == Mode::Weighted {
                scope = scope.max(fam.measured_len());
            }
            d.scope_len = scope.min(q.client_len);
        }
        d.trace = t;
        d
    }
}
