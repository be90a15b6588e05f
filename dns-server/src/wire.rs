//! The DNS wire format, by hand, for the hot path: parse a query's header, question and OPT (with ECS)
//! from the datagram and write an answer into a caller's buffer. Nothing here allocates.
//!
//! Everything that is not a well-formed query for a steered name goes to hickory-server; this module
//! only decides that (and answers FORMERR and BADVERS itself, since it has already found the problem).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// DNS header length.
pub const HEADER_LEN: usize = 12;
/// The longest name on the wire (RFC 1035 2.3.4).
pub const NAME_BYTES_MAX: usize = 255;
/// The UDP payload size steerd advertises and the most it sends over UDP (DNS flag day 2020).
pub const UDP_PAYLOAD_MAX: u16 = 1232;
/// The size of a UDP response to a query without EDNS (RFC 1035).
pub const UDP_PAYLOAD_LEGACY: u16 = 512;
/// Additional records looked at in a query; more is a FORMERR.
pub const ADDITIONALS_MAX: u16 = 4;
/// EDNS options looked at in one OPT record.
pub const EDNS_OPTIONS_MAX: usize = 16;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_HINFO: u16 = 13;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
const OPT_ECS: u16 = 8;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
/// BADVERS is 16: its upper 8 bits go into the OPT record's extended RCODE.
pub const RCODE_BADVERS: u16 = 16;

/// An ECS option of a query (RFC 7871 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    /// The address, with the bits beyond `source_len` zero.
    pub addr: IpAddr,
    pub source_len: u8,
}

impl Ecs {
    fn family(&self) -> u16 {
        match self.addr {
            IpAddr::V4(_) => 1,
            IpAddr::V6(_) => 2,
        }
    }
}

/// EDNS of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub udp_payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    pub ecs: Option<Ecs>,
}

/// A well-formed standard query with exactly one question.
#[derive(Debug, Clone, Copy)]
pub struct Parsed<'a> {
    pub id: u16,
    /// The query's flags word (opcode, RD, CD are copied from it).
    pub flags: u16,
    /// The question name as it came on the wire (labels, case preserved, ending in the root label).
    pub qname_wire: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Parsed<'_> {
    #[must_use]
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }

    /// The largest response that may be sent over UDP for this query.
    #[must_use]
    pub fn udp_limit(&self) -> usize {
        usize::from(self.edns.map_or(UDP_PAYLOAD_LEGACY, |e| {
            e.udp_payload.clamp(UDP_PAYLOAD_LEGACY, UDP_PAYLOAD_MAX)
        }))
    }

    /// Writes the question name in presentation form, lower case, without the trailing dot, into
    /// `out`; `None` when a label holds a byte that presentation form would escape (such names are
    /// never steered).
    pub fn qname_lower<'b>(&self, out: &'b mut [u8; NAME_BYTES_MAX]) -> Option<&'b [u8]> {
        let mut n = 0;
        let mut i = 0;
        let w = self.qname_wire;
        while w[i] != 0 {
            let len = usize::from(w[i]);
            if n > 0 {
                out[n] = b'.';
                n += 1;
            }
            for &b in &w[i + 1..=i + len] {
                if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*') {
                    return None;
                }
                out[n] = b.to_ascii_lowercase();
                n += 1;
            }
            i += len + 1;
        }
        Some(&out[..n])
    }
}

