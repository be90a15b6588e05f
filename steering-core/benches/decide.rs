//! Engine benchmark: decisions per second at 1k, 100k and 1M client prefixes x 5 regions, plus the
//! snapshot build time for each size. `cargo xtask bench core`.

#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]
#![allow(
    clippy::disallowed_types,
    reason = "wall-clock timing of the snapshot build is what is measured"
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant as WallClock;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use steering_core::engine::{Query, Snapshot};
use steering_core::policy::{Policy, ServiceId};
use steering_core::prefix::{Family, Prefix};
use steering_core::region_health::HealthState;
use steering_core::telemetry::{RttEstimate, Telemetry};
use steering_core::time::UnixMs;

const POLICY: &str = "
zone: infer.example.com.
regions:
  r0: { endpoints: [198.19.0.10], location: { lat: 39.0, lon: -77.5 } }
  r1: { endpoints: [198.19.1.10], location: { lat: 45.6, lon: -121.2 } }
  r2: { endpoints: [198.19.2.10], location: { lat: 53.3, lon: -6.2 } }
  r3: { endpoints: [198.19.3.10], location: { lat: 50.1, lon: 8.7 } }
  r4: { endpoints: [198.19.4.10], location: { lat: 1.3, lon: 103.8 } }
services:
  api:
    mode: latency
    ttl: { normal: 20s, min: 5s }
    stabilize: { ms: 2, pct: 5 }
    explore: 0.02
";

fn client(i: u32) -> Ipv4Addr {
    // Spread /24s over 10.0.0.0/8 and beyond: i-th /24.
    Ipv4Addr::from(0x0A00_0000u32.wrapping_add(i << 8))
}

fn setup(prefixes: u32) -> (Snapshot, std::time::Duration) {
    let policy = Arc::new(Policy::from_yaml("bench.yaml", POLICY).expect("bench policy"));
    let now = UnixMs(1_000_000);
    let mut tel = Telemetry::default();
    let mut health = HealthState::default();
    for r in &policy.regions {
        let rt = tel.regions.entry(r.name.clone()).or_default();
        rt.prefixes.reserve(prefixes as usize);
        for i in 0..prefixes {
            let p = Prefix::of(IpAddr::V4(client(i)), 24);
            let rtt = 5_000 + ((i.wrapping_mul(2_654_435_761) >> 8) ^ (u32::from(r.id.0) * 7919)) % 150_000;
            rt.prefixes.insert(
                p,
                RttEstimate {
                    srtt_us: rtt,
                    srtt_us_p90: rtt + 1000,
                    srtt_us_min: rtt - 500,
                    samples: 100,
                    retrans: 0,
                    updated_at: now,
                },
            );
        }
        health.regions.insert(
            r.name.clone(),
            steering_core::region_health::RegionHealth {
                status: steering_core::region_health::Status::Up,
                streak: 0,
                recovered_at: None,
                changed_at: now,
                last: steering_core::telemetry::RegionLoad::default(),
                last_bad_reason: None,
            },
        );
    }
    let started = WallClock::now();
    let snap = Snapshot::build(policy, &tel, &health, now, 42, None);
    (snap, started.elapsed())
}

fn decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    for (label, n) in [("1k", 1_000u32), ("100k", 100_000), ("1M", 1_000_000)] {
        let (snap, build) = setup(n);
        println!(
            "snapshot build: {label} prefixes x 5 regions -> {} rows in {:.0} ms",
            snap.rtt_rows(),
            build.as_secs_f64() * 1e3
        );
        let resolver = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 53));
        let queries: Vec<Query> = (0..4096u32)
            .map(|k| {
                let i = k.wrapping_mul(2_654_435_761) % n;
                Query::from_resolver(ServiceId(0), Family::V4, resolver).with_ecs(IpAddr::V4(client(i)), 24)
            })
            .collect();
        let mut k = 0usize;
        g.bench_function(label, |b| {
            b.iter(|| {
                k = (k + 1) & 4095;
                black_box(snap.decide(black_box(&queries[k])))
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = decide
}
criterion_main!(benches);
