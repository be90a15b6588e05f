//! Counters for `/metrics`. Queries touch only relaxed atomics; the text is rendered on scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use steering_core::engine::{AllDown, LatencySource, Outcome, RegionView};
use steering_core::region_health::Status;
use steering_core::telemetry::{RegionTelemetry, Telemetry};
use steering_core::{Decision, Policy, Snapshot};

/// RCODEs counted one by one; higher ones share the last slot.
const RCODES: usize = 24;

const RCODE_NAMES: [&str; RCODES] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET",
    "NOTAUTH", "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14", "RCODE15", "BADVERS", "RCODE17",
    "RCODE18", "RCODE19", "RCODE20", "RCODE21", "RCODE22", "OTHER",
];

/// Client prefixes of one region whose RTT estimates a scrape summarises. A region may hold up to
/// `Limits::prefixes_per_region_max` prefixes; copying them all under the control lock on every
/// scrape would stall ingest, so a larger region is summarised from a sample of this many.
pub const RTT_SUMMARY_PREFIXES_MAX: usize = 100_000;

/// A drained region has finished draining once its live hosts hold no connections.
#[must_use]
pub fn drain_complete(v: &RegionView) -> bool {
    v.drained && v.load.active_connections == 0
}

/// What one scrape copies out of the telemetry, under the control lock and bounded, so that the
/// summaries are computed after the lock is released.
#[derive(Debug, Default)]
pub struct Scrape {
    /// (region, prefix) RTT entries in total.
    pub prefixes: usize,
    /// Hosts known in total.
    pub hosts: usize,
    /// Per policy region, in policy order.
    pub regions: Vec<RegionScrape>,
}

/// One region's share of a [`Scrape`].
#[derive(Debug, Default)]
pub struct RegionScrape {
    /// Client prefixes with an RTT estimate.
    pub prefixes: usize,
    /// The smoothed median RTT (`srtt_us`) of at most [`RTT_SUMMARY_PREFIXES_MAX`] of them.
    pub srtt_us: Vec<u32>,
}

impl Scrape {
    /// Copies the counts and RTT estimates of `policy`'s regions out of `t`.
    #[must_use]
    pub fn collect(policy: &Policy, t: &Telemetry) -> Scrape {
        Scrape {
            prefixes: t.prefix_count(),
            hosts: t.regions.values().map(|r| r.hosts.len()).sum(),
            regions: policy
                .regions
                .iter()
                .map(|r| RegionScrape::collect(t.regions.get(&r.name)))
                .collect(),
        }
    }
}

impl RegionScrape {
    fn collect(rt: Option<&RegionTelemetry>) -> RegionScrape {
        let Some(rt) = rt else {
            return RegionScrape::default();
        };
        // The first entries in hash order are a sample unrelated to RTT (the map is keyed by a
        // randomly seeded hash of the prefix), and taking them costs no more than the bound.
        RegionScrape {
            prefixes: rt.prefixes.len(),
            srtt_us: rt
                .prefixes
                .values()
                .take(RTT_SUMMARY_PREFIXES_MAX)
                .map(|e| e.srtt_us)
                .collect(),
        }
    }
}

/// Nearest-rank index of the `pct` percentile among `n > 0` values.
fn rank(n: usize, pct: usize) -> usize {
    (n * pct).div_ceil(100).max(1) - 1
}

/// The nearest-rank median and p90 of `v` (reordered in place); `None` when `v` is empty.
fn median_and_p90(v: &mut [u32]) -> Option<(u32, u32)> {
    if v.is_empty() {
        return None;
    }
    let (i50, i90) = (rank(v.len(), 50), rank(v.len(), 90));
    let (below, p90, _) = v.select_nth_unstable(i90);
    let p90 = *p90;
    // Everything below index i90 is <= p90, so the median is found among those.
    let p50 = if i50 == i90 {
        p90
    } else {
        *below.select_nth_unstable(i50).1
    };
    Some((p50, p90))
}

/// Answers per (service, region) of one policy; replaced whole on reload.
#[derive(Debug)]
pub struct AnswerCounters {
    services: Vec<String>,
    regions: Vec<String>,
    counts: Vec<AtomicU64>,
}

impl AnswerCounters {
    #[must_use]
    pub fn new(p: &Policy) -> AnswerCounters {
        let services: Vec<String> = p.services.iter().map(|s| s.name.clone()).collect();
        let regions: Vec<String> = p.regions.iter().map(|r| r.name.clone()).collect();
        let counts = (0..services.len() * regions.len())
            .map(|_| AtomicU64::new(0))
            .collect();
        AnswerCounters {
            services,
            regions,
            counts,
        }
    }

