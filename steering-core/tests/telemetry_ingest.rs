//! Ingest: reports fold into bounded tables; bad reports are refused whole and change nothing.

use std::time::Duration;

use steering_core::policy::Policy;
use steering_core::prefix::Prefix;
use steering_core::region_health::{HealthState, PPM, Status, SurgeRamp};
use steering_core::telemetry::wire::{
    CheckReport, GateMode, GateReport, HealthReport, LoadReport, PROTOCOL_VERSION, Report, RttReport,
};
use steering_core::telemetry::{IngestError, Limits, Telemetry};
use steering_core::time::UnixMs;

const POLICY: &str = "
zone: infer.example.com.
regions:
  us-east: { endpoints: [198.19.1.10] }
  eu-west: { endpoints: [198.19.2.10] }
services:
  api: { slow_start: 100s }
health: { fall: 2, rise: 3, stale_after: 3s, min_healthy_fraction: 0.5, min_healthy_hosts: 1 }
";

fn policy() -> Policy {
    Policy::from_yaml("t.yaml", POLICY).unwrap_or_else(|e| panic!("{e}"))
}

fn report(region: &str, host: &str, seq: u64, ok: bool, rtt: &[(&str, u32)]) -> Report {
    Report {
        version: PROTOCOL_VERSION,
        region: region.to_owned(),
        host: host.to_owned(),
        seq,
        sent_at_ms: 1_000 + seq * 1000,
        interval_ms: 1000,
        health: HealthReport {
            ok,
            checks: vec![CheckReport {
                name: "http".into(),
                ok,
                latency_ms: 3,
                detail: None,
            }],
        },
        load: LoadReport {
            queue_depth: 2,
            kv_cache_usage: 0.3,
            active_connections: 5,
        },
        gate: GateReport {
            mode: GateMode::Open,
            syn_seen: 10,
            syn_admitted: 10,
            syn_dropped: 0,
        },
        rtt: rtt
            .iter()
            .map(|(p, us)| RttReport {
                prefix: p.parse().unwrap(),
                samples: 20,
                srtt_us_p50: *us,
                srtt_us_p90: us + 1000,
                srtt_us_min: us - 1000,
                retrans: 1,
            })
            .collect(),
    }
}

#[test]
fn reports_build_rtt_estimates_with_ewma() {
    let p = policy();
    let mut t = Telemetry::default();
    t.ingest(
        &p,
        &report("us-east", "h1", 1, true, &[("198.18.1.0/24", 20_000)]),
        UnixMs(1000),
    )
    .unwrap();
    t.ingest(
        &p,
        &report("us-east", "h1", 2, true, &[("198.18.1.0/24", 40_000)]),
        UnixMs(2000),
    )
    .unwrap();
    let est = t.regions["us-east"].prefixes[&"198.18.1.0/24".parse::<Prefix>().unwrap()];
    assert_eq!(est.srtt_us, 25_000, "EWMA with alpha 0.25");
    assert_eq!(est.samples, 40);
    assert_eq!(est.retrans, 2);
    assert_eq!(
        t.regions["us-east"].hosts["h1"].gate_totals.syn_seen, 20,
        "deltas are summed"
    );
}

#[test]
fn bad_reports_are_refused_and_change_nothing() {
    let p = policy();
    let mut t = Telemetry::default();
    t.ingest(
        &p,
        &report("us-east", "h1", 5, true, &[("198.18.1.0/24", 20_000)]),
        UnixMs(1000),
    )
    .unwrap();
    let before = t.clone();
    let cases: Vec<(Report, &str)> = vec![
        (
            Report {
                version: 9,
                ..report("us-east", "h1", 6, true, &[])
            },
            "unsupported protocol version 9",
        ),
        (
            report("ap-south", "h1", 6, true, &[]),
            "unknown region \"ap-south\"",
        ),
        (report("us-east", "bad host!", 6, true, &[]), "bad host name"),
        (report("us-east", "h1", 5, true, &[]), "not newer"),
        (
            report("us-east", "h1", 6, true, &[("198.0.0.0/8", 1000)]),
            "shorter than /16",
        ),
        (
            Report {
                load: LoadReport {
                    kv_cache_usage: 1.5,
                    ..LoadReport::default()
                },
                ..report("us-east", "h1", 6, true, &[])
            },
            "load.kv_cache_usage",
        ),
        (
            {
                let mut r = report("us-east", "h1", 6, true, &[("198.18.1.0/24", 20_000)]);
                r.rtt[0].srtt_us_p90 = 1;
                r
            },
            "srtt_us_min <= srtt_us_p50 <= srtt_us_p90",
        ),
        (
            {
                let mut r = report("us-east", "h1", 6, true, &[]);
                r.rtt = vec![
                    r.rtt.first().copied().unwrap_or(RttReport {
                        prefix: "198.18.1.0/24".parse().unwrap(),
                        samples: 1,
                        srtt_us_p50: 1,
                        srtt_us_p90: 1,
                        srtt_us_min: 1,
                        retrans: 0,
                    });
                    5000
                ];
                r
            },
            "5000 rtt entries",
        ),
    ];
    for (r, want) in cases {
        let err = t.ingest(&p, &r, UnixMs(2000)).expect_err(want);
        assert!(err.to_string().contains(want), "{err} should mention {want:?}");
        assert_eq!(t, before, "a refused report ({want}) changed state");
    }
}

