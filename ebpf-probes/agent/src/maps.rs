//! Reading and writing the pinned maps, and turning the kernel's monotonic counters into deltas.

use std::collections::HashMap as StdHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use steer_probe_common::gate::{GATE_MODES, VERDICTS};
use steer_probe_common::{
    AF_INET, GateConfig, GateCounter, GateMode, PrefixKey, ProbeConfig, RttValue, Verdict, map_names,
};
use steering_core::prefix::Prefix;

use crate::loader::ProbeError;

/// The pinned maps, opened by path.
pub struct Maps {
    rtt: HashMap<MapData, PrefixKey, RttValue>,
    probe_config: Array<MapData, ProbeConfig>,
    active: Array<MapData, u64>,
    gate_config: Array<MapData, GateConfig>,
    gate_counters: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps").finish_non_exhaustive()
    }
}

fn open_map(pin_dir: &Path, name: &'static str) -> Result<Map, ProbeError> {
    let data = MapData::from_pin(pin_dir.join(name)).map_err(|source| ProbeError::Map { name, source })?;
    Map::from_map_data(data).map_err(|source| ProbeError::Map { name, source })
}

macro_rules! typed {
    ($pin_dir:expr, $name:expr) => {
        open_map($pin_dir, $name)?
            .try_into()
            .map_err(|source| ProbeError::Map { name: $name, source })?
    };
}

impl Maps {
    /// Opens the maps pinned under `pin_dir` (by a running or an earlier agent).
    pub fn open(pin_dir: &Path) -> Result<Maps, ProbeError> {
        Ok(Maps {
            rtt: typed!(pin_dir, map_names::RTT),
            probe_config: typed!(pin_dir, map_names::PROBE_CONFIG),
            active: typed!(pin_dir, map_names::ACTIVE),
            gate_config: typed!(pin_dir, map_names::GATE_CONFIG),
            gate_counters: typed!(pin_dir, map_names::GATE_COUNTERS),
        })
    }

    /// The `sock_ops` program's configuration.
    pub fn probe_config(&self) -> Result<ProbeConfig, ProbeError> {
        let name = map_names::PROBE_CONFIG;
        self.probe_config
            .get(&0, 0)
            .map_err(|source| ProbeError::Map { name, source })
    }

    /// Sets the watched ports and prefix lengths of the `sock_ops` program.
    pub fn set_probe_config(&mut self, cfg: &ProbeConfig) -> Result<(), ProbeError> {
        let name = map_names::PROBE_CONFIG;
        self.probe_config
            .set(0, cfg, 0)
            .map_err(|source| ProbeError::Map { name, source })
    }

    /// The gate's configuration.
    pub fn gate_config(&self) -> Result<GateConfig, ProbeError> {
        let name = map_names::GATE_CONFIG;
        self.gate_config
            .get(&0, 0)
            .map_err(|source| ProbeError::Map { name, source })
    }

    /// Replaces the gate's configuration (takes effect on the next packet).
    pub fn set_gate_config(&mut self, cfg: &GateConfig) -> Result<(), ProbeError> {
        let name = map_names::GATE_CONFIG;
        self.gate_config
            .set(0, cfg, 0)
            .map_err(|source| ProbeError::Map { name, source })
    }

    /// Gate counters summed over CPUs.
    pub fn gate_counts(&self) -> Result<GateCounts, ProbeError> {
        let name = map_names::GATE_COUNTERS;
        let mut out = GateCounts::default();
        for (i, slot) in out.0.iter_mut().enumerate() {
            let values = self
                .gate_counters
                .get(&(i as u32), 0)
                .map_err(|source| ProbeError::Map { name, source })?;
            *slot = values.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(out)
    }

    /// Established connections to the watched ports (as counted since the probe was attached).
    pub fn active_connections(&self) -> Result<u64, ProbeError> {
        let name = map_names::ACTIVE;
        let mut total = 0u64;
        for v in self.active.iter() {
            total = total.wrapping_add(v.map_err(|source| ProbeError::Map { name, source })?);
        }
        // Decrements can race ahead of increments only transiently; never report "negative".
        Ok(if total > u64::from(u32::MAX) { 0 } else { total })
    }

    /// Every RTT entry (monotonic lifetime counters).
    pub fn rtt_snapshot(&self) -> Result<RttSnapshot, ProbeError> {
        let name = map_names::RTT;
        let mut out = StdHashMap::new();
        for entry in &self.rtt {
            match entry {
                Ok((k, v)) => {
                    out.insert(k, v);
                }
                // An entry evicted between listing and reading its value: skip it.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => return Err(ProbeError::Map { name, source }),
            }
        }
        Ok(RttSnapshot(out))
    }
}

/// Gate counters per mode and verdict, indexed like [`GateCounter::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GateCounts(pub [u64; GateCounter::COUNT as usize]);

impl GateCounts {
    /// The counter of `verdict` in `mode`.
    #[must_use]
    pub fn get(&self, mode: GateMode, verdict: Verdict) -> u64 {
        self.0[GateCounter::index(mode, verdict) as usize]
    }

