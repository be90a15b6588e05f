//! The lab's pieces fit: a client in a site namespace resolves the service through the dns namespace, and
//! streams from a mock inference server in a region namespace across the delay line, paying the WAN RTT.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use steer_lab::client::{Client, ClientConfig};
use steer_lab::mock_infer::{self, MockConfig};
use steer_lab::topology::{Topology, TopologySpec};

const DELAY_LINE: &str = env!("CARGO_BIN_EXE_steer-delay-line");
const ONE_WAY_MS: f64 = 15.0;
const PORT: u16 = 8000;

/// A runtime on a thread that joined `ns`, running `fut` (sockets it creates live in `ns`).
fn in_ns<F>(
    ns: &steer_lab::netns::NetNs,
    fut: F,
) -> std::thread::JoinHandle<Result<F::Output, steer_lab::netns::LabError>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    ns.spawn_thread(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    })
    .unwrap()
}

#[test]
fn client_in_a_site_streams_from_a_region_through_the_wan() {
    steer_lab::require_root();
    let spec = TopologySpec {
        regions: vec!["eu-west".into()],
        sites: vec!["dublin".into()],
        delay_ms: vec![vec![ONE_WAY_MS]],
        ..Default::default()
    };
    let mut topo = Topology::up(&spec).unwrap_or_else(|e| panic!("topology up: {e}"));
    topo.start_delay_line(Path::new(DELAY_LINE))
        .unwrap_or_else(|e| panic!("delay line: {e}"));
    let region_host = topo.region_host(0);

    // The mock server in the region, stopped by a oneshot at the end.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bind = SocketAddr::from((region_host, PORT));
    let server = in_ns(topo.region(0), async move {
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind mock");
        let cfg = MockConfig {
            tokens_per_s: 200.0,
            ttft: Duration::from_millis(20),
            region: "eu-west".into(),
            ..Default::default()
        };
        mock_infer::serve(listener, cfg, async { drop(stop_rx.await) }).await
    });

    // A one-answer authoritative stand-in for steerd in the dns namespace: answers exactly one query.
    let dns_addr = SocketAddr::from((topo.dns_addr(), 53));
    let dns_sock = topo
        .dns()
        .run_in(|| std::net::UdpSocket::bind(dns_addr))
        .unwrap()
        .unwrap();
    dns_sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let dns = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let (n, peer) = dns_sock.recv_from(&mut buf).expect("a DNS query");
        let q = Message::from_vec(&buf[..n]).unwrap();
        let mut r = Message::response(q.metadata.id, OpCode::Query);
        r.metadata.authoritative = true;
        r.add_query(q.queries[0].clone());
        r.add_answer(Record::from_rdata(
            q.queries[0].name().clone(),
            20,
            RData::A(A(region_host)),
        ));
        dns_sock.send_to(&r.to_vec().unwrap(), peer).unwrap();
    });

    let mut cfg = ClientConfig::new("api.infer.example.com.", dns_addr, PORT);
    cfg.max_tokens = 10;
    let session = in_ns(topo.site(0), async move { Client::new(cfg).session().await })
        .join()
        .unwrap()
        .unwrap();
    dns.join().unwrap();
    let _ = stop_tx.send(());
    server.join().unwrap().unwrap().unwrap();

    assert_eq!(session.resolved, Some(region_host.into()), "{session:#?}");
    assert_eq!(session.region.as_deref(), Some("eu-west"));
    assert_eq!(
        (session.tokens, session.completed, session.broken),
        (10, true, false),
        "{session:#?}"
    );
    // Connect (1 RTT) + request to first token (1 RTT) + 20 ms TTFT.
    let rtt = 2.0 * ONE_WAY_MS;
    let ttft = session.ttft_ms.unwrap();
    assert!(
        ttft >= 2.0 * rtt + 20.0 - 2.0,
        "first token after {ttft} ms: the WAN delay is missing"
    );
    assert!(ttft <= 2.0 * rtt + 20.0 + 60.0, "first token after {ttft} ms");
    let c = topo.stop_delay_line().unwrap();
    assert!(c.delayed_accepted > 0 && c.dropped_overflow == 0, "{c:?}");
}
