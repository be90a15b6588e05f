//! The delay line gives real TCP the configured round-trip time, keeps order within a flow, and bounds its queue.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use steer_lab::topology::{Topology, TopologySpec};
use tokio::time::Instant;

const DELAY_LINE: &str = env!("CARGO_BIN_EXE_steer-delay-line");
/// Ping-pong round trips measured per region.
const ROUNDS: usize = 15;

fn spec(one_way_ms: &[f64], queue_max: usize) -> TopologySpec {
    TopologySpec {
        regions: (0..one_way_ms.len()).map(|i| format!("r{i}")).collect(),
        sites: vec!["site".into()],
        delay_ms: vec![one_way_ms.to_vec()],
        queue_max,
        ..Default::default()
    }
}

/// The tests of this file measure time; running them one at a time keeps the flood test from skewing the RTTs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lab(one_way_ms: &[f64], queue_max: usize) -> Topology {
    steer_lab::require_root();
    let mut topo = Topology::up(&spec(one_way_ms, queue_max)).unwrap_or_else(|e| panic!("topology up: {e}"));
    topo.start_delay_line(Path::new(DELAY_LINE))
        .unwrap_or_else(|e| panic!("delay line: {e}"));
    topo
}

/// A one-connection echo server in region `i`, bounded by a read timeout.
fn echo_server(topo: &Topology, i: usize, port: u16) -> std::thread::JoinHandle<()> {
    let addr = SocketAddr::from((topo.region_host(i), port));
    let listener = topo
        .region(i)
        .run_in(|| TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        steer_lab::make_thread_realtime();
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..=ROUNDS {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => s.write_all(&buf[..n]).expect("echo"),
            }
        }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn tcp_round_trip_matches_configured_rtt() {
    let _serial = serial();
    // The measuring thread runs at real-time priority, like the delay line, so unrelated load on the cores does
    // not show up as WAN delay. The priority ends with the test's thread.
    steer_lab::make_thread_realtime();
    let one_way = [2.5, 10.0, 40.0];
    let topo = lab(&one_way, 0);
    for (i, &ms) in one_way.iter().enumerate() {
        let want_ms = 2.0 * ms;
        let server = echo_server(&topo, i, 7000);
        let dst = SocketAddr::from((topo.region_host(i), 7000));
        let (stream, connect_ms) = topo
            .site(0)
            .run_in(move || {
                let t = Instant::now();
                let s = TcpStream::connect_timeout(&dst, Duration::from_secs(5)).expect("connect");
                (s, t.elapsed().as_secs_f64() * 1000.0)
            })
            .unwrap();
        let mut s = stream;
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut samples = Vec::with_capacity(ROUNDS);
        let mut buf = [0u8; 8];
        for round in 0..ROUNDS {
            let t = Instant::now();
            s.write_all(&(round as u64).to_be_bytes()).unwrap();
            s.read_exact(&mut buf).unwrap();
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(u64::from_be_bytes(buf), round as u64);
        }
        drop(s);
        server.join().unwrap();
        let got = median(samples.clone());
        let tolerance = (want_ms * 0.1).max(1.0);
        eprintln!(
            "region {i}: configured RTT {want_ms} ms, measured median {got:.3} ms, connect {connect_ms:.3} ms"
        );
        assert!(
            (got - want_ms).abs() <= tolerance,
            "region {i}: configured RTT {want_ms} ms, measured median {got:.2} ms (samples {samples:?})"
        );
        // One sample only, so just bounds: the handshake cannot beat the delay, and must not stall.
        assert!(
            connect_ms >= want_ms - tolerance && connect_ms <= 3.0 * want_ms + 10.0,
            "region {i}: TCP connect took {connect_ms:.2} ms, configured RTT {want_ms} ms"
        );
    }
}

/// Sends `count` sequence-numbered datagrams from the site to region `i` as fast as possible; returns the
/// sequence numbers received (in arrival order) within `wait`.
fn udp_burst(topo: &Topology, i: usize, port: u16, count: u32, wait: Duration) -> Vec<u32> {
    let dst = SocketAddr::from((topo.region_host(i), port));
    let rx = topo.region(i).run_in(|| UdpSocket::bind(dst)).unwrap().unwrap();
    let sock = socket2::SockRef::from(&rx);
    let _ = sock.set_recv_buffer_size(4 << 20);
    rx.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let src = SocketAddr::from((topo.site_client(0), 0));
    let tx = topo.site(0).run_in(|| UdpSocket::bind(src)).unwrap().unwrap();
    for seq in 0..count {
        tx.send_to(&seq.to_be_bytes(), dst).unwrap();
    }
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    while Instant::now() < deadline && got.len() < count as usize {
        if let Ok(n) = rx.recv(&mut buf) {
            assert_eq!(n, 4);
            got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        }
    }
    got
}

#[test]
fn order_is_kept_within_a_flow() {
    let _serial = serial();
    let mut topo = lab(&[10.0], 0);
    let count = 300;
    let got = udp_burst(&topo, 0, 7100, count, Duration::from_secs(2));
    let counters = topo.stop_delay_line().unwrap();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "datagrams reordered: {got:?}"
    );
    assert_eq!(
        got.len(),
        count as usize,
        "lost datagrams without any loss configured; counters {counters:?}"
    );
    assert!(
        counters.rules[0].accepted >= u64::from(count),
        "not delayed by the rule: {counters:?}"
    );
}

#[test]
fn queue_bound_drops_and_counts_the_excess() {
    let _serial = serial();
    let queue_max = 64;
    let mut topo = lab(&[40.0], queue_max);
    let count: u32 = 1000;
    let got = udp_burst(&topo, 0, 7200, count, Duration::from_millis(500));
    let c = topo.stop_delay_line().unwrap();
    assert!(
        c.queued_max <= queue_max as u64,
        "queue grew to {} > {queue_max}: {c:?}",
        c.queued_max
    );
    assert_eq!(
        c.received,
        u64::from(count),
        "the kernel lost packets before the delay line saw them: {c:?}"
    );
    assert_eq!(
        c.received,
        c.delayed_accepted + c.dropped_overflow + c.unmatched + c.dropped_loss,
        "{c:?}"
    );
    assert!(
        c.dropped_overflow > 0,
        "a burst of {count} beyond a bound of {queue_max} dropped nothing: {c:?}"
    );
    assert_eq!(
        got.len() as u64,
        c.rules[0].accepted,
        "receiver count differs from accepted: {c:?}"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "reordered: {got:?}");
}

#[test]
fn configured_loss_drops_about_that_share() {
    let _serial = serial();
    steer_lab::require_root();
    let mut spec = spec(&[1.0], 0);
    spec.loss_pct = vec![vec![20.0]];
    let mut topo = Topology::up(&spec).unwrap_or_else(|e| panic!("topology up: {e}"));
    topo.start_delay_line(Path::new(DELAY_LINE))
        .unwrap_or_else(|e| panic!("delay line: {e}"));
    let count = 1000;
    let got = udp_burst(&topo, 0, 7300, count, Duration::from_millis(500));
    let c = topo.stop_delay_line().unwrap();
    let lost = u64::from(count) - got.len() as u64;
    assert_eq!(
        lost, c.rules[0].dropped_loss,
        "every lost datagram is a counted loss drop: {c:?}"
    );
    assert!(
        (120..=280).contains(&lost),
        "lost {lost} of {count} at 20%: {c:?}"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "reordered");
}
