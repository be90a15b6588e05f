//! The steer BPF programs, built for bpfel by aya-build (see `ebpf-probes/agent/build.rs`).
//!
//! - `sock_ops` "rtt": per client prefix srtt histogram, retransmits and active connections of the
//!   watched local ports;
//! - xdp "gate": drain and surge admission of new TCP flows.
//!
//! On the host this crate is only a stub `main`, so `cargo build --workspace` stays green.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `atomic_xadd`: the only atomic the BPF backend emits reliably (see rtt.rs).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features, reason = "core_intrinsics for atomic_xadd")
)]

#[cfg(target_arch = "bpf")]
mod gate;
#[cfg(target_arch = "bpf")]
mod rtt;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

/// The kernel only needs a license string to decide on GPL-only helpers; none are used.
#[cfg(target_arch = "bpf")]
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 11] = *b"Apache-2.0\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any reachable path here; the programs avoid panicking operations.
    loop {}
}
