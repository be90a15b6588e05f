//! Property tests of the engine's promises, over random health, drains, RTT data and clients.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use steering_core::engine::{Outcome, Query, Snapshot};
use steering_core::geo::Country;
use steering_core::policy::ServiceId;
use steering_core::prefix::{Family, Prefix};
use steering_core::region_health::Status;
use steering_core::region_set::RegionId;
use steering_core::time::UnixMs;
use support::World;

const REGIONS: [&str; 4] = ["r0", "r1", "r2", "r3"];

fn policy(explore: f64, answers: u8) -> String {
    format!(
        "
zone: infer.example.com.
regions:
  r0: {{ endpoints: [198.19.0.10, 198.19.0.11] }}
  r1: {{ endpoints: [198.19.1.10] }}
  r2: {{ endpoints: [198.19.2.10, 198.19.2.11] }}
  r3: {{ endpoints: [198.19.3.10] }}
services:
  api:
    mode: latency
    answers: {answers}
    ttl: {{ normal: 20s, min: 5s }}
    stabilize: {{ ms: 5, pct: 10 }}
    explore: {explore}
    when_all_down: open
    slow_start: 60s
    fences: [{{ countries: [DE, FR], allow: [r2, r3], strict: true }}]
"
    )
}

#[derive(Debug, Clone)]
struct Scenario {
    status: [u8; 4],
    drained: [bool; 4],
    ramp_pct: [Option<u8>; 4],
    rtt_ms: [Option<u16>; 4],
    client: u32,
    de: bool,
    answers: u8,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::array::uniform4(0u8..3),
        prop::array::uniform4(prop::bool::weighted(0.25)),
        prop::array::uniform4(prop::option::weighted(0.2, 0u8..100)),
        prop::array::uniform4(prop::option::of(1u16..300)),
        any::<u32>(),
        any::<bool>(),
        1u8..4,
    )
        .prop_map(
            |(status, drained, ramp_pct, rtt_ms, client, de, answers)| Scenario {
                status,
                drained,
                ramp_pct,
                rtt_ms,
                client,
                de,
                answers,
            },
        )
}

fn world(s: &Scenario, explore: f64) -> (World, Query) {
    let mut w = World::new(&policy(explore, s.answers));
    let client = IpAddr::V4(Ipv4Addr::from(s.client));
    let prefix = Prefix::of(client, 24);
    for (i, name) in REGIONS.iter().enumerate() {
        w.set_status(
            name,
            [Status::Up, Status::Down, Status::Unknown][usize::from(s.status[i])],
        );
        if s.drained[i] {
            w.health.drain(name);
        }
        if let Some(p) = s.ramp_pct[i]
            && s.status[i] == 0
        {
            w.fact(&format!("ramp {name} {p}%"));
        }
        if let Some(ms) = s.rtt_ms[i] {
            w.set_rtt(name, prefix, u32::from(ms) * 1000);
        }
    }
    let mut q =
        Query::from_resolver(ServiceId(0), Family::V4, "198.18.0.53".parse().unwrap()).with_ecs(client, 24);
    if s.de {
        q.country = Country::parse("DE");
    }
    (w, q)
}

