//! Malformed and random datagrams never crash the server: they get FORMERR or silence, and the
//! server answers normally afterwards.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{Steerd, query, udp};
use hickory_proto::rr::RecordType;

/// A xorshift generator: the random packets are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn header(qd: u16, ar: u16) -> Vec<u8> {
    let mut h = vec![0x11, 0x22, 0x01, 0x00];
    for c in [qd, 0, 0, ar] {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

fn crafted() -> Vec<(&'static str, Vec<u8>)> {
    let q = |name: &[u8], tail: &[u8]| {
        let mut p = header(1, 0);
        p.extend_from_slice(name);
        p.extend_from_slice(tail);
        p
    };
    let mut opt_bad = header(1, 1);
    opt_bad.extend_from_slice(b"\x03api\x05infer\x07example\x03com\x00\x00\x01\x00\x01");
    opt_bad.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 50, 0, 8]); // rdlength past the end
    let mut two_opts = header(1, 2);
    two_opts.extend_from_slice(b"\x01a\x05infer\x07example\x03com\x00\x00\x01\x00\x01");
    for _ in 0..2 {
        two_opts.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
    }
    vec![
        ("empty", vec![]),
        ("short header", vec![1, 2, 3, 4, 5]),
        ("header only, qdcount 1", header(1, 0)),
        ("qdcount 0", header(0, 0)),
        ("qdcount 2", {
            let mut p = header(2, 0);
            p.extend_from_slice(b"\x03api\x05infer\x07example\x03com\x00\x00\x01\x00\x01");
            p.extend_from_slice(b"\x03api\x05infer\x07example\x03com\x00\x00\x01\x00\x01");
            p
        }),
        ("label runs past the end", q(b"\x3fabc", &[])),
        ("label length 64", q(b"\x40aaaa\x00", &[0, 1, 0, 1])),
        ("compression loop", q(b"\xc0\x0c", &[0, 1, 0, 1])),
        ("pointer forward", q(b"\x01a\xc0\x40", &[0, 1, 0, 1])),
        ("no qtype", q(b"\x03api\x05infer\x07example\x03com\x00", &[])),
        (
            "name longer than 255",
            q(
                &[
                    &b"\x3f"[..],
                    &[b'a'; 63],
                    b"\x3f",
                    &[b'a'; 63],
                    b"\x3f",
                    &[b'a'; 63],
                    b"\x3f",
                    &[b'a'; 63],
                    b"\x00",
                ]
                .concat(),
                &[0, 1, 0, 1],
            ),
        ),
        ("OPT rdata past the end", opt_bad),
        ("two OPT records", two_opts),
        ("a response", {
            let mut p = q(b"\x01a\x00", &[0, 1, 0, 1]);
            p[2] |= 0x80;
            p
        }),
        (
            "trailing garbage",
            q(b"\x03api\x05infer\x07example\x03com\x00", &[0, 1, 0, 1, 9, 9, 9]),
        ),
    ]
}

#[test]
fn malformed_packets_get_formerr_or_silence() {
    let s = Steerd::start();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    for (what, p) in crafted() {
        sock.send_to(&p, s.dns).expect("send");
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            assert!(n >= 12, "{what}: a reply has a header");
            assert!(buf[2] & 0x80 != 0, "{what}: QR");
            let rcode = buf[3] & 0x0F;
            assert_eq!(rcode, 1, "{what}: FORMERR");
        }
        // The server still answers.
        let m = udp(
            s.dns,
            &query("api.infer.example.com.", RecordType::A, false, None),
        );
        assert_eq!(m.answers.len(), 1, "{what}: alive afterwards");
    }
}

#[test]
fn random_bytes_never_crash_the_server() {
    let s = Steerd::start();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rng = Rng(0x5EED_1234_ABCD_0042);
    let base = common::query("api.infer.example.com.", RecordType::A, true, Some("10.2.3.0/24"));
    let base = hickory_proto::serialize::binary::BinEncodable::to_bytes(&base).expect("encode");
    for i in 0..3000 {
        let p: Vec<u8> = if i % 2 == 0 {
            let len = (rng.next() % 600) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            // Mutations of a valid query hit the deeper parsers.
            let mut p = base.clone();
            for _ in 0..=(rng.next() % 4) {
                let at = (rng.next() as usize) % p.len();
                p[at] = rng.next() as u8;
            }
            if rng.next().is_multiple_of(4) {
                p.truncate((rng.next() as usize) % p.len());
            }
            if p.len() > 2 {
                p[2] &= 0x7F;
            }
            p
        };
        sock.send_to(&p, s.dns).expect("send");
        // Over TCP too, now and then.
        if i % 100 == 0
            && p.len() >= 12
            && let Ok(mut t) = std::net::TcpStream::connect(s.dns)
        {
            use std::io::Write as _;
            let _ = t.write_all(&(p.len() as u16).to_be_bytes());
            let _ = t.write_all(&p);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let m = udp(
        s.dns,
        &query("api.infer.example.com.", RecordType::A, false, None),
    );
    assert_eq!(m.answers.len(), 1, "alive after 3000 random packets");
    let m = common::tcp(
        s.dns,
        &query("ns1.infer.example.com.", RecordType::A, false, None),
    );
    assert_eq!(m.answers.len(), 1, "TCP alive");
    assert!(s.get("/healthz", None).0 == 200);
}
