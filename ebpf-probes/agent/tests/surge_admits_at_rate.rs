//! Real SYNs against the XDP gate in surge mode: client threads in their own netns (one pinned to
//! each CPU, since the global limiter is split into per-CPU shards) start non-blocking connects
//! from 16 client /24s at about three times the surge rate for 3 s, and the gate's counters admit
//! `burst + rate * t` within 10%, the rest dropped by the rate limiter.
//!
//! Every connect sends exactly one SYN: a connect that is not answered within 200 ms is closed,
//! well before the kernel's first SYN retransmit (1 s), so kernel retries never add to the count.
//! The sources span 16 prefixes so that the per-prefix limiter (a quarter of rate and burst per
//! prefix) is not what binds; the test checks that it dropped nothing.
#![allow(
    clippy::disallowed_types,
    reason = "real sockets and real processes are timed by the real monotonic clock (no tokio here)"
)]

mod common;

use std::collections::VecDeque;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, PerCpuArray};
use common::probe;
use socket2::{Domain, Socket, Type};
use steer_probe::{LoadOptions, Probe};
use steer_probe_common::{GateCounter, GateMode, Verdict, map_names};

const PORT: u16 = 8000;
const RATE_PER_S: u32 = 200;
const BURST: u32 = 40;
/// Offered connects per second over all senders: three times the rate.
const OFFERED_PER_S: u32 = 600;
const OFFER_FOR: Duration = Duration::from_secs(3);
/// A connect not answered within this is closed (before the kernel would retransmit its SYN).
const CONNECT_ABANDON: Duration = Duration::from_millis(200);
const PREFIXES: u8 = 16;

/// One sender: `n` connects spaced `every` apart from the client prefixes it is given, on `cpu`.
/// Returns (first send, last send).
fn offer(ns: String, cpu: usize, n: u32, every: Duration, first_prefix: u8, step: u8) -> (Instant, Instant) {
    common::Netns { name: ns }.enter_and_forget();
    common::pin_to_cpu(cpu);
    let server: SocketAddr = ([198, 18, 0, 1], PORT).into();
    let mut open: VecDeque<(Instant, Socket)> = VecDeque::new();
    let start = Instant::now();
    let mut last = start;
    let mut prefix = first_prefix;
    for i in 0..n {
        let due = start + every * i;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        assert!(
            start.elapsed() < OFFER_FOR * 2,
            "sender on cpu {cpu} fell behind at {i} of {n}"
        );
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_nonblocking(true).expect("nonblocking");
        let src = SocketAddrV4::new([198, 18, 16 + prefix, 2].into(), 0);
        s.bind(&src.into()).unwrap_or_else(|e| panic!("bind {src}: {e}"));
        match s.connect(&server.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => panic!("connect from {src}: {e}"),
        }
        last = Instant::now();
        open.push_back((last, s));
        while open.front().is_some_and(|(t, _)| t.elapsed() >= CONNECT_ABANDON) {
            open.pop_front();
        }
        prefix = (prefix + step) % PREFIXES;
    }
    (start, last)
}

