//! Time as a value: callers pass `now`, nothing here reads a clock.

use std::time::Duration;

/// Milliseconds since the Unix epoch. The only notion of "now" steering-core knows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct UnixMs(pub u64);

impl UnixMs {
    /// The time `d` after `self`, saturating.
    #[must_use]
    pub fn plus(self, d: Duration) -> UnixMs {
        UnixMs(self.0.saturating_add(d.as_millis() as u64))
    }

    /// How long ago `earlier` was, zero if it lies in the future.
    #[must_use]
    pub fn since(self, earlier: UnixMs) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