    fn add(&self, service: usize, region: usize) {
        if let Some(c) = self.counts.get(service * self.regions.len() + region) {
            c.fetch_add(1, Relaxed);
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub queries_udp: AtomicU64,
    pub queries_tcp: AtomicU64,
    rcodes: [AtomicU64; RCODES],
    pub queries_dropped: AtomicU64,
    pub queries_slow_path: AtomicU64,
    outcome: [AtomicU64; 3],
    source: [AtomicU64; 6],
    all_down: [AtomicU64; 3],
    pub fence_matched: AtomicU64,
    pub fence_left: AtomicU64,
    pub shed: AtomicU64,
    pub explored: AtomicU64,
    pub sticky: AtomicU64,
    pub ramp_deferred: AtomicU64,
    pub reports_accepted: AtomicU64,
    pub reload_ok: AtomicU64,
    pub reload_failed: AtomicU64,
    pub state_saves: AtomicU64,
    pub state_save_failures: AtomicU64,
    pub snapshot_builds: AtomicU64,
    pub snapshot_build_us_last: AtomicU64,
    rejections: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn rcode(&self, rcode: u16) {
        self.rcodes[usize::from(rcode).min(RCODES - 1)].fetch_add(1, Relaxed);
    }

    /// Counts one decision's stages. `answers` are the counters of the snapshot's policy.
    pub fn decision(&self, d: &Decision, answers: &AnswerCounters) {
        let t = &d.trace;
        let o = match d.outcome {
            Outcome::Answer => 0,
            Outcome::NoCandidates => 1,
            Outcome::NoHealthy => 2,
        };
        self.outcome[o].fetch_add(1, Relaxed);
        let s = match t.source {
            LatencySource::Measured => 0,
            LatencySource::Covering => 1,
            LatencySource::Resolver => 2,
            LatencySource::Distance => 3,
            LatencySource::PolicyOrder => 4,
            LatencySource::NotRanked => 5,
        };
        self.source[s].fetch_add(1, Relaxed);
        if let Some(a) = t.all_down {
            let i = match a {
                AllDown::Open => 0,
                AllDown::Closed => 1,
                AllDown::Fallback => 2,
            };
            self.all_down[i].fetch_add(1, Relaxed);
        }
        for (flag, c) in [
            (t.fence.is_some(), &self.fence_matched),
            (t.fence_left, &self.fence_left),
            (!t.shed.is_empty(), &self.shed),
            (t.explored, &self.explored),
            (t.sticky, &self.sticky),
            (t.ramp_deferred, &self.ramp_deferred),
        ] {
            if flag {
                c.fetch_add(1, Relaxed);
            }
        }
        if d.outcome == Outcome::Answer
            && let Some(r) = t.chosen
        {
            answers.add(usize::from(t.service.0), r.index());
        }
    }

    /// Counts a refused report by a short reason label.
    pub fn rejection(&self, reason: &'static str) {
        let mut m = self
            .rejections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(reason).or_default() += 1;
    }

    /// Prometheus text exposition.
    pub fn render(&self, snap: &Snapshot, answers: &AnswerCounters, mut scrape: Scrape) -> String {
        let mut s = String::with_capacity(4096);
        let g = |c: &AtomicU64| c.load(Relaxed);
        let _ = writeln!(s, "# TYPE steerd_queries_total counter");
        let _ = writeln!(
            s,
            "steerd_queries_total{{transport=\"udp\"}} {}",
            g(&self.queries_udp)
        );
        let _ = writeln!(
            s,
            "steerd_queries_total{{transport=\"tcp\"}} {}",
            g(&self.queries_tcp)
        );
        let _ = writeln!(s, "# TYPE steerd_responses_total counter");
        for (i, n) in RCODE_NAMES.iter().enumerate() {
            let v = g(&self.rcodes[i]);
            if v > 0 || i <= 5 {
                let _ = writeln!(s, "steerd_responses_total{{rcode=\"{n}\"}} {v}");
            }
        }
        let _ = writeln!(s, "# TYPE steerd_queries_dropped_total counter");
        let _ = writeln!(s, "steerd_queries_dropped_total {}", g(&self.queries_dropped));
        let _ = writeln!(s, "# TYPE steerd_queries_slow_path_total counter");
        let _ = writeln!(s, "steerd_queries_slow_path_total {}", g(&self.queries_slow_path));
        let _ = writeln!(s, "# TYPE steerd_answers_total counter");
        for (si, svc) in answers.services.iter().enumerate() {
            for (ri, reg) in answers.regions.iter().enumerate() {
                let v = g(&answers.counts[si * answers.regions.len() + ri]);
                let _ = writeln!(
                    s,
                    "steerd_answers_total{{service=\"{svc}\",region=\"{reg}\"}} {v}"
                );
            }
        }
        let _ = writeln!(s, "# TYPE steerd_decisions_total counter");
        for (i, o) in ["answer", "no_candidates", "no_healthy"].iter().enumerate() {
            let _ = writeln!(
                s,
                "steerd_decisions_total{{stage=\"select\",outcome=\"{o}\"}} {}",
                g(&self.outcome[i])
            );
        }
        for (i, o) in [
            "measured",
            "covering",
            "resolver",
            "distance",
            "policy_order",
            "not_ranked",
        ]
        .iter()
        .enumerate()
        {
            let _ = writeln!(
                s,
                "steerd_decisions_total{{stage=\"latency\",outcome=\"{o}\"}} {}",
                g(&self.source[i])
            );
        }
        for (i, o) in ["open", "closed", "fallback"].iter().enumerate() {
            let _ = writeln!(
                s,
                "steerd_decisions_total{{stage=\"health\",outcome=\"all_down_{o}\"}} {}",
                g(&self.all_down[i])
            );
        }
        for (stage, o, c) in [
            ("fence", "matched", &self.fence_matched),
            ("fence", "left", &self.fence_left),
            ("capacity", "shed", &self.shed),
            ("pick", "explored", &self.explored),
            ("pick", "sticky", &self.sticky),
            ("pick", "ramp_deferred", &self.ramp_deferred),
        ] {
            let _ = writeln!(
                s,
                "steerd_decisions_total{{stage=\"{stage}\",outcome=\"{o}\"}} {}",
                g(c)
            );
        }
        render_regions(&mut s, snap, &mut scrape.regions);
        let _ = writeln!(s, "# TYPE steerd_reports_total counter");
        let _ = writeln!(
            s,
            "steerd_reports_total{{result=\"accepted\"}} {}",
            g(&self.reports_accepted)
        );
        let rej = self
            .rejections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(s, "# TYPE steerd_report_rejections_total counter");
        for (reason, v) in rej.iter() {
            let _ = writeln!(s, "steerd_report_rejections_total{{reason=\"{reason}\"}} {v}");
        }
        drop(rej);
        let _ = writeln!(s, "# TYPE steerd_policy_reloads_total counter");
        let _ = writeln!(
            s,
            "steerd_policy_reloads_total{{result=\"ok\"}} {}",
            g(&self.reload_ok)
        );
        let _ = writeln!(
            s,
            "steerd_policy_reloads_total{{result=\"failed\"}} {}",
            g(&self.reload_failed)
        );
        let _ = writeln!(s, "# TYPE steerd_state_saves_total counter");
        let _ = writeln!(
            s,
            "steerd_state_saves_total{{result=\"ok\"}} {}",
            g(&self.state_saves)
        );
        let _ = writeln!(
            s,
            "steerd_state_saves_total{{result=\"failed\"}} {}",
            g(&self.state_save_failures)
        );
        let _ = writeln!(s, "# TYPE steerd_snapshot_builds_total counter");
        let _ = writeln!(s, "steerd_snapshot_builds_total {}", g(&self.snapshot_builds));
        let _ = writeln!(
            s,
            "steerd_snapshot_build_last_microseconds {}",
            g(&self.snapshot_build_us_last)
        );
        let _ = writeln!(s, "# TYPE steerd_table_size gauge");
        let _ = writeln!(
            s,
            "steerd_table_size{{table=\"telemetry_prefixes\"}} {}",
            scrape.prefixes
        );
        let _ = writeln!(
            s,
            "steerd_table_size{{table=\"telemetry_hosts\"}} {}",
            scrape.hosts
        );
        let _ = writeln!(
            s,
            "steerd_table_size{{table=\"snapshot_rtt_rows\"}} {}",
            snap.rtt_rows()
        );
        s
    }
}

/// A per-region gauge: name after `steerd_region_`, help text, and its value in a region's view.
type RegionGauge = (&'static str, &'static str, fn(&RegionView) -> i64);

/// The per-region gauges, one family after another (the exposition format wants each family's
/// samples together). `scrape` is indexed like `snap.regions`; its RTT samples are reordered.
fn render_regions(s: &mut String, snap: &Snapshot, scrape: &mut [RegionScrape]) {
    let regions: Vec<(&str, &RegionView)> = snap
        .policy
        .regions
        .iter()
        .map(|r| r.name.as_str())
        .zip(&snap.regions)
        .collect();
    let gauges: [RegionGauge; 6] = [
        (
            "health",
            "1 up, 0 down, -1 unknown (not evaluated yet).",
            |v| match v.status {
                Status::Up => 1,
                Status::Down => 0,
                Status::Unknown => -1,
            },
        ),
        ("drained", "1 while an operator drain is in place.", |v| {
            i64::from(v.drained)
        }),
        (
            "drain_complete",
            "1 when the region is drained and its live hosts hold no connections (0 when not drained).",
            |v| i64::from(drain_complete(v)),
        ),
        (
            "active_connections",
            "Established connections summed over the region's live hosts.",
            |v| i64::try_from(v.load.active_connections).unwrap_or(i64::MAX),
        ),
        (
            "ramp_ppm",
            "Slow-start share of answers in ppm (1e6 = full).",
            |v| i64::from(v.ramp_ppm),
        ),
        ("hosts_live", "Hosts whose last report is fresh.", |v| {
            i64::from(v.load.hosts_live)
        }),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(s, "# HELP steerd_region_{name} {help}");
        let _ = writeln!(s, "# TYPE steerd_region_{name} gauge");
        for (r, v) in &regions {
            let _ = writeln!(s, "steerd_region_{name}{{region=\"{r}\"}} {}", value(v));
        }
    }
    let _ = writeln!(
        s,
        "# HELP steerd_region_prefixes Client prefixes with an RTT estimate."
    );
    let _ = writeln!(s, "# TYPE steerd_region_prefixes gauge");
    for ((r, _), sc) in regions.iter().zip(scrape.iter()) {
        let _ = writeln!(s, "steerd_region_prefixes{{region=\"{r}\"}} {}", sc.prefixes);
    }
    let _ = writeln!(
        s,
        "# HELP steerd_region_rtt_microseconds Quantiles over the region's client prefixes of their \
         smoothed median RTT (at most {RTT_SUMMARY_PREFIXES_MAX} prefixes sampled); absent without prefixes."
    );
    let _ = writeln!(s, "# TYPE steerd_region_rtt_microseconds gauge");
    for ((r, _), sc) in regions.iter().zip(scrape.iter_mut()) {
        if let Some((p50, p90)) = median_and_p90(&mut sc.srtt_us) {
            let _ = writeln!(
                s,
                "steerd_region_rtt_microseconds{{region=\"{r}\",quantile=\"0.5\"}} {p50}"
            );
            let _ = writeln!(
                s,
                "steerd_region_rtt_microseconds{{region=\"{r}\",quantile=\"0.9\"}} {p90}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        assert_eq!(median_and_p90(&mut []), None);
        assert_eq!(median_and_p90(&mut [7]), Some((7, 7)));
        assert_eq!(median_and_p90(&mut [9, 1]), Some((1, 9)));
        let mut v: Vec<u32> = (1..=10).rev().map(|i| i * 1000).collect();
        assert_eq!(median_and_p90(&mut v), Some((5000, 9000)));
        let mut v: Vec<u32> = (1..=1000).rev().collect();
        assert_eq!(median_and_p90(&mut v), Some((500, 900)));
    }

    #[test]
    fn a_large_region_is_sampled_within_the_bound() {
        use steering_core::prefix::Prefix;
        use steering_core::telemetry::RttEstimate;
        let mut rt = RegionTelemetry::default();
        for i in 0..(RTT_SUMMARY_PREFIXES_MAX as u32 + 5000) {
            let p: Prefix = format!("{}.{}.{}.0/24", 10 + (i >> 16), (i >> 8) & 0xff, i & 0xff)
                .parse()
                .expect("prefix");
            let e = RttEstimate {
                srtt_us: 20_000,
                srtt_us_p90: 22_000,
                srtt_us_min: 18_000,
                samples: 1,
                retrans: 0,
                updated_at: steering_core::UnixMs(0),
            };
            rt.prefixes.insert(p, e);
        }
        let sc = RegionScrape::collect(Some(&rt));
        assert_eq!(sc.prefixes, RTT_SUMMARY_PREFIXES_MAX + 5000);
        assert_eq!(sc.srtt_us.len(), RTT_SUMMARY_PREFIXES_MAX);
        assert!(RegionScrape::collect(None).srtt_us.is_empty());
    }
}
