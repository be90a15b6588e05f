//! Pinned state outlives the agent: after the loader is gone the pinned gate still drops SYNs in
//! drain mode, and a second loader takes over the pinned maps (mode and counters continue) and
//! swaps the program in the existing XDP link.

mod common;

use std::path::Path;

use aya::programs::links::PinnedLink;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::test_helpers::NetNsGuard;
use steer_probe::loader::{LINK_GATE, PROG_GATE};
use steer_probe::maps::Maps;
use steer_probe::{LoadOptions, Probe, gate};
use steer_probe_common::{GateMode as BpfMode, Verdict};
use steering_core::telemetry::wire::{GateCommand, GateMode};

const XDP_DROP: u32 = 1;
const PORT: u16 = 8000;

fn syn() -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 3, 3, 198, 18, 0, 1,
    ];
    let mut tcp = vec![0u8; 20];
    tcp[2..4].copy_from_slice(&PORT.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02;
    f.append(&mut ip);
    f.append(&mut tcp);
    f
}

fn run(prog: &Xdp, frame: &[u8]) -> u32 {
    let opts = TestRunOptions {
        data_in: Some(frame),
        ..TestRunOptions::new()
    };
    prog.test_run(opts)
        .unwrap_or_else(|e| panic!("BPF_PROG_RUN: {e:?}"))
        .return_value
}

fn drained(pin_dir: &Path) -> u64 {
    Maps::open(pin_dir)
        .expect("opening pinned maps")
        .gate_counts()
        .expect("counters")
        .get(BpfMode::Drain, Verdict::DroppedDrain)
}

#[test]
fn pinned_gate_keeps_draining_and_a_new_loader_continues() {
    common::require_root();
    let _ns = NetNsGuard::new().unwrap_or_else(|e| panic!("creating a netns: {e}"));
    // A veth pair in this test's namespace carries the gate's link.
    common::ip(&["link", "add", "steer0", "type", "veth", "peer", "name", "steer1"]);
    common::ip(&["link", "set", "steer0", "up"]);
    common::ip(&["link", "set", "steer1", "up"]);
    let pins = common::PinDir::new("steer-pinning");
    let opts = LoadOptions {
        pin_dir: pins.0.clone(),
        cgroup: None,
        iface: Some("steer0".into()),
        ports: vec![PORT],
    };

    let mut first = Probe::load(&opts).unwrap_or_else(|e| panic!("first load: {e}"));
    let drain = GateCommand {
        mode: GateMode::Drain,
        rate_per_s: 0,
        burst: 0,
    };
    gate::apply(first.maps_mut(), &drain, 1).expect("setting drain");
    for _ in 0..3 {
        assert_eq!(run(first.gate_program().expect("gate"), &syn()), XDP_DROP);
    }
    drop(first);

    // The loader is gone: the link and program stay pinned, and the program still drains.
    let link = pins.0.join(LINK_GATE);
    let pinned = PinnedLink::from_pin(&link).unwrap_or_else(|e| panic!("link pin {}: {e}", link.display()));
    drop(pinned);
    let prog = Xdp::from_pin(
        pins.0.join(PROG_GATE),
        aya_obj::programs::XdpAttachType::Interface,
    )
    .unwrap_or_else(|e| panic!("pinned program: {e}"));
    assert_eq!(
        run(&prog, &syn()),
        XDP_DROP,
        "the pinned gate drops SYNs without an agent"
    );
    assert_eq!(drained(&pins.0), 4);
    drop(prog);

    // A second loader reuses the pinned maps: still draining, counters continue from 4.
    let mut second = Probe::load(&opts).unwrap_or_else(|e| panic!("second load: {e}"));
    assert_eq!(
        second.maps().gate_config().expect("gate config").mode(),
        BpfMode::Drain,
        "mode survives a restart"
    );
    assert_eq!(drained(&pins.0), 4, "counters are not reset");
    assert_eq!(run(second.gate_program().expect("gate"), &syn()), XDP_DROP);
    assert_eq!(drained(&pins.0), 5, "the new program counts into the same map");
    PinnedLink::from_pin(&link).unwrap_or_else(|e| panic!("link pin after takeover: {e}"));
    gate::apply(
        second.maps_mut(),
        &GateCommand {
            mode: GateMode::Open,
            rate_per_s: 0,
            burst: 0,
        },
        1,
    )
    .expect("opening");
    assert_eq!(
        run(second.gate_program().expect("gate"), &syn()),
        2,
        "open passes"
    );
}
