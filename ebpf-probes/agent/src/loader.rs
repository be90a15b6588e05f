//! Loading, attaching and pinning.
//!
//! Maps are declared `pinned` in the BPF object and loaded with the pin dir as their default pin
//! directory, so a second load reuses the existing maps (counters, limiter state and the gate
//! mode continue). Links are pinned as `link_gate` and `link_rtt`:
//! - XDP: an existing pinned link is updated in place to the new program (`BPF_LINK_UPDATE`), so
//!   the gate has no gap during an upgrade;
//! - `sock_ops`: the new program is attached next to the old one (multi-attach) before the old link
//!   is removed, so no RTT callback is missed (for an instant both count).
//!
//! The gate program itself is also pinned (`prog_gate`) so tools can `BPF_PROG_RUN` it.

use std::fs;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, ProgramError, SockOps, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use steer_probe_common::map_names;
use steer_probe_common::{GateConfig, ProbeConfig};

use crate::maps::Maps;

/// The BPF object built by build.rs.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer-probe-ebpf"));

/// Pin file of the XDP link.
pub const LINK_GATE: &str = "link_gate";
/// Pin file of the `sock_ops` link.
pub const LINK_RTT: &str = "link_rtt";
/// Pin file of the XDP program.
pub const PROG_GATE: &str = "prog_gate";

/// Why loading or attaching failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The object could not be loaded (map creation or reuse of a pinned map failed; a pinned map
    /// with another layout, from an incompatible version, also ends here).
    #[error("loading the BPF object: {0}")]
    Ebpf(#[from] aya::EbpfError),
    /// A program failed to load or attach; the message carries the verifier log.
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    /// The object lacks a program or map the agent expects (a build mismatch).
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    /// A map could not be opened, read or written.
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// Pinning failed (the pin dir must be on a bpffs).
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    /// A pinned link could not be taken over.
    #[error("link {path}: {source}")]
    Link {
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to load and where to attach it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Directory on a bpffs for the pins.
    pub pin_dir: PathBuf,
    /// cgroup v2 directory to attach `sock_ops` "rtt" to; `None` loads without attaching.
    pub cgroup: Option<PathBuf>,
    /// Interface to attach xdp "gate" to; `None` loads without attaching.
    pub iface: Option<String>,
    /// Watched (probe) and gated (XDP) ports.
    pub ports: Vec<u16>,
}

/// The loaded programs. Dropping it leaves the pinned links attached and the pinned maps in place.
#[derive(Debug)]
pub struct Probe {
    ebpf: Ebpf,
    maps: Maps,
    pin_dir: PathBuf,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProbeError {
    let path = path.to_path_buf();
    move |source| ProbeError::Io { op, path, source }
}

impl Probe {
    /// Loads both programs, takes over pinned maps and links under `opts.pin_dir` if present, and
    /// attaches where `opts` says.
    pub fn load(opts: &LoadOptions) -> Result<Probe, ProbeError> {
        let pin_dir = opts.pin_dir.clone();
        fs::create_dir_all(&pin_dir).map_err(io("creating", &pin_dir))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .load(BPF_OBJECT)?;
        let mut maps = Maps::open(&pin_dir)?;

        maps.set_probe_config(&ProbeConfig::new(&opts.ports))?;
        // A fresh gate map is all zero (open, nothing gated). A reused one keeps its mode and
        // rates so that a restart during a drain keeps draining; only the ports follow the flags.
        let mut gate = maps.gate_config()?;
        let fresh = gate == GateConfig::default();
        let ports = GateConfig::open(&opts.ports);
        if fresh {
            gate = ports;
        } else {
            gate.ports = ports.ports;
        }
        maps.set_gate_config(&gate)?;

        let rtt: &mut SockOps = ebpf
            .program_mut("rtt")
            .ok_or(ProbeError::Missing("program rtt"))?
            .try_into()
            .map_err(|source| ProbeError::Program { name: "rtt", source })?;
        rtt.load()
            .map_err(|source| ProbeError::Program { name: "rtt", source })?;
        if let Some(cgroup) = &opts.cgroup {
            attach_rtt(rtt, cgroup, &pin_dir)?;
        }

        let gate_prog: &mut Xdp = ebpf
            .program_mut("gate")
            .ok_or(ProbeError::Missing("program gate"))?
            .try_into()
            .map_err(|source| ProbeError::Program { name: "gate", source })?;
        gate_prog
            .load()
            .map_err(|source| ProbeError::Program { name: "gate", source })?;
        let prog_pin = pin_dir.join(PROG_GATE);
        if prog_pin.exists() {
            fs::remove_file(&prog_pin).map_err(io("removing", &prog_pin))?;
        }
        gate_prog.pin(&prog_pin).map_err(|source| ProbeError::Pin {
            path: prog_pin.clone(),
            source,
        })?;
        if let Some(iface) = &opts.iface {
            attach_gate(gate_prog, iface, &pin_dir)?;
        }
        tracing::info!(pin_dir = %pin_dir.display(), fresh, "probe loaded");
        Ok(Probe { ebpf, maps, pin_dir })
    }

    /// The pinned maps.
    #[must_use]
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// The pinned maps, for writing.
    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// The pin directory.
    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The loaded gate program (for `BPF_PROG_RUN` in tests and tools).
    pub fn gate_program(&mut self) -> Result<&mut Xdp, ProbeError> {
        self.ebpf
            .program_mut("gate")
            .ok_or(ProbeError::Missing("program gate"))?
            .try_into()
            .map_err(|source| ProbeError::Program { name: "gate", source })
    }
}

fn attach_gate(prog: &mut Xdp, iface: &str, pin_dir: &Path) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Program { name: "gate", source };
    let link_pin = pin_dir.join(LINK_GATE);
    let link_id = if link_pin.exists() {
        // Take over the attached link and swap its program atomically. The pin is removed only
        // while we hold the link's fd, and put back right after.
        let pinned = PinnedLink::from_pin(&link_pin).map_err(|source| ProbeError::Link {
            path: link_pin.clone(),
            source,
        })?;
        let fd_link = pinned.unpin().map_err(io("unpinning", &link_pin))?;
        let xdp_link = fd_link.try_into().map_err(|source| ProbeError::Link {
            path: link_pin.clone(),
            source,
        })?;
        prog.attach_to_link(xdp_link).map_err(err)?
    } else {
        match prog.attach(iface, XdpMode::Default) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(iface, error = %e, "native XDP attach failed, using generic (SKB) mode");
                prog.attach(iface, XdpMode::Skb).map_err(err)?
            }
        }
    };
    let link = prog.take_link(link_id).map_err(err)?;
    let fd_link: FdLink = link.try_into().map_err(|source| ProbeError::Link {
        path: link_pin.clone(),
        source,
    })?;
    fd_link.pin(&link_pin).map_err(|source| ProbeError::Pin {
        path: link_pin.clone(),
        source,
    })?;
    Ok(())
}