    /// `verdict` summed over modes.
    #[must_use]
    pub fn total(&self, verdict: Verdict) -> u64 {
        (0..GATE_MODES)
            .map(|m| self.0[(m * VERDICTS + verdict as u32) as usize])
            .sum()
    }

    /// New flows seen (admitted or dropped), in every mode.
    #[must_use]
    pub fn syn_seen(&self) -> u64 {
        self.syn_admitted() + self.syn_dropped()
    }

    /// New flows admitted, in every mode.
    #[must_use]
    pub fn syn_admitted(&self) -> u64 {
        self.total(Verdict::Admitted)
    }

    /// New flows dropped, for any reason.
    #[must_use]
    pub fn syn_dropped(&self) -> u64 {
        self.total(Verdict::DroppedDrain)
            + self.total(Verdict::DroppedRate)
            + self.total(Verdict::DroppedPrefix)
    }

    /// What was counted since `older`.
    #[must_use]
    pub fn since(&self, older: &GateCounts) -> GateCounts {
        let mut out = GateCounts::default();
        for (o, (n, p)) in out.0.iter_mut().zip(self.0.iter().zip(&older.0)) {
            *o = n.wrapping_sub(*p);
        }
        out
    }
}

/// A read of the whole RTT map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RttSnapshot(pub StdHashMap<PrefixKey, RttValue>);

/// One prefix's RTT in an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixRtt {
    pub prefix: Prefix,
    pub samples: u64,
    pub srtt_us_p50: u32,
    pub srtt_us_p90: u32,
    pub srtt_us_min: u32,
    pub retrans: u32,
}

impl RttSnapshot {
    /// Per prefix quantiles of what was measured since `older`, most samples first. An entry that
    /// went backwards (evicted from the LRU and created again) counts from zero.
    #[must_use]
    pub fn since(&self, older: &RttSnapshot) -> Vec<PrefixRtt> {
        let mut out: Vec<PrefixRtt> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let base = older
                    .0
                    .get(k)
                    .filter(|o| o.count <= v.count)
                    .copied()
                    .unwrap_or_default();
                let d = v.since(&base);
                let q = d.quantiles()?;
                Some(PrefixRtt {
                    prefix: prefix_of(k),
                    samples: q.samples,
                    srtt_us_p50: q.p50_us,
                    srtt_us_p90: q.p90_us,
                    srtt_us_min: q.min_us,
                    retrans: d.retrans,
                })
            })
            .collect();
        out.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.prefix.cmp(&b.prefix)));
        out
    }
}

/// The steering-core prefix of a BPF key.
#[must_use]
pub fn prefix_of(k: &PrefixKey) -> Prefix {
    let addr = if k.family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(k.addr))
    };
    Prefix::of(addr, k.len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_deltas_per_prefix() {
        let a = PrefixKey::v4([198, 18, 1, 9], 24);
        let b = PrefixKey::v4([198, 18, 2, 9], 24);
        let mut old = RttSnapshot::default();
        let mut v = RttValue::ZERO;
        v.record(1000);
        old.0.insert(a, v);
        let mut new = old.clone();
        for _ in 0..10 {
            new.0.get_mut(&a).unwrap().record(5000);
        }
        let mut vb = RttValue::ZERO;
        vb.record(300);
        new.0.insert(b, vb);
        let d = new.since(&old);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].prefix.to_string(), "198.18.1.0/24");
        assert_eq!(d[0].samples, 10);
        assert!(d[0].srtt_us_p50.abs_diff(5000) < 300);
        assert_eq!(d[1].samples, 1);
        assert!(new.since(&new).is_empty(), "no samples, no entries");
        // An evicted and recreated entry counts from zero instead of wrapping.
        let mut back = new.clone();
        back.0.insert(a, vb);
        assert_eq!(
            back.since(&new)
                .iter()
                .find(|p| p.prefix.to_string() == "198.18.1.0/24")
                .unwrap()
                .samples,
            1
        );
    }

    #[test]
    fn v6_keys_become_prefixes() {
        let k = PrefixKey::v6(
            [0x20, 1, 0xd, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            24,
            56,
        );
        assert_eq!(prefix_of(&k).to_string(), "2001:db8:102:300::/56");
    }
}
