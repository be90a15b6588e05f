//! The CLI contract: `check` exits 1 with located errors, `serve` exits 64 on bad config before
//! binding anything, `explain` prints the live decision through the admin API, and the example
//! policy and zone serve out of the box.

mod common;

use std::process::Command;

use common::{ADMIN_TOKEN, Steerd, repo_root};

fn steerd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_steerd"))
        .args(args)
        .output()
        .expect("run steerd")
}

#[test]
fn check_accepts_the_examples_and_locates_errors() {
    let root = repo_root();
    let policy = root.join("deploy/examples/policy.yaml");
    let zone = root.join("deploy/examples/zone.db");
    let out = steerd(&[
        "check",
        "--policy",
        policy.to_str().expect("utf8"),
        "--zone",
        zone.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        common::POLICY.replace("regions: [us-east, eu-west]", "regions: [us-east, eu-wset]"),
    )
    .expect("write");
    let out = steerd(&["check", "--policy", bad.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:") && err.contains("eu-wset"), "{err}");

    let zone_bad = dir.path().join("zone.db");
    std::fs::write(&zone_bad, "$ORIGIN infer.example.com.\n@ 3600 IN NS ns1\n").expect("write");
    let out = steerd(&[
        "check",
        "--policy",
        policy.to_str().expect("utf8"),
        "--zone",
        zone_bad.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "a zone without SOA");
}

#[test]
fn serve_exits_64_on_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = repo_root();
    let policy = root.join("deploy/examples/policy.yaml");
    let zone = root.join("deploy/examples/zone.db");
    let (p, z) = (policy.to_str().expect("utf8"), zone.to_str().expect("utf8"));
    let missing = dir.path().join("missing.yaml");
    let cfg = dir.path().join("steerd.toml");
    std::fs::write(&cfg, "policy = \"x\"\nunknown_field = 1\n").expect("write");
    for args in [
        vec!["serve", "--zone", z],
        vec!["serve", "--policy", missing.to_str().expect("utf8"), "--zone", z],
        vec!["serve", "--policy", p, "--zone", p],
        vec![
            "serve",
            "--policy",
            p,
            "--zone",
            z,
            "--admin",
            "0.0.0.0:0",
            "--dns",
            "127.0.0.1:0",
        ],
        vec!["serve", "--config", cfg.to_str().expect("utf8")],
        vec![
            "serve",
            "--policy",
            p,
            "--zone",
            z,
            "--geoip",
            z,
            "--dns",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
    ] {
        let out = steerd(&args);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing was bound");
    }
}

#[test]
fn serve_reads_a_config_file_and_explain_asks_the_live_server() {
    let s = Steerd::start();
    assert_eq!(s.report("eu-west", "e1", 1, &[("10.4.4.0/24", 9_000)]).0, 200);
    assert_eq!(s.report("us-east", "u1", 1, &[("10.4.4.0/24", 70_000)]).0, 200);
    let admin = s.admin.to_string();
    // The snapshot is rebuilt shortly after a report, not during it.
    common::wait_until(
        std::time::Duration::from_secs(5),
        "eu-west for 10.4.4.0/24",
        || {
            let m = common::udp(
                s.dns,
                &common::query(
                    "api.infer.example.com.",
                    hickory_proto::rr::RecordType::A,
                    true,
                    Some("10.4.4.0/24"),
                ),
            );
            common::addrs(&m) == ["198.19.2.10"]
        },
    );
    let out = Command::new(env!("CARGO_BIN_EXE_steerd"))
        .args([
            "explain",
            "--admin",
            &admin,
            "--client",
            "192.0.2.1",
            "--ecs",
            "10.4.4.0/24",
            "api.infer.example.com",
            "A",
        ])
        .env("STEER_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("client    10.4.4.0/24 (ECS)") && text.contains("8 answer      eu-west"),
        "{text}"
    );
    let out = steerd(&[
        "explain",
        "--admin",
        &admin,
        "--client",
        "192.0.2.1",
        "api.infer.example.com",
        "A",
    ]);
    assert_eq!(out.status.code(), Some(1), "no token");

    // The same settings from a config file.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = repo_root();
    let cfg = dir.path().join("steerd.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy = \"{}\"\nzone = \"{}\"\ndns = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nlog_format = \"json\"\n",
            root.join("deploy/examples/policy.yaml").display(),
            root.join("deploy/examples/zone.db").display()
        ),
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_steerd"))
        .args(["serve", "--config", cfg.to_str().expect("utf8")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("line");
    let dns: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dns="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("listening line: {line:?}"));
    let out = common::kdig(dns, &["api.infer.example.com", "A"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.contains("status: NOERROR") && out.contains("198.19."),
        "the examples serve out of the box: {out}"
    );
}
