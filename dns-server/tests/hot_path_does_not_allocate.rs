//! In-process: the hot path answers steered A/AAAA queries (with ECS, with `GeoIP` off) without one
//! heap allocation, from a snapshot built with telemetry; and `run` serves pre-bound sockets until
//! its shutdown future fires.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dns_server::dns::{Fast, Transport, fast};
use dns_server::state::{Shared, tokio_util_shutdown};
use dns_server::tokens::Tokens;
use dns_server::zone::Zone;
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::BinEncodable as _;
use steering_core::Policy;

fn shared(dir: &std::path::Path) -> Shared {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, common::POLICY).expect("write");
    let policy = Policy::from_yaml("policy.yaml", common::POLICY).expect("policy");
    let zone = Zone::parse(&common::zone_text(), None, "infer.example.com.").expect("zone");
    Shared::new(policy, path, zone, None, Tokens::open(), None, None)
}

#[test]
fn steered_answers_do_not_allocate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = shared(dir.path());
    {
        let mut c = s.control();
        let policy = c.policy.clone();
        let report: steering_core::telemetry::wire::Report = serde_json::from_str(&common::report_json(
            "eu-west",
            "e1",
            1,
            true,
            &[("10.2.3.0/24", 9_000)],
        ))
        .expect("report");
        c.telemetry
            .ingest(&policy, &report, dns_server::state::now_ms())
            .expect("ingest");
    }
    s.rebuild_now(true);
    let queries: Vec<Vec<u8>> = [
        common::query("api.infer.example.com.", RecordType::A, true, Some("10.2.3.0/24")),
        common::query("API.infer.example.com.", RecordType::AAAA, false, None),
        common::query("batch.infer.example.com.", RecordType::A, true, None),
        common::query(
            "api.infer.example.com.",
            RecordType::MX,
            true,
            Some("10.2.3.0/24"),
        ),
    ]
    .iter()
    .map(|m| m.to_bytes().expect("encode"))
    .collect();
    let mut out = vec![0u8; 65535];
    let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    // Warm up (first-use lazies).
    for q in &queries {
        assert!(matches!(
            fast(&s, q, src, Transport::Udp, &mut out),
            Fast::Answered(_)
        ));
    }
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            for q in &queries {
                let r = fast(&s, q, src, Transport::Udp, &mut out);
                assert!(matches!(r, Fast::Answered(n) if n > 12), "{r:?}");
            }
        }
    });
    assert_eq!(info.count_total, 0, "the hot path allocated: {info:?}");
    // Static names go to hickory.
    let q = common::query("ns1.infer.example.com.", RecordType::A, false, None)
        .to_bytes()
        .expect("encode");
    assert!(matches!(
        fast(&s, &q, src, Transport::Udp, &mut out),
        Fast::Slow(None)
    ));
}

#[test]
fn run_serves_pre_bound_sockets_until_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(shared(dir.path()));
    let listeners = dns_server::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        2,
    )
    .expect("bind");
    let dns = listeners.dns_addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (trigger, shutdown) = tokio_util_shutdown::channel();
    let server = rt.spawn(dns_server::run(s, listeners, shutdown));
    let m = common::udp(
        dns,
        &common::query("api.infer.example.com.", RecordType::A, false, None),
    );
    assert_eq!(m.answers.len(), 1);
    let m = common::tcp(
        dns,
        &common::query("ns2.infer.example.com.", RecordType::A, false, None),
    );
    assert_eq!(common::addrs(&m), ["198.18.1.53"]);
    trigger.fire();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("run returns after shutdown")
            .expect("join")
            .expect("run ok");
    });
}
