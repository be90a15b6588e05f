//! Client prefix keys: the address of a peer masked to a configurable length (/24 and /56 by
//! default), the unit at which RTT is measured and surge admission is limited.

use crate::{AF_INET, AF_INET6, PORTS_MAX};

/// Default prefix length for IPv4 clients.
pub const V4_PREFIX_LEN_DEFAULT: u8 = 24;
/// Default prefix length for IPv6 clients.
pub const V6_PREFIX_LEN_DEFAULT: u8 = 56;

/// Key of the RTT map and of the per-prefix limiter: family, prefix length and masked address.
///
/// `addr` holds the address in network byte order; IPv4 uses the first 4 bytes. Bits beyond `len`
/// are zero, so equal prefixes have equal keys.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PrefixKey {
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// Prefix length in bits.
    pub len: u8,
    /// Explicit padding (always zero) so the key has no uninitialised bytes.
    pub pad: [u8; 2],
    /// Masked address, network byte order.
    pub addr: [u8; 16],
}

#[inline(always)]
fn mask_byte(len: u8, index: usize) -> u8 {
    let start = (index as u32) * 8;
    let len = u32::from(len);
    if len >= start + 8 {
        0xff
    } else if len <= start {
        0
    } else {
        // 1..=7 bits of this byte are kept.
        0xffu8 << (8 - (len - start))
    }
}

impl PrefixKey {
    /// The /`len` prefix (clamped to 32) containing the IPv4 address `addr` (network byte order).
    #[inline(always)]
    #[must_use]
    pub fn v4(addr: [u8; 4], len: u8) -> PrefixKey {
        let len = if len > 32 { 32 } else { len };
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            out[i] = addr[i] & mask_byte(len, i);
            i += 1;
        }
        PrefixKey {
            family: AF_INET,
            len,
            pad: [0; 2],
            addr: out,
        }
    }

    /// The prefix containing the IPv6 address `addr` (network byte order): an IPv4-mapped address
    /// (`::ffff:a.b.c.d`, dual-stack sockets) is keyed as IPv4 with `v4_len`, anything else as IPv6
    /// with `v6_len` (clamped to 128).
    #[inline(always)]
    #[must_use]
    pub fn v6(addr: [u8; 16], v4_len: u8, v6_len: u8) -> PrefixKey {
        if is_v4_mapped(&addr) {
            return PrefixKey::v4([addr[12], addr[13], addr[14], addr[15]], v4_len);
        }
        let len = if v6_len > 128 { 128 } else { v6_len };
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            out[i] = addr[i] & mask_byte(len, i);
            i += 1;
        }
        PrefixKey {
            family: AF_INET6,
            len,
            pad: [0; 2],
            addr: out,
        }
    }

    /// The IPv4 network address if this is an IPv4 key.
    #[must_use]
    pub fn v4_addr(&self) -> Option<[u8; 4]> {
        (self.family == AF_INET).then(|| [self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
    }
}

#[inline(always)]
fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
}

/// The slot of `port` in a port list (0 is never a port and never matches).
#[inline(always)]
#[must_use]
pub fn port_slot(ports: &[u16; PORTS_MAX], port: u16) -> Option<usize> {
    if port == 0 {
        return None;
    }
    let mut i = 0;
    while i < PORTS_MAX {
        if ports[i] == port {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Configuration of the `sock_ops` "rtt" program (one entry of an Array map, written by the agent).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProbeConfig {
    /// Local ports whose connections are measured; 0 = unused slot. All zero = nothing watched.
    pub ports: [u16; PORTS_MAX],
    /// Prefix length of IPv4 client keys.
    pub v4_len: u8,
    /// Prefix length of IPv6 client keys.
    pub v6_len: u8,
    /// Explicit padding, zero.
    pub pad: [u8; 2],
}

impl ProbeConfig {
    /// Watch `ports` (at most [`PORTS_MAX`]; the rest are ignored) with the default prefix lengths.
    #[must_use]
    pub fn new(ports: &[u16]) -> ProbeConfig {
        ProbeConfig {
            ports: ports_array(ports),
            v4_len: V4_PREFIX_LEN_DEFAULT,
            v6_len: V6_PREFIX_LEN_DEFAULT,
            pad: [0; 2],
        }
    }
}

/// The first [`PORTS_MAX`] entries of `ports` in a fixed array, 0-padded.
#[must_use]
pub fn ports_array(ports: &[u16]) -> [u16; PORTS_MAX] {
    let mut out = [0u16; PORTS_MAX];
    for (slot, port) in out.iter_mut().zip(ports) {
        *slot = *port;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_is_masked_to_the_configured_length() {
        let k = PrefixKey::v4([198, 18, 7, 200], 24);
        assert_eq!((k.family, k.len), (AF_INET, 24));
        assert_eq!(&k.addr[..4], &[198, 18, 7, 0]);
        assert_eq!(&k.addr[4..], &[0; 12]);
        assert_eq!(PrefixKey::v4([198, 18, 7, 200], 20).addr[..4], [198, 18, 0, 0]);
        assert_eq!(PrefixKey::v4([198, 18, 7, 255], 31).addr[..4], [198, 18, 7, 254]);
        assert_eq!(PrefixKey::v4([1, 2, 3, 4], 0).addr[..4], [0; 4]);
        assert_eq!(PrefixKey::v4([1, 2, 3, 4], 40).len, 32, "length is clamped");
        assert_eq!(PrefixKey::v4([1, 2, 3, 4], 40).addr[..4], [1, 2, 3, 4]);
    }

    #[test]
    fn same_prefix_same_key() {
        assert_eq!(
            PrefixKey::v4([10, 0, 0, 1], 24),
            PrefixKey::v4([10, 0, 0, 254], 24)
        );
        assert_ne!(PrefixKey::v4([10, 0, 0, 1], 24), PrefixKey::v4([10, 0, 1, 1], 24));
    }

    #[test]
    fn v6_is_masked_to_56_and_mapped_v4_becomes_v4() {
        let a = [
            0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78, 0x9a, 0, 0, 0, 0, 0, 0, 1,
        ];
        let k = PrefixKey::v6(a, 24, 56);
        assert_eq!((k.family, k.len), (AF_INET6, 56));
        assert_eq!(&k.addr[..7], &a[..7]);
        assert_eq!(&k.addr[7..], &[0; 9]);
        let k = PrefixKey::v6(a, 24, 60);
        assert_eq!(k.addr[7], 0x70, "half a byte kept");

        let mut m = [0u8; 16];
        m[10] = 0xff;
        m[11] = 0xff;
        m[12..].copy_from_slice(&[198, 18, 3, 9]);
        assert_eq!(PrefixKey::v6(m, 24, 56), PrefixKey::v4([198, 18, 3, 9], 24));
    }

    #[test]
    fn port_slots() {
        let ports = ports_array(&[8000, 443]);
        assert_eq!(port_slot(&ports, 443), Some(1));
        assert_eq!(port_slot(&ports, 8000), Some(0));
        assert_eq!(port_slot(&ports, 80), None);
        assert_eq!(port_slot(&ports, 0), None, "0 marks unused slots, never a port");
        assert_eq!(
            ports_array(&[1, 2, 3, 4, 5, 6, 7, 8, 9]),
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
    }
}
