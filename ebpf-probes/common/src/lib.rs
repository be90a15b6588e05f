//! Shared between the steer BPF programs and the `steer-probe` agent.
//!
//! Two kinds of items live here:
//! - `#[repr(C)]` map keys and values, laid out identically on both sides (the `user` feature adds
//!   `aya::Pod` impls so the agent can read and write them);
//! - the pure logic the BPF side runs (prefix keying, the srtt histogram, GCRA admission), written
//!   without loops over unbounded data, without division by runtime zero and without floats, so it
//!   compiles for bpfel and is unit-tested on the host.
//!
//! Quantiles from a histogram delta are also here because they invert the BPF-side bucketing.
#![no_std]
#![allow(
    clippy::inline_always,
    reason = "the BPF side needs these inlined: BPF-to-BPF calls limit the verifier and stack"
)]

pub mod gate;
pub mod histogram;
pub mod prefix;

pub use gate::{GateConfig, GateCounter, GateMode, Gcra, Verdict};
pub use histogram::{Quantiles, RttValue, SRTT_BUCKETS};
pub use prefix::{PrefixKey, ProbeConfig};

/// `AF_INET` as the kernel reports it in `bpf_sock_ops.family`.
pub const AF_INET: u8 = 2;
/// `AF_INET6` as the kernel reports it in `bpf_sock_ops.family`.
pub const AF_INET6: u8 = 10;

/// At most this many watched (probe) or gated (XDP) ports; unused slots are 0.
pub const PORTS_MAX: usize = 8;

/// Map names as they appear in the object file and as pin file names under the pin dir.
pub mod map_names {
    /// `LruHashMap<PrefixKey, RttValue>`: srtt histogram per client prefix.
    pub const RTT: &str = "STEER_RTT";
    /// `Array<ProbeConfig>`, one entry: watched ports and prefix lengths of the "rtt" program.
    pub const PROBE_CONFIG: &str = "STEER_PROBE_CONFIG";
    /// `Array<u64>`, `PORTS_MAX` entries: established connections per watched-port slot.
    pub const ACTIVE: &str = "STEER_ACTIVE";
    /// `Array<RttValue>`, one all-zero entry: the template a new RTT entry is inserted from (too
    /// large for the 512-byte BPF stack).
    pub const RTT_ZERO: &str = "STEER_RTT_ZERO";
    /// `Array<GateConfig>`, one entry: mode, rates and gated ports of the "gate" program.
    pub const GATE_CONFIG: &str = "STEER_GATE_CONFIG";
    /// `PerCpuArray<u64>`, `GateCounter::COUNT` entries: verdict counters per mode.
    pub const GATE_COUNTERS: &str = "STEER_GATE_COUNTERS";
    /// `PerCpuArray<u64>`, one entry: the global limiter's theoretical arrival time, per CPU.
    pub const GATE_GLOBAL_TAT: &str = "STEER_GATE_GLOBAL_TAT";
    /// `LruHashMap<PrefixKey, u64>`: the per-client-prefix limiter's theoretical arrival time.
    pub const GATE_PREFIX_TAT: &str = "STEER_GATE_PREFIX_TAT";
}

/// Bounds of the BPF maps (`TigerBeetle` style: every map has a named bound).
pub mod bounds {
    /// Client prefixes tracked by the RTT probe before the LRU evicts the coldest.
    pub const RTT_PREFIXES_MAX: u32 = 8192;
    /// Client prefixes tracked by the surge limiter before the LRU evicts the coldest.
    pub const GATE_PREFIXES_MAX: u32 = 65536;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is `#[repr(C)]`, `Copy`, made only of integers and integer arrays
    // with explicit padding fields, so any bit pattern is valid and there are no implicit holes.
    unsafe impl aya::Pod for super::PrefixKey {}
    unsafe impl aya::Pod for super::RttValue {}
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::GateConfig {}
}
