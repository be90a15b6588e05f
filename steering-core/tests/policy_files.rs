//! Every example policy under `deploy/examples` compiles, and every broken policy under
//! `tests/broken_policies` fails with exactly the located errors written here (refresh with
//! `UPDATE_EXPECT=1 cargo test -p steering-core --test policy_files`, then read the diff).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use expect_test::expect;
use steering_core::Policy;
use steering_core::policy::{Mode, WhenAllDown};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

fn broken_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken_policies")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn example(name: &str) -> Policy {
    let path = examples_dir().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Policy::from_yaml(name, &text).unwrap_or_else(|e| panic!("{name} does not compile:\n{e}"))
}

/// Every error of a broken fixture, one `file:line:column: path: message` a line.
fn errors(name: &str) -> String {
    let file = format!("{name}.yaml");
    let path = broken_dir().join(&file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    match Policy::from_yaml(&file, &text) {
        Ok(policy) => panic!("{file} compiled, but it is broken on purpose: {policy:?}"),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "{file}: PolicyErrors must never be empty");
            errors.to_string()
        }
    }
}

// === examples ===

#[test]
fn every_example_compiles() {
    let files = yaml_files(&examples_dir());
    assert!(
        files.len() >= 4,
        "expected policy.yaml and at least three more examples, got {files:?}"
    );
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name");
        let policy = example(name);
        assert!(
            !policy.regions.is_empty() && !policy.services.is_empty(),
            "{name}"
        );
    }
}

#[test]
fn reference_policy() {
    let p = example("policy.yaml");
    assert_eq!(p.zone, "infer.example.com.");
    let names: Vec<&str> = p.regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["us-east", "eu-west", "ap-south"]);
    let us_east = p.region_by_name("us-east").expect("us-east");
    assert_eq!(
        (
            us_east.endpoints_v4.len(),
            us_east.endpoints_v6.len(),
            us_east.weight
        ),
        (2, 1, 100)
    );
    assert_eq!(p.region_by_name("ap-south").map(|r| r.weight), Some(50));

    let api = p.service_by_fqdn("API.infer.example.com").expect("api by fqdn");
    assert_eq!(api.fqdn, "api.infer.example.com.");
    assert_eq!(api.mode, Mode::Latency);
    assert_eq!((api.ttl_normal_s, api.ttl_min_s), (20, 5));
    assert_eq!(
        (api.stabilize_us, api.stabilize_pct, api.explore_ppm),
        (10_000, 10, 20_000)
    );
    assert_eq!(api.slow_start, Duration::from_mins(2));
    assert_eq!(api.when_all_down, WhenAllDown::Open);
    assert_eq!(api.region_set, p.all_regions());
    let eu_west = p.region_by_name("eu-west").expect("eu-west").id;
    assert_eq!(api.fences.len(), 1);
    assert_eq!(api.fences[0].allow.iter().collect::<Vec<_>>(), [eu_west]);
    assert!(api.fences[0].strict);
    assert_eq!(format!("{:?}", api.fences[0].countries), "[DE, FR, NL]");
    let capacity = api.capacity.expect("capacity");
    assert_eq!(
        (capacity.queue_depth_high, capacity.kv_cache_high),
        (Some(64), Some(0.9))
    );

    let batch = p.service_by_fqdn("batch.infer.example.com.").expect("batch");
    assert_eq!(
        (batch.mode, batch.answers, batch.ttl_normal_s),
        (Mode::Weighted, 2, 60)
    );
    assert_eq!(batch.regions.len(), 3, "default: every region");
    let us_east = p.region_by_name("us-east").expect("us-east").id;
    assert_eq!(
        batch.when_all_down,
        WhenAllDown::Fallback(steering_core::RegionSet::single(us_east))
    );
    assert_eq!(p.health, steering_core::policy::HealthPolicy::default());
}

#[test]
fn failover_example_apex_and_defaults() {
    let p = example("failover.yaml");
    assert_eq!(p.zone, "failover.example.net.");
    let apex = p.service_by_fqdn("failover.example.net").expect("apex");
    assert_eq!(
        (apex.name.as_str(), apex.mode, apex.explore_ppm),
        ("@", Mode::Failover, 0)
    );
    assert_eq!(apex.when_all_down, WhenAllDown::Closed);
    let chat = p.service_by_fqdn("chat.failover.example.net.").expect("chat");
    assert_eq!((chat.ttl_normal_s, chat.ttl_min_s, chat.answers), (15, 5, 1));
    assert_eq!(
        chat.regions
            .iter()
            .map(|r| p.region(*r).name.as_str())
            .collect::<Vec<_>>(),
        ["standby", "primary"]
    );
    assert_eq!(
        (p.health.fall, p.health.rise, p.health.stale_after),
        (3, 5, Duration::from_secs(3))
    );
}