#[test]
fn tables_are_bounded_and_expire_by_age() {
    let p = policy();
    let mut t = Telemetry::new(Limits {
        hosts_per_region_max: 2,
        prefixes_per_region_max: 3,
        prefix_max_age: Duration::from_mins(1),
        host_max_age: Duration::from_mins(2),
    });
    let rtt: Vec<(String, u32)> = (0..5).map(|i| (format!("198.18.{i}.0/24"), 10_000)).collect();
    let rtt: Vec<(&str, u32)> = rtt.iter().map(|(p, u)| (p.as_str(), *u)).collect();
    let got = t
        .ingest(&p, &report("us-east", "h1", 1, true, &rtt), UnixMs(0))
        .unwrap();
    assert_eq!((got.prefixes_updated, got.prefixes_refused), (3, 2));
    assert_eq!(t.regions["us-east"].prefixes.len(), 3);
    t.ingest(&p, &report("us-east", "h2", 1, true, &[]), UnixMs(0))
        .unwrap();
    assert_eq!(
        t.ingest(&p, &report("us-east", "h3", 1, true, &[]), UnixMs(0)),
        Err(IngestError::TooManyHosts("us-east".into()))
    );
    assert_eq!(t.expire(UnixMs(61_000)), (3, 0));
    assert_eq!(t.expire(UnixMs(121_000)), (0, 2));
}

#[test]
fn health_hysteresis_ramp_and_gate() {
    let p = policy();
    let mut t = Telemetry::default();
    let mut h = HealthState::default();
    let mut now = 10_000;
    let mut seq = 0;
    let mut tick = |t: &mut Telemetry, h: &mut HealthState, ok: bool, report_it: bool| {
        now += 1000;
        seq += 1;
        if report_it {
            t.ingest(&p, &report("us-east", "h1", seq, ok, &[]), UnixMs(now))
                .unwrap();
        }
        h.evaluate(&p, t, UnixMs(now));
        (h.status("us-east"), UnixMs(now))
    };
    assert_eq!(
        tick(&mut t, &mut h, true, true).0,
        Status::Up,
        "first good evaluation: up, no ramp"
    );
    assert_eq!(h.regions["us-east"].recovered_at, None);
    assert_eq!(h.status("eu-west"), Status::Unknown, "no host ever reported");
    assert_eq!(
        tick(&mut t, &mut h, false, true).0,
        Status::Up,
        "one bad evaluation is not enough (fall 2)"
    );
    assert_eq!(tick(&mut t, &mut h, false, true).0, Status::Down);
    assert_eq!(tick(&mut t, &mut h, true, true).0, Status::Down, "rise 3");
    assert_eq!(tick(&mut t, &mut h, true, true).0, Status::Down);
    let (s, at) = tick(&mut t, &mut h, true, true);
    assert_eq!(s, Status::Up);
    let rh = &h.regions["us-east"];
    assert_eq!(rh.recovered_at, Some(at), "after an outage it ramps");
    assert!(rh.ramp_ppm(Duration::from_secs(100), at) < PPM / 10);
    assert_eq!(
        rh.ramp_ppm(Duration::from_secs(100), UnixMs(at.0 + 50_000)),
        PPM / 2
    );
    assert_eq!(rh.ramp_ppm(Duration::from_secs(100), UnixMs(at.0 + 100_000)), PPM);
    let g = h.gate_for(&p, "us-east", SurgeRamp::default(), UnixMs(at.0 + 50_000));
    assert_eq!((g.mode, g.rate_per_s), (GateMode::Surge, 20 + (2000 - 20) / 2));
    assert_eq!(
        h.gate_for(&p, "us-east", SurgeRamp::default(), UnixMs(at.0 + 100_000))
            .mode,
        GateMode::Open
    );
    h.drain("us-east");
    assert_eq!(
        h.gate_for(&p, "us-east", SurgeRamp::default(), UnixMs(at.0 + 100_000))
            .mode,
        GateMode::Drain
    );
    // A host that stops reporting goes stale: down after `fall` evaluations.
    for _ in 0..3 {
        assert_eq!(
            tick(&mut t, &mut h, true, false).0,
            Status::Up,
            "live for stale_after = 3s"
        );
    }
    assert_eq!(
        tick(&mut t, &mut h, true, false).0,
        Status::Up,
        "stale: first bad evaluation"
    );
    assert_eq!(
        tick(&mut t, &mut h, true, false).0,
        Status::Down,
        "stale: second bad evaluation (fall 2)"
    );
    assert_eq!(h.regions["us-east"].last_bad_reason, Some("no live host"));
}

