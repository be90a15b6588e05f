//! The lab story, act by act: steering by measured RTT, a region killed and failed over, a drain with streams
//! finishing, a probe restarted in the middle of the drain, a recovery surge held to its ramp, and data
//! residency. Each act returns its measurements; the e2e test asserts on them and `steer-demo` prints them.

#![allow(
    clippy::disallowed_types,
    reason = "the lab drives real processes and sockets on the real monotonic clock"
)]

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{Client, ClientConfig, stream_completion};
use crate::lab::{INFER_PORT, Lab, LabSpec, SERVICE};
use crate::netns::LabError;

/// The lab of the story: 3 regions, 4 client sites with distinct delays (one-way ms, site x region).
/// Frankfurt's clients are in Germany, fenced to eu-west (strict).
#[must_use]
pub fn story_spec() -> LabSpec {
    let mut spec = LabSpec::new(
        &["us-east", "eu-west", "ap-south"],
        &["nyc", "dublin", "mumbai", "frankfurt"],
        vec![
            vec![4.0, 38.0, 95.0],
            vec![38.0, 4.0, 60.0],
            vec![95.0, 60.0, 6.0],
            vec![45.0, 12.0, 55.0],
        ],
    );
    spec.fences = vec![(3, "DE".to_owned(), 1)];
    spec
}

