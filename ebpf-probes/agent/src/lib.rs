//! steer-probe: loads the steer BPF programs, reads their maps, and talks to steerd.
//!
//! - [`loader`]: load, attach and pin (or take over pinned) programs, links and maps;
//! - [`maps`]: read the pinned maps (RTT deltas per prefix, gate counters, active connections);
//! - [`gate`]: the gate settings the agent and operators write;
//! - [`load`]: the inference server's health and load (HTTP, Prometheus text);
//! - [`agent`]: the report loop;
//! - [`metrics`]: the agent's own `/metrics`;
//! - [`bpffs`]: making sure the pin dir is on a bpffs.
//!
//! Architecture invariant: everything reads and writes the maps through their pins under the pin
//! dir, so `status` and `gate` work the same with or without a running agent. The operator's
//! `gate --hold` is a field of the pinned gate config too (a bpffs holds no plain files).
//! Stopping the agent (SIGTERM, or a crash) never detaches anything: the gate keeps enforcing
//! its last state until the next agent takes over the pins.

pub mod agent;
pub mod bpffs;
pub mod gate;
pub mod load;
pub mod loader;
pub mod maps;
pub mod metrics;

pub use loader::{LoadOptions, Probe, ProbeError};
pub use maps::Maps;

/// Where links, programs and maps are pinned unless `--pin-dir` says otherwise.
pub const PIN_DIR_DEFAULT: &str = "/sys/fs/bpf/steer";
