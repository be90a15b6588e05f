//! `cargo xtask bench dns`: steerd's steered answers side by side with gdnsd (geoip plugin), NSD,
//! Knot (geoip module) and stock hickory-dns, in one run, on this machine.
//!
//! Method (DESIGN.md, "Performance"): every server is pinned to core 0 (`taskset -c 0`) and dnsperf
//! to core 1 (`taskset -c 1`), over loopback, one bounded dnsperf run per server. dnsperf on one core
//! tops out near 200k QPS, so servers are compared by server CPU per answered query: utime + stime
//! of the server's process tree (all threads, all children) from `/proc`, before and after the run,
//! divided by dnsperf's "Queries completed".
//!
//! Workload: `api.bench.example. A` with ECS, one query per client /24 of the loaded set (100,000 by
//! default), shuffled, in dnsperf's binary input format (`-B`), so every query carries its own ECS
//! option; dnsperf 2.10's `-E` would put one subnet on every query of a run. steerd gets RTT data
//! for every prefix x 5 regions through `POST /v1/reports` before it is measured; gdnsd and Knot map
//! the same /24s to the same best region (gdnsd: `nets` of a geoip map; Knot: `mode: subnet` views
//! with `edns-client-subnet: on`); NSD and hickory-dns answer the same name statically.
//!
//! Everything goes to `target/bench/`; the table to stdout, the numbers to `target/bench/dns.json`.

#![allow(
    clippy::print_stdout,
    reason = "the benchmark's table is its output; progress goes to stderr"
)]

use crate::prereqs::output;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{run, step};

/// Client /24 prefixes with RTT data (and ECS subnets queried).
const PREFIXES_DEFAULT: usize = 100_000;
/// Seconds of each measured dnsperf run.
const SECONDS_DEFAULT: u32 = 10;
/// Seconds of the unmeasured warm-up run before each measured one.
const WARMUP_SECONDS: u32 = 1;
/// Seconds of the idle window (no queries) in which each server's background CPU is read.
const IDLE_SECONDS: u64 = 3;
/// dnsperf's rate cap: far above what one core of dnsperf sends, so it never binds.
const DNSPERF_MAX_QPS: &str = "1000000";
/// `steering_core::telemetry::wire::PREFIXES_PER_REPORT_MAX`.
const PREFIXES_PER_REPORT_MAX: usize = 4096;
/// How long a server may take to answer its first query.
const READY_TIMEOUT: Duration = Duration::from_mins(1);
/// The core the servers run on, and dnsperf's.
const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";
const ZONE: &str = "bench.example";
const STEERED: &str = "api.bench.example";
const TTL_S: u32 = 20;
/// Debian packages, with why.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("dnsperf", "the load generator"),
    ("gdnsd", "peer: gdnsd 3.8 with its geoip plugin"),
    ("nsd", "peer: NSD, static answers"),
    ("knot", "peer: Knot DNS"),
    ("knot-module-geoip", "Knot's geoip module (subnet views with ECS)"),
];
/// Daemons the packages above may start on install (they are stopped again).
const DAEMONS: &[&str] = &["gdnsd", "nsd", "knotd"];
/// The hickory-dns release line compared against (steerd builds on hickory-server of this line).
const HICKORY_VERSION: &str = "~0.26";
const HICKORY_LINE: &str = "0.26.";

/// The five regions: name, `(lat, lon)`; region k answers `198.18.(k+1).10` and `2001:db8:(k+1)::10`.
const REGIONS: [(&str, (f64, f64)); 5] = [
    ("us-east", (39.0, -77.5)),
    ("us-west", (45.6, -121.2)),
    ("eu-west", (53.3, -6.2)),
    ("ap-south", (19.1, 72.9)),
    ("sa-east", (-23.5, -46.6)),
];

fn endpoint(region: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, region as u8 + 1, 10)
}

#[derive(Debug, Clone, Copy)]
struct Options {
    prefixes: usize,
    seconds: u32,
    /// Use the steerd already in target/release (for iterating on the benchmark itself).
    no_build: bool,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        prefixes: PREFIXES_DEFAULT,
        seconds: SECONDS_DEFAULT,
        no_build: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| -> Result<u64> {
            it.next()
                .with_context(|| format!("{what} needs a number"))?
                .replace('_', "")
                .parse()
                .with_context(|| format!("{what}: not a number"))
        };
        match a.as_str() {
            "--prefixes" => o.prefixes = value("--prefixes")? as usize,
            "--seconds" => o.seconds = value("--seconds")? as u32,
            "--no-build" => o.no_build = true,
            other => {
                bail!("bench dns: unknown option {other:?} (known: --prefixes N, --seconds N, --no-build)")
            }
        }
    }
    if !(1_000..=2_000_000).contains(&o.prefixes) || !(1..=120).contains(&o.seconds) {
        bail!("bench dns: --prefixes 1000..=2000000, --seconds 1..=120");
    }
    Ok(o)
}

/// One line of the result.
#[derive(Debug, Clone)]
struct Row {
    server: String,
    /// `None`: not measured (the reason is in `notes`).
    measured: Option<Measured>,
    notes: String,
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    qps: f64,
    cpu_us_per_query: f64,
    queries: u64,
    lost: u64,
    cpu_s: f64,
    wall_s: f64,
    rss_mib: f64,
    noerror_pct: f64,
    response_bytes: u32,
    /// Share of a core the server uses with no queries at all (background work).
    idle_cpu_pct: f64,
}

impl Measured {
    /// CPU per query without the background share measured while idle: a lower bound of the query
    /// path's own cost (under load the background work gets less of the core than while idle).
    fn cpu_us_per_query_excl_idle(&self) -> f64 {
        let busy = (self.cpu_s - self.idle_cpu_pct / 100.0 * self.wall_s).max(0.0);
        busy * 1e6 / self.queries as f64
    }
}

