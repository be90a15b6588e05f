//! The admin listener: ingest (`POST /v1/reports`), state, explain, drains, health and metrics.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use steering_core::prefix::{Family, Prefix};
use steering_core::region_health::SurgeRamp;
use steering_core::telemetry::IngestError;
use steering_core::telemetry::wire::{REPORT_BYTES_MAX, Report, ReportReply};

use crate::metrics::Scrape;
use crate::state::{Shared, now_ms};
use crate::tokens::Principal;

/// The report interval steerd asks probes for.
pub const REPORT_INTERVAL_MS: u32 = 1000;

type S = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/reports", post(report))
        .route("/v1/state", get(state))
        .route("/v1/explain", get(explain))
        .route("/v1/regions/{region}/drain", post(drain))
        .route("/v1/regions/{region}/undrain", post(undrain))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(REPORT_BYTES_MAX))
        .with_state(shared)
}

fn error(status: StatusCode, reason: &str, detail: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(json!({ "error": reason, "detail": detail.to_string() })),
    )
        .into_response()
}

fn auth(shared: &Shared, headers: &HeaderMap, want: &Principal) -> Result<(), Box<Response>> {
    let h = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if shared.tokens.allows(h, want) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )))
    }
}

fn reason_of(e: &IngestError) -> &'static str {
    match e {
        IngestError::UnsupportedVersion(_) => "version",
        IngestError::UnknownRegion(_) => "unknown_region",
        IngestError::BadHost(_) => "bad_host",
        IngestError::TooManyPrefixes(_) => "too_many_prefixes",
        IngestError::TooManyChecks(_) => "too_many_checks",
        IngestError::BadValue { .. } => "bad_value",
        IngestError::Stale { .. } => "stale",
        IngestError::TooManyHosts(_) => "too_many_hosts",
    }
}

async fn report(State(shared): S, headers: HeaderMap, body: Bytes) -> Response {
    let report: Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            shared.metrics.rejection("bad_json");
            return error(StatusCode::BAD_REQUEST, "bad_json", e);
        }
    };
    if let Err(r) = auth(&shared, &headers, &Principal::Region(report.region.clone())) {
        shared.metrics.rejection("unauthorized");
        return *r;
    }
    let span = tracing::info_span!("report", region = %report.region, host = %report.host);
    let _e = span.enter();
    let now = now_ms();
    let mut c = shared.control();
    let policy = c.policy.clone();
    match c.telemetry.ingest(&policy, &report, now) {
        Ok(ing) => {
            let gate = c
                .health
                .gate_for(&policy, &report.region, SurgeRamp::default(), now);
            drop(c);
            shared.metrics.reports_accepted.fetch_add(1, Relaxed);
            tracing::debug!(
                prefixes = ing.prefixes_updated,
                refused = ing.prefixes_refused,
                "report"
            );
            shared.rebuild.notify_one();
            axum::Json(ReportReply {
                gate,
                interval_ms: REPORT_INTERVAL_MS,
            })
            .into_response()
        }
        Err(e) => {
            drop(c);
            let reason = reason_of(&e);
            shared.metrics.rejection(reason);
            tracing::info!(reason, error = %e, "report refused");
            let status = if matches!(e, IngestError::Stale { .. }) {
                StatusCode::CONFLICT
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            error(status, reason, e)
        }
    }
}

