//! Regions are numbered by their order in the policy; a set of them is one machine word.
//!
//! A bitmask keeps every engine stage allocation-free and makes the trace `Copy`.

/// Policies may name at most this many regions (one bit each in a [`RegionSet`]).
pub const REGIONS_MAX: usize = 64;

/// Index of a region in [`crate::Policy::regions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionId(pub u8);

impl RegionId {
    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of regions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RegionSet(pub u64);

impl RegionSet {
    pub const EMPTY: RegionSet = RegionSet(0);

    #[must_use]
    pub fn single(r: RegionId) -> RegionSet {
        RegionSet(1 << r.0)
    }

    #[must_use]
    pub fn from_ids(ids: &[RegionId]) -> RegionSet {
        ids.iter().fold(RegionSet::EMPTY, |s, &r| s.with(r))
    }

    #[must_use]
    pub fn with(self, r: RegionId) -> RegionSet {
        RegionSet(self.0 | (1 << r.0))
    }

    #[must_use]
    pub fn without(self, r: RegionId) -> RegionSet {
        RegionSet(self.0 & !(1 << r.0))
    }

    #[must_use]
    pub fn contains(self, r: RegionId) -> bool {
        self.0 & (1 << r.0) != 0
    }

    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    #[must_use]
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    #[must_use]
    pub fn intersect(self, other: RegionSet) -> RegionSet {
        RegionSet(self.0 & other.0)
    }

    #[must_use]
    pub fn union(self, other: RegionSet) -> RegionSet {
        RegionSet(self.0 | other.0)
    }

    #[must_use]
    pub fn minus(self, other: RegionSet) -> RegionSet {
        RegionSet(self.0 & !other.0)
    }

    /// Regions in ascending id order.
    pub fn iter(self) -> impl Iterator<Item = RegionId> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            Some(RegionId(i as u8))
        })
    }
}

impl std::fmt::Debug for RegionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter().map(|r| r.0)).finish()
    }
}