#[test]
fn snapshots_share_the_rtt_table_until_an_estimate_changes() {
    use std::sync::Arc;
    use steering_core::Snapshot;
    let p = Arc::new(policy());
    let mut t = Telemetry::default();
    let h = HealthState::default();
    t.ingest(
        &p,
        &report("us-east", "h1", 1, true, &[("198.18.1.0/24", 20_000)]),
        UnixMs(1000),
    )
    .unwrap();
    let s1 = Snapshot::build(p.clone(), &t, &h, UnixMs(1000), 1, None);
    let s2 = Snapshot::build(p.clone(), &t, &h, UnixMs(2000), 1, Some(&s1));
    assert_eq!(
        s2.rtt_built_at(),
        UnixMs(1000),
        "nothing changed: the table is shared"
    );
    // A report without RTT entries changes no estimate.
    t.ingest(&p, &report("us-east", "h1", 2, true, &[]), UnixMs(2500))
        .unwrap();
    let s3 = Snapshot::build(p.clone(), &t, &h, UnixMs(3000), 1, Some(&s2));
    assert_eq!(s3.rtt_built_at(), UnixMs(1000));
    t.ingest(
        &p,
        &report("us-east", "h1", 3, true, &[("198.18.1.0/24", 30_000)]),
        UnixMs(3500),
    )
    .unwrap();
    let s4 = Snapshot::build(p.clone(), &t, &h, UnixMs(4000), 1, Some(&s3));
    assert_eq!(s4.rtt_built_at(), UnixMs(4000), "an estimate changed: rebuilt");
    // With a refresh interval, a change within it waits for the next refresh.
    t.ingest(
        &p,
        &report("us-east", "h1", 4, true, &[("198.18.1.0/24", 40_000)]),
        UnixMs(4200),
    )
    .unwrap();
    let s5 = Snapshot::build_with(
        p.clone(),
        &t,
        &h,
        UnixMs(4500),
        1,
        Some(&s4),
        Duration::from_secs(1),
    );
    assert_eq!(s5.rtt_built_at(), UnixMs(4000));
    let s6 = Snapshot::build_with(
        p.clone(),
        &t,
        &h,
        UnixMs(5100),
        1,
        Some(&s5),
        Duration::from_secs(1),
    );
    assert_eq!(s6.rtt_built_at(), UnixMs(5100));
    // A new prefix does not wait for the refresh.
    t.ingest(
        &p,
        &report("us-east", "h1", 5, true, &[("198.18.2.0/24", 40_000)]),
        UnixMs(5200),
    )
    .unwrap();
    let s7 = Snapshot::build_with(
        p.clone(),
        &t,
        &h,
        UnixMs(5300),
        1,
        Some(&s6),
        Duration::from_secs(1),
    );
    assert_eq!(s7.rtt_built_at(), UnixMs(5300));
    let prefix: Prefix = "198.18.1.0/24".parse().unwrap();
    let east = p.region_by_name("us-east").unwrap().id;
    assert!(s6.measured_rtt_us(&prefix, east) > s4.measured_rtt_us(&prefix, east));
}