fn per_cpu(pin_dir: &std::path::Path, idx: u32) -> Vec<u64> {
    let name = map_names::GATE_COUNTERS;
    let data = MapData::from_pin(pin_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let map: PerCpuArray<MapData, u64> = Map::from_map_data(data)
        .and_then(TryInto::try_into)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    map.get(&idx, 0)
        .unwrap_or_else(|e| panic!("{name}[{idx}]: {e}"))
        .to_vec()
}

#[test]
fn surge_admits_burst_plus_rate_times_t() {
    common::require_root();
    let srv = common::Netns::new("steer-surge-srv");
    let cli = common::Netns::new("steer-surge-cli");
    probe::veth(&srv, "sg0", "198.18.0.1", &cli, "sg1", "198.18.16.2");
    for p in 1..PREFIXES {
        common::ip(&[
            "-n",
            &cli.name,
            "addr",
            "add",
            &format!("198.18.{}.2/16", 16 + p),
            "dev",
            "sg1",
        ]);
    }
    let pins = common::PinDir::new("steer-surge");
    let opts = LoadOptions {
        pin_dir: pins.0.clone(),
        cgroup: None,
        iface: Some("sg0".into()),
        ports: vec![PORT],
    };
    srv.run(move || drop(Probe::load(&opts).unwrap_or_else(|e| panic!("loading the gate on sg0: {e}"))));

    // A listener with room for every admitted handshake; the kernel completes them, nobody
    // needs to accept within the test's 3 s (admitted SYNs are counted before the stack).
    let listener = srv.run(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_reuse_address(true).expect("reuseaddr");
        s.bind(&SocketAddr::from(([198, 18, 0, 1], PORT)).into())
            .expect("bind");
        s.listen(4096).expect("listen");
        s
    });

    let p = pins.0.to_str().expect("utf-8").to_owned();
    probe::cli_ok(&[
        "gate",
        "surge",
        "--rate",
        &RATE_PER_S.to_string(),
        "--burst",
        &BURST.to_string(),
        "--pin-dir",
        &p,
    ]);

    let cpus = aya::util::online_cpus().expect("online cpus");
    let senders = cpus.len() as u32;
    let per_sender = OFFERED_PER_S * OFFER_FOR.as_millis() as u32 / 1000 / senders;
    let every = Duration::from_secs(1) * senders / OFFERED_PER_S;
    let handles: Vec<_> = cpus
        .iter()
        .enumerate()
        .map(|(k, &cpu)| {
            let ns = cli.name.clone();
            std::thread::spawn(move || offer(ns, cpu as usize, per_sender, every, k as u8, senders as u8))
        })
        .collect();
    let windows: Vec<(Instant, Instant)> = handles.into_iter().map(|h| h.join().expect("sender")).collect();
    // Let the last SYNs reach the gate.
    std::thread::sleep(Duration::from_millis(100));
    drop(listener);

    let first = windows.iter().map(|w| w.0).min().expect("a sender");
    let last = windows.iter().map(|w| w.1).max().expect("a sender");
    let t = last.duration_since(first).as_secs_f64();
    let admitted = per_cpu(&pins.0, GateCounter::index(GateMode::Surge, Verdict::Admitted));
    let dropped_rate = per_cpu(&pins.0, GateCounter::index(GateMode::Surge, Verdict::DroppedRate));
    let dropped_prefix = per_cpu(
        &pins.0,
        GateCounter::index(GateMode::Surge, Verdict::DroppedPrefix),
    );
    let (sum, d_rate, d_prefix): (u64, u64, u64) = (
        admitted.iter().sum(),
        dropped_rate.iter().sum(),
        dropped_prefix.iter().sum(),
    );
    let offered = u64::from(per_sender * senders);
    let expected = f64::from(BURST) + f64::from(RATE_PER_S) * t;
    eprintln!(
        "offered {offered} SYNs over {t:.3} s on {senders} CPUs: admitted {sum} (per CPU {admitted:?}), \
         dropped by rate {d_rate} (per CPU {dropped_rate:?}), by prefix {d_prefix}; expected {expected:.0}"
    );
    // Each connect is one SYN; a sender descheduled for over a second could let one retransmit
    // slip in, which a 2% allowance absorbs without hiding a systematic miscount.
    let seen = sum + d_rate + d_prefix;
    assert!(
        (offered..=offered + offered / 50).contains(&seen),
        "the gate saw {seen} SYNs for {offered} connects (one SYN each)"
    );
    assert_eq!(d_prefix, 0, "16 prefixes: the per-prefix limiter never binds");
    let err = (sum as f64 - expected).abs() / expected;
    assert!(
        err <= 0.10,
        "admitted {sum} SYNs, expected burst {BURST} + {RATE_PER_S}/s x {t:.3} s = {expected:.0} (off by {:.1}%)",
        err * 100.0
    );
}
