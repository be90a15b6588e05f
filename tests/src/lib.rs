//! The lab: network namespaces, a topology of regions and client sites, the WAN delay line, a mock inference
//! server and a streaming client, so that steer can be run and proven end to end on one machine.
//!
//! Nothing here sends traffic anywhere but loopback and the 198.18.0.0/15 addresses assigned inside namespaces
//! that the lab creates.
#![forbid(unsafe_code)]

pub mod client;
pub mod delay_line;
pub mod lab;
pub mod mmdb;
pub mod mock_infer;
pub mod netns;
pub mod story;
pub mod topology;

/// Panics with a clear message unless the process runs as root: the lab's tests create network namespaces.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the lab needs root (network namespaces, iptables, NFQUEUE); run `cargo xtask test` as root"
    );
}

/// Best effort: gives the calling thread a `SCHED_FIFO` priority (through util-linux's `chrt -p` on its thread id),
/// so that a thread that measures round trips is not delayed by unrelated work on the same cores. Without chrt
/// the thread keeps its normal priority (logged at debug level).
pub fn make_thread_realtime() {
    let tid = nix::unistd::gettid().to_string();
    let ok = std::process::Command::new("chrt")
        .args(["-f", "-p", "10", &tid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        tracing::debug!(tid, "chrt failed; thread keeps its normal priority");
    }
}
