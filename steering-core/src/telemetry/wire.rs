//! Telemetry protocol v1, probe -> steerd: `POST /v1/reports` with a [`Report`], answered by a [`ReportReply`].
//!
//! These are the wire types; [`super::Telemetry::ingest`] validates them against the policy and bounds.

use serde::{Deserialize, Serialize};

use crate::prefix::Prefix;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// A report body larger than this is rejected before parsing.
pub const REPORT_BYTES_MAX: usize = 1 << 20;
/// At most this many RTT entries per report.
pub const PREFIXES_PER_REPORT_MAX: usize = 4096;
/// At most this many health checks per report.
pub const CHECKS_PER_REPORT_MAX: usize = 32;
/// Host names longer than this are rejected.
pub const HOST_NAME_BYTES_MAX: usize = 253;

/// One probe's report for one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The region the host belongs to (a policy region name).
    pub region: String,
    /// The host's stable name (node name).
    pub host: String,
    /// Increases by one per report from a running agent; a restart may begin again at 0.
    pub seq: u64,
    /// The agent's clock when it sent the report.
    pub sent_at_ms: u64,
    /// The agent's report interval.
    pub interval_ms: u32,
    pub health: HealthReport,
    pub load: LoadReport,
    pub gate: GateReport,
    /// RTT measured by the kernel probe during this interval, per client prefix.
    #[serde(default)]
    pub rtt: Vec<RttReport>,
}

/// Result of the agent's health checks of the local inference server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    /// Overall verdict: every check passed.
    pub ok: bool,
    #[serde(default)]
    pub checks: Vec<CheckReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckReport {
    pub name: String,
    pub ok: bool,
    /// How long the check took.
    #[serde(default)]
    pub latency_ms: u32,
    /// Why it failed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Load of the local inference server (from its Prometheus metrics) and of the host.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadReport {
    /// Requests waiting for a slot (vLLM `vllm:num_requests_waiting`).
    pub queue_depth: u32,
    /// KV-cache use, 0..=1.
    pub kv_cache_usage: f64,
    /// Established connections to the watched ports (from the kernel probe).
    pub active_connections: u32,
}

/// Gate mode of the XDP program on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    /// Every packet passes.
    Open,
    /// New flows (TCP SYN) are dropped; established flows pass.
    Drain,
    /// New flows are admitted at a limited, rising rate.
    Surge,
}

/// Gate counters: deltas since the previous report (the kernel keeps them monotonic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateReport {
    pub mode: GateMode,
    pub syn_seen: u64,
    pub syn_admitted: u64,
    pub syn_dropped: u64,
}

/// RTT of one client prefix during one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RttReport {
    /// The client prefix (a /24 or /56 as the probe keys it).
    pub prefix: Prefix,
    /// RTT samples in the interval (0 entries are not sent).
    pub samples: u32,
    pub srtt_us_p50: u32,
    pub srtt_us_p90: u32,
    pub srtt_us_min: u32,
    /// Retransmits counted in the interval.
    #[serde(default)]
    pub retrans: u32,
}

/// steerd's answer to a report: the gate state it wants for the host's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportReply {
    pub gate: GateCommand,
    /// The interval steerd wants reports at.
    pub interval_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateCommand {
    pub mode: GateMode,
    /// Admission rate for new flows in surge mode (per host); 0 otherwise.
    pub rate_per_s: u32,
    /// Burst of new flows admitted at once in surge mode; 0 otherwise.
    pub burst: u32,
}