fn attach_rtt(prog: &mut SockOps, cgroup: &Path, pin_dir: &Path) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Program { name: "rtt", source };
    let cg = fs::File::open(cgroup).map_err(io("opening cgroup", cgroup))?;
    // Cgroup bpf_links are always multi-attach and the kernel rejects explicit flags on
    // BPF_LINK_CREATE, so `Single` (flags 0) is the mode that lets old and new programs overlap.
    let link_id = prog.attach(&cg, CgroupAttachMode::Single).map_err(err)?;
    let link = prog.take_link(link_id).map_err(err)?;
    let link_pin = pin_dir.join(LINK_RTT);
    let fd_link: FdLink = link.try_into().map_err(|source| ProbeError::Link {
        path: link_pin.clone(),
        source,
    })?;
    if link_pin.exists() {
        // The new program is attached; now let the old one go.
        let old = PinnedLink::from_pin(&link_pin).map_err(|source| ProbeError::Link {
            path: link_pin.clone(),
            source,
        })?;
        drop(old.unpin().map_err(io("unpinning", &link_pin))?);
    }
    fd_link.pin(&link_pin).map_err(|source| ProbeError::Pin {
        path: link_pin.clone(),
        source,
    })?;
    Ok(())
}

/// Detaches everything and removes the pin dir (`steer-probe` has no command for it yet; tests
/// and uninstall scripts use it).
pub fn unpin_all(pin_dir: &Path) -> Result<(), ProbeError> {
    if pin_dir.exists() {
        fs::remove_dir_all(pin_dir).map_err(io("removing", pin_dir))?;
    }
    Ok(())
}

/// The names of every map the agent pins (for `status`).
pub const PINNED_MAPS: [&str; 7] = [
    map_names::RTT,
    map_names::PROBE_CONFIG,
    map_names::ACTIVE,
    map_names::GATE_CONFIG,
    map_names::GATE_COUNTERS,
    map_names::GATE_GLOBAL_TAT,
    map_names::GATE_PREFIX_TAT,
];
