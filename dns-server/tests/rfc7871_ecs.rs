//! ECS (RFC 7871) over the wire: family and source echoed, SCOPE from the decision, FORMERR for
//! malformed options, no ECS in the reply when the query had none, and the resolver's address used
//! when there is no ECS.

mod common;

use common::{Steerd, query, udp, wait_until};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use std::time::Duration;

fn ecs_of(m: &Message) -> Option<ClientSubnet> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some(*s),
        _ => None,
    }
}

/// Raw query bytes with one OPT record holding `opt_rdata`.
fn raw_with_opt(opt_rdata: &[u8]) -> Vec<u8> {
    let mut q = vec![0xAB, 0xCD, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(b"\x03api\x05infer\x07example\x03com\x00\x00\x01\x00\x01");
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    q.extend_from_slice(&(opt_rdata.len() as u16).to_be_bytes());
    q.extend_from_slice(opt_rdata);
    q
}

#[test]
fn ecs_is_echoed_with_the_scope_of_the_deciding_data() {
    let s = Steerd::start();
    // Both regions healthy; the client's /24 measured: eu-west is closer.
    assert_eq!(s.report("us-east", "h1", 1, &[("10.2.3.0/24", 90_000)]).0, 200);
    assert_eq!(s.report("eu-west", "h1", 1, &[("10.2.3.0/24", 20_000)]).0, 200);
    wait_until(Duration::from_secs(5), "eu-west for the measured /24", || {
        common::addrs(&udp(
            s.dns,
            &query("api.infer.example.com.", RecordType::A, true, Some("10.2.3.0/24")),
        )) == ["198.19.2.10"]
    });
    let m = udp(
        s.dns,
        &query("api.infer.example.com.", RecordType::A, true, Some("10.2.3.0/24")),
    );
    let e = ecs_of(&m).unwrap_or_else(|| panic!("ECS echoed: {m:?}"));
    assert_eq!(e.addr().to_string(), "10.2.3.0");
    assert_eq!(e.source_prefix(), 24);
    assert_eq!(e.scope_prefix(), 24, "a measured /24 decided: {m:?}");

    // A longer source is echoed as sent; the scope stays the /24 that decided.
    let m = udp(
        s.dns,
        &query(
            "api.infer.example.com.",
            RecordType::A,
            true,
            Some("10.2.3.128/25"),
        ),
    );
    let e = ecs_of(&m).expect("ECS echoed");
    assert_eq!((e.source_prefix(), e.scope_prefix()), (25, 24), "{m:?}");

    // A client without data in a /16 without data: no client data decided, scope 0.
    let m = udp(
        s.dns,
        &query(
            "api.infer.example.com.",
            RecordType::A,
            true,
            Some("172.20.5.0/24"),
        ),
    );
    let e = ecs_of(&m).expect("ECS echoed");
    assert_eq!((e.source_prefix(), e.scope_prefix()), (24, 0), "{m:?}");

    // IPv6 family is echoed too.
    let m = udp(
        s.dns,
        &query(
            "api.infer.example.com.",
            RecordType::AAAA,
            true,
            Some("2001:db8:77::/48"),
        ),
    );
    let e = ecs_of(&m).expect("ECS echoed");
    assert_eq!(e.source_prefix(), 48);
    assert!(e.addr().is_ipv6());

    // Static data: echoed with scope 0.
    let m = udp(
        s.dns,
        &query("ns1.infer.example.com.", RecordType::A, true, Some("10.2.3.0/24")),
    );
    let e = ecs_of(&m).unwrap_or_else(|| panic!("ECS echoed on static data: {m:?}"));
    assert_eq!((e.source_prefix(), e.scope_prefix()), (24, 0));

    // kdig shows the echo.
    let out = common::kdig(s.dns, &["+subnet=10.2.3.0/24", "api.infer.example.com", "A"]);
    assert!(out.contains("10.2.3.0/24/24"), "{out}");
}

#[test]
fn no_ecs_in_the_reply_when_the_query_had_none() {
    let s = Steerd::start();
    for name in [
        "api.infer.example.com.",
        "ns1.infer.example.com.",
        "nope.infer.example.com.",
    ] {
        let m = udp(s.dns, &query(name, RecordType::A, true, None));
        assert!(m.edns.is_some(), "{name}: EDNS answered with EDNS");
        assert!(ecs_of(&m).is_none(), "{name}: {m:?}");
        let m = udp(s.dns, &query(name, RecordType::A, false, None));
        assert!(m.edns.is_none(), "{name}: no OPT without EDNS: {m:?}");
    }
}

#[test]
fn without_ecs_the_resolver_address_decides() {
    let s = Steerd::start();
    // The test's resolver is 127.0.0.1: measure its /24 closer to eu-west (policy order alone
    // would say us-east).
    assert_eq!(s.report("us-east", "h1", 1, &[("127.0.0.0/24", 80_000)]).0, 200);
    assert_eq!(s.report("eu-west", "h1", 1, &[("127.0.0.0/24", 5_000)]).0, 200);
    wait_until(Duration::from_secs(5), "eu-west for 127.0.0.0/24", || {
        common::addrs(&udp(
            s.dns,
            &query("api.infer.example.com.", RecordType::A, false, None),
        )) == ["198.19.2.10"]
    });
    let (status, text) = s.get(
        "/v1/explain?name=api.infer.example.com&type=A&client=127.0.0.1",
        Some(common::ADMIN_TOKEN),
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("resolver address") && text.contains("source=Measured"),
        "{text}"
    );
}

#[test]
fn malformed_ecs_is_formerr() {
    let s = Steerd::start();
    for (what, rd) in [
        ("family 3", &[0, 8, 0, 7, 0, 3, 24, 0, 10, 2, 3][..]),
        ("scope set in a query", &[0, 8, 0, 7, 0, 1, 24, 8, 10, 2, 3]),
        ("too few address bytes", &[0, 8, 0, 6, 0, 1, 24, 0, 10, 2]),
        ("too many address bytes", &[0, 8, 0, 8, 0, 1, 24, 0, 10, 2, 3, 4]),
        ("bits beyond source", &[0, 8, 0, 7, 0, 1, 23, 0, 10, 2, 3]),
        (
            "source longer than 32",
            &[0, 8, 0, 9, 0, 1, 33, 0, 10, 2, 3, 4, 5],
        ),
        ("option overruns the record", &[0, 8, 0, 20, 0, 1, 24, 0]),
        (
            "two ECS options",
            &[
                0, 8, 0, 7, 0, 1, 24, 0, 10, 2, 3, 0, 8, 0, 7, 0, 1, 24, 0, 10, 2, 3,
            ],
        ),
    ] {
        let resp = common::udp_raw(s.dns, &raw_with_opt(rd)).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(&resp[..2], &[0xAB, 0xCD], "{what}: id echoed");
        assert_eq!(resp[3] & 0x0F, 1, "{what}: FORMERR, got {resp:?}");
        assert!(resp[2] & 0x80 != 0, "{what}: QR");
    }
    // A well-formed one on the same path answers.
    let resp = common::udp_raw(s.dns, &raw_with_opt(&[0, 8, 0, 7, 0, 1, 24, 0, 10, 2, 3])).expect("answer");
    let m = Message::from_vec(&resp).expect("parses");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
}
