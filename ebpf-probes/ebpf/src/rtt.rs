//! sock_ops "rtt": enables RTT, STATE and RETRANS callbacks on accepted connections to a watched
//! local port and folds every srtt sample into the client prefix's histogram.
//!
//! Sockets established before the program was attached get no callbacks (sock_ops has no hook
//! for existing sockets), so they are neither measured nor counted as active; they age out as
//! clients reconnect. Sockets that had the flags set by an earlier program keep them across an
//! agent restart, so counting continues through the pinned maps.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RETRANS_CB,
        BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_ESTABLISHED,
    },
    macros::{map, sock_ops},
    maps::{Array, LruHashMap},
    programs::SockOpsContext,
};
use steer_probe_common::{
    AF_INET, AF_INET6, PORTS_MAX, PrefixKey, ProbeConfig, RttValue, SRTT_BUCKETS, bounds,
    histogram::bucket_of, prefix::port_slot,
};

#[map(name = "STEER_RTT")]
static STEER_RTT: LruHashMap<PrefixKey, RttValue> = LruHashMap::pinned(bounds::RTT_PREFIXES_MAX, 0);

#[map(name = "STEER_PROBE_CONFIG")]
static STEER_PROBE_CONFIG: Array<ProbeConfig> = Array::pinned(1, 0);

#[map(name = "STEER_ACTIVE")]
static STEER_ACTIVE: Array<u64> = Array::pinned(PORTS_MAX as u32, 0);

#[map(name = "STEER_RTT_ZERO")]
static STEER_RTT_ZERO: Array<RttValue> = Array::with_max_entries(1, 0);

#[sock_ops]
fn rtt(ctx: SockOpsContext) -> u32 {
    match try_rtt(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

/// Adds `v` to a counter in map memory. The result is discarded, which makes LLVM emit a plain
/// BPF atomic add (`lock xadd`; the fetching variants are not accepted everywhere, and the bpfel
/// target exposes no `Atomic*::fetch_add`).
#[inline(always)]
fn add_u64(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value the verifier bounds-checked.
    let _ = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
fn add_u32(p: *mut u32, v: u32) {
    // SAFETY: as in `add_u64`.
    let _ = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, v) };
}

fn try_rtt(ctx: &SockOpsContext) -> Result<u32, u32> {
    let cfg = STEER_PROBE_CONFIG.get(0).ok_or(1u32)?;
    let Some(slot) = port_slot(&cfg.ports, ctx.local_port() as u16) else {
        return Ok(1);
    };
    match ctx.op() {
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            let flags = ctx.cb_flags()
                | BPF_SOCK_OPS_RTT_CB_FLAG
                | BPF_SOCK_OPS_STATE_CB_FLAG
                | BPF_SOCK_OPS_RETRANS_CB_FLAG;
            // A failure leaves the socket unmeasured; nothing else to do about it here.
            let _ = ctx.set_cb_flags(flags as i32);
            active_add(slot, 1);
        }
        BPF_SOCK_OPS_STATE_CB => {
            // args: old state, new state. Leaving ESTABLISHED ends an active connection.
            if ctx.arg(0) == BPF_TCP_ESTABLISHED && ctx.arg(1) != BPF_TCP_ESTABLISHED {
                active_add(slot, u64::MAX);
            }
        }
        BPF_SOCK_OPS_RTT_CB => {
            // SAFETY: the context pointer is valid for the program's run; srtt_us is readable
            // in sock_ops for full sockets. The kernel keeps srtt scaled by 8.
            let srtt_us = unsafe { (*ctx.ops).srtt_us } >> 3;
            let v = entry(ctx, cfg)?;
            record(v, srtt_us);
        }
        BPF_SOCK_OPS_RETRANS_CB => {
            let v = entry(ctx, cfg)?;
            // SAFETY: `v` is a map value pointer.
            add_u32(unsafe { &raw mut (*v).retrans }, 1);
        }
        _ => {}
    }
    Ok(1)
}

#[inline(always)]
fn active_add(slot: usize, v: u64) {
    if let Some(p) = STEER_ACTIVE.get_ptr_mut(slot as u32) {
        add_u64(p, v);
    }
}

/// The RTT entry of the connection's client prefix, created from the zero template if new.
#[inline(always)]
fn entry(ctx: &SockOpsContext, cfg: &ProbeConfig) -> Result<*mut RttValue, u32> {
    let key = match ctx.family() as u8 {
        AF_INET => PrefixKey::v4(ctx.remote_ip4().to_ne_bytes(), cfg.v4_len),
        AF_INET6 => {
            let w = ctx.remote_ip6();
            let (a, b, c, d) = (
                w[0].to_ne_bytes(),
                w[1].to_ne_bytes(),
                w[2].to_ne_bytes(),
                w[3].to_ne_bytes(),
            );
            let addr = [
                a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
                d[3],
            ];
            PrefixKey::v6(addr, cfg.v4_len, cfg.v6_len)
        }
        _ => return Err(1),
    };
    if let Some(p) = STEER_RTT.get_ptr_mut(&key) {
        return Ok(p);
    }
    let zero = STEER_RTT_ZERO.get_ptr(0).ok_or(1u32)?;
    // SAFETY: `zero` points at a map value of the right type; the helper copies it. NOEXIST: a
    // concurrent insert on another CPU wins and we use its entry.
    let _ = STEER_RTT.insert(&key, unsafe { &*zero }, u64::from(BPF_NOEXIST));
    STEER_RTT.get_ptr_mut(&key).ok_or(1)
}

#[inline(always)]
fn record(v: *mut RttValue, srtt_us: u32) {
    // The volatile read hides the range of `b` from LLVM so that it keeps the bounds check the
    // verifier needs (it would otherwise prove `b < SRTT_BUCKETS` itself and drop it).
    let b = bucket_of(srtt_us);
    // SAFETY: reading a local.
    let b = unsafe { core::ptr::read_volatile(&raw const b) };
    if b < SRTT_BUCKETS {
        // SAFETY: `v` is a map value pointer and `b` is in bounds.
        add_u32(unsafe { (&raw mut (*v).buckets).cast::<u32>().add(b) }, 1);
    }
    // SAFETY: as above.
    unsafe {
        add_u64(&raw mut (*v).count, 1);
        add_u64(&raw mut (*v).sum_us, u64::from(srtt_us));
        // A racy plain store: at worst a concurrent smaller sample is lost for the lifetime
        // minimum, which the agent only uses as a refinement of the histogram's lower bound.
        let sample = if srtt_us == 0 { 1 } else { srtt_us };
        let min = (*v).min_us;
        if min == 0 || sample < min {
            (*v).min_us = sample;
        }
    }
}
