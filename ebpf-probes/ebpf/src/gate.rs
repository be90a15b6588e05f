//! xdp "gate": passes everything except new TCP flows (SYN without ACK) to a gated port, which it
//! passes, drops or admits by GCRA according to the mode in the config map.
//!
//! Parsing is fail-open: anything the gate cannot fully parse within bounds (truncated frames, IP
//! fragments, IPv4 options, IPv6 extension headers, bad versions) passes untouched and is counted
//! as `Unparsed`.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use steer_probe_common::{
    GateConfig, GateCounter, GateMode, PrefixKey, Verdict, bounds, gate::decide, prefix::port_slot,
};

#[map(name = "STEER_GATE_CONFIG")]
static STEER_GATE_CONFIG: Array<GateConfig> = Array::pinned(1, 0);

#[map(name = "STEER_GATE_COUNTERS")]
static STEER_GATE_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(GateCounter::COUNT, 0);

#[map(name = "STEER_GATE_GLOBAL_TAT")]
static STEER_GATE_GLOBAL_TAT: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

#[map(name = "STEER_GATE_PREFIX_TAT")]
static STEER_GATE_PREFIX_TAT: LruHashMap<PrefixKey, u64> = LruHashMap::pinned(bounds::GATE_PREFIXES_MAX, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

#[xdp]
fn gate(ctx: XdpContext) -> u32 {
    match try_gate(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_gate(ctx: &XdpContext) -> Result<u32, u32> {
    let cfg = STEER_GATE_CONFIG.get(0).ok_or(XDP_PASS)?;
    let mode = cfg.mode();
    let verdict = match parse(ctx, cfg) {
        Parsed::NewFlow(key) => admit(cfg, mode, &key),
        Parsed::Other => Verdict::Pass,
        Parsed::Unparsed => Verdict::Unparsed,
    };
    if let Some(c) = STEER_GATE_COUNTERS.get_ptr_mut(GateCounter::index(mode, verdict)) {
        // SAFETY: a per-CPU map value; XDP runs without preemption on this CPU.
        unsafe { *c += 1 };
    }
    Ok(if verdict.drops() { XDP_DROP } else { XDP_PASS })
}

#[inline(always)]
fn admit(cfg: &GateConfig, mode: GateMode, key: &PrefixKey) -> Verdict {
    if mode != GateMode::Surge {
        return decide(cfg, 0, 0, 0).verdict;
    }
    let Some(global) = STEER_GATE_GLOBAL_TAT.get_ptr_mut(0) else {
        return Verdict::Admitted;
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let prefix_on = cfg.prefix.emission_ns != 0;
    // SAFETY: a map value pointer from a successful lookup.
    let prefix_tat = if prefix_on {
        STEER_GATE_PREFIX_TAT.get_ptr(key).map_or(0, |p| unsafe { *p })
    } else {
        0
    };
    // SAFETY: a per-CPU map value pointer.
    let d = decide(cfg, now, unsafe { *global }, prefix_tat);
    if let Some(t) = d.global_tat_ns {
        // SAFETY: as above.
        unsafe { *global = t };
    }
    if let (true, Some(t)) = (prefix_on, d.prefix_tat_ns) {
        // A race with another CPU can admit one extra flow of this prefix; the global limiter
        // still holds.
        let _ = STEER_GATE_PREFIX_TAT.insert(key, t, 0);
    }
    d.verdict
}

enum Parsed {
    /// TCP SYN without ACK to a gated port, keyed by its source prefix.
    NewFlow(PrefixKey),
    /// Parsed, and not a new flow to a gated port.
    Other,
    /// Could not be parsed within bounds.
    Unparsed,
}

/// One byte at `off`, or `None` past the end of the frame.
#[inline(always)]
fn byte(ctx: &XdpContext, off: usize) -> Option<u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + 1 > end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above.
    Some(unsafe { *((start + off) as *const u8) })
}

/// Whether `len` bytes from `off` lie inside the frame.
#[inline(always)]
fn fits(ctx: &XdpContext, off: usize, len: usize) -> bool {
    ctx.data() + off + len <= ctx.data_end()
}

#[inline(always)]
fn be16(ctx: &XdpContext, off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([byte(ctx, off)?, byte(ctx, off + 1)?]))
}

#[inline(always)]
fn parse(ctx: &XdpContext, cfg: &GateConfig) -> Parsed {
    parse_inner(ctx, cfg).unwrap_or(Parsed::Unparsed)
}

#[inline(always)]
fn parse_inner(ctx: &XdpContext, cfg: &GateConfig) -> Option<Parsed> {
    if !fits(ctx, 0, ETH_HLEN) {
        return None;
    }
    let mut off = ETH_HLEN;
    let mut ethertype = be16(ctx, 12)?;
    // Up to two VLAN tags (802.1Q, QinQ).
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = be16(ctx, off + 2)?;
        off += 4;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = be16(ctx, off + 2)?;
            off += 4;
        }
    }
    let (key, l4) = match ethertype {
        ETH_P_IP => {
            if !fits(ctx, off, 20) {
                return None;
            }
            let ver_ihl = byte(ctx, off)?;
            if ver_ihl != 0x45 {
                // Not IPv4 or options present: pass untouched.
                return None;
            }
            let frag = be16(ctx, off + 6)?;
            if frag & 0x3fff != 0 {
                // More-fragments set or a non-zero offset.
                return None;
            }
            if byte(ctx, off + 9)? != IPPROTO_TCP {
                return Some(Parsed::Other);
            }
            let src = [
                byte(ctx, off + 12)?,
                byte(ctx, off + 13)?,
                byte(ctx, off + 14)?,
                byte(ctx, off + 15)?,
            ];
            (PrefixKey::v4(src, cfg.v4_len), off + 20)
        }
        ETH_P_IPV6 => {
            if !fits(ctx, off, 40) {
                return None;
            }
            if byte(ctx, off)? >> 4 != 6 {
                return None;
            }
            match byte(ctx, off + 6)? {
                IPPROTO_TCP => {}
                // Hop-by-hop, routing, fragment, ESP, AH, destination options, mobility, HIP,
                // shim6, experimental: the TCP header (if any) is further in; pass untouched.
                0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => return None,
                _ => return Some(Parsed::Other),
            }
            let mut src = [0u8; 16];
            let mut i = 0;
            while i < 16 {
                src[i] = byte(ctx, off + 8 + i)?;
                i += 1;
            }
            (PrefixKey::v6(src, cfg.v4_len, cfg.v6_len), off + 40)
        }
        _ => return Some(Parsed::Other),
    };
    if !fits(ctx, l4, 20) {
        return None;
    }
    if byte(ctx, l4 + 12)? >> 4 < 5 {
        // A data offset below the minimum header: garbage.
        return None;
    }
    let flags = byte(ctx, l4 + 13)?;
    if flags & TCP_FLAG_SYN == 0 || flags & TCP_FLAG_ACK != 0 {
        return Some(Parsed::Other);
    }
    let dport = be16(ctx, l4 + 2)?;
    if port_slot(&cfg.ports, dport).is_none() {
        return Some(Parsed::Other);
    }
    Some(Parsed::NewFlow(key))
}