#[test]
fn residency_example_fences() {
    let p = example("residency.yaml");
    assert_eq!(p.zone, "residency.example.org.");
    let llm = &p.services[0];
    assert_eq!(
        (llm.fqdn.as_str(), llm.mode, llm.answers),
        ("llm.residency.example.org.", Mode::Geo, 2)
    );
    let strict: Vec<bool> = llm.fences.iter().map(|f| f.strict).collect();
    assert_eq!(
        strict,
        [true, true, false],
        "fences are strict unless they say otherwise"
    );
    assert_eq!(llm.fences[0].allow.len(), 2);
}

#[test]
fn weighted_example() {
    let p = example("weighted.yaml");
    let weights: Vec<u32> = p.regions.iter().map(|r| r.weight).collect();
    assert_eq!(weights, [900, 100]);
    let embed = &p.services[0];
    assert_eq!(
        (embed.ttl_normal_s, embed.ttl_min_s, embed.slow_start),
        (10, 2, Duration::from_mins(5))
    );
    assert_eq!(embed.capacity.and_then(|c| c.queue_depth_high), Some(128));
}

#[test]
fn oversized_policy_is_rejected_before_parsing() {
    let text = "#".repeat(steering_core::policy::POLICY_BYTES_MAX + 1);
    let errors = Policy::from_yaml("big.yaml", &text).expect_err("too big");
    assert_eq!(errors.0.len(), 1);
    assert!(
        errors.0[0].message.contains("expected at most 4194304"),
        "{errors}"
    );
}

// === broken policies ===

/// Every fixture has its own test below, so none sits there unchecked.
#[test]
fn every_broken_policy_is_checked() {
    let here = include_str!("policy_files.rs");
    for path in yaml_files(&broken_dir()) {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 file name");
        assert!(
            here.contains(&format!("errors(\"{stem}\")")),
            "{stem}.yaml has no test in policy_files.rs"
        );
    }
}

#[test]
fn syntax_error() {
    expect![
        "syntax_error.yaml:9:12: services.api.regions[1]: invalid YAML: illegal placement of ':' indicator"
    ]
    .assert_eq(&errors("syntax_error"));
}

#[test]
fn unknown_field() {
    expect!["unknown_field.yaml:8:25: services.api.ttl.mni: unknown field `mni`, expected `normal` or `min`"]
        .assert_eq(&errors("unknown_field"));
}

