//! Authoritative behaviour over the wire, with hickory and kdig: AA, NXDOMAIN/NODATA with the SOA
//! (RFC 2308), REFUSED outside the zone, minimal ANY (RFC 8482), BADVERS (RFC 6891), TC and the TCP
//! retry, question case, name compression.

mod common;

use common::{Steerd, kdig, query, tcp, udp};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use hickory_proto::serialize::binary::BinEncodable as _;

#[test]
fn authoritative_answers_over_udp_and_tcp() {
    let s = Steerd::start();
    for (name, t) in [
        ("api.infer.example.com.", RecordType::A),
        ("api.infer.example.com.", RecordType::AAAA),
        ("ns1.infer.example.com.", RecordType::A),
        ("infer.example.com.", RecordType::SOA),
        ("infer.example.com.", RecordType::MX),
    ] {
        for m in [
            udp(s.dns, &query(name, t, false, None)),
            tcp(s.dns, &query(name, t, true, None)),
        ] {
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{name} {t}: {m:?}"
            );
            assert!(m.metadata.authoritative, "{name} {t}: AA not set: {m:?}");
            assert!(!m.metadata.recursion_available, "{name} {t}: RA set");
            assert_eq!(
                m.answers.len(),
                1.max(usize::from(t == RecordType::SOA)),
                "{name} {t}: {m:?}"
            );
            assert_eq!(m.answers[0].record_type(), t, "{name} {t}: {m:?}");
        }
    }
    // The glue of both name servers is in 198.18.0.0/15.
    let m = udp(
        s.dns,
        &query("ns2.infer.example.com.", RecordType::A, false, None),
    );
    assert_eq!(common::addrs(&m), ["198.18.1.53"]);
}

#[test]
fn negative_answers_carry_the_soa() {
    let s = Steerd::start();
    let m = udp(
        s.dns,
        &query("nope.infer.example.com.", RecordType::A, true, None),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
    assert!(m.metadata.authoritative);
    assert_eq!(m.authorities.len(), 1, "{m:?}");
    let soa = &m.authorities[0];
    assert!(matches!(soa.data, RData::SOA(_)), "{m:?}");
    assert_eq!(soa.ttl, 60, "RFC 2308: min(SOA TTL, MINIMUM)");

    // NODATA for a static name and for a steered name.
    for name in ["ns1.infer.example.com.", "api.infer.example.com."] {
        let m = udp(s.dns, &query(name, RecordType::MX, true, None));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}: {m:?}");
        assert!(m.answers.is_empty(), "{name}: {m:?}");
        assert!(m.metadata.authoritative, "{name}");
        assert_eq!(m.authorities.len(), 1, "{name}: {m:?}");
        assert!(matches!(m.authorities[0].data, RData::SOA(_)), "{name}: {m:?}");
        assert!(m.authorities[0].ttl <= 60, "{name}: {m:?}");
    }
    let out = kdig(s.dns, &["nope.infer.example.com", "A"]);
    assert!(out.contains("status: NXDOMAIN") && out.contains("SOA"), "{out}");
}

#[test]
fn refuses_names_outside_the_zone() {
    let s = Steerd::start();
    for name in ["example.org.", "example.com.", "."] {
        let mut q = query(name, RecordType::A, false, None);
        q.metadata.recursion_desired = true;
        let m = udp(s.dns, &q);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}: {m:?}");
        assert!(m.answers.is_empty());
    }
    let out = kdig(s.dns, &["www.example.net", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}

#[test]
fn any_is_answered_minimally() {
    let s = Steerd::start();
    let m = udp(s.dns, &query("infer.example.com.", RecordType::ANY, false, None));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "RFC 8482: one RRset: {m:?}");
    assert_eq!(m.answers[0].record_type(), RecordType::HINFO, "{m:?}");
    let m = udp(
        s.dns,
        &query("api.infer.example.com.", RecordType::ANY, false, None),
    );
    assert_eq!(m.answers.len(), 1, "{m:?}");
    assert_eq!(m.answers[0].record_type(), RecordType::A, "{m:?}");
    let m = udp(
        s.dns,
        &query("nope.infer.example.com.", RecordType::ANY, false, None),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
}

#[test]
fn unknown_edns_version_is_badvers() {
    let s = Steerd::start();
    for name in [
        "api.infer.example.com",
        "ns1.infer.example.com",
        "nope.infer.example.com",
    ] {
        let out = kdig(s.dns, &["+edns=1", name, "A"]);
        assert!(out.contains("status: BADVERS"), "{name}: {out}");
        assert!(
            out.contains("Version: 0"),
            "{name}: the reply speaks version 0: {out}"
        );
    }
    let out = kdig(s.dns, &["+edns=0", "api.infer.example.com", "A"]);
    assert!(out.contains("status: NOERROR"), "{out}");
}

#[test]
fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let s = Steerd::start();
    let m = udp(
        s.dns,
        &query("big.infer.example.com.", RecordType::TXT, false, None),
    );
    assert!(
        m.metadata.truncation,
        "12 long TXT records do not fit in 512 bytes: {m:?}"
    );
    assert!(m.to_bytes().expect("encode").len() <= 512);
    let m = tcp(
        s.dns,
        &query("big.infer.example.com.", RecordType::TXT, false, None),
    );
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 12, "{m:?}");
    // kdig retries over TCP by itself after TC.
    let out = kdig(s.dns, &["+noedns", "big.infer.example.com", "TXT"]);
    assert_eq!(out.matches("\tTXT\t").count(), 12, "{out}");
    assert!(out.contains("(TCP)"), "kdig retried over TCP: {out}");
}

#[test]
fn question_case_is_preserved_and_names_are_compressed() {
    let s = Steerd::start();
    for name in [
        "ApI.InFeR.ExAmPlE.CoM.",
        "NS1.infer.EXAMPLE.com.",
        "NoPe.Infer.Example.Com.",
    ] {
        let q = query(name, RecordType::A, false, None);
        let bytes = q.to_bytes().expect("encode");
        let resp = common::udp_raw(s.dns, &bytes).expect("answer");
        // The question is echoed byte for byte, case included.
        let qlen = bytes.len() - 12;
        assert_eq!(&resp[12..12 + qlen], &bytes[12..], "{name}");
    }
    // A steered answer's owner is a pointer to the question (0xC00C).
    let bytes = query("api.infer.example.com.", RecordType::A, false, None)
        .to_bytes()
        .expect("encode");
    let resp = common::udp_raw(s.dns, &bytes).expect("answer");
    assert_eq!(&resp[bytes.len()..bytes.len() + 2], &[0xC0, 0x0C], "{resp:?}");
    assert_eq!(resp.len(), bytes.len() + 16, "one compressed A record");
    let out = common::dig(s.dns, &["ApI.InFeR.ExAmPlE.CoM", "A"]);
    assert!(
        out.contains("ApI.InFeR.ExAmPlE.CoM."),
        "dig shows the name as answered: {out}"
    );
}

#[test]
fn zone_transfers_and_other_classes_are_refused() {
    let s = Steerd::start();
    let m = tcp(s.dns, &query("infer.example.com.", RecordType::AXFR, false, None));
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{m:?}");
    assert!(m.answers.is_empty());
    let out = kdig(s.dns, &["CH", "TXT", "version.bind"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    // Steered answers come over TCP too, with ECS echoed.
    let out = kdig(
        s.dns,
        &["+tcp", "+subnet=10.0.0.0/8", "api.infer.example.com", "A"],
    );
    assert!(
        out.contains("status: NOERROR") && out.contains("10.0.0.0/8/0"),
        "{out}"
    );
}
