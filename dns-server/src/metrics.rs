//! Counters for `/metrics`. Queries touch only relaxed atomics; the text is rendered on scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use steering_core::engine::{AllDown, LatencySource, Outcome};
use steering_core::region_health::Status;
use steering_core::{Decision, Policy, Snapshot};

/// RCODEs counted one by one; higher ones share the last slot.
const RCODES: usize = 24;

const RCODE_NAMES: [&str; RCODES] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET",
    "NOTAUTH", "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14", "RCODE15", "BADVERS", "RCODE17",
    "RCODE18", "RCODE19", "RCODE20", "RCODE21", "RCODE22", "OTHER",
];

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
    pub fn render(&self, snap: &Snapshot, answers: &AnswerCounters, prefixes: usize, hosts: usize) -> String {
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
        let _ = writeln!(s, "# TYPE steerd_region_health gauge");
        for (r, v) in snap.policy.regions.iter().zip(&snap.regions) {
            let st = match v.status {
                Status::Up => 1,
                Status::Down => 0,
                Status::Unknown => -1,
            };
            let _ = writeln!(s, "steerd_region_health{{region=\"{}\"}} {st}", r.name);
            let _ = writeln!(
                s,
                "steerd_region_drained{{region=\"{}\"}} {}",
                r.name,
                u8::from(v.drained)
            );
            let _ = writeln!(
                s,
                "steerd_region_ramp_ppm{{region=\"{}\"}} {}",
                r.name, v.ramp_ppm
            );
            let _ = writeln!(
                s,
                "steerd_region_hosts_live{{region=\"{}\"}} {}",
                r.name, v.load.hosts_live
            );
        }
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
        let _ = writeln!(s, "steerd_table_size{{table=\"telemetry_prefixes\"}} {prefixes}");
        let _ = writeln!(s, "steerd_table_size{{table=\"telemetry_hosts\"}} {hosts}");
        let _ = writeln!(
            s,
            "steerd_table_size{{table=\"snapshot_rtt_rows\"}} {}",
            snap.rtt_rows()
        );
        s
    }
}
