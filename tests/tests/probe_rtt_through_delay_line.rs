//! The probe measures the WAN: real TCP from client sites to a region's inference server crosses the NFQUEUE delay
//! line with a configured RTT of 5, 20 and 80 ms, and the real `sock_ops` probe's p50 srtt for each site's /24 is
//! within 10% (or 1 ms) of it; a fourth site whose path drops 3% of the packets (both directions) gets its
//! retransmits counted.
//!
//! One lab (1 region, 4 sites). Traffic is bounded: per site a kept-alive connection doing back-to-back
//! `GET /metrics` round trips (each response, acked by the next request, is one RTT sample on the server's socket);
//! the lossy site also pulls a few streamed completions (one segment per token) so that the server certainly has
//! to retransmit. The result is read with `steer-probe status` from the pinned maps.

#![allow(
    clippy::disallowed_types,
    reason = "the test drives real sockets across the real delay line on the real monotonic clock"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use steer_lab::lab::{INFER_PORT, Lab, LabSpec};

/// One-way delay per site (the delay line applies it in both directions): RTT 5, 20, 80 and 20 ms.
const ONE_WAY_MS: [f64; 4] = [2.5, 10.0, 40.0, 10.0];
/// The site whose path drops packets.
const LOSSY_SITE: usize = 3;
/// Its loss rate in percent, applied by the delay line to both directions.
const LOSS_PCT: f64 = 3.0;
/// Request/response round trips per site over one kept-alive connection.
const ROUND_TRIPS: usize = 40;
/// Streamed completions pulled by the lossy site, concurrently.
const LOSSY_STREAMS: usize = 6;
/// Tokens per stream (the lab's mock sends 50 per second, each in its own segment).
const STREAM_TOKENS: u32 = 100;
/// Bound of all the traffic; the lossy site stops (without failing) at this point.
const TRAFFIC_BUDGET: Duration = Duration::from_secs(20);
/// A read that sees nothing for this long fails the exchange (recovery from a loss takes well under it).
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest HTTP response accepted.
const RESPONSE_BYTES_MAX: usize = 1 << 20;

fn spec() -> LabSpec {
    let mut spec = LabSpec::new(
        &["us-east"],
        &["rtt5", "rtt20", "rtt80", "rtt20-loss3"],
        ONE_WAY_MS.iter().map(|&ms| vec![ms]).collect(),
    );
    spec.topology.loss_pct = (0..ONE_WAY_MS.len())
        .map(|j| vec![if j == LOSSY_SITE { LOSS_PCT } else { 0.0 }])
        .collect();
    spec
}

/// What one site's round trips did.
#[derive(Debug, Default)]
struct Trips {
    done: usize,
    connects: usize,
    errors: Vec<String>,
}

/// Reads one HTTP/1.1 response with a `Content-Length` into `buf`; fails unless it is a 200.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head.split_whitespace().nth(1).unwrap_or("");
            if status != "200" {
                return Err(format!("status {status:?}: {head}"));
            }
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| format!("no content-length: {head}"))?;
            let need = end + 4 + len;
            while buf.len() < need {
                let n = s.read(&mut chunk).map_err(|e| format!("read body: {e}"))?;
                if n == 0 {
                    return Err("connection closed inside the body".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            if buf.len() != need {
                return Err(format!("{} bytes beyond the response", buf.len() - need));
            }
            return Ok(());
        }
        if buf.len() > RESPONSE_BYTES_MAX {
            return Err("response head too long".into());
        }
        let n = s.read(&mut chunk).map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, READ_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    s.set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| format!("read timeout: {e}"))?;
    Ok(s)
}

/// `want` back-to-back `GET /metrics` round trips over one kept-alive connection (reconnecting after an error),
/// until `deadline`. Each next request goes out as soon as the response is read, so it acks the response at once
/// and the server's RTT sample holds no delayed-ACK wait.
fn round_trips(addr: SocketAddr, want: usize, deadline: Instant) -> Trips {
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: steer-rtt-test\r\n\r\n");
    let mut t = Trips::default();
    let mut buf = Vec::with_capacity(4096);
    let mut conn: Option<TcpStream> = None;
    while t.done < want && Instant::now() < deadline {
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match connect(addr) {
                Ok(s) => {
                    t.connects += 1;
                    conn.insert(s)
                }
                Err(e) => {
                    t.errors.push(e);
                    continue;
                }
            },
        };
        let r = s
            .write_all(req.as_bytes())
            .map_err(|e| format!("write request: {e}"))
            .and_then(|()| read_response(s, &mut buf));
        match r {
            Ok(()) => t.done += 1,
            Err(e) => {
                t.errors.push(format!("round trip {}: {e}", t.done));
                conn = None;
            }
        }
    }
    t
}

