//! Renders a decision's trace as text a person can read (`steerd explain`, `/v1/explain`).

use std::fmt::Write as _;

use crate::engine::{AllDown, Decision, LatencySource, Outcome, Query, Snapshot, TtlReason};
use crate::policy::Policy;
use crate::region_set::RegionSet;

fn names(policy: &Policy, set: RegionSet) -> String {
    if set.is_empty() {
        return "(none)".to_owned();
    }
    let v: Vec<&str> = set.iter().map(|r| policy.region(r).name.as_str()).collect();
    v.join(", ")
}

/// A multi-line explanation of how `d` was decided for `q`.
#[must_use]
pub fn render(snap: &Snapshot, q: &Query, d: &Decision) -> String {
    let p = &snap.policy;
    let t = &d.trace;
    let svc = p.service(t.service);
    let mut s = String::new();
    let family = match t.family {
        crate::prefix::Family::V4 => "A",
        crate::prefix::Family::V6 => "AAAA",
    };
    let _ = writeln!(s, "query     {} {family} mode={:?}", svc.fqdn, svc.mode);
    let _ = write!(s, "client    {}/{}", q.client, q.client_len);
    let _ = write!(s, " ({})", if q.ecs { "ECS" } else { "resolver address" });
    let _ = write!(s, " via {}", q.resolver);
    if let Some(c) = q.country {
        let _ = write!(s, " country={c}");
    }
    if let Some(c) = q.continent {
        let _ = write!(s, " continent={c}");
    }
    s.push('\n');
    let _ = writeln!(s, "1 candidates  {}", names(p, t.candidates));
    let drained = t.candidates.minus(t.after_admin);
    let _ = writeln!(
        s,
        "2 admin       {}{}",
        names(p, t.after_admin),
        if drained.is_empty() {
            String::new()
        } else {
            format!("  (drained: {})", names(p, drained))
        }
    );
    match t.fence {
        Some(i) => {
            let f = &svc.fences[usize::from(i)];
            let _ = writeln!(
                s,
                "3 fence       {}  (fences[{i}] allow {}{}{})",
                names(p, t.after_fence),
                names(p, f.allow),
                if f.strict { ", strict" } else { "" },
                if t.fence_left {
                    "; left: every region inside is down"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(s, "3 fence       {}  (no fence matches)", names(p, t.after_fence));
        }
    }
    let down = t.after_fence.minus(t.after_health);
    let _ = write!(s, "4 health      {}", names(p, t.after_health));
    if !down.is_empty() {
        let _ = write!(s, "  (down: {})", names(p, down));
    }
    match t.all_down {
        Some(AllDown::Open) => s.push_str("  [all down: fail open]"),
        Some(AllDown::Closed) => s.push_str("  [all down: closed]"),
        Some(AllDown::Fallback) => s.push_str("  [all down: fallback]"),
        None => {}
    }
    s.push('\n');
    if d.outcome != Outcome::Answer && t.after_health.is_empty() {
        let _ = writeln!(s, "=> no answer ({:?}), ttl {}s", d.outcome, d.ttl_s);
        return s;
    }
    let _ = write!(s, "5 capacity    {}", names(p, t.after_capacity));
    if !t.shed.is_empty() {
        let _ = write!(s, "  (shed: {})", names(p, t.shed));
    }
    if t.capacity_all_over {
        s.push_str("  (every region over its watermark: none shed)");
    }
    s.push('\n');
    let _ = write!(s, "6 latency     source={:?}", t.source);
    if let Some(dp) = t.data_prefix {
        let _ = write!(s, " prefix={dp}");
    }
    if !matches!(t.source, LatencySource::NotRanked | LatencySource::PolicyOrder) {
        let _ = write!(s, " band={}us", t.band_us);
    }
    s.push('\n');
    for r in t.after_capacity.iter() {
        let v = t.rtt_us[r.index()];
        let rtt = if v == u32::MAX {
            "-".to_owned()
        } else {
            format!("{:.1}ms", f64::from(v) / 1000.0)
        };
        let mut marks = Vec::new();
        if t.best == Some(r) {
            marks.push("best");
        }
        if t.tied.contains(r) {
            marks.push("tied");
        }
        let rv = &snap.regions[r.index()];
        let ramp;
        if rv.ramp_ppm < crate::region_health::PPM {
            ramp = format!("ramping {}%", rv.ramp_ppm / 10_000);
            marks.push(&ramp);
        }
        let line = format!("    {:<14} {:>9}  {}", p.region(r).name, rtt, marks.join(" "));
        let _ = writeln!(s, "{}", line.trim_end());
    }
    let _ = write!(s, "7 pick        ");
    if t.explored {
        s.push_str("exploration (a non-best region, to keep its RTT fresh)");
    } else if t.sticky {
        s.push_str("kept the previous choice (within the band)");
    } else if t.ramp_deferred {
        s.push_str("the best region is ramping: this answer goes to the next one");
    } else if t.tied.len() > 1 {
        let _ = write!(s, "by weight among {}", names(p, t.tied));
    } else {
        s.push_str("the single best");
    }
    let _ = writeln!(s, " (epoch {})", t.epoch);
    let addrs: Vec<String> = d.addrs().iter().map(ToString::to_string).collect();
    let region = t.chosen.map_or("(none)", |r| p.region(r).name.as_str());
    let ttl_why = match t.ttl_reason {
        TtlReason::Normal => "normal",
        TtlReason::ThinMargin => "min: thin margin",
        TtlReason::Ramping => "min: ramping",
        TtlReason::Explore => "min: exploration",
        TtlReason::AllDown => "min: all down",
    };
    let _ = writeln!(
        s,
        "8 answer      {region}: {} ttl={}s ({ttl_why}) scope=/{}",
        addrs.join(" "),
        d.ttl_s,
        d.scope_len
    );
    s
}
