//! Real TCP over a veth pair between two fresh network namespaces: the `sock_ops` probe, attached to
//! a fresh cgroup that this test process is moved into, records srtt samples under the client's
//! /24 and counts the active connections to the watched port.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use steer_probe::{LoadOptions, Probe};
use steer_probe_common::PrefixKey;

const PORT: u16 = 8000;
const CONNECTIONS: usize = 3;
const ROUND_TRIPS: usize = 50;

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..100 {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after 2 s waiting for {what}");
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: topology, server, client, checks"
)]
fn rtt_samples_land_under_the_client_prefix() {
    common::require_root();
    let server_ns = common::Netns::new("steer-rtt-srv");
    let client_ns = common::Netns::new("steer-rtt-cli");
    common::ip(&[
        "link",
        "add",
        "rtt0",
        "netns",
        &server_ns.name,
        "type",
        "veth",
        "peer",
        "name",
        "rtt1",
        "netns",
        &client_ns.name,
    ]);
    common::ip(&[
        "-n",
        &server_ns.name,
        "addr",
        "add",
        "198.18.0.1/16",
        "dev",
        "rtt0",
    ]);
    common::ip(&[
        "-n",
        &client_ns.name,
        "addr",
        "add",
        "198.18.7.2/16",
        "dev",
        "rtt1",
    ]);
    common::ip(&["-n", &server_ns.name, "link", "set", "rtt0", "up"]);
    common::ip(&["-n", &client_ns.name, "link", "set", "rtt1", "up"]);

    // Sockets belong to the cgroup of the process that creates them: move in before any socket.
    let cgroup = common::TestCgroup::enter("steer-rtt");
    let pins = common::PinDir::new("steer-rtt");
    let opts = LoadOptions {
        pin_dir: pins.0.clone(),
        cgroup: Some(cgroup.path.clone()),
        iface: None,
        ports: vec![PORT],
    };
    let probe = Probe::load(&opts).unwrap_or_else(|e| panic!("loading the probe: {e:?}"));

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let name = server_ns.name.clone();
        std::thread::spawn(move || {
            common::Netns { name }.enter_and_forget();
            let listener = TcpListener::bind(("198.18.0.1", PORT)).expect("bind 198.18.0.1:8000");
            ready_tx.send(()).expect("ready");
            let mut handles = Vec::new();
            for _ in 0..CONNECTIONS {
                let (mut s, _) = listener.accept().expect("accept");
                handles.push(std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                    let mut buf = [0u8; 64];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => s.write_all(&buf[..n]).expect("echo"),
                        }
                    }
                }));
            }
            for h in handles {
                h.join().expect("echo thread");
            }
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");

    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let client = {
        let name = client_ns.name.clone();
        std::thread::spawn(move || {
            common::Netns { name }.enter_and_forget();
            let mut conns: Vec<TcpStream> = (0..CONNECTIONS)
                .map(|_| {
                    TcpStream::connect_timeout(&(([198, 18, 0, 1], PORT).into()), Duration::from_secs(5))
                        .expect("connect")
                })
                .collect();
            for c in &mut conns {
                c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                c.set_nodelay(true).expect("nodelay");
                for i in 0..ROUND_TRIPS {
                    let msg = [i as u8; 16];
                    c.write_all(&msg).expect("send");
                    let mut back = [0u8; 16];
                    c.read_exact(&mut back).expect("echo back");
                    assert_eq!(back, msg);
                }
            }
            done_tx.send(()).expect("done");
            // Keep the connections open until the test has checked the active count.
            let _ = hold_rx.recv_timeout(Duration::from_secs(10));
            for c in &conns {
                let _ = c.shutdown(Shutdown::Both);
            }
        })
    };
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("client round trips");

    let key = PrefixKey::v4([198, 18, 7, 2], 24);
    let mut samples = 0;
    wait_for("RTT samples for 198.18.7.0/24", || {
        samples = probe
            .maps()
            .rtt_snapshot()
            .expect("rtt map")
            .0
            .get(&key)
            .map_or(0, |v| v.count);
        samples >= (CONNECTIONS * ROUND_TRIPS / 2) as u64
    });
    let snapshot = probe.maps().rtt_snapshot().expect("rtt map");
    let v = snapshot.0[&key];
    let q = v.quantiles().expect("quantiles");
    assert!(
        q.p50_us > 0 && q.p50_us < 100_000,
        "veth srtt p50 {} µs is implausible",
        q.p50_us
    );
    assert!(
        v.min_us > 0 && v.min_us <= q.p50_us,
        "min {} vs p50 {}",
        v.min_us,
        q.p50_us
    );
    assert_eq!(
        snapshot.0.len(),
        1,
        "only the client's prefix: {:?}",
        snapshot.0.keys()
    );
    assert_eq!(
        probe.maps().active_connections().expect("active"),
        CONNECTIONS as u64
    );

    hold_tx.send(()).expect("release the client");
    client.join().expect("client thread");
    server.join().expect("server thread");
    wait_for("active connections back to 0", || {
        probe.maps().active_connections().expect("active") == 0
    });
    drop(probe);
    drop(pins);
    drop(cgroup);
}