/// What to do with a datagram that is not a well-formed query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not worth an answer: shorter than a header, or a response.
    Drop,
    /// Answer FORMERR (RFC 1035) echoing the id and flags.
    FormErr { id: u16, flags: u16 },
    /// An EDNS version this server does not speak (RFC 6891 6.1.3).
    BadVers { id: u16, flags: u16, udp_payload: u16 },
    /// Well-formed enough, but not a plain query (opcode, counts, TSIG...): hickory decides.
    NotPlain,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Skips a name in the question: labels only (a compression pointer in a query's question is
/// refused as malformed; no resolver sends one). Returns the offset after the name.
fn skip_question_name(b: &[u8], mut i: usize) -> Option<usize> {
    let start = i;
    loop {
        let len = *b.get(i)?;
        if len == 0 {
            return Some(i + 1);
        }
        if len & 0xC0 != 0 {
            return None;
        }
        i += 1 + usize::from(len);
        if i - start > NAME_BYTES_MAX - 1 || i > b.len() {
            return None;
        }
    }
}

/// Parses one query datagram.
pub fn parse(b: &[u8]) -> Result<Parsed<'_>, Reject> {
    if b.len() < HEADER_LEN {
        return Err(Reject::Drop);
    }
    let id = u16::from_be_bytes([b[0], b[1]]);
    let flags = u16::from_be_bytes([b[2], b[3]]);
    if flags & 0x8000 != 0 {
        return Err(Reject::Drop);
    }
    let formerr = Reject::FormErr { id, flags };
    let qd = u16::from_be_bytes([b[4], b[5]]);
    let an = u16::from_be_bytes([b[6], b[7]]);
    let ns = u16::from_be_bytes([b[8], b[9]]);
    let ar = u16::from_be_bytes([b[10], b[11]]);
    let opcode = (flags >> 11) & 0xF;
    if opcode != 0 || an != 0 || ns != 0 {
        return Err(Reject::NotPlain);
    }
    if qd != 1 || ar > ADDITIONALS_MAX {
        return Err(formerr);
    }
    let qend = skip_question_name(b, HEADER_LEN).ok_or(formerr)?;
    let qtype = u16_at(b, qend).ok_or(formerr)?;
    let qclass = u16_at(b, qend + 2).ok_or(formerr)?;
    let mut i = qend + 4;
    let mut edns = None;
    for _ in 0..ar {
        // An OPT record's owner is the root; anything else (TSIG, SIG(0)) is for hickory.
        if *b.get(i).ok_or(formerr)? != 0 {
            return Err(Reject::NotPlain);
        }
        let rtype = u16_at(b, i + 1).ok_or(formerr)?;
        let class = u16_at(b, i + 3).ok_or(formerr)?;
        let ttl_hi = u16_at(b, i + 5).ok_or(formerr)?;
        let ttl_lo = u16_at(b, i + 7).ok_or(formerr)?;
        let rdlen = usize::from(u16_at(b, i + 9).ok_or(formerr)?);
        let rdata = b.get(i + 11..i + 11 + rdlen).ok_or(formerr)?;
        i += 11 + rdlen;
        if rtype != TYPE_OPT {
            return Err(Reject::NotPlain);
        }
        if edns.is_some() {
            // RFC 6891 6.1.1: more than one OPT record is FORMERR.
            return Err(formerr);
        }
        let version = (ttl_hi & 0xFF) as u8;
        let ecs = parse_options(rdata).map_err(|Malformed| formerr)?;
        edns = Some(Edns {
            udp_payload: class,
            version,
            dnssec_ok: ttl_lo & 0x8000 != 0,
            ecs,
        });
    }
    if i != b.len() {
        return Err(formerr);
    }
    if let Some(e) = edns
        && e.version != 0
    {
        return Err(Reject::BadVers {
            id,
            flags,
            udp_payload: e.udp_payload,
        });
    }
    Ok(Parsed {
        id,
        flags,
        qname_wire: &b[HEADER_LEN..qend],
        qtype,
        qclass,
        edns,
    })
}

/// An OPT record's options do not parse.
struct Malformed;

/// Parses the options of an OPT record. Returns the ECS option, if any.
fn parse_options(mut rd: &[u8]) -> Result<Option<Ecs>, Malformed> {
    let mut ecs = None;
    let mut count = 0;
    while !rd.is_empty() {
        count += 1;
        if count > EDNS_OPTIONS_MAX {
            return Err(Malformed);
        }
        let code = u16_at(rd, 0).ok_or(Malformed)?;
        let len = usize::from(u16_at(rd, 2).ok_or(Malformed)?);
        let data = rd.get(4..4 + len).ok_or(Malformed)?;
        rd = &rd[4 + len..];
        if code == OPT_ECS {
            if ecs.is_some() {
                return Err(Malformed);
            }
            ecs = Some(parse_ecs(data).ok_or(Malformed)?);
        }
    }
    Ok(ecs)
}