pub(crate) fn bench(args: &[String]) -> Result<()> {
    let started = Instant::now();
    let opts = options(args)?;
    let dir = PathBuf::from("target/bench");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir.canonicalize()?;

    ensure_debian_packages()?;
    let hickory = ensure_hickory();
    if opts.no_build {
        step("steerd: using the release binary already built (--no-build)");
    } else {
        step("building steerd (release)");
        run(crate::cargo().args(["build", "--release", "-p", "dns-server", "--bin", "steerd"]))?;
    }
    let steerd = PathBuf::from("target/release/steerd")
        .canonicalize()
        .context("target/release/steerd")?;

    step(&format!(
        "generating the workload into {}: {} client /24s x {} regions",
        dir.display(),
        opts.prefixes,
        REGIONS.len()
    ));
    let data = Data::generate(opts.prefixes);
    let queries = dir.join("queries.bin");
    fs::write(&queries, data.dnsperf_input())?;
    eprintln!(
        "    {} (dnsperf -B input: {} queries for {STEERED} A, each with its own ECS /24)",
        queries.display(),
        data.prefixes.len()
    );

    let mut rows = Vec::new();
    rows.push(bench_steerd(&steerd, &dir, &data, &queries, opts)?);
    rows.push(guard("gdnsd-geoip", || bench_gdnsd(&dir, &data, &queries, opts)));
    rows.push(guard("nsd", || bench_nsd(&dir, &queries, opts)));
    rows.push(guard("knot-geoip", || bench_knot(&dir, &data, &queries, opts)));
    rows.push(match hickory {
        Ok(bin) => guard("hickory-dns", || bench_hickory(&bin, &dir, &queries, opts)),
        Err(why) => Row {
            server: "hickory-dns".into(),
            measured: None,
            notes: format!("not available: {why}"),
        },
    });

    let out = dir.join("dns.json");
    fs::write(&out, json(&rows, opts)).with_context(|| format!("write {}", out.display()))?;
    print_table(&rows, opts);
    eprintln!(
        "\nbench dns: {} in {:.0}s; JSON in {}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// A peer that fails is reported in the table, not fatal.
fn guard(server: &str, f: impl FnOnce() -> Result<Row>) -> Row {
    f().unwrap_or_else(|e| {
        eprintln!("    {server}: FAILED: {e:#}");
        Row {
            server: server.into(),
            measured: None,
            notes: format!("not available: {}", one_line(&format!("{e:#}"))),
        }
    })
}

pub(crate) fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 160 {
        format!("{}...", s.chars().take(157).collect::<String>())
    } else {
        s
    }
}

// === prerequisites ===

fn ensure_debian_packages() -> Result<()> {
    let missing = crate::prereqs::missing_debian("the DNS benchmark", DEBIAN_PACKAGES)?;
    if missing.is_empty() {
        return Ok(());
    }
    // No init system runs here, but the packages' maintainer scripts still try `invoke-rc.d`:
    // policy-rc.d exit 101 tells them not to start anything.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        eprintln!(
            "    writing {} (exit 101) so the daemons do not start on install",
            policy.display()
        );
        fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        run(Command::new("chmod").args(["755"]).arg(policy))?;
    }
    let before = daemon_pids();
    let result = crate::prereqs::apt_install(&missing);
    if ours {
        let _ = fs::remove_file(policy);
    }
    // Whatever the install started anyway (a daemon that appeared meanwhile, on its packaged
    // configuration), stop it by its pid.
    for (pid, comm) in daemon_pids() {
        if before.iter().any(|(p, _)| *p == pid) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("target/bench") {
            continue;
        }
        eprintln!("    the install started {comm} (pid {pid}): stopping it");
        let _ = run(Command::new("kill").args(["-TERM", &pid.to_string()]));
    }
    result
}

/// Running processes named like the peers' daemons.
fn daemon_pids() -> Vec<(u32, String)> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let comm = comm.trim();
        DAEMONS.contains(&comm).then(|| (pid, comm.to_owned()))
    })
    .collect()
}

/// Tools' chatter goes with the progress on stderr: stdout carries only the table.
pub(crate) fn to_stderr() -> Stdio {
    Stdio::from(std::io::stderr())
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(bin)).find(|p| p.is_file())
}

/// Stock hickory-dns of the 0.26 line, from crates.io. `Err`: why it is not available.
fn ensure_hickory() -> Result<PathBuf, String> {
    step(&format!(
        "prerequisite: stock hickory-dns {HICKORY_VERSION} (cargo install)"
    ));
    let version = |bin: &Path| output(Command::new(bin).arg("--version")).unwrap_or_default();
    if let Some(bin) = find_in_path("hickory-dns") {
        let v = version(&bin);
        if v.contains(HICKORY_LINE) {
            eprintln!("    ok: {} ({})", v.trim(), bin.display());
            return Ok(bin);
        }
        eprintln!(
            "    {} is {:?}: installing the {HICKORY_LINE}x line",
            bin.display(),
            v.trim()
        );
    }
    eprintln!("    installing hickory-dns from crates.io (a few minutes on 2 cores, once)");
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "hickory-dns", "--version", HICKORY_VERSION, "--locked"]);
    if let Err(e) = run(&mut cmd) {
        return Err(format!(
            "cargo install hickory-dns {HICKORY_VERSION} failed ({e})"
        ));
    }
    let bin = find_in_path("hickory-dns").ok_or("installed, but no hickory-dns binary found")?;
    let v = version(&bin);
    if v.contains(HICKORY_LINE) {
        Ok(bin)
    } else {
        Err(format!("installed hickory-dns reports {:?}", v.trim()))
    }
}