#[test]
fn wrong_type() {
    expect![[r#"wrong_type.yaml:8:14: services.api.answers: invalid type: string "two", expected i64"#]]
        .assert_eq(&errors("wrong_type"));
}

#[test]
fn missing_field() {
    expect!["missing_field.yaml:4:12: regions.us-east: missing field `endpoints`"]
        .assert_eq(&errors("missing_field"));
}

#[test]
fn duplicate_key() {
    expect![[r#"duplicate_key.yaml:8:3: services.api: duplicate key "api" (also at line 7)"#]]
        .assert_eq(&errors("duplicate_key"));
}

#[test]
fn unknown_mode() {
    expect!["unknown_mode.yaml:8:11: services.api.mode: unknown variant `fastest`, expected one of `latency`, `failover`, `weighted`, `geo`"].assert_eq(&errors("unknown_mode"));
}

#[test]
fn unknown_region_in_fence() {
    expect![[r#"unknown_region_in_fence.yaml:9:49: services.api.fences[0].allow[1]: unknown region "eu-wset" (did you mean "eu-west"?)"#]].assert_eq(&errors("unknown_region_in_fence"));
}

#[test]
fn duplicate_endpoint() {
    expect!["duplicate_endpoint.yaml:5:39: regions.eu-west.endpoints[1]: duplicate endpoint 198.19.1.10 (also in regions.us-east.endpoints[0])"].assert_eq(&errors("duplicate_endpoint"));
}

#[test]
fn endpoint_not_an_address() {
    expect![[r#"
        endpoint_not_an_address.yaml:4:39: regions.us-east.endpoints[1]: "api-1.us-east.example.com" is not an IP address: expected IPv4 (198.19.1.10) or IPv6 (2001:db8::10)
        endpoint_not_an_address.yaml:5:26: regions.eu-west.endpoints[0]: "198.19.2.300" is not an IP address: expected IPv4 (198.19.1.10) or IPv6 (2001:db8::10)"#]].assert_eq(&errors("endpoint_not_an_address"));
}

#[test]
fn bad_duration() {
    expect![[r#"
        bad_duration.yaml:8:20: services.api.ttl.normal: bad duration "20x": expected a number with ms, s, m or h
        bad_duration.yaml:8:30: services.api.ttl.min: TTL 1500ms is not a whole number of seconds
        bad_duration.yaml:9:17: services.api.slow_start: bad duration "2 minutes": expected a number with ms, s, m or h"#]].assert_eq(&errors("bad_duration"));
}

#[test]
fn country_not_iso() {
    expect![[r#"
        country_not_iso.yaml:9:27: services.api.fences[0].countries[1]: "UK" is not an ISO 3166-1 alpha-2 country code (did you mean "GB"?)
        country_not_iso.yaml:9:45: services.api.fences[0].continents[0]: "EUR" is not a continent code: expected one of AF, AN, AS, EU, NA, OC, SA"#]].assert_eq(&errors("country_not_iso"));
}

#[test]
fn ttl_min_above_normal() {
    expect!["ttl_min_above_normal.yaml:8:30: services.api.ttl.min: ttl.min 30s is longer than ttl.normal 10s: expected min <= normal"].assert_eq(&errors("ttl_min_above_normal"));
}

#[test]
fn geo_without_location() {
    expect![[r#"
        geo_without_location.yaml:9:24: services.api.regions[1]: mode geo needs a location for every region: region "eu-west" has none
        geo_without_location.yaml:11:11: services.web.mode: mode geo needs a location for every region: region "eu-west" has none"#]].assert_eq(&errors("geo_without_location"));
}

#[test]
fn fallback_outside_service() {
    expect![[r#"fallback_outside_service.yaml:9:33: services.api.when_all_down.fallback[0]: region "eu-west" is not one of the service's regions: expected one of us-east"#]].assert_eq(&errors("fallback_outside_service"));
}

#[test]
fn explore_out_of_range() {
    expect![
        "explore_out_of_range.yaml:8:14: services.api.explore: explore 0.8 is out of range: expected 0..=0.5"
    ]
    .assert_eq(&errors("explore_out_of_range"));
}

#[test]
fn many_errors() {
    expect![[r#"
        many_errors.yaml:2:7: zone: "infer..example.com" is not a valid DNS zone name: label "" has 0 characters: expected 1..=63
        many_errors.yaml:4:57: regions.us-east.location.lat: latitude 139 is out of range: expected -90..=90
        many_errors.yaml:4:86: regions.us-east.weight: weight 0 is out of range: expected 1..=1000000
        many_errors.yaml:5:3: regions.EU_West: "EU_West" is not a valid region name: expected only lower-case letters, digits and '-'
        many_errors.yaml:5:25: regions.EU_West.endpoints: no endpoints: expected at least one IPv4 or IPv6 address
        many_errors.yaml:8:24: services.api.regions[1]: duplicate region "us-east" (also at services.api.regions[0])
        many_errors.yaml:8:33: services.api.regions[2]: unknown region "us-esat" (did you mean "us-east"?)
        many_errors.yaml:9:14: services.api.answers: answers 9 is out of range: expected 1..=8
        many_errors.yaml:10:31: services.api.stabilize.pct: stabilize.pct 150 is out of range: expected 0..=100
        many_errors.yaml:12:9: services.api.fences[0]: a fence needs clients to apply to: expected at least one of countries or continents
        many_errors.yaml:12:18: services.api.fences[0].allow: empty list: expected at least one region
        many_errors.yaml:13:32: services.api.capacity.kv_cache_high: kv_cache_high 1.5 is out of range: expected 0..=1
        many_errors.yaml:14:3: services.bad_name: "bad_name" is not a valid service name: label "bad_name": expected only letters, digits and '-' (use "@" for the apex)
        many_errors.yaml:15:17: health.fall: fall 0 is out of range: expected 1..=1000
        many_errors.yaml:15:42: health.min_healthy_fraction: min_healthy_fraction 2 is out of range: expected 0..=1"#]].assert_eq(&errors("many_errors"));
}
