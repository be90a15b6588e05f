//! Gate settings: what steerd or an operator asks for, and how it becomes the BPF config.

use steer_probe_common::{GateConfig, GateMode as BpfMode, Gcra};
use steering_core::telemetry::wire::{GateCommand, GateMode};

use crate::loader::ProbeError;
use crate::maps::Maps;

/// One client prefix may take at most `1 / PREFIX_SHARE_DIVISOR` of the surge rate and burst, so a
/// single large NAT or resolver population cannot use up the whole recovery budget.
pub const PREFIX_SHARE_DIVISOR: u32 = 4;

/// The wire mode as the BPF side stores it.
#[must_use]
pub fn bpf_mode(mode: GateMode) -> BpfMode {
    match mode {
        GateMode::Open => BpfMode::Open,
        GateMode::Drain => BpfMode::Drain,
        GateMode::Surge => BpfMode::Surge,
    }
}

/// The BPF mode as the wire names it.
#[must_use]
pub fn wire_mode(mode: BpfMode) -> GateMode {
    match mode {
        BpfMode::Open => GateMode::Open,
        BpfMode::Drain => GateMode::Drain,
        BpfMode::Surge => GateMode::Surge,
    }
}

/// `cmd` applied to `current` (ports, prefix lengths and an operator hold are kept). The global limiter is split
/// over `cpus` per-CPU shards; it under-admits when new flows are unevenly spread over CPUs,
/// never over-admits.
#[must_use]
pub fn config_for(current: &GateConfig, cmd: &GateCommand, cpus: u32) -> GateConfig {
    let mut cfg = *current;
    cfg.mode = bpf_mode(cmd.mode) as u32;
    if cmd.mode == GateMode::Surge {
        cfg.rate_per_s = cmd.rate_per_s;
        cfg.burst = cmd.burst;
        cfg.global = Gcra::new(cmd.rate_per_s, cmd.burst, cpus);
        cfg.prefix = Gcra::new(
            (cmd.rate_per_s / PREFIX_SHARE_DIVISOR).max(1),
            (cmd.burst / PREFIX_SHARE_DIVISOR).max(1),
            1,
        );
    } else {
        cfg.rate_per_s = 0;
        cfg.burst = 0;
        cfg.global = Gcra::UNLIMITED;
        cfg.prefix = Gcra::UNLIMITED;
    }
    cfg
}

/// The command that `cfg` implements.
#[must_use]
pub fn command_of(cfg: &GateConfig) -> GateCommand {
    GateCommand {
        mode: wire_mode(cfg.mode()),
        rate_per_s: cfg.rate_per_s,
        burst: cfg.burst,
    }
}

/// Online CPUs, the number of global limiter shards.
#[must_use]
pub fn online_cpus() -> u32 {
    aya::util::online_cpus().map_or(1, |c| c.len().max(1) as u32)
}

/// Writes `cmd` to the gate map.
pub fn apply(maps: &mut Maps, cmd: &GateCommand, cpus: u32) -> Result<GateConfig, ProbeError> {
    let cfg = config_for(&maps.gate_config()?, cmd, cpus);
    maps.set_gate_config(&cfg)?;
    Ok(cfg)
}

/// `cmd` set by an operator: applied, and held against steerd's replies if `hold` (a plain
/// `gate` command clears an earlier hold). One write of the gate map.
pub fn apply_by_hand(
    maps: &mut Maps,
    cmd: &GateCommand,
    hold: bool,
    cpus: u32,
) -> Result<GateConfig, ProbeError> {
    let mut cfg = config_for(&maps.gate_config()?, cmd, cpus);
    cfg.held = u8::from(hold);
    maps.set_gate_config(&cfg)?;
    Ok(cfg)
}

/// Whether an operator hold is in place.
#[must_use]
pub fn held(cfg: &GateConfig) -> bool {
    cfg.held != 0
}

/// The surge rate the agent actually applies while ramping up to steerd's target: it starts at
/// a tenth of the target (at least 1/s) and rises linearly to the target over `ramp_ms`.
#[must_use]
pub fn ramped_rate(target_per_s: u32, elapsed_ms: u64, ramp_ms: u64) -> u32 {
    if ramp_ms == 0 || elapsed_ms >= ramp_ms {
        return target_per_s;
    }
    let floor = (target_per_s / 10).max(1).min(target_per_s);
    let rising = (u64::from(target_per_s) * elapsed_ms / ramp_ms) as u32;
    rising.max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_sets_both_limiters_and_other_modes_clear_them() {
        let base = GateConfig::open(&[8000]);
        let surge = GateCommand {
            mode: GateMode::Surge,
            rate_per_s: 100,
            burst: 20,
        };
        let cfg = config_for(&base, &surge, 2);
        assert_eq!(cfg.mode(), BpfMode::Surge);
        assert_eq!(cfg.global, Gcra::new(100, 20, 2));
        assert_eq!(cfg.prefix, Gcra::new(25, 5, 1));
        assert_eq!(cfg.ports, base.ports);
        assert_eq!(command_of(&cfg), surge);
        let drain = GateCommand {
            mode: GateMode::Drain,
            rate_per_s: 5,
            burst: 5,
        };
        let cfg = config_for(&cfg, &drain, 2);
        assert_eq!(
            (cfg.mode(), cfg.global, cfg.rate_per_s),
            (BpfMode::Drain, Gcra::UNLIMITED, 0)
        );
    }

    #[test]
    fn ramp_rises_from_a_tenth_to_the_target() {
        assert_eq!(ramped_rate(1000, 0, 10_000), 100);
        assert_eq!(ramped_rate(1000, 5_000, 10_000), 500);
        assert_eq!(ramped_rate(1000, 10_000, 10_000), 1000);
        assert_eq!(ramped_rate(1000, 99_000, 10_000), 1000);
        assert_eq!(ramped_rate(5, 0, 10_000), 1);
        assert_eq!(ramped_rate(0, 0, 10_000), 0);
        assert_eq!(ramped_rate(7, 0, 0), 7);
    }
}
