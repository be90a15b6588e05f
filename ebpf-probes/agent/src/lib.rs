//! steer-probe: loads the steer BPF programs, reads their maps, and talks to steerd.
//!
//! - [`loader`]: load, attach and pin (or take over pinned) programs, links and maps;
//! - [`maps`]: read the pinned maps (RTT deltas per prefix, gate counters, active connections);
//! - [`gate`]: the gate settings the agent and operators write;
//! - [`load`]: the inference server's health and load (HTTP, Prometheus text);
//! - [`agent`]: the report loop.
//!
//! Architecture invariant: everything reads and writes the maps through their pins under the pin
//! dir, so `status` and `gate` work the same with or without a running agent.

pub mod agent;
pub mod gate;
pub mod load;
pub mod loader;
pub mod maps;

pub use loader::{LoadOptions, Probe, ProbeError};
pub use maps::Maps;

/// Where links, programs and maps are pinned unless `--pin-dir` says otherwise.
pub const PIN_DIR_DEFAULT: &str = "/sys/fs/bpf/steer";
