//! The snapshot's RTT table: one row per client prefix (measured and covering), one cell per region.
//!
//! Rows live in one flat `Vec<u32>` so that a lookup is one hash probe and one slice.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::prefix::Prefix;

/// A cell with no data.
pub(crate) const NO_RTT: u32 = u32::MAX;

/// A fast hasher for [`Prefix`] keys (which are already well spread in their low bits after mixing).
/// The table is rebuilt from scratch on every tick and keys come from authenticated probes, so
/// `HashDoS` resistance is not needed here.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        crate::engine::mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0 ^ i).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

pub(crate) type PrefixMap<V> = HashMap<Prefix, V, BuildHasherDefault<PrefixHasher>>;

/// Per (prefix, region) RTT in microseconds, plus the region each prefix was last steered to.
#[derive(Debug, Clone, Default)]
pub(crate) struct RttTable {
    /// Regions per row.
    pub(crate) width: usize,
    pub(crate) index: PrefixMap<u32>,
    pub(crate) cells: Vec<u32>,
    /// Per row: the region chosen for this prefix in the previous snapshot (`u8::MAX` = none).
    pub(crate) sticky: Vec<u8>,
}

impl RttTable {
    pub(crate) fn new(width: usize) -> RttTable {
        RttTable {
            width,
            ..RttTable::default()
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn row_mut(&mut self, p: Prefix) -> usize {
        let next = self.index.len() as u32;
        let row = *self.index.entry(p).or_insert(next) as usize;
        if row == self.cells.len() / self.width.max(1) {
            self.cells.extend(std::iter::repeat_n(NO_RTT, self.width));
            self.sticky.push(u8::MAX);
        }
        row
    }

    pub(crate) fn get(&self, p: &Prefix) -> Option<(usize, &[u32])> {
        let row = *self.index.get(p)? as usize;
        Some((row, &self.cells[row * self.width..(row + 1) * self.width]))
    }
}