fn region_of(w: &World, addr: IpAddr) -> RegionId {
    w.policy
        .regions
        .iter()
        .find(|r| r.endpoints_v4.iter().any(|e| IpAddr::V4(*e) == addr))
        .map(|r| r.id)
        .expect("answer names a known endpoint")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn strict_fence_is_never_left(s in scenario()) {
        let (w, mut q) = world(&s, 0.02);
        q.country = Country::parse("DE");
        let d = w.snapshot().decide(&q);
        for a in d.addrs() {
            let r = region_of(&w, *a);
            prop_assert!(r == RegionId(2) || r == RegionId(3), "{a} is outside the fence: {:?}", d.trace);
        }
    }

    #[test]
    fn drained_region_is_never_answered(s in scenario()) {
        let (w, q) = world(&s, 0.02);
        let d = w.snapshot().decide(&q);
        for a in d.addrs() {
            let r = region_of(&w, *a);
            prop_assert!(!s.drained[r.index()], "{a} is in drained {}", REGIONS[r.index()]);
        }
    }

    #[test]
    fn fail_open_never_answers_empty_while_candidates_exist(s in scenario()) {
        let (w, q) = world(&s, 0.02);
        let d = w.snapshot().decide(&q);
        let fence_ok = |i: usize| !s.de || i >= 2;
        let candidates = (0..4).any(|i| !s.drained[i] && fence_ok(i));
        if candidates {
            prop_assert_eq!(d.outcome, Outcome::Answer, "{:?}", d.trace);
            prop_assert!(!d.addrs().is_empty());
        }
    }

    #[test]
    fn same_prefix_and_epoch_get_the_same_answer(s in scenario(), host in 0u8..=255) {
        let mut s = s;
        // A ramp moves on with the clock; this property is about a steady state.
        s.ramp_pct = [None; 4];
        let (w, q) = world(&s, 0.3);
        let snap = w.snapshot();
        let mut q2 = q;
        let IpAddr::V4(a) = q.client else { unreachable!() };
        let o = a.octets();
        q2.client = IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], host));
        let (d1, d2) = (snap.decide(&q), snap.decide(&q2));
        prop_assert_eq!(d1.addrs(), d2.addrs());
        // A snapshot rebuilt later in the same epoch answers the same.
        let later = UnixMs(support::NOW.0 + 7_000);
        let again = Snapshot::build(w.policy.clone(), &w.telemetry, &w.health, later, 7, Some(&snap)).decide(&q);
        prop_assert_eq!(d1.addrs(), again.addrs());
    }

    #[test]
    fn answer_is_best_or_within_band(s in scenario()) {
        let mut s = s;
        s.ramp_pct = [None; 4];
        s.answers = 1;
        let (w, q) = world(&s, 0.0);
        let d = w.snapshot().decide(&q);
        let pool = d.trace.after_capacity;
        let measured: Vec<(usize, u32)> = pool.iter()
            .filter_map(|r| s.rtt_ms[r.index()].map(|ms| (r.index(), u32::from(ms) * 1000)))
            .collect();
        if let (Some(&(_, best)), Some(&a)) = (measured.iter().min_by_key(|(_, us)| *us), d.addrs().first()) {
            let chosen = region_of(&w, a).index();
            let us = s.rtt_ms[chosen].map(|ms| u32::from(ms) * 1000);
            let band = 5000u32.max(best / 10);
            prop_assert!(us.is_some_and(|us| us <= best + band),
                "chose {} ({us:?} us) but best is {best} us: {:?}", REGIONS[chosen], d.trace);
        }
    }
}

#[test]
fn exploration_share_is_within_20_percent_of_configured() {
    const PREFIXES: u32 = 10_000;
    const EXPLORE: f64 = 0.05;
    let mut w = World::new(&policy(EXPLORE, 1));
    let clients: Vec<IpAddr> = (0..PREFIXES)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + (i << 8))))
        .collect();
    for c in &clients {
        let p = Prefix::of(*c, 24);
        w.set_rtt("r0", p, 10_000);
        w.set_rtt("r1", p, 50_000);
        w.set_rtt("r2", p, 80_000);
        w.set_rtt("r3", p, 90_000);
    }
    let snap = w.snapshot();
    let mut explored = 0u32;
    let mut non_best = 0u32;
    for c in &clients {
        let q =
            Query::from_resolver(ServiceId(0), Family::V4, "198.18.0.53".parse().unwrap()).with_ecs(*c, 24);
        let d = snap.decide(&q);
        explored += u32::from(d.trace.explored);
        non_best += u32::from(d.region() != Some(RegionId(0)));
    }
    let share = f64::from(explored) / f64::from(PREFIXES);
    assert!(
        (share - EXPLORE).abs() <= EXPLORE * 0.2,
        "explored share {share}, configured {EXPLORE}"
    );
    assert_eq!(explored, non_best, "every non-best answer is an exploration here");
}
