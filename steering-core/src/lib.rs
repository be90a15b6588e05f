//! Pure steering decisions for steer.
//!
//! Values in (a compiled [`policy::Policy`], [`telemetry::Telemetry`], [`region_health::HealthState`],
//! `now` and a seed), values out (an [`engine::Decision`] and its [`engine::Trace`]).
//!
//! Architecture invariant: this crate does no IO, spawns nothing, reads no clock and knows nothing of
//! tokio, hickory, aya or sockets. Every bound is a named constant.

pub mod engine;
pub mod explain;
pub mod geo;
pub mod policy;
pub mod prefix;
pub mod region_health;
pub mod region_set;
pub mod telemetry;
pub mod time;

pub use engine::{Decision, Query, Snapshot};
pub use policy::Policy;
pub use region_set::{RegionId, RegionSet};
pub use time::UnixMs;