// === the workload ===

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The client prefixes, their RTT per region and hence their best region. Deterministic.
#[derive(Debug)]
struct Data {
    /// The first three octets of each /24, spread over the unicast IPv4 space.
    prefixes: Vec<[u8; 3]>,
    /// Per prefix, per region: median smoothed RTT in microseconds.
    rtt_us: Vec<[u32; 5]>,
    /// Per prefix: the region with the lowest RTT (clearly lowest: no stabilize ties).
    best: Vec<u8>,
}

impl Data {
    fn generate(n: usize) -> Data {
        let mut seed = 0x5EED_D0D0_u64;
        let mut seen = HashSet::with_capacity(n);
        let mut prefixes = Vec::with_capacity(n);
        while prefixes.len() < n {
            let r = splitmix(&mut seed);
            let a = (r >> 16) as u8;
            // Unicast, not 0/8, 10/8, 127/8, 198.18/15 (the answers) or multicast and above.
            if a == 0 || a == 10 || a == 127 || a >= 224 {
                continue;
            }
            let p = [a, (r >> 8) as u8, r as u8];
            if p[0] == 198 && (p[1] & 0xFE) == 18 {
                continue;
            }
            if seen.insert(p) {
                prefixes.push(p);
            }
        }
        let mut rtt_us = Vec::with_capacity(n);
        let mut best = Vec::with_capacity(n);
        for _ in 0..n {
            let b = (splitmix(&mut seed) % 5) as usize;
            let mut row = [0u32; 5];
            for (r, v) in row.iter_mut().enumerate() {
                let h = splitmix(&mut seed);
                *v = if r == b {
                    10_000 + (h % 30_000) as u32
                } else {
                    90_000 + (h % 160_000) as u32
                };
            }
            rtt_us.push(row);
            best.push(b as u8);
        }
        Data {
            prefixes,
            rtt_us,
            best,
        }
    }

    fn net(&self, i: usize) -> String {
        let [a, b, c] = self.prefixes[i];
        format!("{a}.{b}.{c}.0/24")
    }

    /// dnsperf's `-B` input: per query a 2-byte length and the message. Shuffled prefix order.
    fn dnsperf_input(&self) -> Vec<u8> {
        let mut order: Vec<usize> = (0..self.prefixes.len()).collect();
        let mut seed = 0xD15E_A5E5_u64;
        for i in (1..order.len()).rev() {
            let j = (splitmix(&mut seed) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut out = Vec::with_capacity(order.len() * 60);
        for (n, i) in order.into_iter().enumerate() {
            let q = query(n as u16, self.prefixes[i]);
            out.extend_from_slice(&(q.len() as u16).to_be_bytes());
            out.extend_from_slice(&q);
        }
        out
    }
}

/// `api.bench.example. IN A`, RD clear (an authoritative workload), EDNS (1232) with ECS `net.0/24`.
fn query(id: u16, net: [u8; 3]) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in STEERED.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    // OPT: root owner, type 41, payload 1232, ext-rcode/version/flags 0, rdlen 11.
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 11]);
    // ECS: code 8, length 7, family 1, source /24, scope 0, three address bytes.
    q.extend_from_slice(&[0, 8, 0, 7, 0, 1, 24, 0]);
    q.extend_from_slice(&net);
    q
}

/// What a probe query got back.
#[derive(Debug)]
struct Answer {
    rcode: u8,
    addrs: Vec<Ipv4Addr>,
    ecs_scope: Option<u8>,
}

fn skip_name(m: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *m.get(i)?;
        if len & 0xC0 == 0xC0 {
            return Some(i + 2);
        }
        if len == 0 {
            return Some(i + 1);
        }
        i += 1 + usize::from(len);
    }
}

fn parse_answer(m: &[u8]) -> Option<Answer> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]));
    let rcode = m.get(3)? & 0x0F;
    let (qd, an, ns, ar) = (u16_at(4)?, u16_at(6)?, u16_at(8)?, u16_at(10)?);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(m, i)? + 4;
    }
    let mut addrs = Vec::new();
    let mut ecs_scope = None;
    for n in 0..(an + ns + ar) {
        i = skip_name(m, i)?;
        let (ty, rdlen) = (u16_at(i)?, usize::from(u16_at(i + 8)?));
        let rd = m.get(i + 10..i + 10 + rdlen)?;
        if n < an && ty == 1 && rdlen == 4 {
            addrs.push(Ipv4Addr::new(rd[0], rd[1], rd[2], rd[3]));
        }
        if ty == 41 {
            let mut o = 0;
            while o + 4 <= rd.len() {
                let code = u16::from_be_bytes([rd[o], rd[o + 1]]);
                let len = usize::from(u16::from_be_bytes([rd[o + 2], rd[o + 3]]));
                if code == 8 && len >= 4 {
                    ecs_scope = rd.get(o + 7).copied();
                }
                o += 4 + len;
            }
        }
        i += 10 + rdlen;
    }
    Some(Answer {
        rcode,
        addrs,
        ecs_scope,
    })
}

fn probe(port: u16, net: [u8; 3]) -> Result<Answer> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let q = query(0x4242, net);
    sock.send_to(&q, ("127.0.0.1", port))?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf)?;
    parse_answer(&buf[..n]).ok_or_else(|| anyhow!("unparsable response ({n} bytes)"))
}

