//! The XDP gate's configuration, verdicts and GCRA admission (integer math, the clock passed in).
//!
//! GCRA (the generic cell rate algorithm) keeps one number per limiter, the theoretical arrival
//! time (TAT). With emission interval `T = 1 s / rate` and tolerance `tau = T * (burst - 1)`, a new
//! flow at `now` is admitted iff `max(TAT, now) - now <= tau`, and then `TAT = max(TAT, now) + T`.
//! An idle limiter therefore admits `burst` flows at once and then one per `T`.

use crate::PORTS_MAX;
use crate::prefix::{V4_PREFIX_LEN_DEFAULT, V6_PREFIX_LEN_DEFAULT, ports_array};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// What the gate does with new flows (TCP SYN without ACK to a gated port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GateMode {
    /// Every packet passes.
    Open = 0,
    /// New flows are dropped; established flows pass.
    Drain = 1,
    /// New flows are admitted by GCRA.
    Surge = 2,
}

/// Number of gate modes.
pub const GATE_MODES: u32 = 3;

impl GateMode {
    /// The mode stored in the config map; an unknown value fails open.
    #[inline(always)]
    #[must_use]
    pub fn from_u32(v: u32) -> GateMode {
        match v {
            1 => GateMode::Drain,
            2 => GateMode::Surge,
            _ => GateMode::Open,
        }
    }
}

/// What the gate did with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Verdict {
    /// Parsed, not a new flow to a gated port: passes.
    Pass = 0,
    /// Not parsed (not IP/TCP, fragment, IP options, IPv6 extension header, truncated): passes.
    Unparsed = 1,
    /// A new flow that passes (open mode, or admitted in surge mode).
    Admitted = 2,
    /// A new flow dropped because the gate drains.
    DroppedDrain = 3,
    /// A new flow dropped by the global limiter in surge mode.
    DroppedRate = 4,
    /// A new flow dropped by its client prefix's limiter in surge mode.
    DroppedPrefix = 5,
}

/// Number of verdicts.
pub const VERDICTS: u32 = 6;

impl Verdict {
    /// All verdicts, in index order.
    pub const ALL: [Verdict; VERDICTS as usize] = [
        Verdict::Pass,
        Verdict::Unparsed,
        Verdict::Admitted,
        Verdict::DroppedDrain,
        Verdict::DroppedRate,
        Verdict::DroppedPrefix,
    ];

    /// Whether the packet is dropped.
    #[inline(always)]
    #[must_use]
    pub fn drops(self) -> bool {
        matches!(
            self,
            Verdict::DroppedDrain | Verdict::DroppedRate | Verdict::DroppedPrefix
        )
    }

    /// Whether the packet was a new flow to a gated port.
    #[must_use]
    pub fn is_new_flow(self) -> bool {
        !matches!(self, Verdict::Pass | Verdict::Unparsed)
    }
}

/// Index of the per-CPU counter for `verdict` in `mode`.
#[derive(Debug)]
pub struct GateCounter;

impl GateCounter {
    /// Number of counters (modes x verdicts).
    pub const COUNT: u32 = GATE_MODES * VERDICTS;

    /// The counter index of `verdict` taken in `mode`.
    #[inline(always)]
    #[must_use]
    pub fn index(mode: GateMode, verdict: Verdict) -> u32 {
        mode as u32 * VERDICTS + verdict as u32
    }
}

/// One GCRA limiter's parameters. `emission_ns == 0` means unlimited,
/// `emission_ns == u64::MAX` means closed (rate 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Gcra {
    /// Time between admissions at the sustained rate.
    pub emission_ns: u64,
    /// How far ahead of `now` the TAT may run: `emission_ns * (burst - 1)`.
    pub tolerance_ns: u64,
}

impl Gcra {
    /// No limit.
    pub const UNLIMITED: Gcra = Gcra {
        emission_ns: 0,
        tolerance_ns: 0,
    };
    /// Admits nothing.
    pub const CLOSED: Gcra = Gcra {
        emission_ns: u64::MAX,
        tolerance_ns: 0,
    };

