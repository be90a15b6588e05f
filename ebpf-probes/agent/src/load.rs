//! The local inference server: an HTTP health check and its load from Prometheus text.

use std::time::Duration;

use steering_core::telemetry::wire::CheckReport;

/// Queue-depth metrics, summed over their series: vLLM, TGI, Triton.
pub const QUEUE_METRICS: [&str; 3] = [
    "vllm:num_requests_waiting",
    "tgi_queue_size",
    "nv_inference_pending_request_count",
];
/// KV-cache usage metrics (0..=1), the highest series wins: vLLM before and after its rename.
pub const KV_CACHE_METRICS: [&str; 2] = ["vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"];
/// A metrics page larger than this is cut off (bounded reads).
pub const METRICS_BYTES_MAX: u64 = 4 << 20;

/// Load read from a metrics page.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ServerLoad {
    /// Requests waiting, if any known queue metric was present.
    pub queue_depth: Option<f64>,
    /// KV-cache usage 0..=1, if present.
    pub kv_cache_usage: Option<f64>,
}

/// Parses Prometheus text exposition: `name{labels} value [timestamp]` lines; comments and
/// unknown names are skipped, as are lines that do not parse.
#[must_use]
pub fn parse_prometheus(text: &str) -> ServerLoad {
    let mut load = ServerLoad::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ', '\t']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        let rest = if rest.starts_with('{') {
            match rest.rfind('}') {
                Some(i) => &rest[i + 1..],
                None => continue,
            }
        } else {
            rest
        };
        let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        if QUEUE_METRICS.contains(&name) {
            *load.queue_depth.get_or_insert(0.0) += value.max(0.0);
        } else if KV_CACHE_METRICS.contains(&name) {
            let v = value.clamp(0.0, 1.0);
            load.kv_cache_usage = Some(load.kv_cache_usage.map_or(v, |k: f64| k.max(v)));
        }
    }
    load
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).redirects(0).build()
}

/// GETs `url`; healthy iff it answers 2xx within `timeout`.
#[must_use]
pub fn health_check(url: &str, timeout: Duration) -> CheckReport {
    let started = std::time::SystemTime::now();
    let res = agent(timeout).get(url).call();
    let latency_ms = started
        .elapsed()
        .map_or(0, |d| d.as_millis().min(u128::from(u32::MAX)) as u32);
    let (ok, detail) = match res {
        Ok(r) if (200..300).contains(&r.status()) => (true, None),
        Ok(r) => (false, Some(format!("status {}", r.status()))),
        Err(ureq::Error::Status(code, _)) => (false, Some(format!("status {code}"))),
        Err(e) => (false, Some(e.to_string())),
    };
    CheckReport {
        name: "http".to_owned(),
        ok,
        latency_ms,
        detail,
    }
}

/// GETs and parses the metrics page; `None` if it cannot be fetched.
#[must_use]
pub fn fetch_load(url: &str, timeout: Duration) -> Option<ServerLoad> {
    use std::io::Read as _;
    let resp = match agent(timeout).get(url).call() {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(url, error = %e, "metrics fetch failed");
            return None;
        }
    };
    let mut text = String::new();
    resp.into_reader()
        .take(METRICS_BYTES_MAX)
        .read_to_string(&mut text)
        .ok()?;
    Some(parse_prometheus(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_metrics() {
        let text = r#"
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="llama"} 3.0
vllm:num_requests_waiting{model_name="qwen"} 2
vllm:num_requests_running{model_name="llama"} 17.0
vllm:gpu_cache_usage_perc{model_name="llama"} 0.25
vllm:kv_cache_usage_perc{model_name="qwen",engine="0"} 0.5 1700000000000
"#;
        let l = parse_prometheus(text);
        assert_eq!(l.queue_depth, Some(5.0));
        assert_eq!(l.kv_cache_usage, Some(0.5));
    }

    #[test]
    fn tgi_and_triton_metrics() {
        assert_eq!(parse_prometheus("tgi_queue_size 7\n").queue_depth, Some(7.0));
        let triton = "nv_inference_pending_request_count{model=\"a\",version=\"1\"} 4\n\
                      nv_inference_pending_request_count{model=\"b\",version=\"1\"} 1\n";
        assert_eq!(parse_prometheus(triton).queue_depth, Some(5.0));
    }

    #[test]
    fn garbage_is_skipped() {
        let l =
            parse_prometheus("vllm:num_requests_waiting{a=\"b\" 3\ntgi_queue_size NaN\nnot a metric line\n");
        assert_eq!(l, ServerLoad::default());
        assert_eq!(
            parse_prometheus("vllm:gpu_cache_usage_perc 7").kv_cache_usage,
            Some(1.0)
        );
    }
}
