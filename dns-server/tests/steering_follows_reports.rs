//! Reports to `/v1/reports` steer the answers: the lowest-RTT region wins, a region whose hosts fail
//! is failed over, drains through the API take a region out and put it back (and say when the
//! region's connections are gone), `/metrics` summarises the reported RTTs per region, and bad
//! reports are refused with a reason and change nothing.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, Steerd, US_TOKEN, query, udp, wait_until};
use hickory_proto::rr::RecordType;

fn answer(s: &Steerd, ecs: &str) -> Vec<String> {
    common::addrs(&udp(
        s.dns,
        &query("api.infer.example.com.", RecordType::A, true, Some(ecs)),
    ))
}

#[test]
fn the_lowest_rtt_region_answers_and_failover_follows_health() {
    let s = Steerd::start();
    let p = "10.9.8.0/24";
    assert_eq!(s.report("us-east", "u1", 1, &[(p, 10_000)]).0, 200);
    assert_eq!(s.report("eu-west", "e1", 1, &[(p, 70_000)]).0, 200);
    wait_until(Duration::from_secs(5), "both regions up", || {
        let (_, st) = s.get("/v1/state", Some(ADMIN_TOKEN));
        st.matches("\"status\":\"up\"").count() == 2
    });
    wait_until(Duration::from_secs(5), "us-east", || {
        answer(&s, "10.9.8.0/24") == ["198.19.1.10"]
    });
    // The RTT flips: eu-west becomes much faster (EWMA needs a few intervals).
    for seq in 2..12 {
        assert_eq!(s.report("us-east", "u1", seq, &[(p, 120_000)]).0, 200);
        assert_eq!(s.report("eu-west", "e1", seq, &[(p, 8_000)]).0, 200);
    }
    wait_until(Duration::from_secs(5), "eu-west after the RTT flip", || {
        answer(&s, "10.9.8.0/24") == ["198.19.2.10"]
    });
    // eu-west's host reports unhealthy: fall is 1, so the next tick fails over to us-east.
    let (st, body) = s.post(
        "/v1/reports",
        Some(common::EU_TOKEN),
        &common::report_json("eu-west", "e1", 50, false, &[]),
    );
    assert_eq!(st, 200, "{body}");
    // us-east stays live (its reports keep coming) while the failover takes effect.
    let mut seq = 50;
    wait_until(Duration::from_secs(5), "failover to us-east", || {
        seq += 1;
        assert_eq!(s.report("us-east", "u1", seq, &[]).0, 200);
        answer(&s, "10.9.8.0/24") == ["198.19.1.10"]
    });
    assert_eq!(s.report("us-east", "u1", seq + 1, &[]).0, 200);
    let m = udp(
        s.dns,
        &query("api.infer.example.com.", RecordType::A, true, Some("10.9.8.0/24")),
    );
    assert!(m.answers[0].ttl <= 20, "{m:?}");

    let (st, state) = s.get("/v1/state", Some(ADMIN_TOKEN));
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&state).expect("state is JSON");
    assert_ne!(v["regions"]["eu-west"]["status"], "up", "{v}");
    assert_eq!(v["regions"]["us-east"]["status"], "up", "{v}");
    assert!(v["tables"]["telemetry_prefixes"].as_u64() >= Some(2), "{v}");

    let (_, metrics) = s.get("/metrics", None);
    assert!(
        metrics.contains("steerd_region_health{region=\"eu-west\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steerd_answers_total{service=\"api\",region=\"us-east\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steerd_reports_total{result=\"accepted\"}"),
        "{metrics}"
    );
}

/// The value of one sample line (`name{labels}`) of an exposition, if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Posts a healthy us-east report from `u1` without RTTs whose host holds `active` connections.
fn report_connections(s: &Steerd, seq: u64, active: u32) {
    let mut v: serde_json::Value =
        serde_json::from_str(&common::report_json("us-east", "u1", seq, true, &[])).expect("JSON");
    v["load"]["active_connections"] = active.into();
    let (st, body) = s.post("/v1/reports", Some(US_TOKEN), &v.to_string());
    assert_eq!(st, 200, "{body}");
}

