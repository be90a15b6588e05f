//! The real `steer-probe run` (in a fresh netns, configured from a TOML file plus flags) against a
//! fake steerd and a fake vLLM server, both real HTTP servers on the namespace's 127.0.0.1:
//! - reports carry the bearer token, the region and host, rising seqs, the health result and the
//!   load read from vLLM's metric names;
//! - the agent applies the gate mode the reply names (seen through `steer-probe status`);
//! - it keeps the last gate state while steerd is unreachable, answers 200 with garbage, 500, or
//!   hangs (each bounded by the agent's HTTP timeout), and does not exit;
//! - the gate deltas it sends add up to what the gate counted, across the outage;
//! - a hanging inference server makes the report say health not ok;
//! - `/metrics` shows the gate, the reports and the load, and names the region and host in
//!   `steer_probe_info`;
//! - SIGTERM stops it with status 0 and leaves the gate as it was.
#![allow(
    clippy::disallowed_types,
    reason = "real sockets and real processes are timed by the real monotonic clock (no tokio here)"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::http::{Answer, FakeHttp, FakeSteerd, SteerdMode, reply};
use common::probe::{self, Agent, XDP_DROP};
use steering_core::telemetry::wire::GateMode;

const PORT: u16 = 8000;
const TOKEN: &str = "region-token-eu-1";
const VLLM_METRICS: &str = "\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"llama\"} 3.0
vllm:num_requests_waiting{model_name=\"qwen\"} 2.0
vllm:kv_cache_usage_perc{model_name=\"llama\"} 0.42
";

fn total_seen(acc: &[common::http::Accepted]) -> u64 {
    acc.iter().map(|a| a.report.gate.syn_seen).sum()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, phase by phase")]
fn reports_reach_steerd_and_the_agent_survives_bad_servers() {
    common::require_root();
    let ns = common::Netns::new("steer-report");
    let peer = common::Netns::new("steer-report-peer");
    probe::veth(&ns, "rep0", "198.18.0.1", &peer, "rep1", "198.18.9.2");
    let cgroup = common::TestCgroup::create("steer-report");
    let pins = common::PinDir::new("steer-report");
    let pin_dir = pins.0.clone();
    let tmp = pin_dir.file_name().expect("name").to_string_lossy().into_owned();
    let work = std::env::temp_dir().join(format!("{tmp}-work"));
    std::fs::create_dir_all(&work).expect("work dir");

    // The fake inference server: healthy until told to hang.
    let infer_hangs = Arc::new(AtomicBool::new(false));
    let hangs = Arc::clone(&infer_hangs);
    let infer = FakeHttp::start(
        &ns,
        Arc::new(move |req| match req.path.as_str() {
            "/health" if hangs.load(Ordering::SeqCst) => Answer::Hang,
            "/health" => Answer::Respond(200, "ok".into()),
            "/metrics" => Answer::Respond(200, VLLM_METRICS.into()),
            _ => Answer::Respond(404, String::new()),
        }),
    );
    let steerd = FakeSteerd::start(&ns, SteerdMode::Reply(reply(GateMode::Drain, 0, 0, 100)));

    let token_file = work.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let metrics_port = probe::free_port(&ns);
    let config = work.join("probe.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"eu-1\"\nhost = \"gpu-7\"\nservers = [\"{}\"]\ntoken_file = \"{}\"\n\
             cgroup = \"{}\"\niface = \"rep0\"\nports = [{PORT}]\nhealth_url = \"{}\"\n\
             metrics_url = \"{}\"\ninterval_ms = 5000\nhttp_timeout_ms = 300\n\
             metrics_listen = \"127.0.0.1:{metrics_port}\"\n",
            steerd.http.url(""),
            token_file.display(),
            cgroup.path.display(),
            infer.url("/health"),
            infer.url("/metrics"),
        ),
    )
    .expect("config file");
    // The flag overrides the file's 5 s interval (steerd's replies say 100 ms anyway).
    let mut agent = Agent::spawn(
        &ns,
        &[
            "--config".into(),
            config.display().to_string(),
            "--pin-dir".into(),
            pin_dir.display().to_string(),
            "--interval-ms".into(),
            "100".into(),
        ],
        work.join("agent.log"),
    );

    // === reports carry the right fields; the reply's drain is applied ===
    steerd.wait_for("3 reports", Duration::from_secs(10), |a| a.len() >= 3);
    agent.assert_running("after its first reports");
    let first = steerd.accepted();
    for a in &first {
        assert_eq!(a.authorization.as_deref(), Some("Bearer region-token-eu-1"));
        let r = &a.report;
        assert_eq!(
            (r.version, r.region.as_str(), r.host.as_str()),
            (1, "eu-1", "gpu-7")
        );
        assert!(r.health.ok, "healthy server, report says {:?}", r.health);
        assert_eq!(r.load.queue_depth, 5, "vllm:num_requests_waiting summed");
        assert!((r.load.kv_cache_usage - 0.42).abs() < 1e-9, "{:?}", r.load);
    }
    assert!(
        first.windows(2).all(|w| w[1].report.seq > w[0].report.seq),
        "seqs rise: {:?}",
        first.iter().map(|a| a.report.seq).collect::<Vec<_>>()
    );
    assert!(
        first.iter().all(|a| a.report.interval_ms == 100),
        "the interval of the flag (over the file's 5000): {:?}",
        first.iter().map(|a| a.report.interval_ms).collect::<Vec<_>>()
    );
    probe::wait_until("the gate to drain", Duration::from_secs(3), || {
        probe::status_mode(&pin_dir) == "Drain"
    });
    steerd.wait_for("a report that says drain", Duration::from_secs(3), |a| {
        a.last().is_some_and(|a| a.report.gate.mode == GateMode::Drain)
    });

    // New flows counted by the gate, before the outage.
    let syn = probe::syn_frame([198, 18, 9, 2], PORT);
    assert!(probe::prog_run(&pin_dir, &syn, 10).iter().all(|&v| v == XDP_DROP));

    // === unreachable: connects refused ===
    steerd.http.set_down(true);
    std::thread::sleep(Duration::from_millis(400));
    assert!(probe::prog_run(&pin_dir, &syn, 7).iter().all(|&v| v == XDP_DROP));
    assert_eq!(
        probe::status_mode(&pin_dir),
        "Drain",
        "the last gate state is kept"
    );
    agent.assert_running("while steerd is unreachable");
    steerd.http.set_down(false);

    // === 200 with garbage, 500, a hanging connection ===
    let before = steerd.seen();
    for (mode, name) in [
        (SteerdMode::Garbage, "garbage"),
        (SteerdMode::Error, "500"),
        (SteerdMode::Hang, "hang"),
    ] {
        steerd.set_mode(mode);
        let seen = steerd.seen();
        // The backoff after the outage may skip a few intervals first (at most 32 x 100 ms).
        probe::wait_until(
            &format!("a request answered with {name}"),
            Duration::from_secs(5),
            || steerd.seen() > seen,
        );
        assert!(probe::prog_run(&pin_dir, &syn, 1).iter().all(|&v| v == XDP_DROP));
        std::thread::sleep(Duration::from_millis(150));
        agent.assert_running(&format!("after steerd answered {name}"));
        assert_eq!(probe::status_mode(&pin_dir), "Drain", "gate kept through {name}");
    }
    assert!(steerd.seen() >= before + 3);
    let (_, metrics) = probe::http_get(&ns, &format!("http://127.0.0.1:{metrics_port}/metrics"));
    let failed = metrics
        .lines()
        .find(|l| l.starts_with("steer_probe_reports_failed_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no reports_failed_total in\n{metrics}"));
    assert!(failed >= 3, "failed reports counted: {failed}\n{metrics}");

    // === steerd answers again, now saying open: the deltas add up across the outage ===
    steerd.set_mode(SteerdMode::Reply(reply(GateMode::Open, 0, 0, 100)));
    let injected = 10 + 7 + 3;
    steerd.wait_for(
        &format!("reports whose syn_seen add up to {injected}"),
        Duration::from_secs(8),
        |a| total_seen(a) >= injected,
    );
    probe::wait_until("the gate to open", Duration::from_secs(3), || {
        probe::status_mode(&pin_dir) == "Open"
    });
    std::thread::sleep(Duration::from_millis(300));
    let acc = steerd.accepted();
    assert_eq!(
        total_seen(&acc),
        injected,
        "every new flow reported exactly once: {:?}",
        acc.iter().map(|a| a.report.gate.syn_seen).collect::<Vec<_>>()
    );
    assert_eq!(
        acc.iter().map(|a| a.report.gate.syn_dropped).sum::<u64>(),
        injected,
        "all of them dropped by the drain"
    );

    // === a hanging inference server: health not ok, the agent goes on ===
    infer_hangs.store(true, Ordering::SeqCst);
    let n = steerd.accepted().len();
    steerd.wait_for("a report with health not ok", Duration::from_secs(5), |a| {
        a.len() > n && a.last().is_some_and(|a| !a.report.health.ok)
    });
    let last = steerd.accepted().pop().expect("a report");
    let check = &last.report.health.checks[0];
    assert!(
        !check.ok && check.latency_ms < 1500,
        "the check is bounded by the 300 ms timeout: {check:?}"
    );
    agent.assert_running("while the inference server hangs");

    // === /metrics ===
    let (status, metrics) = probe::http_get(&ns, &format!("http://127.0.0.1:{metrics_port}/metrics"));
    assert_eq!(status, 200);
    let server = steerd.http.url("/v1/reports");
    for want in [
        "steer_probe_info{region=\"eu-1\",host=\"gpu-7\"} 1".to_owned(),
        "steer_probe_maps_readable 1".to_owned(),
        "steer_probe_gate_mode{mode=\"open\"} 1".to_owned(),
        "steer_probe_gate_mode{mode=\"drain\"} 0".to_owned(),
        format!("steer_probe_gate_packets_total{{mode=\"drain\",verdict=\"dropped_drain\"}} {injected}"),
        "steer_probe_rtt_map_entries 0".to_owned(),
        "steer_probe_health_ok 0".to_owned(),
        "steer_probe_inference_load_read_ok 1".to_owned(),
        "steer_probe_inference_queue_depth 5".to_owned(),
        "steer_probe_inference_kv_cache_usage 0.42".to_owned(),
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "missing {want:?} in\n{metrics}"
        );
    }
    let sent_line = format!("steer_probe_reports_sent_total{{server=\"{server}\"}} ");
    let sent: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&sent_line))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {sent_line:?} in\n{metrics}"));
    assert!(sent >= steerd.accepted().len() as u64 - 1, "sent {sent}");
    let age: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "steer_probe_report_last_success_age_seconds{{server=\"{server}\"}} "
            ))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no last success age in\n{metrics}"));
    assert!(age < 2.0, "last success {age} s ago");
    let (status, _) = probe::http_get(&ns, &format!("http://127.0.0.1:{metrics_port}/nope"));
    assert_eq!(status, 404);

    // === SIGTERM during a drain: exit 0, the gate keeps draining ===
    infer_hangs.store(false, Ordering::SeqCst);
    steerd.set_mode(SteerdMode::Reply(reply(GateMode::Drain, 0, 0, 100)));
    probe::wait_until("the gate to drain again", Duration::from_secs(3), || {
        probe::status_mode(&pin_dir) == "Drain"
    });
    let t = Instant::now();
    agent.signal(libc::SIGTERM);
    let st = agent.wait_exit(Duration::from_secs(3));
    assert!(st.success(), "SIGTERM exits 0, got {st}; log:\n{}", agent.logs());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stopped in {:?}",
        t.elapsed()
    );
    assert!(
        agent.logs().contains("pinned gate keeps its state"),
        "{}",
        agent.logs()
    );
    assert_eq!(probe::status_mode(&pin_dir), "Drain");
    assert_eq!(
        probe::prog_run(&pin_dir, &syn, 1),
        [XDP_DROP],
        "still draining with no agent"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn bad_config_exits_64_before_attaching_anything() {
    let dir = std::env::temp_dir().join(format!("steer-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cases = [
        (
            "unknown.toml",
            "region = \"eu\"\nregoin = \"typo\"\n",
            "unknown field",
        ),
        (
            "ports.yaml",
            "region: eu\nservers: [\"http://127.0.0.1:1\"]\nports: [0]\n",
            "non-zero ports",
        ),
        ("noserver.toml", "region = \"eu\"\nports = [8000]\n", "--server"),
        ("bad.ini", "region = eu\n", ".toml, .yaml or .yml"),
    ];
    let pin = dir.join("pins");
    for (name, text, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("config");
        let (st, _, err) = probe::cli(&[
            "run",
            "--config",
            path.to_str().expect("utf-8"),
            "--pin-dir",
            pin.to_str().expect("utf-8"),
        ]);
        assert_eq!(st.code(), Some(64), "{name}: exit {st}, stderr:\n{err}");
        assert!(err.contains(want), "{name}: want {want:?} in:\n{err}");
    }
    assert!(!pin.exists(), "nothing was created or attached before validation");
    let _ = std::fs::remove_dir_all(&dir);
}