/// A plain text table: a header row, a rule, and rows, columns padded to their widest cell.
#[must_use]
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(s, "{:<width$}  ", c, width = w[i]);
        }
        s.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    out.push_str(&line(
        w.iter()
            .map(|n| "-".repeat(*n))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn client_cfg(lab: &Lab, j: usize, max_tokens: u32, seed: u64) -> ClientConfig {
    let mut cfg = ClientConfig::new(SERVICE.trim_end_matches('.'), lab.site_resolver(j), INFER_PORT);
    cfg.max_tokens = max_tokens;
    cfg.seed = seed;
    cfg.attempts_max = 8;
    cfg.backoff_base = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_secs(1);
    cfg.connect_timeout = Duration::from_millis(800);
    cfg
}

// === Act 1: steering ===

/// What act 1 measured.
#[derive(Debug, Clone, Serialize)]
pub struct Steering {
    /// `[site][region]`: configured RTT (2 x one-way delay) and what steerd learned from the probes (µs).
    pub configured_rtt_ms: Vec<Vec<f64>>,
    pub measured_rtt_ms: Vec<Vec<Option<f64>>>,
    /// Per site: sessions, sessions in an oracle-best region, the region most sessions went to.
    pub sessions: Vec<(usize, usize, String)>,
    pub accuracy_pct: f64,
}

/// Warm-up traffic: every site streams a few completions straight to every region (real traffic, which the
/// probes measure), so that steerd learns each site's RTT to each region. No delay matrix is given to steerd.
pub fn warm_up(lab: &Lab, streams_per_pair: usize) -> Result<(), LabError> {
    let sites = lab.spec.topology.sites.len();
    let regions = lab.spec.topology.regions.len();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..sites)
            .map(|j| {
                s.spawn(move || {
                    let hosts: Vec<SocketAddr> = (0..regions)
                        .map(|i| SocketAddr::from((lab.topo.region_host(i), INFER_PORT)))
                        .collect();
                    let cfg = client_cfg(lab, j, 8, 1);
                    lab.in_site(j, move || async move {
                        for _ in 0..streams_per_pair {
                            for h in &hosts {
                                let _ = stream_completion(&cfg, *h, "warmup").await;
                            }
                        }
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok::<(), LabError>(())
    })?;
    // Two report intervals for the probes to report, and a snapshot rebuild.
    std::thread::sleep(Duration::from_millis(u64::from(lab.spec.report_interval_ms) * 3));
    Ok(())
}

/// steerd's learned RTT for site `j` to every region, read from its explanation of the site's query.
pub fn learned_rtt_ms(lab: &Lab, j: usize) -> Result<Vec<Option<f64>>, LabError> {
    let client = lab.topo.site_client(j);
    let path = format!(
        "/v1/explain?name={SERVICE}&type=A&client={client}&ecs=198.18.{}.0/24",
        100 + j
    );
    let (status, text) = lab.admin("GET", &path, None)?;
    if status != 200 {
        return Err(LabError::Child(format!("explain: {status} {text}")));
    }
    Ok(lab
        .spec
        .topology
        .regions
        .iter()
        .map(|name| {
            text.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name.as_str()))
                    .then(|| {
                        w.next()
                            .and_then(|v| v.strip_suffix("ms"))
                            .and_then(|v| v.parse().ok())
                    })
                    .flatten()
            })
        })
        .collect())
}

/// Regions that count as best for site `j`: within the policy's stabilize band (3 ms or 10%) of the lowest
/// configured RTT, among `up` regions.
#[must_use]
pub fn oracle_best(spec: &LabSpec, j: usize, up: &[usize]) -> Vec<usize> {
    let rtt: Vec<f64> = spec.topology.delay_ms[j].iter().map(|d| 2.0 * d).collect();
    let best = up.iter().map(|&i| rtt[i]).fold(f64::INFINITY, f64::min);
    let band = 3.0f64.max(best * 0.10);
    up.iter().copied().filter(|&i| rtt[i] <= best + band).collect()
}

/// Act 1: warm up, then run `sessions_per_site` SDK-like sessions per site through its resolver.
pub fn act_steering(lab: &Lab, sessions_per_site: usize) -> Result<Steering, LabError> {
    warm_up(lab, 3)?;
    let sites = lab.spec.topology.sites.len();
    let regions = lab.spec.topology.regions.len();
    let all: Vec<usize> = (0..regions).collect();
    let configured: Vec<Vec<f64>> = lab
        .spec
        .topology
        .delay_ms
        .iter()
        .map(|r| r.iter().map(|d| 2.0 * d).collect())
        .collect();
    let measured: Vec<Vec<Option<f64>>> = (0..sites)
        .map(|j| learned_rtt_ms(lab, j))
        .collect::<Result<_, _>>()?;
    let mut per_site = Vec::new();
    let (mut total, mut good) = (0, 0);
    for j in 0..sites {
        let cfg = client_cfg(lab, j, 4, 7 + j as u64);
        let records = lab.in_site(j, move || async move {
            let mut c = Client::new(cfg);
            let mut out = Vec::new();
            for _ in 0..sessions_per_site {
                out.push(c.session().await);
            }
            out
        })?;
        let best = oracle_best(&lab.spec, j, &all);
        let mut counts = vec![0usize; regions];
        let mut ok = 0;
        for r in &records {
            if let Some(i) = r.resolved.and_then(|a| match a {
                std::net::IpAddr::V4(v4) => lab.region_of(v4),
                std::net::IpAddr::V6(_) => None,
            }) {
                counts[i] += 1;
                if r.completed && best.contains(&i) {
                    ok += 1;
                }
            }
        }
        let top = (0..regions).max_by_key(|&i| counts[i]).unwrap_or(0);
        per_site.push((records.len(), ok, lab.spec.topology.regions[top].clone()));
        total += records.len();
        good += ok;
    }
    Ok(Steering {
        configured_rtt_ms: configured,
        measured_rtt_ms: measured,
        sessions: per_site,
        accuracy_pct: if total == 0 {
            0.0
        } else {
            100.0 * good as f64 / total as f64
        },
    })
}

impl Steering {
    /// The act's tables.
    #[must_use]
    pub fn render(&self, spec: &LabSpec) -> String {
        let mut headers = vec!["site".to_owned()];
        for r in &spec.topology.regions {
            headers.push(format!("{r} cfg/measured ms"));
        }
        let rows: Vec<Vec<String>> = spec
            .topology
            .sites
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let mut row = vec![s.clone()];
                for i in 0..spec.topology.regions.len() {
                    let m = self.measured_rtt_ms[j][i].map_or("-".to_owned(), |v| format!("{v:.1}"));
                    row.push(format!("{:.1} / {m}", self.configured_rtt_ms[j][i]));
                }
                row
            })
            .collect();
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut out = table(&h, &rows);
        out.push('\n');
        let rows: Vec<Vec<String>> = spec
            .topology
            .sites
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let best: Vec<String> =
                    oracle_best(spec, j, &(0..spec.topology.regions.len()).collect::<Vec<_>>())
                        .iter()
                        .map(|&i| spec.topology.regions[i].clone())
                        .collect();
                let (n, ok, top) = &self.sessions[j];
                vec![s.clone(), best.join("|"), top.clone(), format!("{ok}/{n}")]
            })
            .collect();
        out.push_str(&table(
            &["site", "oracle best", "answered", "sessions in best"],
            &rows,
        ));
        let _ = writeln!(out, "steering accuracy: {:.1}%", self.accuracy_pct);
        out
    }
}

