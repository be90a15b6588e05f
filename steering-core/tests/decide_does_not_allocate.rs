//! `Snapshot::decide` must not touch the heap: a counting global allocator (allocation-counter) proves it.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use steering_core::engine::Query;
use steering_core::geo::Country;
use steering_core::prefix::{Family, Prefix};

#[test]
fn decide_does_not_allocate() {
    let mut w = support::World::new(
        "
zone: infer.example.com.
regions:
  a: { endpoints: [198.19.1.10, 198.19.1.11, \"2001:db8:1::1\"], location: { lat: 39.0, lon: -77.5 } }
  b: { endpoints: [198.19.2.10], location: { lat: 53.3, lon: -6.2 } }
  c: { endpoints: [198.19.3.10], location: { lat: 1.3, lon: 103.8 } }
services:
  api: { mode: latency, answers: 3, explore: 0.2, slow_start: 60s, fences: [{ countries: [DE], allow: [b] }] }
  fo: { mode: failover }
  w: { mode: weighted, answers: 2 }
  g: { mode: geo }
",
    );
    for i in 0..256u32 {
        let p = Prefix::of(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + (i << 8))), 24);
        w.set_rtt("a", p, 10_000 + i * 100);
        w.set_rtt("b", p, 30_000);
        w.set_rtt("c", p, 12_000);
    }
    w.fact("ramp c 40%");
    w.fact("down b");
    let snap = w.snapshot();
    let queries: Vec<Query> = (0..1024u32)
        .map(|i| {
            let name = ["api", "fo", "w", "g"][(i % 4) as usize];
            let svc = snap
                .service_for(format!("{name}.infer.example.com.").as_bytes())
                .unwrap();
            let fam = if i % 7 == 0 { Family::V6 } else { Family::V4 };
            let mut q = Query::from_resolver(svc, fam, "198.18.0.53".parse().unwrap())
                .with_ecs(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + (i << 6))), 24);
            if i % 5 == 0 {
                q.country = Country::parse("DE");
            }
            q
        })
        .collect();
    let mut answered = 0usize;
    let counted = allocation_counter::measure(|| {
        for q in &queries {
            let d = snap.decide(q);
            answered += d.addrs().len();
            std::hint::black_box(snap.service_for(b"API.Infer.Example.COM."));
        }
    });
    assert!(
        answered > 1000,
        "the queries were answered ({answered} addresses)"
    );
    assert_eq!(counted.count_total, 0, "decide allocated: {counted:?}");
    // The counter does see allocations (so the zero above means something).
    let seen = allocation_counter::measure(|| {
        std::hint::black_box(steering_core::explain::render(
            &snap,
            &queries[0],
            &snap.decide(&queries[0]),
        ));
    });
    assert!(seen.count_total > 0);
}
