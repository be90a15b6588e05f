//! The XDP gate's verdict for every kind of frame in every mode, and GCRA admission of the
//! configured burst then rate, through `BPF_PROG_RUN` on the real program (in a fresh netns).

mod common;

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions};
use aya::test_helpers::NetNsGuard;
use steer_probe::gate;
use steer_probe::{LoadOptions, Probe};
use steer_probe_common::{GateMode as BpfMode, Verdict};
use steering_core::telemetry::wire::{GateCommand, GateMode};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const PORT: u16 = 8000;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;
const FIN: u8 = 0x01;

// === frames ===

fn eth(ethertype: u16, vlans: &[u16]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for &tpid in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x2a]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn tcp(dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t
}

#[derive(Clone, Copy)]
struct V4 {
    src: [u8; 4],
    proto: u8,
    options: bool,
    frag: u16,
}

const V4_TCP: V4 = V4 {
    src: [198, 18, 5, 9],
    proto: 6,
    options: false,
    frag: 0x4000,
};

fn ipv4(h: V4, payload: &[u8]) -> Vec<u8> {
    let ihl = if h.options { 6 } else { 5 };
    let mut ip = vec![0u8; ihl * 4];
    ip[0] = 0x40 | ihl as u8;
    let total = (ip.len() + payload.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6..8].copy_from_slice(&h.frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = h.proto;
    ip[12..16].copy_from_slice(&h.src);
    ip[16..20].copy_from_slice(&[198, 18, 0, 1]);
    if h.options {
        ip[20..24].copy_from_slice(&[1, 1, 1, 0]); // NOPs and end of options
    }
    ip.extend_from_slice(payload);
    ip
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    ip[6] = next;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 9]);
    ip[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip.extend_from_slice(payload);
    ip
}

fn v4_frame(h: V4, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = eth(0x0800, &[]);
    f.extend(ipv4(h, &tcp(dport, flags)));
    f
}

fn syn_from(src: [u8; 4]) -> Vec<u8> {
    v4_frame(V4 { src, ..V4_TCP }, PORT, SYN)
}