    /// `rate_per_s` and `burst` split evenly over `shards` independent limiters (one per CPU for
    /// the global limiter, so that no state is shared between CPUs): each shard gets
    /// `rate / shards` and `ceil(burst / shards)` (at least 1).
    #[must_use]
    pub fn new(rate_per_s: u32, burst: u32, shards: u32) -> Gcra {
        if rate_per_s == 0 {
            return Gcra::CLOSED;
        }
        let shards = u64::from(shards.max(1));
        let emission_ns = (NANOS_PER_SEC * shards / u64::from(rate_per_s)).max(1);
        let burst = u64::from(burst).div_ceil(shards).max(1);
        Gcra {
            emission_ns,
            tolerance_ns: emission_ns.saturating_mul(burst - 1),
        }
    }

    /// Whether a new flow at `now_ns` is admitted given the limiter's TAT; `Some(new_tat)` if so.
    #[inline(always)]
    #[must_use]
    pub fn check(&self, tat_ns: u64, now_ns: u64) -> Option<u64> {
        if self.emission_ns == 0 {
            return Some(tat_ns);
        }
        if self.emission_ns == u64::MAX {
            return None;
        }
        let t = if tat_ns > now_ns { tat_ns } else { now_ns };
        if t - now_ns > self.tolerance_ns {
            return None;
        }
        Some(t.saturating_add(self.emission_ns))
    }
}

/// Configuration of the XDP "gate" program (one entry of an Array map, written by the agent).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GateConfig {
    /// A [`GateMode`] as u32.
    pub mode: u32,
    /// Prefix length of IPv4 client keys for the per-prefix limiter.
    pub v4_len: u8,
    /// Prefix length of IPv6 client keys for the per-prefix limiter.
    pub v6_len: u8,
    /// 1 while an operator's `steer-probe gate --hold` is in place: the agent then does not apply
    /// steerd's gate state. The BPF side ignores it. It lives here rather than in a file because
    /// a bpffs holds only pins, and here it survives agent restarts with the mode it protects.
    pub held: u8,
    /// Explicit padding, zero.
    pub pad: [u8; 1],
    /// Destination ports whose new flows are gated; 0 = unused slot. All zero = nothing gated.
    pub ports: [u16; PORTS_MAX],
    /// The surge rate the agent configured (for status output; the limiters use `global`).
    pub rate_per_s: u32,
    /// The surge burst the agent configured (for status output).
    pub burst: u32,
    /// Per-CPU share of the global limiter.
    pub global: Gcra,
    /// The per-client-prefix limiter ([`Gcra::UNLIMITED`] = off).
    pub prefix: Gcra,
}

impl GateConfig {
    /// An open gate on `ports`.
    #[must_use]
    pub fn open(ports: &[u16]) -> GateConfig {
        GateConfig {
            mode: GateMode::Open as u32,
            v4_len: V4_PREFIX_LEN_DEFAULT,
            v6_len: V6_PREFIX_LEN_DEFAULT,
            held: 0,
            pad: [0; 1],
            ports: ports_array(ports),
            rate_per_s: 0,
            burst: 0,
            global: Gcra::UNLIMITED,
            prefix: Gcra::UNLIMITED,
        }
    }

    /// The configured mode.
    #[inline(always)]
    #[must_use]
    pub fn mode(&self) -> GateMode {
        GateMode::from_u32(self.mode)
    }
}

/// The outcome of [`decide`]: the verdict and the TATs to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What happens to the packet.
    pub verdict: Verdict,
    /// New TAT of the global (per-CPU) limiter, if it changed.
    pub global_tat_ns: Option<u64>,
    /// New TAT of the client prefix's limiter, if it changed.
    pub prefix_tat_ns: Option<u64>,
}

