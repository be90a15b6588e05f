//! The real agent drains on steerd's word, is killed with `SIGKILL`, and the pinned gate keeps dropping new
//! connects (real TCP across a veth pair) with no agent running; a new agent takes over the
//! pinned maps (still draining, counters continue), follows steerd back to open, and exits 0 on
//! `SIGTERM`.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::http::{FakeSteerd, SteerdMode, reply};
use common::probe::{self, Agent};
use steering_core::telemetry::wire::GateMode;

const PORT: u16 = 8000;
/// Below the kernel's first SYN retransmit (1 s): one SYN per attempt.
const CONNECT_WAIT: Duration = Duration::from_millis(700);

fn server_addr() -> SocketAddr {
    ([198, 18, 0, 1], PORT).into()
}

fn connects_fail(cli: &common::Netns, n: usize, when: &str) {
    let results = cli.run(move || {
        (0..n)
            .map(|_| TcpStream::connect_timeout(&server_addr(), CONNECT_WAIT).map(drop))
            .collect::<Vec<_>>()
    });
    for r in results {
        let e = r.expect_err(when);
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{when}: {e}");
    }
}

fn agent_args(
    steerd: &FakeSteerd,
    token: &Path,
    cgroup: &Path,
    pin_dir: &Path,
    metrics_port: u16,
) -> Vec<String> {
    [
        "--region",
        "eu-1",
        "--host",
        "gpu-3",
        "--server",
        &steerd.http.url(""),
        "--token-file",
        token.to_str().expect("utf-8"),
        "--cgroup",
        cgroup.to_str().expect("utf-8"),
        "--iface",
        "rs0",
        "--ports",
        "8000",
        "--pin-dir",
        pin_dir.to_str().expect("utf-8"),
        "--interval-ms",
        "100",
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[test]
fn a_killed_agent_leaves_the_drain_and_the_next_one_continues() {
    common::require_root();
    let srv = common::Netns::new("steer-restart-srv");
    let cli = common::Netns::new("steer-restart-cli");
    probe::veth(&srv, "rs0", "198.18.0.1", &cli, "rs1", "198.18.7.2");
    let cgroup = common::TestCgroup::create("steer-restart");
    let pins = common::PinDir::new("steer-restart");
    let (work, token) = probe::work_dir_with_token(&pins.0);
    // The listener's backlog completes handshakes; nobody needs to accept.
    let _listener = srv.run(|| TcpListener::bind(server_addr()).expect("binding 198.18.0.1:8000"));
    let steerd = FakeSteerd::start(&srv, SteerdMode::Reply(reply(GateMode::Drain, 0, 0, 100)));
    let args = agent_args(&steerd, &token, &cgroup.path, &pins.0, probe::free_port(&srv));

    let mut first = Agent::spawn(&srv, &args, work.join("agent-1.log"));
    steerd.wait_for("a report from the first agent", Duration::from_secs(10), |a| {
        !a.is_empty()
    });
    probe::wait_until("the first agent to drain", Duration::from_secs(10), || {
        probe::status_mode(&pins.0) == "Drain"
    });
    connects_fail(&cli, 2, "a connect while the first agent drains");
    first.signal(libc::SIGKILL);
    let st = first.wait_exit(Duration::from_secs(3));
    assert!(!st.success(), "SIGKILL: {st}");
    let reports_by_first = steerd.accepted().len();

    // No agent: the pinned gate keeps dropping new flows.
    let (_, _, dropped_killed) = probe::status_flows(&pins.0);
    connects_fail(&cli, 3, "a connect with no agent running");
    let (_, _, dropped_alone) = probe::status_flows(&pins.0);
    assert!(
        dropped_alone >= dropped_killed + 3,
        "the gate dropped SYNs with no agent: {dropped_killed} -> {dropped_alone}"
    );
    assert_eq!(probe::status_mode(&pins.0), "Drain");

    // A new agent reuses the pinned maps: it reports drain at once and the counters go on.
    let mut second = Agent::spawn(&srv, &args, work.join("agent-2.log"));
    steerd.wait_for("a report from the second agent", Duration::from_secs(10), |a| {
        a.len() > reports_by_first && a.last().is_some_and(|a| a.report.seq >= 1)
    });
    let from_second: Vec<_> = steerd.accepted().split_off(reports_by_first);
    assert_eq!(from_second[0].report.seq, 0, "a new agent starts its seqs again");
    assert_eq!(
        from_second[0].report.gate.mode,
        GateMode::Drain,
        "the mode survived in the pinned map"
    );
    let (_, _, dropped_taken_over) = probe::status_flows(&pins.0);
    assert!(
        dropped_taken_over >= dropped_alone,
        "counters are not reset by a restart"
    );
    connects_fail(&cli, 1, "a connect after the restart");
    let (_, _, dropped_after) = probe::status_flows(&pins.0);
    assert!(
        dropped_after > dropped_taken_over,
        "the new agent's gate counts into the same map"
    );

    // steerd says open: the new agent applies it and new connects succeed.
    steerd.set_mode(SteerdMode::Reply(reply(GateMode::Open, 0, 0, 100)));
    probe::wait_until(
        "the second agent to open the gate",
        Duration::from_secs(3),
        || probe::status_mode(&pins.0) == "Open",
    );
    cli.run(|| TcpStream::connect_timeout(&server_addr(), Duration::from_secs(2)).map(drop))
        .unwrap_or_else(|e| panic!("a connect after open: {e}"));
    second.assert_running("at the end");
    second.signal(libc::SIGTERM);
    let st = second.wait_exit(Duration::from_secs(3));
    assert!(st.success(), "SIGTERM exits 0: {st}\n{}", second.logs());
    let _ = std::fs::remove_dir_all(&work);
}
