//! The agent's own `/metrics`: Prometheus text about the gate (read from the pinned maps on every
//! scrape) and about the report loop (what it last sent, read and checked).
//!
//! The HTTP server is a std `TcpListener` on one thread that serves one connection at a time with
//! bounded reads and timeouts: a scrape every few seconds needs nothing more.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use steer_probe_common::{GateMode as BpfMode, Verdict};

use crate::gate;
use crate::load::ServerLoad;
use crate::maps::Maps;

/// Where `/metrics` listens unless `--metrics-listen` says otherwise (loopback: a node-local
/// Prometheus agent or a port-forward scrapes it).
pub const METRICS_LISTEN_DEFAULT: &str = "127.0.0.1:9464";
/// A request head larger than this is answered with 431 and the connection closed.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;
/// How long one connection may take to send its request and read the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// What the report loop tells `/metrics`.
#[derive(Debug)]
pub struct AgentStats {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The policy region and host name this agent reports as; `None` until told.
    identity: Option<(String, String)>,
    servers: Vec<ServerStats>,
    /// The last health check: ok and latency; `None` before the first or without a health URL.
    health: Option<(bool, u32)>,
    /// The last load read; `None` before the first or when it failed.
    load: Option<ServerLoad>,
    load_configured: bool,
}

#[derive(Debug, Clone)]
struct ServerStats {
    url: String,
    sent: u64,
    failed: u64,
    /// Wall clock (ms since the epoch) of the last accepted report.
    last_ok_ms: Option<u64>,
}

impl AgentStats {
    /// Stats for the report URLs in `servers` (indexed like the loop's servers).
    #[must_use]
    pub fn new(servers: &[String], load_configured: bool) -> AgentStats {
        AgentStats {
            inner: Mutex::new(Inner {
                servers: servers
                    .iter()
                    .map(|url| ServerStats {
                        url: url.clone(),
                        sent: 0,
                        failed: 0,
                        last_ok_ms: None,
                    })
                    .collect(),
                load_configured,
                ..Inner::default()
            }),
        }
    }

