//! The streaming client resolves through the DNS server it is given, keeps the answer for its TTL, and after a
//! failed connection backs off, re-resolves and succeeds on the new answer.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use steer_lab::client::{Client, ClientConfig, ClientError};
use steer_lab::mock_infer::{self, MockConfig};

/// Answers every A query with `answers[n]` for the n-th query (the last one repeated), TTL 30 s.
async fn dns_server(answers: Vec<Ipv4Addr>, queries: Arc<AtomicU32>) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        // Bounded: a test never asks more than this.
        for _ in 0..100 {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let q = Message::from_vec(&buf[..n]).unwrap();
            let i = queries.fetch_add(1, Ordering::SeqCst) as usize;
            let ip = answers[i.min(answers.len() - 1)];
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.recursion_desired = true;
            r.metadata.recursion_available = true;
            let name = q.queries[0].name().clone();
            r.add_query(q.queries[0].clone());
            r.add_answer(Record::from_rdata(name, 30, RData::A(A(ip))));
            sock.send_to(&r.to_vec().unwrap(), peer).await.unwrap();
        }
    });
    addr
}

#[tokio::test]
async fn failed_connect_backs_off_re_resolves_and_succeeds() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = MockConfig {
        tokens_per_s: 500.0,
        ttft: Duration::from_millis(5),
        region: "us-east".into(),
        ..Default::default()
    };
    tokio::spawn(mock_infer::serve(listener, cfg, std::future::pending()));
    // First answer: a loopback address where nothing listens (connection refused); then the live server.
    let queries = Arc::new(AtomicU32::new(0));
    let dns = dns_server(
        vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::LOCALHOST],
        Arc::clone(&queries),
    )
    .await;

    let mut cfg = ClientConfig::new("api.infer.example.com.", dns, port);
    cfg.max_tokens = 8;
    cfg.backoff_base = Duration::from_millis(20);
    let mut client = Client::new(cfg);
    let s = client.session().await;
    assert_eq!(s.attempts.len(), 2, "{s:#?}");
    assert!(
        matches!(s.attempts[0].error, Some(ClientError::Connect { .. })),
        "{s:#?}"
    );
    assert_eq!(s.attempts[0].addr, Some(Ipv4Addr::new(127, 0, 0, 2).into()));
    assert_eq!(s.resolved, Some(Ipv4Addr::LOCALHOST.into()));
    assert_eq!((s.tokens, s.completed, s.broken), (8, true, false), "{s:#?}");
    assert_eq!(s.region.as_deref(), Some("us-east"));
    assert_eq!(s.attempts[1].dns_ttl_s, Some(30));
    assert_eq!(
        queries.load(Ordering::SeqCst),
        2,
        "the failure did not trigger a new query"
    );

    // Within the TTL and without a failure, the cached answer is reused.
    let s = client.session().await;
    assert_eq!((s.attempts.len(), s.completed), (1, true), "{s:#?}");
    assert_eq!(
        queries.load(Ordering::SeqCst),
        2,
        "asked DNS again inside the TTL"
    );
}

#[tokio::test]
async fn unreachable_resolver_fails_after_bounded_attempts() {
    // A bound but silent UDP socket: queries time out.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ClientConfig::new("api.infer.example.com.", silent.local_addr().unwrap(), 1);
    cfg.attempts_max = 2;
    cfg.dns_timeout = Duration::from_millis(30);
    cfg.backoff_base = Duration::from_millis(5);
    let s = Client::new(cfg).session().await;
    assert_eq!(s.attempts.len(), 2);
    assert!(
        s.attempts
            .iter()
            .all(|a| matches!(a.error, Some(ClientError::Resolve(_)))),
        "{s:#?}"
    );
    assert!(!s.completed && s.resolved.is_none());
}