fn region_state(s: &Steerd, region: &str) -> serde_json::Value {
    let (st, state) = s.get("/v1/state", Some(ADMIN_TOKEN));
    assert_eq!(st, 200, "{state}");
    let v: serde_json::Value = serde_json::from_str(&state).expect("state is JSON");
    v["regions"][region].clone()
}

#[test]
fn drain_and_undrain_through_the_api() {
    let s = Steerd::start();
    let p = "10.7.7.0/24";
    // Nine more us-east prefixes at 1..=9 ms: with p's 5 ms the ten estimates have a nearest-rank
    // median of 5 ms and a p90 of 8 ms (a first report's estimate is its median as sent).
    let others: Vec<String> = (1..=9).map(|i| format!("10.20.{i}.0/24")).collect();
    let mut us: Vec<(&str, u32)> = vec![(p, 5_000)];
    us.extend(others.iter().zip(1..).map(|(o, i)| (o.as_str(), i * 1_000)));
    assert_eq!(s.report("us-east", "u1", 1, &us).0, 200);
    assert_eq!(s.report("eu-west", "e1", 1, &[(p, 60_000)]).0, 200);
    wait_until(Duration::from_secs(5), "us-east", || {
        answer(&s, "10.7.7.0/24") == ["198.19.1.10"]
    });
    let (_, metrics) = s.get("/metrics", None);
    for (series, want) in [
        ("steerd_region_prefixes{region=\"us-east\"}", 10.0),
        ("steerd_region_prefixes{region=\"eu-west\"}", 1.0),
        (
            "steerd_region_rtt_microseconds{region=\"us-east\",quantile=\"0.5\"}",
            5_000.0,
        ),
        (
            "steerd_region_rtt_microseconds{region=\"us-east\",quantile=\"0.9\"}",
            8_000.0,
        ),
        (
            "steerd_region_rtt_microseconds{region=\"eu-west\",quantile=\"0.5\"}",
            60_000.0,
        ),
        (
            "steerd_region_rtt_microseconds{region=\"eu-west\",quantile=\"0.9\"}",
            60_000.0,
        ),
        ("steerd_region_active_connections{region=\"us-east\"}", 4.0),
        ("steerd_region_drain_complete{region=\"us-east\"}", 0.0),
    ] {
        assert_eq!(sample(&metrics, series), Some(want), "{series} in\n{metrics}");
    }

    assert_eq!(
        s.post("/v1/regions/us-east/drain", None, "").0,
        401,
        "drains need a token"
    );
    assert_eq!(
        s.post("/v1/regions/us-east/drain", Some(US_TOKEN), "").0,
        401,
        "a region token is not admin"
    );
    assert_eq!(s.post("/v1/regions/nowhere/drain", Some(ADMIN_TOKEN), "").0, 404);
    let (st, body) = s.post("/v1/regions/us-east/drain", Some(ADMIN_TOKEN), "");
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        answer(&s, "10.7.7.0/24"),
        ["198.19.2.10"],
        "a drained region is never answered"
    );
    // The drained region's probes are told to drain their gates.
    let (st, reply) = s.report("us-east", "u1", 2, &[(p, 5_000)]);
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&reply).expect("reply is JSON");
    assert_eq!(v["gate"]["mode"], "drain", "{v}");

    // Drained, but the host still holds connections: the drain is not complete.
    report_connections(&s, 3, 3);
    wait_until(Duration::from_secs(5), "3 connections in the state", || {
        region_state(&s, "us-east")["active_connections"] == 3
    });
    let r = region_state(&s, "us-east");
    assert_eq!(
        (&r["drained"], &r["drain_complete"]),
        (&true.into(), &false.into()),
        "{r}"
    );
    // The last connection closes: the drain is complete.
    report_connections(&s, 4, 0);
    wait_until(Duration::from_secs(5), "the drain to complete", || {
        region_state(&s, "us-east")["drain_complete"] == true
    });
    assert_eq!(region_state(&s, "us-east")["active_connections"], 0);
    let (_, metrics) = s.get("/metrics", None);
    for (series, want) in [
        ("steerd_region_drain_complete{region=\"us-east\"}", 1.0),
        ("steerd_region_active_connections{region=\"us-east\"}", 0.0),
        ("steerd_region_drained{region=\"us-east\"}", 1.0),
        ("steerd_region_drain_complete{region=\"eu-west\"}", 0.0),
        ("steerd_region_active_connections{region=\"eu-west\"}", 4.0),
    ] {
        assert_eq!(sample(&metrics, series), Some(want), "{series} in\n{metrics}");
    }

    let (st, body) = s.post("/v1/regions/us-east/undrain", Some(ADMIN_TOKEN), "");
    assert_eq!(st, 200, "{body}");
    assert_eq!(answer(&s, "10.7.7.0/24"), ["198.19.1.10"]);
    // Still no connections, but a region that is not drained has no drain to complete.
    let r = region_state(&s, "us-east");
    assert_eq!(
        (&r["drained"], &r["drain_complete"]),
        (&false.into(), &false.into()),
        "{r}"
    );
    let (_, reply) = s.report("us-east", "u1", 5, &[(p, 5_000)]);
    let v: serde_json::Value = serde_json::from_str(&reply).expect("reply is JSON");
    assert_eq!(v["gate"]["mode"], "open", "{v}");
}