    /// Names the region and host the agent reports as, for `steer_probe_info` (dashboards join the
    /// region into the gate's series through it).
    #[must_use]
    pub fn with_identity(self, region: &str, host: &str) -> AgentStats {
        self.with(|s| s.identity = Some((region.to_owned(), host.to_owned())));
        self
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic elsewhere while holding the lock leaves plain counters behind: keep serving.
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Server `i` accepted a report at `now_ms` (ms since the epoch).
    pub fn report_sent(&self, i: usize, now_ms: u64) {
        self.with(|s| {
            if let Some(s) = s.servers.get_mut(i) {
                s.sent += 1;
                s.last_ok_ms = Some(now_ms);
            }
        });
    }

    /// A report to server `i` failed.
    pub fn report_failed(&self, i: usize) {
        self.with(|s| {
            if let Some(s) = s.servers.get_mut(i) {
                s.failed += 1;
            }
        });
    }

    /// The result of the last health check.
    pub fn health_checked(&self, ok: bool, latency_ms: u32) {
        self.with(|s| s.health = Some((ok, latency_ms)));
    }

    /// The load read from the inference server's metrics (`None`: it could not be read).
    pub fn load_read(&self, load: Option<ServerLoad>) {
        self.with(|s| s.load = load);
    }

    /// Reports accepted by server `i` so far (for tests and logs).
    #[must_use]
    pub fn sent(&self, i: usize) -> u64 {
        self.with(|s| s.servers.get(i).map_or(0, |s| s.sent))
    }

    /// The agent's half of the exposition.
    fn render_into(&self, out: &mut String, now_ms: u64) {
        let s = self.with(|s| {
            (
                s.identity.clone(),
                s.servers.clone(),
                s.health,
                s.load,
                s.load_configured,
            )
        });
        let (identity, servers, health, load, load_configured) = s;
        if let Some((region, host)) = identity {
            family(
                out,
                "info",
                "gauge",
                "Always 1; names the region and host this agent reports as.",
            );
            let _ = writeln!(
                out,
                "steer_probe_info{{region=\"{}\",host=\"{}\"}} 1",
                esc(&region),
                esc(&host)
            );
        }
        family(out, "reports_sent_total", "counter", "Reports a steerd accepted.");
        for s in &servers {
            let _ = writeln!(
                out,
                "steer_probe_reports_sent_total{{server=\"{}\"}} {}",
                esc(&s.url),
                s.sent
            );
        }
        family(
            out,
            "reports_failed_total",
            "counter",
            "Reports that failed (transport error, non-2xx, or a reply that did not parse).",
        );
        for s in &servers {
            let _ = writeln!(
                out,
                "steer_probe_reports_failed_total{{server=\"{}\"}} {}",
                esc(&s.url),
                s.failed
            );
        }
        family(
            out,
            "report_last_success_age_seconds",
            "gauge",
            "Seconds since a steerd last accepted a report (absent before the first).",
        );
        for s in &servers {
            if let Some(t) = s.last_ok_ms {
                let _ = writeln!(
                    out,
                    "steer_probe_report_last_success_age_seconds{{server=\"{}\"}} {:.3}",
                    esc(&s.url),
                    now_ms.saturating_sub(t) as f64 / 1000.0
                );
            }
        }
        if let Some((ok, latency_ms)) = health {
            family(
                out,
                "health_ok",
                "gauge",
                "1 if the last inference server health check passed.",
            );
            let _ = writeln!(out, "steer_probe_health_ok {}", u8::from(ok));
            family(
                out,
                "health_check_latency_seconds",
                "gauge",
                "Latency of the last health check.",
            );
            let _ = writeln!(
                out,
                "steer_probe_health_check_latency_seconds {:.3}",
                f64::from(latency_ms) / 1000.0
            );
        }
        if load_configured {
            family(
                out,
                "inference_load_read_ok",
                "gauge",
                "1 if the inference server's metrics page was read in the last interval.",
            );
            let _ = writeln!(
                out,
                "steer_probe_inference_load_read_ok {}",
                u8::from(load.is_some())
            );
        }
        if let Some(q) = load.and_then(|l| l.queue_depth) {
            family(
                out,
                "inference_queue_depth",
                "gauge",
                "Requests waiting in the inference server (vLLM, TGI or Triton metric).",
            );
            let _ = writeln!(out, "steer_probe_inference_queue_depth {q}");
        }
        if let Some(k) = load.and_then(|l| l.kv_cache_usage) {
            family(
                out,
                "inference_kv_cache_usage",
                "gauge",
                "KV-cache usage of the inference server, 0..1.",
            );
            let _ = writeln!(out, "steer_probe_inference_kv_cache_usage {k}");
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP steer_probe_{name} {help}");
    let _ = writeln!(out, "# TYPE steer_probe_{name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Unparsed => "unparsed",
        Verdict::Admitted => "admitted",
        Verdict::DroppedDrain => "dropped_drain",
        Verdict::DroppedRate => "dropped_rate",
        Verdict::DroppedPrefix => "dropped_prefix",
    }
}

fn mode_name(m: BpfMode) -> &'static str {
    match m {
        BpfMode::Open => "open",
        BpfMode::Drain => "drain",
        BpfMode::Surge => "surge",
    }
}

/// The gate's half of the exposition, read from the maps pinned in `pin_dir`.
fn render_maps(out: &mut String, pin_dir: &Path) {
    let read = Maps::open(pin_dir).and_then(|m| {
        Ok((
            m.gate_config()?,
            m.gate_counts()?,
            m.rtt_snapshot()?.0.len(),
            m.active_connections()?,
        ))
    });
    family(
        out,
        "maps_readable",
        "gauge",
        "1 if the pinned maps could be read for this scrape.",
    );
    let (cfg, counts, rtt_entries, active) = match read {
        Ok(r) => {
            let _ = writeln!(out, "steer_probe_maps_readable 1");
            r
        }
        Err(e) => {
            tracing::debug!(error = %e, "metrics: reading the pinned maps");
            let _ = writeln!(out, "steer_probe_maps_readable 0");
            return;
        }
    };
    family(out, "gate_mode", "gauge", "1 for the mode the gate is in.");
    for m in [BpfMode::Open, BpfMode::Drain, BpfMode::Surge] {
        let _ = writeln!(
            out,
            "steer_probe_gate_mode{{mode=\"{}\"}} {}",
            mode_name(m),
            u8::from(cfg.mode() == m)
        );
    }
    family(
        out,
        "gate_held",
        "gauge",
        "1 while an operator's `gate --hold` is in place.",
    );
    let _ = writeln!(out, "steer_probe_gate_held {}", u8::from(gate::held(&cfg)));
    family(
        out,
        "gate_surge_rate_per_second",
        "gauge",
        "Configured surge admission rate.",
    );
    let _ = writeln!(out, "steer_probe_gate_surge_rate_per_second {}", cfg.rate_per_s);
    family(out, "gate_surge_burst", "gauge", "Configured surge burst.");
    let _ = writeln!(out, "steer_probe_gate_surge_burst {}", cfg.burst);
    family(
        out,
        "gate_packets_total",
        "counter",
        "Packets the XDP gate saw, by the mode it was in and its verdict.",
    );
    for m in [BpfMode::Open, BpfMode::Drain, BpfMode::Surge] {
        for v in Verdict::ALL {
            let _ = writeln!(
                out,
                "steer_probe_gate_packets_total{{mode=\"{}\",verdict=\"{}\"}} {}",
                mode_name(m),
                verdict_name(v),
                counts.get(m, v)
            );
        }
    }
    family(out, "rtt_map_entries", "gauge", "Client prefixes in the RTT map.");
    let _ = writeln!(out, "steer_probe_rtt_map_entries {rtt_entries}");
    family(
        out,
        "active_connections",
        "gauge",
        "Established connections to the watched ports.",
    );
    let _ = writeln!(out, "steer_probe_active_connections {active}");
}

/// The whole exposition.
#[must_use]
pub fn render(stats: &AgentStats, pin_dir: &Path, now_ms: u64) -> String {
    let mut out = String::with_capacity(4096);
    render_maps(&mut out, pin_dir);
    stats.render_into(&mut out, now_ms);
    out
}

/// Serves `GET /metrics` on `listener` from a thread until the process exits.
pub fn serve(listener: TcpListener, stats: Arc<AgentStats>, pin_dir: PathBuf) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        if let Err(e) = handle(c, &stats, &pin_dir) {
                            tracing::debug!(error = %e, "metrics connection");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept");
                        // EMFILE and the like: do not spin.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

fn handle(mut c: TcpStream, stats: &AgentStats, pin_dir: &Path) -> std::io::Result<()> {
    c.set_read_timeout(Some(CONNECTION_TIMEOUT))?;
    c.set_write_timeout(Some(CONNECTION_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return respond(&mut c, "431 Request Header Fields Too Large", "");
        }
        let n = c.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if method != b"GET" {
        return respond(&mut c, "405 Method Not Allowed", "");
    }
    if path != b"/metrics" {
        return respond(&mut c, "404 Not Found", "not found; try /metrics\n");
    }
    respond(&mut c, "200 OK", &render(stats, pin_dir, crate::agent::now_ms()))
}

fn respond(c: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    c.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_half_names_every_server_and_the_load() {
        let stats = AgentStats::new(
            &["http://a/v1/reports".into(), "http://b/v1/reports".into()],
            true,
        )
        .with_identity("eu-1", "gpu-\"7\"");
        let t0 = 1_700_000_000_000;
        stats.report_sent(0, t0);
        stats.report_failed(1);
        stats.report_failed(1);
        stats.health_checked(false, 1500);
        stats.load_read(Some(ServerLoad {
            queue_depth: Some(5.0),
            kv_cache_usage: Some(0.25),
        }));
        let mut out = String::new();
        stats.render_into(&mut out, t0 + 2500);
        for want in [
            "steer_probe_info{region=\"eu-1\",host=\"gpu-\\\"7\\\"\"} 1",
            "steer_probe_reports_sent_total{server=\"http://a/v1/reports\"} 1",
            "steer_probe_reports_failed_total{server=\"http://b/v1/reports\"} 2",
            "steer_probe_report_last_success_age_seconds{server=\"http://a/v1/reports\"} 2.500",
            "steer_probe_health_ok 0",
            "steer_probe_health_check_latency_seconds 1.500",
            "steer_probe_inference_load_read_ok 1",
            "steer_probe_inference_queue_depth 5",
            "steer_probe_inference_kv_cache_usage 0.25",
        ] {
            assert!(out.lines().any(|l| l == want), "missing {want:?} in\n{out}");
        }
        assert!(
            !out.contains("last_success_age_seconds{server=\"http://b"),
            "no age before a first success:\n{out}"
        );
        let mut anonymous = String::new();
        AgentStats::new(&[], false).render_into(&mut anonymous, t0);
        assert!(!anonymous.contains("steer_probe_info"), "{anonymous}");
    }

    #[test]
    fn unreadable_maps_say_so() {
        let mut out = String::new();
        render_maps(&mut out, Path::new("/nonexistent/steer"));
        assert_eq!(out.lines().last(), Some("steer_probe_maps_readable 0"));
    }
}
