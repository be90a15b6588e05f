//! Client prefixes: the key under which RTT is measured and looked up.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Address family of a query (A = V4, AAAA = V6) or of a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    #[must_use]
    pub fn max_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The prefix length at which RTT is measured (a /24 or a /56, as the probes key it).
    #[must_use]
    pub fn measured_len(self) -> u8 {
        match self {
            Family::V4 => 24,
            Family::V6 => 56,
        }
    }

    /// The covering prefix length used when the measured prefix has no data.
    #[must_use]
    pub fn covering_len(self) -> u8 {
        match self {
            Family::V4 => 16,
            Family::V6 => 40,
        }
    }
}

/// A masked address prefix. Bits beyond `len` are always zero, so equal prefixes compare equal.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    family: Family,
    len: u8,
    /// The address bits, left-aligned in a u128 for IPv6 and right-aligned in the low 32 bits for IPv4.
    bits: u128,
}

/// Why a prefix string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The text was not `ADDRESS/LEN`.
    #[error("expected ADDRESS/LEN, got {0:?}")]
    Syntax(String),
    /// The length is longer than the family allows.
    #[error("prefix length {len} is longer than {max}")]
    TooLong { len: u8, max: u8 },
    /// Bits were set beyond the prefix length.
    #[error("{0} has host bits set")]
    HostBits(String),
}

fn mask(family: Family, bits: u128, len: u8) -> u128 {
    let width = u32::from(family.max_len());
    if len == 0 {
        return 0;
    }
    let keep = u128::MAX << (width - u32::from(len));
    let width_mask = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    bits & keep & width_mask
}

impl Prefix {
    /// The prefix of length `len` that contains `addr` (`len` is clamped to the family's width).
    #[must_use]
    pub fn of(addr: IpAddr, len: u8) -> Prefix {
        let (family, bits) = match addr {
            IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
            IpAddr::V6(a) => (Family::V6, u128::from(a)),
        };
        let len = len.min(family.max_len());
        Prefix {
            family,
            len,
            bits: mask(family, bits, len),
        }
    }

    #[must_use]
    pub fn family(&self) -> Family {
        self.family
    }

    #[must_use]
    #[allow(
        clippy::len_without_is_empty,
        reason = "the length of a prefix, not of a container"
    )]
    pub fn len(&self) -> u8 {
        self.len
    }

    #[must_use]
    pub fn bits(&self) -> u128 {
        self.bits
    }

    /// The same prefix cut to `len` bits (no-op if already shorter).
    #[must_use]
    pub fn truncate(self, len: u8) -> Prefix {
        let len = len.min(self.len);
        Prefix {
            family: self.family,
            len,
            bits: mask(self.family, self.bits, len),
        }
    }

    /// Whether `addr` lies inside this prefix.
    #[must_use]
    pub fn contains(&self, addr: IpAddr) -> bool {
        let p = Prefix::of(addr, self.len);
        p == *self
    }

    #[must_use]
    pub fn network(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(self.bits as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.bits)),
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::Syntax(s.to_owned()))?;
        let addr: IpAddr = addr.parse().map_err(|_| PrefixError::Syntax(s.to_owned()))?;
        let len: u8 = len.parse().map_err(|_| PrefixError::Syntax(s.to_owned()))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if len > max {
            return Err(PrefixError::TooLong { len, max });
        }
        let p = Prefix::of(addr, len);
        if p.network() != addr {
            return Err(PrefixError::HostBits(s.to_owned()));
        }
        Ok(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_mask() {
        let p: Prefix = "198.18.1.0/24".parse().unwrap();
        assert_eq!(p.to_string(), "198.18.1.0/24");
        assert_eq!(p.truncate(16).to_string(), "198.18.0.0/16");
        assert!(p.contains("198.18.1.77".parse().unwrap()));
        assert!(!p.contains("198.18.2.1".parse().unwrap()));
        assert_eq!(
            "198.18.1.1/24".parse::<Prefix>(),
            Err(PrefixError::HostBits("198.18.1.1/24".into()))
        );
        assert!(matches!(
            "1.2.3.0/33".parse::<Prefix>(),
            Err(PrefixError::TooLong { .. })
        ));
        let v6: Prefix = "2001:db8:100:200::/56".parse().unwrap();
        assert_eq!(v6.truncate(40).to_string(), "2001:db8:100::/40");
        assert_eq!(
            Prefix::of("10.1.2.3".parse().unwrap(), 0).to_string(),
            "0.0.0.0/0"
        );
    }
}