#[test]
fn bad_reports_are_refused_with_a_reason_and_change_nothing() {
    let s = Steerd::start();
    let good = common::report_json("us-east", "u1", 5, true, &[("10.1.1.0/24", 5_000)]);
    assert_eq!(s.post("/v1/reports", None, &good).0, 401, "no token");
    assert_eq!(
        s.post("/v1/reports", Some(common::EU_TOKEN), &good).0,
        401,
        "another region's token"
    );
    let (st, body) = s.post("/v1/reports", Some(US_TOKEN), "{not json");
    assert_eq!(st, 400);
    assert!(body.contains("bad_json"), "{body}");
    let unknown = common::report_json("mars", "u1", 1, true, &[]);
    let (st, body) = s.post("/v1/reports", Some(ADMIN_TOKEN), &unknown);
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("unknown_region"), "{body}");
    let bad_prefix = common::report_json("us-east", "u1", 1, true, &[("10.0.0.0/8", 5_000)]);
    let (st, body) = s.post("/v1/reports", Some(US_TOKEN), &bad_prefix);
    assert_eq!(st, 422, "{body}");
    let huge = format!(
        "{{\"pad\": \"{}\"}}",
        "x".repeat(steering_core::telemetry::wire::REPORT_BYTES_MAX + 10)
    );
    let (st, _) = s.post("/v1/reports", Some(US_TOKEN), &huge);
    assert_eq!(st, 413, "body over the limit");

    let (_, state) = s.get("/v1/state", Some(ADMIN_TOKEN));
    let v: serde_json::Value = serde_json::from_str(&state).expect("JSON");
    assert_eq!(v["tables"]["telemetry_prefixes"], 0, "no state change: {v}");
    assert_eq!(v["tables"]["telemetry_hosts"], 0, "no state change: {v}");

    assert_eq!(s.post("/v1/reports", Some(US_TOKEN), &good).0, 200);
    let (st, body) = s.post("/v1/reports", Some(US_TOKEN), &good);
    assert_eq!(st, 409, "a replayed seq: {body}");
    let (_, metrics) = s.get("/metrics", None);
    for reason in ["bad_json", "unknown_region", "bad_value", "stale", "unauthorized"] {
        assert!(
            metrics.contains(&format!("steerd_report_rejections_total{{reason=\"{reason}\"}}")),
            "{reason}: {metrics}"
        );
    }
}