/// RFC 7871 6 and 7.1.1: family 1 or 2, SOURCE within the family, SCOPE zero in queries, exactly
/// ceil(SOURCE/8) address bytes and no bits set beyond SOURCE. Anything else is FORMERR.
fn parse_ecs(d: &[u8]) -> Option<Ecs> {
    let family = u16_at(d, 0)?;
    let source = *d.get(2)?;
    let scope = *d.get(3)?;
    let addr = &d[4..];
    let width: u8 = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source > width || scope != 0 || addr.len() != usize::from(source.div_ceil(8)) {
        return None;
    }
    if source % 8 != 0 {
        let last = addr[addr.len() - 1];
        if last & (0xFF >> (source % 8)) != 0 {
            return None;
        }
    }
    let addr = if family == 1 {
        let mut o = [0u8; 4];
        o[..addr.len()].copy_from_slice(addr);
        IpAddr::V4(Ipv4Addr::from(o))
    } else {
        let mut o = [0u8; 16];
        o[..addr.len()].copy_from_slice(addr);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    Some(Ecs {
        addr,
        source_len: source,
    })
}

/// Writes a response into a fixed buffer. Writes past the end are recorded, not performed, so that
/// the caller can detect that a response does not fit and truncate.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
    limit: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8], limit: usize) -> Writer<'a> {
        let limit = limit.min(buf.len());
        Writer {
            buf,
            len: 0,
            limit,
            overflow: false,
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[must_use]
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn put(&mut self, b: &[u8]) {
        if self.overflow || self.len + b.len() > self.limit {
            self.overflow = true;
            return;
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    pub fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    pub fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    /// Rewinds to `len` (to drop a section that did not fit).
    pub fn truncate(&mut self, len: usize) {
        self.len = len.min(self.len);
        self.overflow = false;
    }

    pub fn set_u16(&mut self, at: usize, v: u16) {
        if at + 2 <= self.len {
            self.buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// The response flags word: QR, the query's opcode, AA, the query's RD and CD, and `rcode`.
#[must_use]
pub fn response_flags(query_flags: u16, aa: bool, tc: bool, rcode: u8) -> u16 {
    let mut f = 0x8000 | (query_flags & 0x7800) | (query_flags & 0x0100) | (query_flags & 0x0010);
    if aa {
        f |= 0x0400;
    }
    if tc {
        f |= 0x0200;
    }
    f | u16::from(rcode & 0xF)
}

/// Writes a header.
pub fn header(w: &mut Writer<'_>, id: u16, flags: u16, counts: [u16; 4]) {
    w.u16(id);
    w.u16(flags);
    for c in counts {
        w.u16(c);
    }
}

/// Writes an OPT record advertising our payload size; `ecs` is echoed with `scope`.
pub fn opt(w: &mut Writer<'_>, ext_rcode: u8, dnssec_ok: bool, ecs: Option<(Ecs, u8)>) {
    w.u8(0);
    w.u16(TYPE_OPT);
    w.u16(UDP_PAYLOAD_MAX);
    w.u8(ext_rcode);
    w.u8(0);
    w.u16(if dnssec_ok { 0x8000 } else { 0 });
    match ecs {
        None => w.u16(0),
        Some((e, scope)) => {
            let n = usize::from(e.source_len.div_ceil(8));
            w.u16((8 + n) as u16);
            ecs_option(w, e, scope);
        }
    }
}

/// Writes one ECS option (code, length and data): family and source from the query, `scope` ours.
pub fn ecs_option(w: &mut Writer<'_>, e: Ecs, scope: u8) {
    let n = usize::from(e.source_len.div_ceil(8));
    w.u16(OPT_ECS);
    w.u16((4 + n) as u16);
    w.u16(e.family());
    w.u8(e.source_len);
    w.u8(scope);
    match e.addr {
        IpAddr::V4(a) => w.put(&a.octets()[..n]),
        IpAddr::V6(a) => w.put(&a.octets()[..n]),
    }
}

/// An error response (FORMERR, BADVERS...) with the question echoed when there is one.
pub fn error_response(w: &mut Writer<'_>, query: &[u8], reject: Reject) -> bool {
    let (id, flags, rcode, edns) = match reject {
        Reject::Drop | Reject::NotPlain => return false,
        Reject::FormErr { id, flags } => (id, flags, RCODE_FORMERR, None),
        Reject::BadVers { id, flags, .. } => (id, flags, 0, Some((RCODE_BADVERS >> 4) as u8)),
    };
    // Echo the question only when it parses; a FORMERR for a broken question has none.
    let question = skip_question_name(query, HEADER_LEN)
        .filter(|&e| e + 4 <= query.len() && u16::from_be_bytes([query[4], query[5]]) == 1)
        .map(|e| &query[HEADER_LEN..e + 4]);
    let counts = [u16::from(question.is_some()), 0, 0, u16::from(edns.is_some())];
    header(w, id, response_flags(flags, false, false, rcode), counts);
    if let Some(q) = question {
        w.put(q);
    }
    if let Some(ext) = edns {
        opt(w, ext, false, None);
    }
    !w.overflowed()
}

/// Adds an ECS option (scope 0: the answer does not depend on the client) to the OPT record of an
/// encoded response, when the response ends with one. Used on hickory's answers, which know no ECS.
/// Returns false (and leaves the response alone) when it cannot.
pub fn append_ecs_scope0(resp: &mut Vec<u8>, e: Ecs, limit: usize) -> bool {
    let Some(opt_at) = last_record_offset(resp) else {
        return false;
    };
    if resp.get(opt_at) != Some(&0) || u16_at(resp, opt_at + 1) != Some(TYPE_OPT) {
        return false;
    }
    let mut tmp = [0u8; 32];
    let mut w = Writer::new(&mut tmp, 32);
    ecs_option(&mut w, e, 0);
    let add = w.len();
    if resp.len() + add > limit {
        return false;
    }
    let Some(rdlen) = u16_at(resp, opt_at + 9) else {
        return false;
    };
    let new = rdlen as usize + add;
    resp[opt_at + 9..opt_at + 11].copy_from_slice(&(new as u16).to_be_bytes());
    resp.extend_from_slice(w.bytes());
    true
}

/// Skips any name (labels and pointers) inside a message. Bounded by the message length.
fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    for _ in 0..=NAME_BYTES_MAX {
        let len = *b.get(i)?;
        if len == 0 {
            return Some(i + 1);
        }
        if len & 0xC0 == 0xC0 {
            return (i + 2 <= b.len()).then_some(i + 2);
        }
        i += 1 + usize::from(len);
    }
    None
}

/// The offset of the last resource record of an encoded message.
fn last_record_offset(b: &[u8]) -> Option<usize> {
    let qd = u16_at(b, 4)?;
    let total = u32::from(u16_at(b, 6)?) + u32::from(u16_at(b, 8)?) + u32::from(u16_at(b, 10)?);
    let mut i = HEADER_LEN;
    for _ in 0..qd {
        i = skip_name(b, i)? + 4;
    }
    let mut last = None;
    for _ in 0..total {
        last = Some(i);
        let e = skip_name(b, i)?;
        let rdlen = usize::from(u16_at(b, e + 8)?);
        i = e + 10 + rdlen;
    }
    (i == b.len()).then_some(last?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, opt: Option<&[u8]>) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some(rd) = opt {
            q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0]);
            q.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            q.extend_from_slice(rd);
        }
        q
    }

    #[test]
    fn parses_a_query_with_ecs() {
        let q = query(
            b"\x03Api\x05infer\x07example\x03com\x00",
            TYPE_A,
            Some(&[0, 8, 0, 7, 0, 1, 24, 0, 10, 2, 3]),
        );
        let p = parse(&q).expect("parses");
        assert_eq!(p.qtype, TYPE_A);
        let mut buf = [0u8; NAME_BYTES_MAX];
        assert_eq!(p.qname_lower(&mut buf), Some(&b"api.infer.example.com"[..]));
        let e = p.edns.expect("edns").ecs.expect("ecs");
        assert_eq!(e.source_len, 24);
        assert_eq!(e.addr, IpAddr::V4(Ipv4Addr::new(10, 2, 3, 0)));
    }

    #[test]
    fn malformed_ecs_is_formerr() {
        for bad in [
            &[0, 8, 0, 7, 0, 3, 24, 0, 10, 2, 3][..], // family 3
            &[0, 8, 0, 7, 0, 1, 24, 8, 10, 2, 3],     // scope set in a query
            &[0, 8, 0, 6, 0, 1, 24, 0, 10, 2],        // too few address bytes
            &[0, 8, 0, 7, 0, 1, 20, 0, 10, 2, 3],     // too many address bytes
            &[0, 8, 0, 7, 0, 1, 23, 0, 10, 2, 3],     // bits beyond source
            &[0, 8, 0, 4, 0, 1, 33, 0],               // source too long
            &[0, 8, 0, 9, 0, 1],                      // option overruns
        ] {
            let q = query(b"\x01a\x00", TYPE_A, Some(bad));
            assert!(matches!(parse(&q), Err(Reject::FormErr { .. })), "{bad:?}");
        }
    }

    #[test]
    fn broken_names_are_formerr() {
        for name in [&b"\x05ab"[..], b"\xc0\x0c", b"\x40aaaa\x00", b"\x01a"] {
            let q = query(name, TYPE_A, None);
            assert!(matches!(parse(&q), Err(Reject::FormErr { .. })), "{name:?}");
        }
        assert_eq!(parse(&[0; 5]).unwrap_err(), Reject::Drop);
    }

    #[test]
    fn appends_ecs_to_a_response_opt() {
        let mut r = query(b"\x01a\x00", TYPE_A, Some(&[]));
        r[2] |= 0x80;
        let e = Ecs {
            addr: IpAddr::V4(Ipv4Addr::new(10, 2, 3, 0)),
            source_len: 24,
        };
        assert!(append_ecs_scope0(&mut r, e, 512));
        let mut q = r.clone();
        q[2] &= 0x7F;
        let p = parse(&q).expect("still parses");
        assert_eq!(p.edns.and_then(|e| e.ecs), Some(e));
    }
}