/// The verdict for a new flow (SYN without ACK to a gated port) at `now_ns`. Both limiters are
/// checked before either is charged, so a flow the prefix limiter refuses costs no global token.
#[inline(always)]
#[must_use]
pub fn decide(cfg: &GateConfig, now_ns: u64, global_tat_ns: u64, prefix_tat_ns: u64) -> Decision {
    let none = |verdict| Decision {
        verdict,
        global_tat_ns: None,
        prefix_tat_ns: None,
    };
    match cfg.mode() {
        GateMode::Open => none(Verdict::Admitted),
        GateMode::Drain => none(Verdict::DroppedDrain),
        GateMode::Surge => {
            let Some(prefix) = cfg.prefix.check(prefix_tat_ns, now_ns) else {
                return none(Verdict::DroppedPrefix);
            };
            let Some(global) = cfg.global.check(global_tat_ns, now_ns) else {
                return none(Verdict::DroppedRate);
            };
            Decision {
                verdict: Verdict::Admitted,
                global_tat_ns: Some(global),
                prefix_tat_ns: Some(prefix),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted_over(g: Gcra, start: u64, step_ns: u64, n: u64) -> u64 {
        let mut tat = 0;
        let mut admitted = 0;
        for i in 0..n {
            if let Some(t) = g.check(tat, start + i * step_ns) {
                tat = t;
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn gcra_admits_the_burst_at_once() {
        let g = Gcra::new(10, 5, 1);
        assert_eq!(g.emission_ns, 100_000_000);
        assert_eq!(admitted_over(g, 1_000_000_000, 0, 100), 5);
    }

    #[test]
    fn gcra_admits_the_rate_after_the_burst() {
        let g = Gcra::new(10, 5, 1);
        // 10 s of offered load at 1000/s: burst 5 + 10/s * 10 s (the last instant rounds down).
        let n = admitted_over(g, 1_000_000_000, 1_000_000, 10_000);
        assert!((104..=106).contains(&n), "{n}");
    }

    #[test]
    fn gcra_below_the_rate_admits_everything() {
        let g = Gcra::new(100, 1, 1);
        assert_eq!(admitted_over(g, 0, 20_000_000, 500), 500);
    }

    #[test]
    fn gcra_shards_split_rate_and_burst() {
        let g = Gcra::new(100, 10, 2);
        assert_eq!(g.emission_ns, 20_000_000);
        assert_eq!(admitted_over(g, 5, 0, 50), 5);
        assert_eq!(
            Gcra::new(100, 1, 4).tolerance_ns,
            0,
            "each shard admits at least one"
        );
    }

    #[test]
    fn gcra_special_values() {
        assert_eq!(Gcra::UNLIMITED.check(7, 0), Some(7));
        assert_eq!(Gcra::CLOSED.check(0, 1_000), None);
        assert_eq!(Gcra::new(0, 100, 1), Gcra::CLOSED);
        let huge = Gcra::new(1, u32::MAX, 1);
        assert!(huge.check(0, 0).is_some(), "no overflow");
    }

    #[test]
    fn decide_by_mode() {
        let mut cfg = GateConfig::open(&[8000]);
        assert_eq!(decide(&cfg, 1, 0, 0).verdict, Verdict::Admitted);
        cfg.mode = GateMode::Drain as u32;
        assert_eq!(decide(&cfg, 1, 0, 0).verdict, Verdict::DroppedDrain);
        cfg.mode = 77;
        assert_eq!(cfg.mode(), GateMode::Open, "unknown modes fail open");
        cfg.mode = GateMode::Surge as u32;
        cfg.global = Gcra::new(1, 1, 1);
        cfg.prefix = Gcra::new(1, 1, 1);
        let d = decide(&cfg, 10, 0, 0);
        assert_eq!(d.verdict, Verdict::Admitted);
        let (g, p) = (d.global_tat_ns.unwrap(), d.prefix_tat_ns.unwrap());
        assert_eq!(decide(&cfg, 10, g, 0).verdict, Verdict::DroppedRate);
        let d = decide(&cfg, 10, 0, p);
        assert_eq!(d.verdict, Verdict::DroppedPrefix);
        assert_eq!(d.global_tat_ns, None, "a refused prefix costs no global token");
    }

    #[test]
    fn counter_indices_are_dense() {
        let mut seen = [false; GateCounter::COUNT as usize];
        for mode in [GateMode::Open, GateMode::Drain, GateMode::Surge] {
            for v in Verdict::ALL {
                let i = GateCounter::index(mode, v) as usize;
                assert!(!seen[i]);
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
