//! Writes a tiny `MaxMind` DB (format 2.0, IPv4 tree, 24-bit records) by hand, for `GeoIP` tests.

/// One value of the `MaxMind` data section.
#[derive(Debug, Clone)]
pub enum Val {
    Str(String),
    F64(f64),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'static str, Val)>),
    Arr(Vec<Val>),
}

fn ctrl(out: &mut Vec<u8>, ty: u8, size: usize) {
    let (first, ext) = if ty <= 7 {
        (ty << 5, None)
    } else {
        (0, Some(ty - 7))
    };
    let (sbits, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 285 {
        (29, vec![(size - 29) as u8])
    } else {
        let s = size - 285;
        (30, vec![(s >> 8) as u8, s as u8])
    };
    out.push(first | sbits);
    if let Some(e) = ext {
        out.push(e);
    }
    out.extend_from_slice(&extra);
}

fn uint(out: &mut Vec<u8>, ty: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    ctrl(out, ty, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

pub fn encode(v: &Val, out: &mut Vec<u8>) {
    match v {
        Val::Str(s) => {
            ctrl(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Val::F64(f) => {
            ctrl(out, 3, 8);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Val::U16(n) => uint(out, 5, u64::from(*n)),
        Val::U32(n) => uint(out, 6, u64::from(*n)),
        Val::U64(n) => uint(out, 9, *n),
        Val::Map(m) => {
            ctrl(out, 7, m.len());
            for (k, v) in m {
                encode(&Val::Str((*k).to_owned()), out);
                encode(v, out);
            }
        }
        Val::Arr(a) => {
            ctrl(out, 11, a.len());
            for v in a {
                encode(v, out);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// A City-style record.
#[must_use]
pub fn city(country: &str, continent: &str, lat: f64, lon: f64) -> Val {
    Val::Map(vec![
        (
            "continent",
            Val::Map(vec![("code", Val::Str(continent.to_owned()))]),
        ),
        (
            "country",
            Val::Map(vec![("iso_code", Val::Str(country.to_owned()))]),
        ),
        (
            "location",
            Val::Map(vec![("latitude", Val::F64(lat)), ("longitude", Val::F64(lon))]),
        ),
    ])
}

/// Builds a database mapping IPv4 prefixes (address, length) to records.
#[must_use]
pub fn build(entries: &[([u8; 4], u8, Val)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (addr, len, val) in entries {
        let off = data.len();
        encode(val, &mut data);
        let bits = u32::from_be_bytes(*addr);
        let mut cur = 0;
        for i in 0..*len {
            let bit = ((bits >> (31 - i)) & 1) as usize;
            if i + 1 == *len {
                nodes[cur][bit] = Rec::Data(off);
            } else {
                cur = if let Rec::Node(n) = nodes[cur][bit] {
                    n
                } else {
                    nodes.push([Rec::Empty, Rec::Empty]);
                    let n = nodes.len() - 1;
                    nodes[cur][bit] = Rec::Node(n);
                    n
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(i) => i,
                Rec::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let meta = Val::Map(vec![
        ("binary_format_major_version", Val::U16(2)),
        ("binary_format_minor_version", Val::U16(0)),
        ("build_epoch", Val::U64(1_700_000_000)),
        ("database_type", Val::Str("GeoLite2-City".into())),
        (
            "description",
            Val::Map(vec![("en", Val::Str("steer test database".into()))]),
        ),
        ("ip_version", Val::U16(4)),
        ("languages", Val::Arr(vec![Val::Str("en".into())])),
        ("node_count", Val::U32(count as u32)),
        ("record_size", Val::U16(24)),
    ]);
    encode(&meta, &mut out);
    out
}

/// A database that maps IPv4 networks (`"198.18.100.0/24"`) to countries (continent EU, location 0,0).
pub fn country_db(nets: &[(String, String)]) -> Result<Vec<u8>, String> {
    let mut entries = Vec::new();
    for (cidr, country) in nets {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr}: expected ADDR/LEN"))?;
        let addr: std::net::Ipv4Addr = addr.parse().map_err(|e| format!("{cidr}: {e}"))?;
        let len: u8 = len.parse().map_err(|e| format!("{cidr}: {e}"))?;
        entries.push((addr.octets(), len, city(country, "EU", 0.0, 0.0)));
    }
    Ok(build(&entries))
}