// === Act 2: failover ===

/// What act 2 measured.
#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    pub region: String,
    /// Fault (server killed) to the last answer naming the dead region, asked of steerd directly, seconds.
    pub fault_to_last_answer_s: f64,
    /// Per affected site: seconds from the fault until a new session completed elsewhere, and where.
    pub clients: Vec<(String, f64, String)>,
    /// The TTL bound for clients: normal TTL + 2 s.
    pub client_bound_s: f64,
    pub timeline: Vec<(f64, String)>,
}

/// Act 2: kill region `dead`'s inference server and watch steerd (directly) and the clients (through unbound).
pub fn act_failover(lab: &mut Lab, dead: usize) -> Result<Failover, LabError> {
    let sites = lab.spec.topology.sites.len();
    let dead_host = lab.topo.region_host(dead);
    let affected: Vec<usize> = (0..sites)
        .filter(|&j| lab.steerd_answer(j).ok().flatten() == Some(dead_host))
        .collect();
    let mut timeline = vec![(
        0.0,
        format!("kill the inference server of {}", lab.spec.topology.regions[dead]),
    )];
    let t0 = Instant::now();
    lab.kill_server(dead)?;
    // Server side: poll steerd for every site until it has not named the dead region for 2 s.
    let mut last_named = Duration::ZERO;
    let mut reported_down = None;
    let deadline = t0 + Duration::from_secs(15);
    while Instant::now() < deadline {
        let now = t0.elapsed();
        let named = (0..sites).any(|j| lab.steerd_answer(j).ok().flatten() == Some(dead_host));
        if named {
            last_named = now;
        } else if now.saturating_sub(last_named) > Duration::from_secs(2) {
            break;
        }
        if reported_down.is_none() && lab.region_status(dead).is_ok_and(|s| s == "down") {
            reported_down = Some(now);
            timeline.push((
                ms(now) / 1000.0,
                format!("steerd marks {} down", lab.spec.topology.regions[dead]),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    timeline.push((
        ms(last_named) / 1000.0,
        "last answer naming it (server side)".to_owned(),
    ));
    // Client side: sessions started right after the fault, through unbound, retrying like SDKs.
    let mut clients = Vec::new();
    for &j in &affected {
        let cfg = client_cfg(lab, j, 4, 99 + j as u64);
        let rec = lab.in_site(j, move || async move { Client::new(cfg).session().await })?;
        let done = t0.elapsed();
        let region = rec
            .resolved
            .and_then(|a| {
                if let std::net::IpAddr::V4(v) = a {
                    lab.region_of(v)
                } else {
                    None
                }
            })
            .map_or("-".to_owned(), |i| lab.spec.topology.regions[i].clone());
        let region = if rec.completed {
            region
        } else {
            format!("failed ({region})")
        };
        timeline.push((
            ms(done) / 1000.0,
            format!("{} completes a session in {region}", lab.spec.topology.sites[j]),
        ));
        clients.push((lab.spec.topology.sites[j].clone(), ms(done) / 1000.0, region));
    }
    Ok(Failover {
        region: lab.spec.topology.regions[dead].clone(),
        fault_to_last_answer_s: ms(last_named) / 1000.0,
        clients,
        client_bound_s: f64::from(lab.spec.ttl_normal_s) + 2.0,
        timeline,
    })
}

impl Failover {
    #[must_use]
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .timeline
            .iter()
            .map(|(t, e)| vec![format!("{t:>6.2}s"), e.clone()])
            .collect();
        let mut out = table(&["t", "event"], &rows);
        let _ = writeln!(
            out,
            "fault -> last answer naming {}: {:.2} s (bound 2 s); clients recovered within {:.1} s (bound TTL + 2 s = {:.0} s)",
            self.region,
            self.fault_to_last_answer_s,
            self.clients.iter().map(|c| c.1).fold(0.0, f64::max),
            self.client_bound_s
        );
        out
    }
}

// === Act 3: drain (with a probe restart in the middle) ===

/// What act 3 measured.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub region: String,
    pub streams: usize,
    pub tokens_expected: u32,
    /// Tokens each stream opened before the drain received.
    pub tokens_received: Vec<u32>,
    pub broken_streams: usize,
    /// New connections attempted during the drain, and how many the gate refused.
    pub new_attempted: usize,
    pub new_refused: usize,
    /// The same while the region's probe was killed (the pinned gate holds), and after it restarted.
    pub probe_down_attempted: usize,
    pub probe_down_refused: usize,
    /// Seconds from the drain until steerd saw zero active connections on the region.
    pub drain_complete_s: Option<f64>,
    /// steerd's answers naming the drained region after the drain.
    pub answers_naming_drained: usize,
}

/// One TCP connect attempt from site `j` to `addr`, bounded by `timeout`: true if it connected.
fn try_connect(lab: &Lab, j: usize, addr: SocketAddr, timeout: Duration) -> Result<bool, LabError> {
    lab.topo
        .site(j)
        .run_in(move || std::net::TcpStream::connect_timeout(&addr, timeout).is_ok())
}

fn active_connections(lab: &Lab, i: usize) -> Result<u64, LabError> {
    let st = lab.state()?;
    let name = &lab.spec.topology.regions[i];
    let r = crate::lab::find_region(&st, name).ok_or_else(|| LabError::Child(format!("no region {name}")))?;
    Ok(r.get("hosts").and_then(|h| h.as_object()).map_or(0, |h| {
        h.values()
            .filter_map(|v| v.get("active_connections")?.as_u64())
            .sum()
    }))
}

/// Act 3: open long streams from site `j` to region `i`, drain `i`, check new flows are refused (also with the
/// probe killed), and that every stream finishes with all its tokens.
pub fn act_drain(lab: &mut Lab, i: usize, j: usize, streams: usize) -> Result<Drain, LabError> {
    const TOKENS: u32 = 200; // 4 s at 50 tokens/s
    let host = SocketAddr::from((lab.topo.region_host(i), INFER_PORT));
    let mut cfg = client_cfg(lab, j, TOKENS, 5);
    cfg.idle_timeout = Duration::from_secs(5);
    let lab_ref: &Lab = lab;
    let (tokens, during) = std::thread::scope(|s| {
        let streamer = s.spawn(move || {
            lab_ref.in_site(j, move || async move {
                let futs: Vec<_> = (0..streams)
                    .map(|_| stream_completion(&cfg, host, "drain"))
                    .collect();
                futures_util::future::join_all(futs).await
            })
        });
        // Let the streams start, then drain.
        std::thread::sleep(Duration::from_millis(600));
        lab_ref.set_drain(i, true)?;
        let t_drain = Instant::now();
        // The gate follows on the probe's next report.
        std::thread::sleep(Duration::from_millis(
            u64::from(lab_ref.spec.report_interval_ms) * 3,
        ));
        let mut refused = 0;
        let attempts = 3;
        for _ in 0..attempts {
            if !try_connect(lab_ref, j, host, Duration::from_millis(700))? {
                refused += 1;
            }
        }
        let mut answers_naming = 0;
        for site in 0..lab_ref.spec.topology.sites.len() {
            if lab_ref
                .steerd_answer(site)?
                .is_some_and(|a| a == lab_ref.topo.region_host(i))
            {
                answers_naming += 1;
            }
        }
        let results = streamer.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        Ok::<_, LabError>((results, (attempts, refused, answers_naming, t_drain)))
    })?;
    let (new_attempted, new_refused, answers_naming_drained, t_drain) = during;
    // Drain completion: steerd sees the region's active connections reach zero.
    let mut drain_complete_s = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if active_connections(lab, i)? == 0 {
            drain_complete_s = Some(t_drain.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The probe dies in the middle of the drain: the pinned gate keeps refusing new flows.
    lab.kill_probe(i)?;
    let mut probe_down_refused = 0;
    let probe_down_attempted = 3;
    for _ in 0..probe_down_attempted {
        if !try_connect(lab, j, host, Duration::from_millis(700))? {
            probe_down_refused += 1;
        }
    }
    lab.start_probe(i)?;
    std::thread::sleep(Duration::from_millis(u64::from(lab.spec.report_interval_ms) * 3));
    if try_connect(lab, j, host, Duration::from_millis(700))? {
        return Err(LabError::Child(
            "a restarted probe opened the gate of a drained region".into(),
        ));
    }
    lab.set_drain(i, false)?;
    let tokens_received: Vec<u32> = tokens.iter().map(|a| a.tokens).collect();
    Ok(Drain {
        region: lab.spec.topology.regions[i].clone(),
        streams,
        tokens_expected: TOKENS,
        broken_streams: tokens
            .iter()
            .filter(|a| !a.completed || a.tokens != TOKENS)
            .count(),
        tokens_received,
        new_attempted,
        new_refused,
        probe_down_attempted,
        probe_down_refused,
        drain_complete_s,
        answers_naming_drained,
    })
}

impl Drain {
    #[must_use]
    pub fn render(&self) -> String {
        let rows = vec![
            vec!["streams open at the drain".into(), self.streams.to_string()],
            vec![
                "tokens received per stream".into(),
                format!(
                    "{} (of {})",
                    self.tokens_received
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.tokens_expected
                ),
            ],
            vec!["broken streams".into(), self.broken_streams.to_string()],
            vec![
                "new connections refused by the gate".into(),
                format!("{}/{}", self.new_refused, self.new_attempted),
            ],
            vec![
                "... with the probe killed (pinned gate)".into(),
                format!("{}/{}", self.probe_down_refused, self.probe_down_attempted),
            ],
            vec![
                "steerd answers naming the drained region".into(),
                self.answers_naming_drained.to_string(),
            ],
            vec![
                "drain complete (active connections 0)".into(),
                self.drain_complete_s
                    .map_or("not within 10 s".into(), |s| format!("after {s:.1} s")),
            ],
        ];
        table(&[&format!("drain {}", self.region), "result"], &rows)
    }
}

// === Act 4: recovery surge ===

/// What act 4 measured.
#[derive(Debug, Clone, Serialize)]
pub struct Surge {
    pub region: String,
    /// (seconds since recovery, share of answers naming the region %, the ramp's share %).
    pub dns_share: Vec<(f64, f64, f64)>,
    /// Largest deviation of the DNS share from the ramp, percentage points.
    pub dns_share_max_dev_pp: f64,
    /// (window end s, admitted SYNs, allowed by the ramp for the client's prefix) per probe metrics window.
    pub gate_windows: Vec<(f64, u64, f64)>,
    /// Largest excess of cumulative admitted SYNs over the cumulative ramp, % of the ramp.
    pub max_over_ramp_pct: f64,
    /// Largest shortfall of cumulative admitted SYNs under the cumulative ramp, % of the ramp.
    pub max_under_ramp_pct: f64,
    pub admitted_total: u64,
    pub allowed_total: f64,
}

fn probe_metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .reduce(|a, b| a + b)
}

/// The probe's /metrics of region `i` (from inside its namespace).
fn probe_metrics(lab: &Lab, i: usize) -> Result<String, LabError> {
    lab.region_ns(i).run_in(|| -> Result<String, LabError> {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)),
            Duration::from_secs(1),
        )
        .map_err(|e| LabError::Child(format!("probe metrics: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .map_err(|e| LabError::Child(e.to_string()))?;
        let mut out = String::new();
        s.take(1 << 20)
            .read_to_string(&mut out)
            .map_err(|e| LabError::Child(e.to_string()))?;
        Ok(out)
    })?
}

/// Act 4: bring region `i`'s server back after its outage and watch the ramp, in DNS (share of answers for
/// many client subnets without RTT data, which follow policy order) and at the gate (admitted SYNs under a
/// SYN load from site `j`, against the surge rate steerd hands the probe).
pub fn act_surge(lab: &mut Lab, i: usize, j: usize, watch: Duration) -> Result<Surge, LabError> {
    lab.restart_server(i)?;
    // Wait for steerd to see it up again (rise evaluations).
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.region_status(i)? != "up" {
        if Instant::now() > deadline {
            return Err(LabError::Child("region did not come back up".into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let slow = f64::from(lab.spec.slow_start_s);
    let host = SocketAddr::from((lab.topo.region_host(i), INFER_PORT));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let lab_ref: &Lab = lab;
    let (dns_share, windows) = std::thread::scope(|s| {
        // SYN load: non-blocking connects at a steady offered rate from two threads (one per CPU: the gate's
        // global limiter is split per CPU). A connect is abandoned after 150 ms, before the kernel would
        // retransmit its SYN, so every connect is exactly one SYN.
        let load: Vec<_> = (0..2)
            .map(|cpu| {
                let stop = &stop;
                s.spawn(move || {
                    lab_ref
                        .topo
                        .site(j)
                        .run_in(move || syn_load(host, cpu, SYN_OFFERED_PER_THREAD_PER_S, stop))
                })
            })
            .collect();
        let mut shares = Vec::new();
        let mut windows = Vec::new();
        let mut prev: Option<(f64, f64, f64)> = None; // (t, admitted_total, rate)
        while t0.elapsed() < watch {
            let t = t0.elapsed().as_secs_f64();
            if let Ok(m) = probe_metrics(lab_ref, i) {
                let admitted = admitted_from(&m).unwrap_or(0.0);
                let rate = probe_metric(&m, "steer_probe_gate_surge_rate_per_second").unwrap_or(0.0);
                let burst = probe_metric(&m, "steer_probe_gate_surge_burst").unwrap_or(0.0);
                if let Some((pt, pa, prate)) = prev
                    && prate > 0.0
                    && rate > 0.0
                {
                    // All the load comes from one client /24, so the per-prefix limiter binds: its share of
                    // the surge rate. The rate moves during a window: take the mean of both ends. The burst
                    // is available once, in the first window.
                    let share = f64::from(steer_probe::gate::PREFIX_SHARE_DIVISOR);
                    let first = windows.is_empty();
                    let allowed = f64::midpoint(prate, rate) * (t - pt) / share
                        + if first { burst / share } else { 0.0 };
                    windows.push((t, (admitted - pa) as u64, allowed));
                }
                prev = Some((t, admitted, rate));
            }
            let mut named = 0;
            let total = 80;
            for k in 0..total {
                let ecs = format!("198.19.{k}.0/24");
                if lab_ref
                    .dig(j, &lab_ref.topo.dns_addr().to_string(), SERVICE, Some(&ecs))
                    .ok()
                    .and_then(|a| a.first().copied())
                    == Some(lab_ref.topo.region_host(i))
                {
                    named += 1;
                }
            }
            let ramp = (100.0 * t / slow).clamp(2.0, 100.0);
            shares.push((t, 100.0 * f64::from(named) / f64::from(total), ramp));
            std::thread::sleep(Duration::from_millis(500));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in load {
            let _ = h.join();
        }
        (shares, windows)
    });
    let dns_share_max_dev_pp = dns_share
        .iter()
        .map(|(_, s, r)| (s - r).abs())
        .fold(0.0, f64::max);
    // The ramp is judged on cumulative counts from the first window on: a single window is short next to the
    // probe's report interval (the rate it applies moves in steps), the sum is what the region absorbs.
    let (mut cum_a, mut cum_allowed) = (0.0, 0.0);
    let mut max_over_ramp_pct = 0.0f64;
    let mut max_under_ramp_pct = 0.0f64;
    for (t, a, allowed) in &windows {
        cum_a += *a as f64;
        cum_allowed += allowed;
        if *t >= SURGE_JUDGE_AFTER_S && cum_allowed > 0.0 {
            let dev = 100.0 * (cum_a - cum_allowed) / cum_allowed;
            max_over_ramp_pct = max_over_ramp_pct.max(dev);
            max_under_ramp_pct = max_under_ramp_pct.max(-dev);
        }
    }
    Ok(Surge {
        region: lab.spec.topology.regions[i].clone(),
        dns_share,
        dns_share_max_dev_pp,
        gate_windows: windows,
        max_over_ramp_pct,
        max_under_ramp_pct,
        admitted_total: cum_a as u64,
        allowed_total: cum_allowed,
    })
}

/// Offered SYNs per second per load thread (two threads): above the per-prefix share of the surge rate
/// for the whole watch.
const SYN_OFFERED_PER_THREAD_PER_S: u32 = 300;
/// The cumulative ramp is judged from this many seconds into the recovery on: before, counts are small and the
/// probe applies each new rate up to a report interval late.
const SURGE_JUDGE_AFTER_S: f64 = 5.0;
/// A connect not answered within this is closed, before the kernel retransmits its SYN.
const SYN_ABANDON: Duration = Duration::from_millis(150);
/// Bound of the load: at most this many connects per thread.
const SYN_PER_THREAD_MAX: u32 = 20_000;

/// Non-blocking connects to `host` at `per_s`, pinned to `cpu`, until `stop` (or the bound).
fn syn_load(host: SocketAddr, cpu: usize, per_s: u32, stop: &std::sync::atomic::AtomicBool) {
    use socket2::{Domain, Socket, Type};
    let mut set = nix::sched::CpuSet::new();
    let _ = set.set(cpu);
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    let every = Duration::from_secs(1) / per_s;
    let mut open: std::collections::VecDeque<(Instant, Socket)> = std::collections::VecDeque::new();
    let start = Instant::now();
    for n in 0..SYN_PER_THREAD_MAX {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        if let Some(d) = (start + every * n).checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        while open.front().is_some_and(|(t, _)| t.elapsed() > SYN_ABANDON) {
            open.pop_front();
        }
        let Ok(sock) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
            continue;
        };
        if sock.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = sock.connect(&host.into());
        open.push_back((Instant::now(), sock));
    }
}

/// Sums `steer_probe_gate_packets_total{...verdict="admitted"...}` style series when the metric is labelled.
fn admitted_from(m: &str) -> Option<f64> {
    let v: Vec<f64> = m
        .lines()
        .filter(|l| {
            l.starts_with("steer_probe_gate_packets_total")
                && l.contains("mode=\"surge\"")
                && l.contains("verdict=\"admitted\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

impl Surge {
    #[must_use]
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .dns_share
            .iter()
            .step_by(2)
            .map(|(t, s, r)| vec![format!("{t:>5.1}s"), format!("{s:>5.1}%"), format!("{r:>5.1}%")])
            .collect();
        let mut out = table(&["since recovery", "DNS share", "ramp"], &rows);
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .gate_windows
            .iter()
            .step_by(2)
            .map(|(t, a, allowed)| vec![format!("{t:>5.1}s"), a.to_string(), format!("{allowed:.0}")])
            .collect();
        out.push_str(&table(
            &["window end", "SYNs admitted", "allowed (prefix share of ramp)"],
            &rows,
        ));
        let _ = writeln!(
            out,
            "DNS share max deviation from the ramp: {:.1} pp; gate admitted {} SYNs for a ramp of {:.0} (cumulative: at most {:.1}% over, {:.1}% under)",
            self.dns_share_max_dev_pp,
            self.admitted_total,
            self.allowed_total,
            self.max_over_ramp_pct,
            self.max_under_ramp_pct
        );
        out
    }
}

// === Act 5: residency ===

/// What act 5 measured.
#[derive(Debug, Clone, Serialize)]
pub struct Residency {
    pub site: String,
    pub allowed: String,
    /// Answers checked (directly and through the site's resolver), and answers outside the fence.
    pub answers: usize,
    pub violations: usize,
    /// Checked with the fenced region down too.
    pub with_region_down: bool,
}

/// Act 5: the fenced site's clients only ever get the fenced region, also while that region is down.
pub fn act_residency(lab: &mut Lab) -> Result<Residency, LabError> {
    let (site, _, region) = lab
        .spec
        .fences
        .first()
        .cloned()
        .ok_or_else(|| LabError::Spec("no fence".into()))?;
    let allowed = lab.topo.region_host(region);
    let mut answers = 0;
    let mut violations = 0;
    let mut check = |lab: &Lab| -> Result<(), LabError> {
        for _ in 0..5 {
            for a in [lab.steerd_answer(site)?, lab.resolve(site)?]
                .into_iter()
                .flatten()
            {
                answers += 1;
                if a != allowed {
                    violations += 1;
                }
            }
        }
        Ok(())
    };
    check(lab)?;
    lab.kill_server(region)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.region_status(region)? != "down" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let with_region_down = lab.region_status(region)? == "down";
    check(lab)?;
    lab.restart_server(region)?;
    Ok(Residency {
        site: lab.spec.topology.sites[site].clone(),
        allowed: lab.spec.topology.regions[region].clone(),
        answers,
        violations,
        with_region_down,
    })
}

impl Residency {
    #[must_use]
    pub fn render(&self) -> String {
        table(
            &[
                "site (country DE)",
                "fenced to",
                "answers",
                "outside the fence",
                "fenced region down",
            ],
            &[vec![
                self.site.clone(),
                self.allowed.clone(),
                self.answers.to_string(),
                self.violations.to_string(),
                self.with_region_down.to_string(),
            ]],
        )
    }
}

/// The summary of a whole run (`target/demo/summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steering_accuracy_pct: f64,
    pub failover_s: f64,
    pub failover_client_s: f64,
    pub drain_broken_streams: usize,
    pub drain_new_refused_pct: f64,
    pub probe_restart_gate_held: bool,
    pub surge_max_over_ramp_pct: f64,
    pub surge_dns_share_max_dev_pp: f64,
    pub fence_violations: usize,
}