/// Every kind of frame, with whether it is a new flow to a gated port (`Some(true)`), parsed and
/// not one (`Some(false)`), or not parseable (`None`).
#[expect(clippy::too_many_lines, reason = "one table of every frame kind")]
fn cases() -> Vec<(&'static str, Vec<u8>, Option<bool>)> {
    let v6_syn = {
        let mut f = eth(0x86dd, &[]);
        f.extend(ipv6(6, &tcp(PORT, SYN)));
        f
    };
    let v6_ext = {
        let mut hop = vec![6u8, 0, 1, 4, 0, 0, 0, 0];
        hop.extend(tcp(PORT, SYN));
        let mut f = eth(0x86dd, &[]);
        f.extend(ipv6(0, &hop));
        f
    };
    let v6_frag = {
        let mut f = eth(0x86dd, &[]);
        f.extend(ipv6(44, &[6, 0, 0, 1, 0, 0, 0, 7]));
        f
    };
    let vlan_syn = {
        let mut f = eth(0x0800, &[0x8100]);
        f.extend(ipv4(V4_TCP, &tcp(PORT, SYN)));
        f
    };
    let qinq_syn = {
        let mut f = eth(0x86dd, &[0x88a8, 0x8100]);
        f.extend(ipv6(6, &tcp(PORT, SYN)));
        f
    };
    let udp = {
        let mut f = eth(0x0800, &[]);
        f.extend(ipv4(V4 { proto: 17, ..V4_TCP }, &[0u8; 8]));
        f
    };
    let arp = {
        let mut f = eth(0x0806, &[]);
        f.extend([0u8; 28]);
        f
    };
    let mut truncated_tcp = v4_frame(V4_TCP, PORT, SYN);
    truncated_tcp.truncate(14 + 20 + 12);
    let mut truncated_ip = v4_frame(V4_TCP, PORT, SYN);
    truncated_ip.truncate(14 + 10);
    let mut truncated_vlan = eth(0x0800, &[0x8100]);
    truncated_vlan.truncate(15);
    let mut bad_doff = v4_frame(V4_TCP, PORT, SYN);
    bad_doff[14 + 20 + 12] = 0x20;
    let mut bad_version = v4_frame(V4_TCP, PORT, SYN);
    bad_version[14] = 0x75;
    let noise: Vec<u8> = (0u32..64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // Noise behind an IPv4 ethertype (first nibble 0xf: no IP version) cannot be parsed.
    let mut garbage_ip = noise.clone();
    garbage_ip[12..15].copy_from_slice(&[0x08, 0x00, 0xff]);
    // Noise behind an unknown ethertype is not IP at all: it passes as parsed.
    let mut garbage_l2 = noise;
    garbage_l2[12..14].copy_from_slice(&[0x12, 0x34]);
    vec![
        ("syn", v4_frame(V4_TCP, PORT, SYN), Some(true)),
        ("syn+fin", v4_frame(V4_TCP, PORT, SYN | FIN), Some(true)),
        ("syn to an ungated port", v4_frame(V4_TCP, 9999, SYN), Some(false)),
        ("syn-ack", v4_frame(V4_TCP, PORT, SYN | ACK), Some(false)),
        ("ack", v4_frame(V4_TCP, PORT, ACK), Some(false)),
        ("rst", v4_frame(V4_TCP, PORT, RST), Some(false)),
        ("rst-ack", v4_frame(V4_TCP, PORT, RST | ACK), Some(false)),
        ("fin-ack", v4_frame(V4_TCP, PORT, FIN | ACK), Some(false)),
        ("ipv6 syn", v6_syn, Some(true)),
        ("vlan syn", vlan_syn, Some(true)),
        ("qinq ipv6 syn", qinq_syn, Some(true)),
        ("udp", udp, Some(false)),
        ("arp", arp, Some(false)),
        (
            "ipv4 options syn",
            v4_frame(
                V4 {
                    options: true,
                    ..V4_TCP
                },
                PORT,
                SYN,
            ),
            None,
        ),
        (
            "first fragment syn",
            v4_frame(
                V4 {
                    frag: 0x2000,
                    ..V4_TCP
                },
                PORT,
                SYN,
            ),
            None,
        ),
        (
            "later fragment",
            v4_frame(
                V4 {
                    frag: 0x0010,
                    ..V4_TCP
                },
                PORT,
                SYN,
            ),
            None,
        ),
        ("ipv6 hop-by-hop syn", v6_ext, None),
        ("ipv6 fragment", v6_frag, None),
        ("truncated tcp", truncated_tcp, None),
        ("truncated ip", truncated_ip, None),
        ("truncated vlan", truncated_vlan, None),
        // BPF_PROG_RUN refuses frames shorter than an Ethernet header; this is the shortest.
        ("ethernet header only", eth(0x0800, &[]), None),
        ("tcp data offset < 5", bad_doff, None),
        ("ip version 7", bad_version, None),
        ("garbage after an ipv4 ethertype", garbage_ip, None),
        ("garbage after an unknown ethertype", garbage_l2, Some(false)),
    ]
}

// === harness ===

struct Gate {
    probe: Probe,
}

impl Gate {
    fn run(&mut self, frame: &[u8]) -> u32 {
        let prog = self.probe.gate_program().expect("gate program");
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        prog.test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_RUN of {frame:02x?}: {e:?}"))
            .return_value
    }

    fn set(&mut self, mode: GateMode, rate_per_s: u32, burst: u32) {
        // One shard: the test thread is pinned to one CPU, so the per-CPU limiter is the limiter.
        gate::apply(
            self.probe.maps_mut(),
            &GateCommand {
                mode,
                rate_per_s,
                burst,
            },
            1,
        )
        .expect("writing the gate");
    }

    fn count(&self, mode: BpfMode, v: Verdict) -> u64 {
        self.probe
            .maps()
            .gate_counts()
            .expect("reading counters")
            .get(mode, v)
    }
}

fn with_gate(name: &str, f: impl FnOnce(&mut Gate)) {
    common::require_root();
    common::pin_to_cpu(0);
    let _ns = NetNsGuard::new().unwrap_or_else(|e| panic!("creating a netns: {e}"));
    let pins = common::PinDir::new(name);
    let opts = LoadOptions {
        pin_dir: pins.0.clone(),
        cgroup: None,
        iface: None,
        ports: vec![PORT, 443],
    };
    let probe = Probe::load(&opts).unwrap_or_else(|e| panic!("loading the probe: {e}"));
    f(&mut Gate { probe });
}

fn check_mode(mode: GateMode, new_flow_verdict: Verdict) {
    with_gate("steer-gate-verdicts", |g| {
        g.set(mode, 1_000_000, 1_000_000);
        let bpf = gate::bpf_mode(mode);
        for (name, frame, kind) in cases() {
            let verdict = match kind {
                Some(true) => new_flow_verdict,
                Some(false) => Verdict::Pass,
                None => Verdict::Unparsed,
            };
            let before = g.count(bpf, verdict);
            let action = g.run(&frame);
            let want = if verdict.drops() { XDP_DROP } else { XDP_PASS };
            assert_eq!(action, want, "{mode:?}: {name} should be {verdict:?}");
            assert_eq!(
                g.count(bpf, verdict),
                before + 1,
                "{mode:?}: {name} counted as {verdict:?}"
            );
        }
    });
}

#[test]
fn open_passes_everything() {
    check_mode(GateMode::Open, Verdict::Admitted);
}

#[test]
fn drain_drops_only_new_flows() {
    check_mode(GateMode::Drain, Verdict::DroppedDrain);
}

#[test]
fn surge_under_its_rate_admits_new_flows() {
    check_mode(GateMode::Surge, Verdict::Admitted);
}

/// Offers `n` SYNs from distinct /24s (so only the global limiter binds) and returns how many
/// were admitted and how long offering took.
fn offer_distinct(g: &mut Gate, n: u32) -> (u32, Duration) {
    let started = std::time::SystemTime::now();
    let mut admitted = 0;
    for i in 0..n {
        if g.run(&syn_from([10, 1, i as u8, 1])) == XDP_PASS {
            admitted += 1;
        }
    }
    (admitted, started.elapsed().expect("clock"))
}

#[test]
fn surge_admits_the_burst_then_the_rate() {
    with_gate("steer-gate-gcra", |g| {
        const RATE: u32 = 20;
        const BURST: u32 = 8;
        g.set(GateMode::Surge, RATE, BURST);
        let (first, took) = offer_distinct(g, 200);
        // The burst at once, plus at most what the rate refilled while offering.
        let refill = (took.as_secs_f64() * f64::from(RATE)).ceil() as u32;
        assert!(
            (BURST..=BURST + refill).contains(&first),
            "burst: admitted {first} of 200 in {took:?}, want {BURST}..={}",
            BURST + refill
        );
        assert!(g.count(BpfMode::Surge, Verdict::DroppedRate) >= u64::from(200 - first));

        // The bucket is empty now: offered at 200/s for 1 s, the rate admits RATE more.
        let started = std::time::SystemTime::now();
        let mut second = 0;
        for i in 0..200u32 {
            if g.run(&syn_from([10, 2, i as u8, 1])) == XDP_PASS {
                second += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let window = started.elapsed().expect("clock").as_secs_f64();
        let max = (window * f64::from(RATE)).ceil() as u32 + 1;
        let min = (window * f64::from(RATE)).floor() as u32 - 1;
        assert!(
            (min..=max).contains(&second),
            "rate: admitted {second} in {window:.2} s, want {min}..={max}"
        );
    });
}

#[test]
fn surge_limits_each_client_prefix() {
    with_gate("steer-gate-prefix", |g| {
        // Global 4000/s burst 400: one prefix gets a quarter, 1000/s burst 100.
        g.set(GateMode::Surge, 4000, 400);
        let mut same = 0;
        for i in 0..150u8 {
            if g.run(&syn_from([198, 18, 9, i])) == XDP_PASS {
                same += 1;
            }
        }
        assert!(
            (100..=110).contains(&same),
            "one /24 admitted {same} of 150, want its burst of 100"
        );
        assert!(g.count(BpfMode::Surge, Verdict::DroppedPrefix) >= 40);
        // Another /24 has its own budget.
        assert_eq!(
            g.run(&syn_from([198, 18, 10, 1])),
            XDP_PASS,
            "another prefix is admitted"
        );
    });
}

#[test]
fn surge_with_rate_zero_admits_nothing() {
    with_gate("steer-gate-closed", |g| {
        g.set(GateMode::Surge, 0, 0);
        assert_eq!(g.run(&syn_from([198, 18, 11, 1])), XDP_DROP);
        assert_eq!(
            g.run(&v4_frame(V4_TCP, PORT, ACK)),
            XDP_PASS,
            "established flows still pass"
        );
    });
}