#[derive(Serialize)]
struct RegionState {
    status: String,
    drained: bool,
    /// Drained, and the live hosts hold no connections: the region can be taken down.
    drain_complete: bool,
    /// Established connections summed over the live hosts.
    active_connections: u64,
    ramp_ppm: u32,
    hosts_known: u32,
    hosts_live: u32,
    hosts_healthy: u32,
    prefixes: usize,
    hosts: BTreeMap<String, HostView>,
    last_bad_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct HostView {
    last_report_age_ms: u64,
    healthy: bool,
    failed_checks: Vec<String>,
    queue_depth: u32,
    kv_cache_usage: f64,
    active_connections: u32,
    gate_mode: steering_core::telemetry::wire::GateMode,
}

async fn state(State(shared): S, headers: HeaderMap) -> Response {
    if let Err(r) = auth(&shared, &headers, &Principal::Admin) {
        return *r;
    }
    let now = now_ms();
    let snap = shared.snapshot.load_full();
    let c = shared.control();
    let mut regions = BTreeMap::new();
    for (r, v) in snap.policy.regions.iter().zip(&snap.regions) {
        let rt = c.telemetry.regions.get(&r.name);
        let hosts = rt
            .map(|rt| {
                rt.hosts
                    .iter()
                    .map(|(h, s)| {
                        (
                            h.clone(),
                            HostView {
                                last_report_age_ms: now.since(s.last_report_at).as_millis() as u64,
                                healthy: s.healthy,
                                failed_checks: s.failed_checks.clone(),
                                queue_depth: s.load.queue_depth,
                                kv_cache_usage: s.load.kv_cache_usage,
                                active_connections: s.load.active_connections,
                                gate_mode: s.gate_mode,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        regions.insert(
            r.name.clone(),
            RegionState {
                status: format!("{:?}", v.status).to_lowercase(),
                drained: v.drained,
                drain_complete: crate::metrics::drain_complete(v),
                active_connections: v.load.active_connections,
                ramp_ppm: v.ramp_ppm,
                hosts_known: v.load.hosts_known,
                hosts_live: v.load.hosts_live,
                hosts_healthy: v.load.hosts_healthy,
                prefixes: rt.map_or(0, |rt| rt.prefixes.len()),
                hosts,
                last_bad_reason: c.health.regions.get(&r.name).and_then(|h| h.last_bad_reason),
            },
        );
    }
    let body = json!({
        "zone": snap.policy.zone,
        "services": snap.policy.services.iter().map(|s| s.fqdn.clone()).collect::<Vec<_>>(),
        "regions": regions,
        "tables": {
            "telemetry_prefixes": c.telemetry.prefix_count(),
            "telemetry_hosts": c.telemetry.regions.values().map(|r| r.hosts.len()).sum::<usize>(),
            "snapshot_rtt_rows": snap.rtt_rows(),
        },
        "snapshot_age_ms": now.since(snap.built_at).as_millis() as u64,
        "state_file": shared.state_path.as_ref().map(|p| p.display().to_string()),
        "state_loaded_at_start": c.state_loaded,
        "state_age_ms": c.state_saved_at.map(|t| now.since(t).as_millis() as u64),
    });
    drop(c);
    axum::Json(body).into_response()
}

#[derive(Deserialize)]
struct ExplainParams {
    name: String,
    #[serde(rename = "type", default = "default_type")]
    qtype: String,
    client: IpAddr,
    #[serde(default)]
    ecs: Option<String>,
}

fn default_type() -> String {
    "A".to_owned()
}

async fn explain(State(shared): S, headers: HeaderMap, Query(p): Query<ExplainParams>) -> Response {
    if let Err(r) = auth(&shared, &headers, &Principal::Admin) {
        return *r;
    }
    let family = match p.qtype.to_ascii_uppercase().as_str() {
        "A" => Family::V4,
        "AAAA" => Family::V6,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_type",
                format!("{other}: expected A or AAAA"),
            );
        }
    };
    let ecs = match p.ecs.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<Prefix>() {
            Ok(pf) => Some((pf.network(), pf.len())),
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_ecs", e),
        },
    };
    let snap = shared.snapshot.load_full();
    let Some(service) = snap.service_for(p.name.as_bytes()) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_steered",
            format!("{} is not a steered name", p.name),
        );
    };
    let q = crate::dns::client_query(&shared, service, family, p.client, ecs);
    let d = snap.decide(&q);
    steering_core::explain::render(&snap, &q, &d).into_response()
}

fn set_drain(shared: &Shared, headers: &HeaderMap, region: &str, drain: bool) -> Response {
    if let Err(r) = auth(shared, headers, &Principal::Admin) {
        return *r;
    }
    let mut c = shared.control();
    if c.policy.region_by_name(region).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_region",
            format!("{region:?} is not in the policy"),
        );
    }
    let changed = if drain {
        c.health.drain(region)
    } else {
        c.health.undrain(region)
    };
    drop(c);
    tracing::info!(region, drain, changed, "operator drain");
    shared.rebuild_now(false);
    axum::Json(json!({ "region": region, "drained": drain, "changed": changed })).into_response()
}

async fn drain(State(shared): S, headers: HeaderMap, Path(region): Path<String>) -> Response {
    set_drain(&shared, &headers, &region, true)
}

async fn undrain(State(shared): S, headers: HeaderMap, Path(region): Path<String>) -> Response {
    set_drain(&shared, &headers, &region, false)
}

async fn metrics(State(shared): S) -> Response {
    let snap = shared.snapshot.load_full();
    // Copied under the lock with a bound per region; the quantiles are computed after it is released.
    let scrape = Scrape::collect(&snap.policy, &shared.control().telemetry);
    let body = shared.metrics.render(&snap, &shared.answers.load(), scrape);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
