//! The operator commands on the real binary: `steer-probe gate` writes the pinned gate and
//! `steer-probe status` reads it back with the counters, with no agent running; with an agent
//! running, `gate --hold` keeps the operator's mode against steerd replies that say open, and a
//! plain `gate` is overridden by the next reply.

mod common;

use std::path::Path;
use std::time::Duration;

use aya::test_helpers::NetNsGuard;
use common::http::{FakeSteerd, SteerdMode, reply};
use common::probe::{self, Agent, XDP_DROP, XDP_PASS};
use steer_probe::{LoadOptions, Probe};
use steering_core::telemetry::wire::GateMode;

const PORT: u16 = 8000;

fn pin(p: &Path) -> &str {
    p.to_str().expect("utf-8 pin dir")
}

#[test]
fn gate_then_status_without_an_agent() {
    common::require_root();
    let _ns = NetNsGuard::new().unwrap_or_else(|e| panic!("creating a netns: {e}"));
    let pins = common::PinDir::new("steer-cli");
    // Load (pins maps and the gate program) without attaching, then let the loader go.
    drop(
        Probe::load(&LoadOptions {
            pin_dir: pins.0.clone(),
            cgroup: None,
            iface: None,
            ports: vec![PORT],
        })
        .unwrap_or_else(|e| panic!("load: {e}")),
    );
    let p = pin(&pins.0);
    assert_eq!(probe::status_mode(&pins.0), "Open", "a fresh gate is open");

    probe::cli_ok(&["gate", "drain", "--pin-dir", p]);
    let syn = probe::syn_frame([198, 18, 4, 4], PORT);
    assert_eq!(probe::prog_run(&pins.0, &syn, 5), [XDP_DROP; 5]);
    let out = probe::status(&pins.0);
    assert!(out.starts_with("gate: Drain rate_per_s=0 burst=0\n"), "{out}");
    assert!(out.contains("gated ports: [8000]"), "{out}");
    assert!(out.contains("new flows: seen=5 admitted=0 dropped=5"), "{out}");
    let drain_row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("drain "))
        .unwrap_or_else(|| panic!("no drain row:\n{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(drain_row, ["drain", "0", "0", "0", "5", "0", "0"], "{out}");

    probe::cli_ok(&["gate", "surge", "--rate", "100", "--burst", "10", "--pin-dir", p]);
    let out = probe::status(&pins.0);
    assert!(out.starts_with("gate: Surge rate_per_s=100 burst=10\n"), "{out}");
    let (st, _, err) = probe::cli(&["gate", "surge", "--pin-dir", p]);
    assert!(
        !st.success() && err.contains("--rate"),
        "surge without a rate: {st} {err}"
    );

    probe::cli_ok(&["gate", "open", "--hold", "--pin-dir", p]);
    assert!(probe::status(&pins.0).starts_with("gate: Open rate_per_s=0 burst=0 (held)\n"));
    assert_eq!(probe::prog_run(&pins.0, &syn, 1), [XDP_PASS]);
    assert_eq!(
        probe::status_flows(&pins.0),
        (6, 1, 5),
        "counters go on across modes"
    );

    let missing = pins.0.join("nothing-here");
    let (st, _, err) = probe::cli(&["status", "--pin-dir", pin(&missing)]);
    assert!(!st.success() && err.contains("opening the maps"), "{st} {err}");
}

#[test]
fn hold_keeps_the_mode_against_steerd() {
    common::require_root();
    let ns = common::Netns::new("steer-hold");
    let peer = common::Netns::new("steer-hold-peer");
    probe::veth(&ns, "hold0", "198.18.0.1", &peer, "hold1", "198.18.9.2");
    let cgroup = common::TestCgroup::create("steer-hold");
    let pins = common::PinDir::new("steer-hold");
    let (work, token) = probe::work_dir_with_token(&pins.0);
    let steerd = FakeSteerd::start(&ns, SteerdMode::Reply(reply(GateMode::Open, 0, 0, 100)));
    let metrics_port = probe::free_port(&ns);
    let args: Vec<String> = [
        "--region",
        "eu-1",
        "--host",
        "gpu-1",
        "--server",
        &steerd.http.url(""),
        "--token-file",
        token.to_str().expect("utf-8"),
        "--cgroup",
        cgroup.path.to_str().expect("utf-8"),
        "--iface",
        "hold0",
        "--ports",
        "8000",
        "--pin-dir",
        pin(&pins.0),
        "--interval-ms",
        "100",
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut agent = Agent::spawn(&ns, &args, work.join("agent.log"));
    steerd.wait_for("2 reports", Duration::from_secs(10), |a| a.len() >= 2);

    // Held: steerd keeps saying open, the gate keeps draining.
    probe::cli_ok(&["gate", "drain", "--hold", "--pin-dir", pin(&pins.0)]);
    let n = steerd.accepted().len();
    steerd.wait_for("5 more reports", Duration::from_secs(5), |a| a.len() >= n + 5);
    agent.assert_running("with a hold");
    let out = probe::status(&pins.0);
    assert!(
        out.starts_with("gate: Drain rate_per_s=0 burst=0 (held)\n"),
        "{out}"
    );
    assert_eq!(
        steerd.accepted().last().map(|a| a.report.gate.mode),
        Some(GateMode::Drain),
        "reports tell steerd the held mode"
    );
    let (_, metrics) = probe::http_get(&ns, &format!("http://127.0.0.1:{metrics_port}/metrics"));
    assert!(
        metrics.lines().any(|l| l == "steer_probe_gate_held 1"),
        "{metrics}"
    );

    // Not held: the next reply wins.
    probe::cli_ok(&["gate", "drain", "--pin-dir", pin(&pins.0)]);
    probe::wait_until(
        "steerd's open to win over an unheld drain",
        Duration::from_secs(3),
        || probe::status_mode(&pins.0) == "Open",
    );
    agent.assert_running("at the end");
    drop(agent);
    let _ = std::fs::remove_dir_all(&work);
}
