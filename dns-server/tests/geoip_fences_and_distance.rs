//! `GeoIP` from a real (tiny, built here) `MaxMind` database: the client's country applies the
//! residency fence, its location ranks regions by distance when no RTT is measured.

mod common;

use steer_lab::mmdb;

use common::{ADMIN_TOKEN, Opts, Steerd, query, udp};
use hickory_proto::rr::RecordType;

fn answer(s: &Steerd, ecs: &str) -> Vec<String> {
    common::addrs(&udp(
        s.dns,
        &query("api.infer.example.com.", RecordType::A, true, Some(ecs)),
    ))
}

#[test]
fn country_fences_and_location_distance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("city.mmdb");
    std::fs::write(
        &db,
        mmdb::build(&[
            ([10, 66, 0, 0], 16, mmdb::city("DE", "EU", 52.5, 13.4)),
            ([10, 77, 0, 0], 16, mmdb::city("US", "NA", 38.9, -77.0)),
            ([10, 88, 0, 0], 16, mmdb::city("IE", "EU", 53.3, -6.3)),
        ]),
    )
    .expect("write mmdb");
    let s = Steerd::start_with(Opts {
        geoip: Some(db),
        ..Opts::default()
    });
    // Both regions up, and the German client's /24 measured much closer to us-east: the strict
    // fence still keeps it in eu-west.
    assert_eq!(s.report("us-east", "u1", 1, &[("10.66.1.0/24", 1_000)]).0, 200);
    assert_eq!(s.report("eu-west", "e1", 1, &[("10.66.1.0/24", 90_000)]).0, 200);
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(
        answer(&s, "10.66.1.0/24"),
        ["198.19.2.10"],
        "the DE fence allows only eu-west"
    );
    // No RTT data: the location decides.
    assert_eq!(
        answer(&s, "10.77.1.0/24"),
        ["198.19.1.10"],
        "Washington is nearer us-east"
    );
    assert_eq!(
        answer(&s, "10.88.1.0/24"),
        ["198.19.2.10"],
        "Dublin is nearer eu-west"
    );
    let m = udp(
        s.dns,
        &query(
            "api.infer.example.com.",
            RecordType::A,
            true,
            Some("10.88.1.0/24"),
        ),
    );
    let scope = match m
        .edns
        .as_ref()
        .and_then(|e| e.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet))
    {
        Some(hickory_proto::rr::rdata::opt::EdnsOption::Subnet(s)) => s.scope_prefix(),
        other => panic!("ECS echoed: {other:?}"),
    };
    assert_eq!(scope, 24, "a location-based answer is scoped to the client's /24");

    let (st, text) = s.get(
        "/v1/explain?name=api.infer.example.com&type=A&client=192.0.2.1&ecs=10.66.1.0/24",
        Some(ADMIN_TOKEN),
    );
    assert_eq!(st, 200, "{text}");
    assert!(
        text.contains("country=DE") && text.contains("continent=EU") && text.contains("fences[0]"),
        "{text}"
    );
    let (_, text) = s.get(
        "/v1/explain?name=api.infer.example.com&type=A&client=192.0.2.1&ecs=10.77.1.0/24",
        Some(ADMIN_TOKEN),
    );
    assert!(text.contains("source=Distance"), "{text}");
}