/// One streamed completion of `tokens` tokens; returns the bytes received. Ends at `[DONE]`, at the server's close
/// or at `deadline`.
fn stream(addr: SocketAddr, tokens: u32, deadline: Instant) -> Result<usize, String> {
    let mut s = connect(addr)?;
    let body = format!("{{\"max_tokens\":{tokens},\"stream\":true}}");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write request: {e}"))?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && got.len() < RESPONSE_BYTES_MAX {
        let n = s.read(&mut chunk).map_err(|e| format!("read stream: {e}"))?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        if got.windows(12).any(|w| w == b"data: [DONE]") {
            break;
        }
    }
    Ok(got.len())
}

/// One row of `steer-probe status`'s prefix table.
#[derive(Debug, Clone, Copy)]
struct Row {
    samples: u64,
    p50_us: u64,
    p90_us: u64,
    min_us: u64,
    retrans: u64,
}

/// The prefix table of `steer-probe status` (the lines after the `prefix samples p50_us ...` header), by prefix.
fn parse_status(out: &str) -> BTreeMap<String, Row> {
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .by_ref()
        .find(|l| l.split_whitespace().next() == Some("prefix"))
        .unwrap_or_else(|| panic!("no prefix table in steer-probe status:\n{out}"))
        .split_whitespace()
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in the prefix table:\n{out}"))
    };
    let (samples, p50, p90, min, retrans) = (
        col("samples"),
        col("p50_us"),
        col("p90_us"),
        col("min_us"),
        col("retrans"),
    );
    let mut rows = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != header.len() {
            continue;
        }
        let num = |i: usize| {
            f[i].parse::<u64>()
                .unwrap_or_else(|e| panic!("bad number {:?} in {line:?}: {e}", f[i]))
        };
        rows.insert(
            f[0].to_owned(),
            Row {
                samples: num(samples),
                p50_us: num(p50),
                p90_us: num(p90),
                min_us: num(min),
                retrans: num(retrans),
            },
        );
    }
    rows
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[test]
fn probe_p50_matches_the_configured_rtt_and_counts_retransmits() {
    steer_lab::require_root();
    let started = Instant::now();
    let mut lab =
        Lab::up(spec(), &mut |step| eprintln!("lab: {step}")).unwrap_or_else(|e| panic!("lab up: {e}"));
    eprintln!("lab up in {:.1} s", started.elapsed().as_secs_f64());
    let addr = SocketAddr::from((lab.topo.region_host(0), INFER_PORT));
    let traffic_start = Instant::now();
    let deadline = traffic_start + TRAFFIC_BUDGET;

    // Every site at once, each from its own namespace. The round-trip threads run at real-time priority (like
    // the delay line), so the client's turnaround between a response and the next request, which is part of the
    // server's RTT sample, is not stretched by other work on the cores.
    let trips: Vec<_> = (0..ONE_WAY_MS.len())
        .map(|j| {
            lab.topo
                .site(j)
                .spawn_thread(move || {
                    steer_lab::make_thread_realtime();
                    round_trips(addr, ROUND_TRIPS, deadline)
                })
                .unwrap_or_else(|e| panic!("site {j} thread: {e}"))
        })
        .collect();
    let streams: Vec<_> = (0..LOSSY_STREAMS)
        .map(|_| {
            lab.topo
                .site(LOSSY_SITE)
                .spawn_thread(move || stream(addr, STREAM_TOKENS, deadline))
                .unwrap_or_else(|e| panic!("stream thread: {e}"))
        })
        .collect();
    let trips: Vec<Trips> = trips
        .into_iter()
        .enumerate()
        .map(|(j, h)| {
            h.join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
                .unwrap_or_else(|e| panic!("site {j}: {e}"))
        })
        .collect();
    let streamed: Vec<Result<usize, String>> = streams
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
                .unwrap_or_else(|e| panic!("stream: {e}"))
        })
        .collect();
    let traffic_s = traffic_start.elapsed().as_secs_f64();

    let status = lab
        .probe_status(0)
        .unwrap_or_else(|e| panic!("steer-probe status: {e}"));
    let rows = parse_status(&status);
    let counters = lab
        .topo
        .stop_delay_line()
        .unwrap_or_else(|e| panic!("delay line counters: {e}"));
    // Rules are generated per (site, region) pair, site -> region first: the lossy site's pair is rules 2j, 2j+1.
    let loss_drops: u64 = counters
        .rules
        .iter()
        .skip(2 * LOSSY_SITE)
        .take(2)
        .map(|r| r.dropped_loss)
        .sum();

    let mut table = format!(
        "probe RTT through the delay line ({traffic_s:.1} s of traffic, {} s total)\n{:<12} {:<18} {:>7} {:>5} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6}\n",
        started.elapsed().as_secs(),
        "site",
        "prefix",
        "rtt_ms",
        "loss%",
        "trips",
        "samples",
        "p50_ms",
        "p90_ms",
        "min_ms",
        "tol_ms",
        "retrans",
        "ok"
    );
    let mut failures = Vec::new();
    for (j, t) in trips.iter().enumerate() {
        let name = &lab.spec.topology.sites[j];
        let prefix = lab.topo.site_subnet(j);
        let rtt_ms = 2.0 * ONE_WAY_MS[j];
        let tol_ms = (rtt_ms * 0.1).max(1.0);
        let loss = if j == LOSSY_SITE { LOSS_PCT } else { 0.0 };
        let Some(r) = rows.get(&prefix) else {
            let _ = writeln!(
                table,
                "{name:<12} {prefix:<18} {rtt_ms:>7.1} {loss:>5.1} {:>6} (no row)",
                t.done
            );
            failures.push(format!("{name}: no row for {prefix} in steer-probe status"));
            continue;
        };
        let p50_ms = ms(r.p50_us);
        let ok = if j == LOSSY_SITE {
            r.retrans > 0
        } else {
            (p50_ms - rtt_ms).abs() <= tol_ms
        };
        let _ = writeln!(
            table,
            "{name:<12} {prefix:<18} {rtt_ms:>7.1} {loss:>5.1} {:>6} {:>7} {p50_ms:>8.2} {:>8.2} {:>8.2} {:>8} {:>7} {:>6}",
            t.done,
            r.samples,
            ms(r.p90_us),
            ms(r.min_us),
            if j == LOSSY_SITE {
                "-".to_owned()
            } else {
                format!("{tol_ms:.1}")
            },
            r.retrans,
            if ok { "yes" } else { "NO" }
        );
        if j == LOSSY_SITE {
            if r.retrans == 0 {
                failures.push(format!(
                    "{name}: no retransmits counted for {prefix} although the delay line dropped {loss_drops} packets"
                ));
            }
        } else {
            // The round trips must all have happened, or the p50 would not describe them.
            if t.done != ROUND_TRIPS || !t.errors.is_empty() {
                failures.push(format!(
                    "{name}: {} of {ROUND_TRIPS} round trips, errors {:?}",
                    t.done, t.errors
                ));
            }
            if r.samples < (ROUND_TRIPS / 2) as u64 {
                failures.push(format!(
                    "{name}: only {} RTT samples for {ROUND_TRIPS} round trips",
                    r.samples
                ));
            }
            if !ok {
                failures.push(format!(
                    "{name}: p50 {p50_ms:.2} ms for a configured RTT of {rtt_ms:.1} ms (tolerance {tol_ms:.1} ms)"
                ));
            }
        }
    }
    let lossy = &trips[LOSSY_SITE];
    let _ = writeln!(
        table,
        "lossy site: {} round trips on {} connections ({} errors), streams {:?} bytes; delay line dropped {loss_drops} packets on its path",
        lossy.done,
        lossy.connects,
        lossy.errors.len(),
        streamed
    );
    eprintln!("{table}");
    assert!(
        failures.is_empty(),
        "{}\n{table}\nsteer-probe status:\n{status}",
        failures.join("\n")
    );
    assert!(
        loss_drops > 0,
        "the delay line dropped nothing on the lossy path: {counters:?}"
    );
}