/// Waits until the server answers, then checks a few answers against the RTT map.
fn wait_ready(server: &mut Server, port: u16, data: &Data) -> Result<String> {
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "{} exited with {status} (log: {})",
                server.name,
                server.log.display()
            );
        }
        match probe(port, data.prefixes[0]) {
            Ok(a) if a.rcode == 0 && !a.addrs.is_empty() => break,
            Ok(a) if started.elapsed() > READY_TIMEOUT => {
                bail!("{} answers rcode {} with {:?}", server.name, a.rcode, a.addrs)
            }
            Err(e) if started.elapsed() > READY_TIMEOUT => {
                bail!("{} does not answer on 127.0.0.1:{port}: {e}", server.name)
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let checks = 20.min(data.prefixes.len());
    let (mut best, mut scope) = (0, None);
    for k in 0..checks {
        let i = k * data.prefixes.len() / checks;
        let a = probe(port, data.prefixes[i])?;
        if a.addrs.first() == Some(&endpoint(usize::from(data.best[i]))) {
            best += 1;
        }
        scope = scope.or(a.ecs_scope);
    }
    let scope = scope.map_or_else(|| "no ECS in answers".to_owned(), |s| format!("ECS scope /{s}"));
    eprintln!(
        "    {} answers after {:.1}s; {best}/{checks} sampled answers name the prefix's best region; {scope}",
        server.name,
        started.elapsed().as_secs_f64()
    );
    Ok(format!("{best}/{checks} best-region answers, {scope}"))
}

// === servers ===

/// A server this benchmark started; stopped by its pid when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Server {
    /// Starts `program args` pinned to the server core, output into `dir/<name>.log`.
    fn start(name: &str, dir: &Path, program: &Path, args: &[String]) -> Result<Server> {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log)?;
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", SERVER_CORE])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        eprintln!("    $ {}  (> {})", crate::render(&cmd), log.display());
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        Ok(Server {
            name: name.into(),
            child,
            log,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM by pid, then SIGKILL after a grace period.
    pub(crate) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.pid();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                eprintln!("    stopped {} (pid {pid})", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("    {} (pid {pid}) ignored SIGTERM: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free on loopback for both UDP and TCP right now.
fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
pub(crate) fn clock_ticks() -> f64 {
    output(Command::new("getconf").arg("CLK_TCK"))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `(ppid, utime + stime)` of a process.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the `(comm)`: state ppid ... utime(14th field) stime(15th).
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

/// CPU ticks of `pid` and all its descendants (every thread is in its process's times).
fn tree_ticks(pid: u32) -> u64 {
    let all: Vec<(u32, u32, u64)> = fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| {
                let p: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let (ppid, t) = stat(p)?;
                Some((p, ppid, t))
            })
            .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![pid];
    let mut total = 0;
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        for &(c, ppid, t) in &all {
            if c == p {
                total += t;
            }
            if ppid == p && !tree.contains(&c) {
                tree.push(c);
            }
        }
        i += 1;
    }
    total
}

fn rss_mib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// dnsperf's summary.
#[derive(Debug, Default)]
struct Perf {
    completed: u64,
    lost: u64,
    qps: f64,
    noerror_pct: f64,
    response_bytes: u32,
    run_s: f64,
}

fn dnsperf(port: u16, queries: &Path, seconds: u32) -> Result<Perf> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", CLIENT_CORE, "dnsperf", "-B", "-d"])
        .arg(queries)
        .args(["-s", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-l",
            &seconds.to_string(),
            "-Q",
            DNSPERF_MAX_QPS,
            "-c",
            "4",
            "-q",
            "200",
            "-t",
            "2",
        ]);
    eprintln!("    $ {}", crate::render(&cmd));
    let out = cmd.output().context("run dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("dnsperf failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    let field = |name: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
    };
    let num = |name: &str| -> Option<f64> { field(name)?.split_whitespace().next()?.parse().ok() };
    let completed = num("Queries completed:").context("dnsperf printed no \"Queries completed\"")? as u64;
    let noerror = field("Response codes:")
        .and_then(|s| {
            let at = s.find("NOERROR ")?;
            s[at..].split('(').nth(1)?.split('%').next()?.parse().ok()
        })
        .unwrap_or(0.0);
    let response_bytes = field("Average packet size:")
        .and_then(|s| s.split("response").nth(1)?.trim().parse().ok())
        .unwrap_or(0);
    Ok(Perf {
        completed,
        lost: num("Queries lost:").unwrap_or(0.0) as u64,
        qps: num("Queries per second:").unwrap_or(0.0),
        noerror_pct: noerror,
        response_bytes,
        run_s: num("Run time (s):").unwrap_or(f64::from(seconds)),
    })
}

/// Warm-up, then one measured dnsperf run with the server's CPU read around it.
fn measure(server: &Server, port: u16, queries: &Path, opts: Options) -> Result<Measured> {
    eprintln!("    warm-up ({WARMUP_SECONDS}s, not counted)");
    dnsperf(port, queries, WARMUP_SECONDS)?;
    let pid = server.pid();
    let idle0 = tree_ticks(pid);
    let idle_started = Instant::now();
    std::thread::sleep(Duration::from_secs(IDLE_SECONDS));
    let idle_s = (tree_ticks(pid) - idle0) as f64 / clock_ticks();
    let idle_cpu_pct = 100.0 * idle_s / idle_started.elapsed().as_secs_f64();
    eprintln!("    idle for {IDLE_SECONDS}s: the server used {idle_cpu_pct:.1}% of a core without queries");
    let before = tree_ticks(pid);
    let perf = dnsperf(port, queries, opts.seconds)?;
    let after = tree_ticks(pid);
    if perf.completed == 0 {
        bail!("no query answered");
    }
    let cpu_s = (after.saturating_sub(before)) as f64 / clock_ticks();
    let m = Measured {
        qps: perf.qps,
        cpu_us_per_query: cpu_s * 1e6 / perf.completed as f64,
        queries: perf.completed,
        lost: perf.lost,
        cpu_s,
        wall_s: perf.run_s,
        rss_mib: rss_mib(pid),
        noerror_pct: perf.noerror_pct,
        response_bytes: perf.response_bytes,
        idle_cpu_pct,
    };
    eprintln!(
        "    {}: {:.0} qps, {} answered ({} lost, NOERROR {:.2}%), server CPU {:.2}s ({:.0}% of a core) = {:.2} us/query (>= {:.2} without the idle share), RSS {:.0} MiB",
        server.name,
        m.qps,
        m.queries,
        m.lost,
        m.noerror_pct,
        m.cpu_s,
        100.0 * m.cpu_s / m.wall_s.max(0.001),
        m.cpu_us_per_query,
        m.cpu_us_per_query_excl_idle(),
        m.rss_mib
    );
    Ok(m)
}

// === steerd ===

fn zone_file(api: &str) -> String {
    format!(
        "$ORIGIN {ZONE}.\n$TTL 3600\n\
         @       IN SOA  ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 1209600 60\n\
         @       IN NS   ns1.{ZONE}.\n\
         ns1     IN A    198.18.0.53\n\
         www     IN A    198.18.0.80\n\
         {api}"
    )
}

fn steerd_policy() -> String {
    let mut s = format!("# Generated by `cargo xtask bench dns`.\nzone: {ZONE}.\n\nregions:\n");
    for (k, (name, (lat, lon))) in REGIONS.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {name}:\n    endpoints: [{}, \"2001:db8:{}::10\"]\n    location: {{ lat: {lat}, lon: {lon} }}",
            endpoint(k),
            k + 1
        );
    }
    let _ = write!(
        s,
        "\nservices:\n  api:\n    mode: latency\n    answers: 1\n    ttl: {{ normal: {TTL_S}s, min: 5s }}\n\n\
         # Hosts report once, before the measurement: they must not turn stale during it.\n\
         health: {{ fall: 2, rise: 1, stale_after: 1h }}\n"
    );
    s
}

/// A minimal HTTP/1.1 exchange with steerd's admin listener: `(status, body)`.
fn http(addr: SocketAddr, method: &str, path: &str, token: &str, body: &[u8]) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad HTTP response from {addr}: {:?}", resp.get(..80)))?;
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One region's probe report (telemetry protocol v1) with RTT for `range` of the prefixes.
fn report(data: &Data, region: usize, seq: u64, range: std::ops::Range<usize>) -> String {
    let name = REGIONS[region].0;
    let mut s = format!(
        "{{\"version\":1,\"region\":\"{name}\",\"host\":\"bench-{name}-1\",\"seq\":{seq},\
         \"sent_at_ms\":{},\"interval_ms\":1000,\"health\":{{\"ok\":true,\"checks\":[]}},\
         \"load\":{{\"queue_depth\":0,\"kv_cache_usage\":0.0,\"active_connections\":0}},\
         \"gate\":{{\"mode\":\"open\",\"syn_seen\":0,\"syn_admitted\":0,\"syn_dropped\":0}},\"rtt\":[",
        now_ms()
    );
    for (n, i) in range.enumerate() {
        let p50 = data.rtt_us[i][region];
        let _ = write!(
            s,
            "{}{{\"prefix\":\"{}\",\"samples\":16,\"srtt_us_p50\":{p50},\"srtt_us_p90\":{},\"srtt_us_min\":{},\"retrans\":0}}",
            if n == 0 { "" } else { "," },
            data.net(i),
            p50 + p50 / 2,
            p50 - p50 / 5
        );
    }
    s.push_str("]}");
    s
}

/// A number after `"key":` in compact JSON.
fn json_number(body: &str, key: &str) -> Option<u64> {
    let at = body.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = body[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn prometheus(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' ')?.trim().parse().ok())
}

fn bench_steerd(steerd: &Path, dir: &Path, data: &Data, queries: &Path, opts: Options) -> Result<Row> {
    step("steerd: policy (5 regions, latency service api), zone, tokens");
    let sdir = dir.join("steerd");
    fs::create_dir_all(&sdir)?;
    let (policy, zone, tokens) = (
        sdir.join("policy.yaml"),
        sdir.join("zone.db"),
        sdir.join("tokens"),
    );
    fs::write(&policy, steerd_policy())?;
    fs::write(&zone, zone_file(""))?;
    let token = |who: &str| format!("bench-{who}-{:016x}", splitmix(&mut (who.len() as u64 * 7919)));
    let mut t = format!("admin {}\n", token("admin"));
    for (name, _) in REGIONS {
        let _ = writeln!(t, "region {name} {}", token(name));
    }
    fs::write(&tokens, t)?;
    run(Command::new(steerd)
        .args(["check", "--policy"])
        .arg(&policy)
        .arg("--zone")
        .arg(&zone)
        .stdout(to_stderr()))?;

    step("steerd: start, pinned to core 0 (one UDP worker)");
    let (port, admin_port) = (free_port()?, free_port()?);
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let p = |p: &Path| p.display().to_string();
    let args = vec![
        "serve".into(),
        "--policy".into(),
        p(&policy),
        "--zone".into(),
        p(&zone),
        "--tokens".into(),
        p(&tokens),
        "--dns".into(),
        format!("127.0.0.1:{port}"),
        "--admin".into(),
        admin.to_string(),
        "--udp-workers".into(),
        "1".into(),
    ];
    let mut server = Server::start("steerd", &sdir, steerd, &args)?;
    let started = Instant::now();
    while http(admin, "GET", "/healthz", "", b"").is_err() {
        if let Some(status) = server.child.try_wait()? {
            bail!("steerd exited with {status} (log: {})", server.log.display());
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("steerd's admin API does not answer on {admin}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let n = data.prefixes.len();
    step(&format!(
        "steerd: ingest RTT for {n} prefixes x {} regions through POST /v1/reports ({PREFIXES_PER_REPORT_MAX} per report)",
        REGIONS.len()
    ));
    let ingest = Instant::now();
    let mut reports = 0;
    for (r, (name, _)) in REGIONS.iter().enumerate() {
        let mut seq = 0;
        for start in (0..n).step_by(PREFIXES_PER_REPORT_MAX) {
            seq += 1;
            let body = report(data, r, seq, start..(start + PREFIXES_PER_REPORT_MAX).min(n));
            let (status, resp) = http(admin, "POST", "/v1/reports", &token(name), body.as_bytes())?;
            if status != 200 {
                bail!("POST /v1/reports ({name}, seq {seq}): {status} {resp}");
            }
            reports += 1;
        }
        eprintln!("    {name}: {seq} reports accepted");
    }
    eprintln!(
        "    {reports} reports in {:.1}s; waiting for every region to be up and the snapshot to hold every row",
        ingest.elapsed().as_secs_f64()
    );
    // Rows: one per measured prefix, plus the covering (/16) aggregates.
    let (want_rows, want_prefixes) = (n as u64, (n * REGIONS.len()) as u64);
    let admin_token = token("admin");
    loop {
        let (status, body) = http(admin, "GET", "/v1/state", &admin_token, b"")?;
        let up = body.matches("\"status\":\"up\"").count();
        let rows = json_number(&body, "snapshot_rtt_rows").unwrap_or(0);
        let prefixes = json_number(&body, "telemetry_prefixes").unwrap_or(0);
        if status == 200 && up == REGIONS.len() && rows >= want_rows && prefixes >= want_prefixes {
            eprintln!("    {up} regions up, {prefixes} telemetry prefixes, {rows} snapshot rows");
            break;
        }
        if started.elapsed() > READY_TIMEOUT * 3 {
            bail!("steerd state not ready: {up} regions up, {prefixes} prefixes, {rows} rows: {body}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let rss_loaded = rss_mib(server.pid());
    eprintln!(
        "    steerd RSS with {n} prefixes x {} regions: {rss_loaded:.0} MiB",
        REGIONS.len()
    );

    step(&format!(
        "steerd: {}s of dnsperf (pinned to core 1)",
        opts.seconds
    ));
    let check = wait_ready(&mut server, port, data)?;
    let (_, metrics0) = http(admin, "GET", "/metrics", &admin_token, b"")?;
    let m = measure(&server, port, queries, opts)?;
    let (_, metrics1) = http(admin, "GET", "/metrics", &admin_token, b"")?;
    let delta = |metric: &str| {
        prometheus(&metrics1, metric).unwrap_or(0.0) - prometheus(&metrics0, metric).unwrap_or(0.0)
    };
    let builds = delta("steerd_snapshot_builds_total");
    let slow = delta("steerd_queries_slow_path_total");
    let build_ms = prometheus(&metrics1, "steerd_snapshot_build_last_microseconds").unwrap_or(0.0) / 1e3;
    eprintln!(
        "    during the run: {builds:.0} snapshot rebuilds (last took {build_ms:.1} ms), {slow:.0} queries on the slow path"
    );
    server.stop();
    Ok(Row {
        server: "steerd".into(),
        measured: Some(m),
        notes: format!(
            "steered A, ECS per query, {n} prefixes x 5 regions via /v1/reports; {check}; \
             {builds:.0} snapshot rebuilds during the run ({build_ms:.1} ms each), {slow:.0} slow-path queries; \
             RSS {rss_loaded:.0} MiB loaded"
        ),
    })
}

// === peers ===

fn bench_gdnsd(dir: &Path, data: &Data, queries: &Path, opts: Options) -> Result<Row> {
    step("gdnsd 3.8, geoip plugin: nets map of the same /24s to their best region (ECS honoured)");
    let gdir = dir.join("gdnsd");
    for sub in ["zones", "geoip", "run", "state"] {
        fs::create_dir_all(gdir.join(sub))?;
    }
    let port = free_port()?;
    let names: Vec<&str> = REGIONS.iter().map(|r| r.0).collect();
    let mut dcmap = String::new();
    for (k, name) in names.iter().enumerate() {
        let _ = write!(dcmap, "{name} => {}, ", endpoint(k));
    }
    let config = format!(
        "options => {{\n  listen => [ 127.0.0.1:{port} ]\n  udp_threads => 1\n  tcp_threads => 1\n  \
         run_dir => {run}\n  state_dir => {state}\n}}\n\
         plugins => {{ geoip => {{\n  maps => {{ bench => {{\n    datacenters => [ {dcs} ]\n    nets => nets\n  }} }}\n  \
         resources => {{ api => {{ map => bench, dcmap => {{ {dcmap} }} }} }}\n}} }}\n",
        run = gdir.join("run").display(),
        state = gdir.join("state").display(),
        dcs = names.join(", "),
    );
    fs::write(gdir.join("config"), config)?;
    let mut nets = String::with_capacity(data.prefixes.len() * 32);
    for i in 0..data.prefixes.len() {
        let _ = writeln!(nets, "{} => {}", data.net(i), names[usize::from(data.best[i])]);
    }
    fs::write(gdir.join("geoip/nets"), nets)?;
    fs::write(
        gdir.join("zones").join(ZONE),
        zone_file(&format!("api     {TTL_S} DYNA geoip!api\n")),
    )?;
    let c = ["-c".to_owned(), gdir.display().to_string()];
    run(Command::new("gdnsd")
        .args(&c)
        .arg("checkconf")
        .stdout(to_stderr()))?;
    let mut server = Server::start(
        "gdnsd",
        &gdir,
        Path::new("/usr/sbin/gdnsd"),
        &[c[0].clone(), c[1].clone(), "start".into()],
    )?;
    let check = wait_ready(&mut server, port, data)?;
    let m = measure(&server, port, queries, opts)?;
    server.stop();
    Ok(Row {
        server: "gdnsd-geoip".into(),
        measured: Some(m),
        notes: format!("geoip plugin, nets map of the same /24s, udp_threads => 1; {check}"),
    })
}

fn bench_nsd(dir: &Path, queries: &Path, opts: Options) -> Result<Row> {
    step("NSD: static answer for api (no ECS), rrl-ratelimit: 0");
    let ndir = dir.join("nsd");
    fs::create_dir_all(&ndir)?;
    let port = free_port()?;
    let d = ndir.display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  do-ip6: no\n  server-count: 1\n  \
         reuseport: no\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  \
         zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  \
         pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 0\n  rrl-ratelimit: 0\n  \
         rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\n\
         zone:\n  name: {ZONE}\n  zonefile: \"{d}/{ZONE}.zone\"\n"
    );
    let conf_path = ndir.join("nsd.conf");
    fs::write(&conf_path, conf)?;
    fs::write(
        ndir.join(format!("{ZONE}.zone")),
        zone_file(&format!("api     {TTL_S} IN A {}\n", endpoint(0))),
    )?;
    run(Command::new("nsd-checkconf").arg(&conf_path).stdout(to_stderr()))?;
    let args = ["-d".to_owned(), "-c".into(), conf_path.display().to_string()];
    let mut server = Server::start("nsd", &ndir, Path::new("/usr/sbin/nsd"), &args)?;
    let data_one = static_probe_data();
    wait_ready(&mut server, port, &data_one)?;
    let m = measure(&server, port, queries, opts)?;
    server.stop();
    Ok(Row {
        server: "nsd".into(),
        measured: Some(m),
        notes:
            "static A (no geo, ECS ignored), server-count: 1, rrl-ratelimit: 0; CPU of the whole process tree"
                .into(),
    })
}

/// For the static servers: one prefix whose "best" region is the static answer's.
fn static_probe_data() -> Data {
    Data {
        prefixes: vec![[192, 0, 2]],
        rtt_us: vec![[0; 5]],
        best: vec![0],
    }
}

fn bench_knot(dir: &Path, data: &Data, queries: &Path, opts: Options) -> Result<Row> {
    step("Knot DNS, geoip module in subnet mode: the same /24s -> best region, edns-client-subnet: on");
    let kdir = dir.join("knot");
    fs::create_dir_all(kdir.join("run"))?;
    fs::create_dir_all(kdir.join("db"))?;
    let port = free_port()?;
    let d = kdir.display();
    let mut geo = String::with_capacity(data.prefixes.len() * 48);
    let _ = writeln!(geo, "{STEERED}.:");
    for i in 0..data.prefixes.len() {
        let _ = writeln!(
            geo,
            "  - net: {}\n    A: {}",
            data.net(i),
            endpoint(usize::from(data.best[i]))
        );
    }
    fs::write(kdir.join("geo.conf"), geo)?;
    let conf = format!(
        "server:\n    rundir: \"{d}/run\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    \
         tcp-workers: 1\n    background-workers: 1\n    edns-client-subnet: on\n\
         database:\n    storage: \"{d}/db\"\n\
         log:\n  - target: stderr\n    any: warning\n\
         mod-geoip:\n  - id: bench\n    config-file: \"{d}/geo.conf\"\n    ttl: {TTL_S}\n    mode: subnet\n\
         zone:\n  - domain: {ZONE}.\n    storage: \"{d}\"\n    file: \"{ZONE}.zone\"\n    \
         journal-content: none\n    zonefile-sync: -1\n    module: mod-geoip/bench\n"
    );
    let conf_path = kdir.join("knot.conf");
    fs::write(&conf_path, conf)?;
    // The static A (a non-region address) is what Knot answers when the module does not.
    fs::write(
        kdir.join(format!("{ZONE}.zone")),
        zone_file(&format!("api     {TTL_S} IN A 198.18.0.1\n")),
    )?;
    run(Command::new("knotc")
        .arg("-c")
        .arg(&conf_path)
        .arg("conf-check")
        .stdout(to_stderr()))?;
    let args = ["-c".to_owned(), conf_path.display().to_string()];
    let mut server = Server::start("knot", &kdir, Path::new("/usr/sbin/knotd"), &args)?;
    let check = wait_ready(&mut server, port, data)?;
    let m = measure(&server, port, queries, opts)?;
    server.stop();
    Ok(Row {
        server: "knot-geoip".into(),
        measured: Some(m),
        notes: format!(
            "geoip module, {} subnet views, udp-workers: 1; {check}",
            data.prefixes.len()
        ),
    })
}

fn bench_hickory(bin: &Path, dir: &Path, queries: &Path, opts: Options) -> Result<Row> {
    step("stock hickory-dns: the same zone from a file, static answer for api");
    let hdir = dir.join("hickory");
    fs::create_dir_all(&hdir)?;
    let port = free_port()?;
    fs::write(
        hdir.join(format!("{ZONE}.zone")),
        zone_file(&format!("api     {TTL_S} IN A {}\n", endpoint(0))),
    )?;
    let conf = format!(
        "listen_addrs_ipv4 = [\"127.0.0.1\"]\nlisten_port = {port}\ndirectory = \"{}\"\n\
         # Root drops to nobody; Debian's group for it is nogroup.\nuser = \"nobody\"\ngroup = \"nogroup\"\n\n\
         [[zones]]\nzone = \"{ZONE}\"\nzone_type = \"Primary\"\n\n[zones.stores]\ntype = \"file\"\nzone_path = \"{ZONE}.zone\"\n",
        hdir.display()
    );
    let conf_path = hdir.join("named.toml");
    fs::write(&conf_path, conf)?;
    let version = output(Command::new(bin).arg("--version")).unwrap_or_default();
    // -q: warnings only; at its default level it logs a line per query, which would measure the logger.
    let args = [
        "-q".to_owned(),
        "-c".into(),
        conf_path.display().to_string(),
        "-p".into(),
        port.to_string(),
    ];
    let mut server = Server::start("hickory-dns", &hdir, bin, &args)?;
    wait_ready(&mut server, port, &static_probe_data())?;
    let m = measure(&server, port, queries, opts)?;
    server.stop();
    Ok(Row {
        server: "hickory-dns".into(),
        measured: Some(m),
        notes: format!("{}, file zone, static A, -q (warn logging)", version.trim()),
    })
}

// === output ===

fn ratio(rows: &[Row], m: &Measured) -> Option<f64> {
    let s = rows.iter().find(|r| r.server == "steerd")?.measured?;
    Some(m.cpu_us_per_query / s.cpu_us_per_query)
}

fn print_table(rows: &[Row], opts: Options) {
    println!(
        "\nDNS: server CPU per answered query, every server on core 0, dnsperf on core 1, {}s each, \
         {} ECS /24s",
        opts.seconds, opts.prefixes
    );
    println!(
        "{:<12} | {:>9} | {:>16} | {:>14} | notes",
        "server", "qps", "cpu_us_per_query", "ratio vs steerd"
    );
    println!(
        "{:-<12}-+-{:->9}-+-{:->16}-+-{:->14}-+-{:-<5}",
        "", "", "", "", ""
    );
    for r in rows {
        match &r.measured {
            Some(m) => {
                let idle = if m.idle_cpu_pct >= 50.0 {
                    // The background work then takes most of the core: subtracting it says nothing.
                    format!("busy {:.0}% of a core with no queries at all; ", m.idle_cpu_pct)
                } else if m.idle_cpu_pct >= 1.0 {
                    format!(
                        "idle {:.0}% of a core without queries (>= {:.2} us/query without that share); ",
                        m.idle_cpu_pct,
                        m.cpu_us_per_query_excl_idle()
                    )
                } else {
                    String::new()
                };
                println!(
                    "{:<12} | {:>9.0} | {:>16.2} | {:>14} | {idle}{}",
                    r.server,
                    m.qps,
                    m.cpu_us_per_query,
                    ratio(rows, m).map_or_else(|| "-".into(), |x| format!("{x:.2}x")),
                    r.notes
                );
            }
            None => println!(
                "{:<12} | {:>9} | {:>16} | {:>14} | {}",
                r.server, "-", "-", "-", r.notes
            ),
        }
    }
    println!(
        "(ratio vs steerd: the server's CPU per query over steerd's, measured in this run; >1 = costs more than steerd)"
    );
    let cpu = |name: &str| rows.iter().find(|r| r.server == name).and_then(|r| r.measured);
    if let (Some(s), Some(g)) = (cpu("steerd"), cpu("gdnsd-geoip")) {
        println!(
            "target (steerd's steered answers cost no more CPU per query than gdnsd's geoip answers): {} ({:.2} vs {:.2} us/query)",
            if s.cpu_us_per_query <= g.cpu_us_per_query {
                "met"
            } else {
                "NOT met"
            },
            s.cpu_us_per_query,
            g.cpu_us_per_query
        );
    }
}

pub(crate) fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json(rows: &[Row], opts: Options) -> String {
    let mut s = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(s, "  {{\"server\": {}", json_str(&r.server));
        match &r.measured {
            Some(m) => {
                let _ = write!(
                    s,
                    ", \"qps\": {:.1}, \"cpu_us_per_query\": {:.4}, \"cpu_ratio_vs_steerd\": {}, \
                     \"queries\": {}, \"lost\": {}, \"server_cpu_s\": {:.3}, \"run_s\": {:.3}, \
                     \"server_cpu_pct\": {:.1}, \"idle_cpu_pct\": {:.1}, \"cpu_us_per_query_excl_idle\": {:.4}, \
                     \"rss_mib\": {:.1}, \"noerror_pct\": {:.2}, \"response_bytes\": {}",
                    m.qps,
                    m.cpu_us_per_query,
                    ratio(rows, m).map_or_else(|| "null".into(), |x| format!("{x:.4}")),
                    m.queries,
                    m.lost,
                    m.cpu_s,
                    m.wall_s,
                    100.0 * m.cpu_s / m.wall_s.max(0.001),
                    m.idle_cpu_pct,
                    m.cpu_us_per_query_excl_idle(),
                    m.rss_mib,
                    m.noerror_pct,
                    m.response_bytes
                );
            }
            None => s.push_str(", \"qps\": null, \"cpu_us_per_query\": null"),
        }
        let _ = writeln!(
            s,
            ", \"prefixes\": {}, \"seconds\": {}, \"notes\": {}}}{}",
            opts.prefixes,
            opts.seconds,
            json_str(&r.notes),
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    s.push_str("]\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_query_round_trips_through_the_answer_parser() {
        let q = query(7, [203, 0, 113]);
        let a = parse_answer(&q).expect("a query parses as a message");
        assert_eq!(a.rcode, 0);
        assert!(a.addrs.is_empty());
        assert_eq!(a.ecs_scope, Some(0));
    }

    #[test]
    fn workload_is_deterministic_and_has_a_clear_best_region() {
        let d = Data::generate(2_000);
        assert_eq!(d.prefixes, Data::generate(2_000).prefixes);
        for (row, &b) in d.rtt_us.iter().zip(&d.best) {
            let best = row[usize::from(b)];
            assert!(
                row.iter()
                    .enumerate()
                    .all(|(r, &v)| r == usize::from(b) || v > best * 2)
            );
        }
    }
}
