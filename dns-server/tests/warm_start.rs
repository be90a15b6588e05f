//! Telemetry and health are saved atomically to `--state FILE` and loaded on the next start, so a
//! restarted steerd answers from what it knew (and keeps operator drains).

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, Opts, Steerd, query, udp, wait_until};
use hickory_proto::rr::RecordType;

fn answer(s: &Steerd) -> Vec<String> {
    common::addrs(&udp(
        s.dns,
        &query("api.infer.example.com.", RecordType::A, true, Some("10.5.5.0/24")),
    ))
}

#[test]
fn state_survives_a_restart() {
    let s = Steerd::start_with(Opts {
        state: true,
        ..Opts::default()
    });
    assert_eq!(s.report("us-east", "u1", 1, &[("10.5.5.0/24", 80_000)]).0, 200);
    assert_eq!(s.report("eu-west", "e1", 1, &[("10.5.5.0/24", 9_000)]).0, 200);
    assert_eq!(s.post("/v1/regions/us-east/drain", Some(ADMIN_TOKEN), "").0, 200);
    wait_until(Duration::from_secs(5), "eu-west", || {
        answer(&s) == ["198.19.2.10"]
    });
    let state = s.dir.path().join("state.json");
    wait_until(Duration::from_secs(8), "the state file", || {
        let Ok(t) = std::fs::read_to_string(&state) else {
            return false;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else {
            return false;
        };
        v["health"]["drained"]
            .as_array()
            .is_some_and(|d| d.iter().any(|r| r == "us-east"))
            && v["telemetry"]["regions"]["eu-west"]["prefixes"]["10.5.5.0/24"].is_object()
    });
    let (_, st) = s.get("/v1/state", Some(ADMIN_TOKEN));
    let v: serde_json::Value = serde_json::from_str(&st).expect("JSON");
    assert!(v["state_age_ms"].as_u64().is_some(), "{v}");
    let dir = s.stop();
    assert!(
        !std::fs::read_dir(dir.path())
            .expect("dir")
            .any(|e| { e.expect("entry").file_name().to_string_lossy().contains(".tmp") }),
        "no temporary file is left behind"
    );

    // `explain` reads the saved state offline.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_steerd"))
        .arg("explain")
        .arg("--state")
        .arg(dir.path().join("state.json"))
        .arg("--policy")
        .arg(dir.path().join("policy.yaml"))
        .args([
            "--client",
            "192.0.2.1",
            "--ecs",
            "10.5.5.0/24",
            "api.infer.example.com",
            "A",
        ])
        .output()
        .expect("explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("(drained: us-east)") && text.contains("eu-west"),
        "{text}"
    );

    let s = Steerd::start_with(Opts {
        state: true,
        dir: Some(dir),
        ..Opts::default()
    });
    let (_, st) = s.get("/v1/state", Some(ADMIN_TOKEN));
    let v: serde_json::Value = serde_json::from_str(&st).expect("JSON");
    assert_eq!(v["state_loaded_at_start"], true, "{v}");
    assert_eq!(
        v["regions"]["us-east"]["drained"], true,
        "the drain survived: {v}"
    );
    assert_eq!(v["regions"]["eu-west"]["prefixes"], 1, "{v}");
    assert!(s.stderr().contains("warm start"), "{}", s.stderr());
    assert_eq!(answer(&s), ["198.19.2.10"]);
}

#[test]
fn a_corrupt_state_file_means_a_cold_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("state.json"), "{ not json").expect("write");
    let s = Steerd::start_with(Opts {
        state: true,
        dir: Some(dir),
        ..Opts::default()
    });
    assert!(s.stderr().contains("starting cold"), "{}", s.stderr());
    assert_eq!(
        udp(
            s.dns,
            &query("api.infer.example.com.", RecordType::A, false, None)
        )
        .answers
        .len(),
        1
    );
}
