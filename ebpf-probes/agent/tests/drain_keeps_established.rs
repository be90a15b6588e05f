//! Real TCP across a veth pair between two fresh network namespaces, with the XDP gate on the
//! server's veth: streams opened before `steer-probe gate drain` keep flowing to the end with
//! every byte, new connects during the drain time out (their SYNs are dropped and counted), and
//! after `steer-probe gate open` new connects succeed again.
#![allow(
    clippy::disallowed_types,
    reason = "real sockets and real processes are timed by the real monotonic clock (no tokio here)"
)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::probe;
use steer_probe::{LoadOptions, Probe};

const PORT: u16 = 8000;
const STREAMS: usize = 3;
/// Each stream: a chunk every 20 ms for 2 s.
const CHUNKS: usize = 100;
const CHUNK_BYTES: usize = 1024;
const CHUNK_EVERY: Duration = Duration::from_millis(20);
/// How long a connect during the drain may try (the kernel's first SYN retransmit is at 1 s).
const CONNECT_WAIT: Duration = Duration::from_millis(700);

fn server_addr() -> SocketAddr {
    ([198, 18, 0, 1], PORT).into()
}

/// A stream's result: bytes read and the longest pause between two reads.
fn read_stream(mut s: TcpStream) -> (usize, Duration) {
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 8192];
    let (mut total, mut gap_max) = (0, Duration::ZERO);
    let mut last = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (total, gap_max),
            Ok(n) => {
                total += n;
                gap_max = gap_max.max(last.elapsed());
                last = Instant::now();
            }
            Err(e) => panic!("stream read after {total} bytes: {e}"),
        }
    }
}

#[test]
fn streams_opened_before_a_drain_finish_while_new_connects_fail() {
    common::require_root();
    let srv = common::Netns::new("steer-drain-srv");
    let cli = common::Netns::new("steer-drain-cli");
    probe::veth(&srv, "dr0", "198.18.0.1", &cli, "dr1", "198.18.7.2");
    let pins = common::PinDir::new("steer-drain");
    let opts = LoadOptions {
        pin_dir: pins.0.clone(),
        cgroup: None,
        iface: Some("dr0".into()),
        ports: vec![PORT],
    };
    // Attach in the server's namespace; the pinned link keeps the gate after the loader is gone.
    srv.run(move || drop(Probe::load(&opts).unwrap_or_else(|e| panic!("loading the gate on dr0: {e}"))));
    let p = pins.0.to_str().expect("utf-8").to_owned();

    // Server: every accepted connection gets CHUNKS chunks, one per CHUNK_EVERY, then EOF.
    let stop = Arc::new(AtomicBool::new(false));
    let listener = srv.run(|| TcpListener::bind(server_addr()).expect("binding 198.18.0.1:8000"));
    listener.set_nonblocking(true).expect("nonblocking");
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut writers = Vec::new();
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(20) {
                match listener.accept() {
                    Ok((mut s, _)) => writers.push(std::thread::spawn(move || {
                        s.set_nonblocking(false).expect("blocking");
                        // The probe connect after `open` hangs up at once; the streams check
                        // their bytes on the client side.
                        for i in 0..CHUNKS {
                            if s.write_all(&[i as u8; CHUNK_BYTES]).is_err() {
                                break;
                            }
                            std::thread::sleep(CHUNK_EVERY);
                        }
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            for w in writers {
                w.join().expect("writer");
            }
        })
    };

    // Streams opened while the gate is open.
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let name = cli.name.clone();
            std::thread::spawn(move || {
                common::Netns { name }.enter_and_forget();
                let s = TcpStream::connect_timeout(&server_addr(), Duration::from_secs(2))
                    .expect("connect before the drain");
                read_stream(s)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let drained_at = Instant::now();
    probe::cli_ok(&["gate", "drain", "--pin-dir", &p]);
    let (_, _, dropped_before) = probe::status_flows(&pins.0);
    let refused = cli.run(|| {
        (0..3)
            .map(|_| TcpStream::connect_timeout(&server_addr(), CONNECT_WAIT).map(drop))
            .collect::<Vec<_>>()
    });
    for r in &refused {
        let e = r.as_ref().expect_err("a new connect during the drain must fail");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::TimedOut,
            "dropped SYNs time out: {e}"
        );
    }
    let (_, _, dropped) = probe::status_flows(&pins.0);
    assert!(
        dropped >= dropped_before + 3,
        "the gate counted the dropped SYNs: {dropped_before} -> {dropped}"
    );

    for (i, h) in streams.into_iter().enumerate() {
        let (bytes, gap) = h.join().expect("stream thread");
        assert_eq!(bytes, CHUNKS * CHUNK_BYTES, "stream {i} got every byte");
        assert!(
            gap < Duration::from_millis(500),
            "stream {i} kept flowing during the drain (longest pause {gap:?})"
        );
    }
    assert!(
        drained_at.elapsed() > Duration::from_millis(1500),
        "the streams outlived the drain by more than the connect attempts"
    );
    assert_eq!(probe::status_mode(&pins.0), "Drain");

    probe::cli_ok(&["gate", "open", "--pin-dir", &p]);
    let (_, admitted_before, _) = probe::status_flows(&pins.0);
    let after = cli.run(|| TcpStream::connect_timeout(&server_addr(), Duration::from_secs(2)).map(drop));
    after.unwrap_or_else(|e| panic!("a connect after `gate open`: {e}"));
    let (_, admitted, _) = probe::status_flows(&pins.0);
    assert!(
        admitted > admitted_before,
        "the open gate counted the admitted SYN"
    );

    stop.store(true, Ordering::SeqCst);
    server.join().expect("server");
}
