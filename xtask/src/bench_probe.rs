//! `cargo xtask bench probe`: what the steer-probe BPF programs cost, in one run, on this machine.
//!
//! 1. `sock_ops` "rtt": request/response round trips per second over loopback TCP in a network
//!    namespace of our own, one connection, 64-byte requests, back to back. Two identical echo
//!    servers run pinned to core 0 (the client is pinned to core 1): one in a fresh cgroup v2
//!    directory with the `sock_ops` program attached (the agent's `--cgroup`, its port watched),
//!    one in a sibling cgroup with nothing attached. The runs alternate between the two servers
//!    (`--rounds` each, `--seconds` each) and the medians are compared; the probe's own sample
//!    count shows that it took an RTT sample on every round trip.
//! 2. XDP "gate" in drain mode vs nftables: `hping3 --flood` SYNs (SYN without ACK, a new source
//!    port per packet) from a client namespace into the server namespace's veth (static neighbour
//!    entry, no ARP), generator pinned to core 0. A veth delivers in the sender's softirq, so the
//!    generator and the receive path (the gate, or nftables) share core 0 and nothing else runs
//!    there: the SYNs dropped per second are what one core can generate and drop, the same offered
//!    load for every filter. Compared: the gate in drain mode (native XDP on the veth, counted by
//!    `steer-probe status`), an nftables `netdev ingress` rule on the veth (the earliest hook
//!    nftables has) and an `inet prerouting` rule at priority -300 (before conntrack), each
//!    `tcp flags & (syn | ack) == syn` to the gated port with `counter drop`, with no XDP program
//!    attached. A "sink" run with the server veth down (the client veth discards every SYN at
//!    once) measures the generator's own cost per SYN; core 0's busy time per SYN (`/proc/stat`)
//!    minus the sink's is the receive path's cost per SYN, whose ratio is the per-SYN ratio.
//!
//! The agent is the real `steer-probe run` (release build) in the server namespace (entered with
//! `nsenter --net`, which keeps the host's cgroup2 mount visible), pinned to core 1, reporting to
//! a steerd URL nothing listens on (it keeps the programs attached and the gate state), pins on a
//! private bpffs under /tmp. Everything it creates (namespaces, cgroups, the bpffs mount,
//! processes) is removed on every exit path; leftovers of a killed run are removed at the start
//! of the next one.
//!
//! Table on stdout, numbers in `target/bench/probe.json`, logs in `target/bench/probe/`.

#![allow(
    clippy::print_stdout,
    reason = "the benchmark's table is its output; progress goes to stderr"
)]

use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::bench_dns::{Server, json_str, one_line, to_stderr};
use crate::prereqs::output;
use crate::{run, step};

/// Seconds of each measured round-trip run.
const SECONDS_DEFAULT: u32 = 5;
/// Measured round-trip runs with and without the program (alternating).
const ROUNDS_DEFAULT: u32 = 3;
/// Seconds of each measured SYN flood.
const FLOOD_SECONDS_DEFAULT: u32 = 4;
/// Measured floods per filter (gate, nft ingress, nft prerouting in turn).
const FLOOD_ROUNDS_DEFAULT: u32 = 3;
/// The overhead the issue allows the `sock_ops` program (fewer round trips per second).
const TARGET_OVERHEAD_PCT: f64 = 3.0;
/// Request (and response) size of the round trips.
const REQUEST_BYTES: usize = 64;
/// Seconds of the unmeasured warm-up run against each echo server.
const WARMUP_SECONDS: u32 = 1;
/// Seconds the flood runs before its counters are read (ARP, ramp-up).
const FLOOD_RAMP: Duration = Duration::from_millis(700);
/// How long the agent may take to attach both programs.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The core the servers (and the SYN generator with the receive path) run on, and the core of
/// the clients, the agent and this process.
const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";
/// Echo server in the probed cgroup (watched port), the one in the plain cgroup, and the flood
/// target (gated, nothing listens).
const PORT_PROBED: u16 = 8000;
const PORT_PLAIN: u16 = 8001;
const PORT_FLOOD: u16 = 8002;
/// The veth pair: server side (gate, nftables) and client side (generator).
const SRV_IF: &str = "sbp0";
const CLI_IF: &str = "sbp1";
const SRV_ADDR: &str = "198.18.250.1";
const CLI_ADDR: &str = "198.18.250.2";
/// Prefix of every name this benchmark creates (namespaces, cgroups, mount points), then the pid.
const NAME_PREFIX: &str = "steer-bench-probe-";
/// A port on the server namespace's loopback that nothing listens on: the agent's steerd.
const STEERD_UNREACHABLE: &str = "http://127.0.0.1:9";
/// nftables table names.
const NFT_TABLE: &str = "steer_bench";
/// Debian packages, with why.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("hping3", "the SYN flood generator (raw socket, one core)"),
    ("nftables", "nft: the rules the gate is compared with"),
    ("util-linux", "nsenter (enter the namespaces), taskset (pinning)"),
];

#[derive(Debug, Clone, Copy)]
struct Options {
    seconds: u32,
    rounds: u32,
    flood_seconds: u32,
    flood_rounds: u32,
    /// Use the steer-probe already in target/release (for iterating on the benchmark itself).
    no_build: bool,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        seconds: SECONDS_DEFAULT,
        rounds: ROUNDS_DEFAULT,
        flood_seconds: FLOOD_SECONDS_DEFAULT,
        flood_rounds: FLOOD_ROUNDS_DEFAULT,
        no_build: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| -> Result<u32> {
            it.next()
                .with_context(|| format!("{what} needs a number"))?
                .parse()
                .with_context(|| format!("{what}: not a number"))
        };
        match a.as_str() {
            "--seconds" => o.seconds = value("--seconds")?,
            "--rounds" => o.rounds = value("--rounds")?,
            "--flood-seconds" => o.flood_seconds = value("--flood-seconds")?,
            "--flood-rounds" => o.flood_rounds = value("--flood-rounds")?,
            "--no-build" => o.no_build = true,
            other => bail!(
                "bench probe: unknown option {other:?} (known: --seconds N, --rounds N, \
                 --flood-seconds N, --flood-rounds N, --no-build)"
            ),
        }
    }
    if !(1..=60).contains(&o.seconds)
        || !(1..=10).contains(&o.rounds)
        || !(1..=60).contains(&o.flood_seconds)
        || !(1..=5).contains(&o.flood_rounds)
    {
        bail!("bench probe: --seconds 1..=60, --rounds 1..=10, --flood-seconds 1..=60, --flood-rounds 1..=5");
    }
    Ok(o)
}

pub(crate) fn bench(args: &[String]) -> Result<()> {
    // The helpers the benchmark runs inside its namespaces (xtask forbids unsafe, so no setns).
    match args.first().map(String::as_str) {
        Some("--echo-server") => return echo_server(&args[1..]),
        Some("--echo-client") => return echo_client(&args[1..]),
        _ => {}
    }
    let started = Instant::now();
    let opts = options(args)?;
    if output(Command::new("id").arg("-u")).is_none_or(|s| s.trim() != "0") {
        bail!("bench probe loads BPF programs and creates namespaces: run it as root");
    }
    let dir = PathBuf::from("target/bench/probe");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir.canonicalize()?;

    ensure_debian_packages()?;
    if opts.no_build {
        step("steer-probe: using the release binary already built (--no-build)");
    } else {
        crate::prereqs::ensure_all()?;
        step("building steer-probe (release)");
        run(crate::cargo().args(["build", "--release", "-p", "steer-probe", "--bin", "steer-probe"]))?;
    }
    let agent_bin = PathBuf::from("target/release/steer-probe")
        .canonicalize()
        .context("target/release/steer-probe")?;
    let xtask = std::env::current_exe().context("the xtask binary")?;

    step(&format!(
        "pinning this process to core {CLIENT_CORE}: core {SERVER_CORE} runs only what is measured"
    ));
    run(Command::new("taskset")
        .args(["-a", "-p", "-c", CLIENT_CORE, &std::process::id().to_string()])
        .stdout(to_stderr()))?;
    remove_leftovers();

    let mut lab = Lab::up(&dir, &agent_bin)?;
    let rtt = bench_rtt(&mut lab, &xtask, opts);
    if let Err(e) = &rtt {
        eprintln!("    round trips: FAILED: {e:#}");
    }
    let syn = bench_syn(&mut lab, opts);
    if let Err(e) = &syn {
        eprintln!("    SYN flood: FAILED: {e:#}");
    }
    step("cleaning up (processes, pins, bpffs, namespaces, cgroups)");
    drop(lab);

    let out = PathBuf::from("target/bench/probe.json");
    fs::write(&out, json(&rtt, &syn, opts)).with_context(|| format!("write {}", out.display()))?;
    print_table(&rtt, &syn, opts);
    eprintln!(
        "\nbench probe: done in {:.0}s; JSON in {}, logs in {}",
        started.elapsed().as_secs_f64(),
        out.display(),
        dir.display()
    );
    match (rtt, syn) {
        (Ok(_), Ok(_)) => Ok(()),
        (Err(e), _) | (_, Err(e)) => Err(e.context("bench probe: a part failed (see the table)")),
    }
}

// === prerequisites ===

fn ensure_debian_packages() -> Result<()> {
    let missing = crate::prereqs::missing_debian("the probe benchmark", DEBIAN_PACKAGES)?;
    crate::prereqs::apt_install(&missing)
}

// === commands ===

/// `program` inside network namespace `ns`, entered with `nsenter --net` (mounts stay the host's,
/// so the cgroup2 mount and the bpffs under /tmp stay where they are).
fn in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(program);
    c
}

/// `program` pinned to `core` inside `ns`.
fn pinned_in_netns(ns: &str, core: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = in_netns(ns, "taskset");
    c.args(["-c", core]).arg(program);
    c
}

/// Runs `cmd` quietly; its stdout, or an error with its stderr.
fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {}", crate::render(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            crate::render(cmd),
            out.status,
            one_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a long-running process (logging into `log`); stopped by its pid when dropped.
fn start(name: &str, mut cmd: Command, log: &Path) -> Result<Server> {
    let out = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    eprintln!("    $ {}  (> {})", crate::render(&cmd), log.display());
    let child = cmd.spawn().with_context(|| format!("start {name}"))?;
    Ok(Server {
        name: name.into(),
        child,
        log: log.to_path_buf(),
    })
}

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

// === the lab: namespaces, veth, cgroups, bpffs, agent ===

/// Everything the benchmark sets up; torn down on drop, in reverse order.
#[derive(Debug)]
struct Lab {
    dir: PathBuf,
    agent_bin: PathBuf,
    srv: String,
    cli: String,
    namespaces: Vec<String>,
    cgroup_probed: PathBuf,
    cgroup_plain: PathBuf,
    cgroups: Vec<PathBuf>,
    bpffs: Option<PathBuf>,
    pin_dir: PathBuf,
    token: PathBuf,
    agent: Option<Server>,
    agent_starts: u32,
    /// `native` or `generic` (how the gate is attached to the veth).
    xdp_mode: String,
}

fn cgroup2_root() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup2 mount: sock_ops needs cgroup v2")
}

/// The pid in a name `NAME_PREFIX<what>-<pid>`.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?.rsplit('-').next()?.parse().ok()
}

/// Removes what a killed earlier run left behind (its pid is gone): namespaces, the bpffs mount
/// point, cgroups.
fn remove_leftovers() {
    let stale = |name: &str| owner_pid(name).is_some_and(|p| !pid_alive(p));
    let netns = output(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for ns in netns.lines().filter_map(|l| l.split_whitespace().next()) {
        if stale(ns) {
            eprintln!("    removing the leftover namespace {ns}");
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let p = Path::new(m);
        if p.parent() == Some(&std::env::temp_dir())
            && p.file_name().and_then(|n| n.to_str()).is_some_and(stale)
        {
            eprintln!("    removing the leftover bpffs {m}");
            let _ = fs::remove_dir_all(p.join("steer"));
            let _ = Command::new("umount").args(["-l", m]).status();
            let _ = fs::remove_dir(p);
        }
    }
    if let Ok(root) = cgroup2_root()
        && let Ok(rd) = fs::read_dir(&root)
    {
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(stale) {
                eprintln!("    removing the leftover cgroup {}", e.path().display());
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}

impl Lab {
    fn up(dir: &Path, agent_bin: &Path) -> Result<Lab> {
        let pid = std::process::id();
        let root = cgroup2_root()?;
        let mut lab = Lab {
            dir: dir.to_path_buf(),
            agent_bin: agent_bin.to_path_buf(),
            srv: format!("{NAME_PREFIX}srv-{pid}"),
            cli: format!("{NAME_PREFIX}cli-{pid}"),
            namespaces: Vec::new(),
            cgroup_probed: root.join(format!("{NAME_PREFIX}probed-{pid}")),
            cgroup_plain: root.join(format!("{NAME_PREFIX}plain-{pid}")),
            cgroups: Vec::new(),
            bpffs: None,
            pin_dir: PathBuf::new(),
            token: dir.join("token"),
            agent: None,
            agent_starts: 0,
            xdp_mode: String::new(),
        };
        step(&format!(
            "namespaces {} and {} joined by a veth ({SRV_IF} {SRV_ADDR} <-> {CLI_IF} {CLI_ADDR})",
            lab.srv, lab.cli
        ));
        for ns in [lab.srv.clone(), lab.cli.clone()] {
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            lab.namespaces.push(ns.clone());
            run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]))?;
        }
        let (srv, cli) = (lab.srv.clone(), lab.cli.clone());
        run(Command::new("ip").args([
            "link", "add", SRV_IF, "netns", &srv, "type", "veth", "peer", "name", CLI_IF, "netns", &cli,
        ]))?;
        for (ns, dev, addr) in [(&srv, SRV_IF, SRV_ADDR), (&cli, CLI_IF, CLI_ADDR)] {
            run(Command::new("ip").args(["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]))?;
            run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]))?;
        }
        // A static neighbour entry: no ARP, and the sink run (server veth down) sends on.
        let link = capture(Command::new("ip").args(["-n", &srv, "-br", "link", "show", "dev", SRV_IF]))?;
        let mac = link
            .split_whitespace()
            .nth(2)
            .context("the server veth's MAC")?
            .to_owned();
        run(Command::new("ip").args([
            "-n",
            &cli,
            "neigh",
            "replace",
            SRV_ADDR,
            "lladdr",
            &mac,
            "dev",
            CLI_IF,
            "nud",
            "permanent",
        ]))?;

        step("cgroups: one for the probed echo server (sock_ops attached), a sibling with nothing attached");
        for cg in [lab.cgroup_probed.clone(), lab.cgroup_plain.clone()] {
            fs::create_dir(&cg).with_context(|| format!("create {}", cg.display()))?;
            eprintln!("    created {}", cg.display());
            lab.cgroups.push(cg);
        }

        step("a private bpffs for the pins (unmounted at the end)");
        let mount = std::env::temp_dir().join(format!("{NAME_PREFIX}bpffs-{pid}"));
        fs::create_dir_all(&mount)?;
        run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&mount))?;
        lab.pin_dir = mount.join("steer");
        lab.bpffs = Some(mount);
        fs::write(&lab.token, "bench-probe-token\n")?;
        Ok(lab)
    }

    fn pin(&self) -> &str {
        self.pin_dir.to_str().unwrap_or_default()
    }

    /// `steer-probe run` in the server namespace, pinned to the client core; returns once both
    /// links are pinned (attached).
    fn start_agent(&mut self) -> Result<()> {
        self.agent_starts += 1;
        let log = self.dir.join(format!("agent-{}.log", self.agent_starts));
        let mut cmd = pinned_in_netns(&self.srv, CLIENT_CORE, &self.agent_bin);
        cmd.args([
            "run",
            "--region",
            "bench",
            "--host",
            "bench-probe",
            "--server",
            STEERD_UNREACHABLE,
        ])
        .arg("--token-file")
        .arg(&self.token)
        .arg("--cgroup")
        .arg(&self.cgroup_probed)
        .args(["--iface", SRV_IF])
        .args(["--ports", &format!("{PORT_PROBED},{PORT_FLOOD}")])
        .args(["--pin-dir", self.pin(), "--metrics-listen", "127.0.0.1:9464"])
        .env("STEER_LOG", "info");
        let mut agent = start("steer-probe", cmd, &log)?;
        let started = Instant::now();
        let links = [
            self.pin_dir.join(steer_link("gate")),
            self.pin_dir.join(steer_link("rtt")),
        ];
        while !links.iter().all(|l| l.exists()) {
            if let Some(st) = agent.child.try_wait()? {
                bail!(
                    "steer-probe run exited ({st}): {}",
                    one_line(&fs::read_to_string(&log).unwrap_or_default())
                );
            }
            if started.elapsed() > AGENT_READY_TIMEOUT {
                bail!(
                    "steer-probe run did not attach within {AGENT_READY_TIMEOUT:?} (log: {})",
                    log.display()
                );
            }
            sleep(Duration::from_millis(50));
        }
        let link = capture(Command::new("ip").args(["-n", &self.srv, "link", "show", "dev", SRV_IF]))?;
        self.xdp_mode = if link.contains("xdpgeneric") {
            "generic (skb)".into()
        } else if link.contains("xdp") {
            "native".into()
        } else {
            bail!(
                "the gate is pinned but {SRV_IF} shows no XDP program: {}",
                one_line(&link)
            );
        };
        eprintln!(
            "    agent up after {:.1}s: sock_ops on {}, XDP ({}) on {SRV_IF}",
            started.elapsed().as_secs_f64(),
            self.cgroup_probed.display(),
            self.xdp_mode
        );
        self.agent = Some(agent);
        Ok(())
    }

    /// Stops the agent and detaches both programs (their pinned links are the last references).
    fn stop_agent_and_detach(&mut self) -> Result<()> {
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
        for l in [steer_link("gate"), steer_link("rtt")] {
            let p = self.pin_dir.join(l);
            if p.exists() {
                fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
            }
        }
        let link = capture(Command::new("ip").args(["-n", &self.srv, "link", "show", "dev", SRV_IF]))?;
        if link.contains("xdp") {
            bail!(
                "{SRV_IF} still has an XDP program after unpinning: {}",
                one_line(&link)
            );
        }
        eprintln!("    agent stopped, programs detached ({SRV_IF} has no XDP program)");
        Ok(())
    }

    fn steer_probe(&self, args: &[&str]) -> Result<String> {
        capture(
            Command::new(&self.agent_bin)
                .args(args)
                .args(["--pin-dir", self.pin()]),
        )
    }

    /// An echo server in `cgroup`, pinned to the server core, on 127.0.0.1:`port` of the server
    /// namespace.
    fn echo_server(&self, xtask: &Path, port: u16, cgroup: &Path) -> Result<Server> {
        let mut cmd = pinned_in_netns(&self.srv, SERVER_CORE, xtask);
        cmd.args([
            "bench",
            "probe",
            "--echo-server",
            &format!("127.0.0.1:{port}"),
            "--cgroup",
        ])
        .arg(cgroup);
        start(
            &format!("echo-server:{port}"),
            cmd,
            &self.dir.join(format!("echo-{port}.log")),
        )
    }

    /// One client run (pinned to the client core): round trips and seconds.
    fn echo_client(&self, xtask: &Path, port: u16, seconds: u32) -> Result<(u64, f64)> {
        let mut cmd = pinned_in_netns(&self.srv, CLIENT_CORE, xtask);
        cmd.args([
            "bench",
            "probe",
            "--echo-client",
            &format!("127.0.0.1:{port}"),
            "--seconds",
            &seconds.to_string(),
        ]);
        let out = capture(&mut cmd)?;
        parse_client(&out).with_context(|| format!("echo client printed {out:?}"))
    }

    /// A counter file of `dev` in `ns` (`/sys/class/net/DEV/statistics/NAME`).
    fn dev_stat(ns: &str, dev: &str, name: &str) -> Result<u64> {
        let out = capture(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/sys/class/net/{dev}/statistics/{name}"),
        ]))?;
        out.trim()
            .parse()
            .with_context(|| format!("{dev} {name}: {out:?}"))
    }
}

/// The pin file of a link (`steer_probe::loader::LINK_GATE` / `LINK_RTT`).
fn steer_link(which: &str) -> String {
    format!("link_{which}")
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
        if !self.pin_dir.as_os_str().is_empty() && self.pin_dir.exists() {
            // Removing the pins detaches the programs and frees the maps.
            if let Err(e) = fs::remove_dir_all(&self.pin_dir) {
                eprintln!("    cleanup: removing {}: {e}", self.pin_dir.display());
            }
        }
        if let Some(m) = self.bpffs.take() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
            let _ = fs::remove_dir(&m);
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        for cg in self.cgroups.drain(..).rev() {
            // The echo servers were stopped (and reaped) before the lab is dropped.
            let mut tries = 0;
            while fs::remove_dir(&cg).is_err() && tries < 20 {
                tries += 1;
                sleep(Duration::from_millis(50));
            }
            if cg.exists() {
                eprintln!("    cleanup: could not remove the cgroup {}", cg.display());
            }
        }
    }
}

// === the helpers run inside the namespaces ===

/// `--echo-server ADDR --cgroup DIR`: moves itself into DIR, then echoes every connection.
fn echo_server(args: &[String]) -> Result<()> {
    let (addr, cgroup) = match args {
        [addr, flag, cg] if flag == "--cgroup" => (addr.parse::<SocketAddr>()?, PathBuf::from(cg)),
        _ => bail!("usage: bench probe --echo-server ADDR --cgroup DIR"),
    };
    // Before the listener exists: accepted sockets belong to the listener's cgroup.
    fs::write(cgroup.join("cgroup.procs"), format!("{}\n", std::process::id()))
        .with_context(|| format!("moving into {}", cgroup.display()))?;
    let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    for conn in listener.incoming() {
        let mut s = conn?;
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// `--echo-client ADDR --seconds N`: back-to-back round trips on one connection for N seconds;
/// prints `round_trips=R seconds=S`.
fn echo_client(args: &[String]) -> Result<()> {
    let (addr, seconds) = match args {
        [addr, flag, s] if flag == "--seconds" => (addr.parse::<SocketAddr>()?, s.parse::<u64>()?),
        _ => bail!("usage: bench probe --echo-client ADDR --seconds N"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => bail!("connect {addr}: {e}"),
            Err(_) => sleep(Duration::from_millis(20)),
        }
    };
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let req = [0x5Au8; REQUEST_BYTES];
    let mut resp = [0u8; REQUEST_BYTES];
    let run_for = Duration::from_secs(seconds);
    let started = Instant::now();
    let mut n: u64 = 0;
    loop {
        // The clock is read every 64 round trips.
        for _ in 0..64 {
            s.write_all(&req)?;
            s.read_exact(&mut resp)?;
        }
        n += 64;
        if started.elapsed() >= run_for {
            break;
        }
    }
    println!("round_trips={n} seconds={:.6}", started.elapsed().as_secs_f64());
    Ok(())
}

fn parse_client(out: &str) -> Option<(u64, f64)> {
    let field = |k: &str| {
        out.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .map(str::to_owned)
    };
    Some((
        field("round_trips=")?.parse().ok()?,
        field("seconds=")?.parse().ok()?,
    ))
}

// === part 1: round trips with and without sock_ops ===

#[derive(Debug, Clone)]
struct Rtt {
    /// Round trips per second of each measured run.
    without: Vec<f64>,
    with: Vec<f64>,
    /// RTT samples the probe counted during the runs with it, and the round trips of those runs.
    samples: u64,
    with_round_trips: u64,
}

impl Rtt {
    fn overhead_pct(&self) -> f64 {
        let (w, p) = (median(&self.without), median(&self.with));
        100.0 * (w - p) / w
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => f64::midpoint(s[n / 2 - 1], s[n / 2]),
    }
}

/// Sum of the `samples` column of `steer-probe status` (every prefix).
fn status_samples(status: &str) -> u64 {
    status
        .lines()
        .skip_while(|l| !l.starts_with("prefix "))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// `dropped=N` of the `new flows:` line of `steer-probe status`.
fn status_dropped(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("new flows: "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("dropped="))?
        .parse()
        .ok()
}

fn bench_rtt(lab: &mut Lab, xtask: &Path, opts: Options) -> Result<Rtt> {
    step(&format!(
        "round trips: echo servers on core {SERVER_CORE} (port {PORT_PROBED} in the probed cgroup, \
         {PORT_PLAIN} in the plain one), the agent on core {CLIENT_CORE}"
    ));
    let mut servers = vec![
        lab.echo_server(xtask, PORT_PROBED, &lab.cgroup_probed)?,
        lab.echo_server(xtask, PORT_PLAIN, &lab.cgroup_plain)?,
    ];
    lab.start_agent()?;
    let result = (|| {
        for s in &mut servers {
            if let Some(st) = s.child.try_wait()? {
                bail!("{} exited ({st}); log {}", s.name, s.log.display());
            }
        }
        eprintln!("    warm-up ({WARMUP_SECONDS}s against each server, not counted)");
        lab.echo_client(xtask, PORT_PLAIN, WARMUP_SECONDS)?;
        lab.echo_client(xtask, PORT_PROBED, WARMUP_SECONDS)?;
        step(&format!(
            "round trips: {} x {}s without and with the sock_ops program, alternating, one connection, {REQUEST_BYTES}-byte requests",
            opts.rounds, opts.seconds
        ));
        let mut r = Rtt {
            without: Vec::new(),
            with: Vec::new(),
            samples: 0,
            with_round_trips: 0,
        };
        for round in 0..opts.rounds {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for with in order {
                let port = if with { PORT_PROBED } else { PORT_PLAIN };
                let before = if with {
                    status_samples(&lab.steer_probe(&["status", "--top", "100000"])?)
                } else {
                    0
                };
                let (n, secs) = lab.echo_client(xtask, port, opts.seconds)?;
                let rate = n as f64 / secs;
                if with {
                    let after = status_samples(&lab.steer_probe(&["status", "--top", "100000"])?);
                    r.samples += after.saturating_sub(before);
                    r.with_round_trips += n;
                    r.with.push(rate);
                } else {
                    r.without.push(rate);
                }
                eprintln!(
                    "    round {}: {:<8} {n:>9} round trips in {secs:.2}s = {rate:>8.0}/s",
                    round + 1,
                    if with { "with" } else { "without" }
                );
            }
        }
        eprintln!(
            "    medians: without {:.0}/s, with {:.0}/s: {:+.2}% fewer with the program; it counted {} RTT samples in {} round trips",
            median(&r.without),
            median(&r.with),
            r.overhead_pct(),
            r.samples,
            r.with_round_trips
        );
        Ok(r)
    })();
    for mut s in servers {
        s.stop();
    }
    result
}

// === part 2: SYN flood, gate vs nftables ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// The server veth down: the client veth discards every SYN (the generator alone).
    Sink,
    Gate,
    NftIngress,
    NftPrerouting,
}

impl Filter {
    const ALL: [Filter; 4] = [
        Filter::Sink,
        Filter::Gate,
        Filter::NftIngress,
        Filter::NftPrerouting,
    ];

    fn name(self) -> &'static str {
        match self {
            Filter::Sink => "sink",
            Filter::Gate => "gate-drain",
            Filter::NftIngress => "nft-netdev-ingress",
            Filter::NftPrerouting => "nft-inet-prerouting",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Filter::Sink => "server veth down: the client veth discards every SYN (the generator's own cost)",
            Filter::Gate => "steer-probe gate drain (XDP on the server veth)",
            Filter::NftIngress => "nftables netdev ingress hook on the server veth, priority -500",
            Filter::NftPrerouting => "nftables inet prerouting, priority -300 (before conntrack)",
        }
    }

    /// The nftables ruleset (`nft -f`), for the nftables filters.
    fn ruleset(self) -> Option<String> {
        let rule = format!("tcp dport {PORT_FLOOD} tcp flags & (syn | ack) == syn counter drop");
        match self {
            Filter::Sink | Filter::Gate => None,
            Filter::NftIngress => Some(format!(
                "table netdev {NFT_TABLE} {{\n  chain ingress {{\n    type filter hook ingress device \"{SRV_IF}\" priority -500; policy accept;\n    {rule}\n  }}\n}}\n"
            )),
            Filter::NftPrerouting => Some(format!(
                "table inet {NFT_TABLE} {{\n  chain prerouting {{\n    type filter hook prerouting priority -300; policy accept;\n    iifname \"{SRV_IF}\" {rule}\n  }}\n}}\n"
            )),
        }
    }

    fn family(self) -> &'static str {
        match self {
            Filter::NftIngress => "netdev",
            Filter::Sink | Filter::Gate | Filter::NftPrerouting => "inet",
        }
    }
}

/// One measured flood.
#[derive(Debug, Clone, Copy)]
struct Flood {
    seconds: f64,
    /// SYNs the client veth sent or discarded (what the generator offered).
    offered: u64,
    /// SYNs the filter counted as dropped (the sink: the client veth's discards).
    dropped: u64,
    /// Busy share of the flood core (0..=1): generator plus receive path.
    core_busy: f64,
}

impl Flood {
    fn offered_pps(&self) -> f64 {
        self.offered as f64 / self.seconds
    }
    fn dropped_pps(&self) -> f64 {
        self.dropped as f64 / self.seconds
    }
    /// Flood-core CPU per offered SYN: generator plus receive path.
    fn ns_per_syn(&self) -> f64 {
        self.core_busy * self.seconds * 1e9 / self.offered.max(1) as f64
    }
}

#[derive(Debug, Clone)]
struct Syn {
    runs: Vec<(Filter, Flood)>,
    xdp_mode: String,
}

impl Syn {
    fn of(&self, f: Filter) -> Vec<Flood> {
        self.runs
            .iter()
            .filter(|(g, _)| *g == f)
            .map(|(_, r)| *r)
            .collect()
    }

    /// Median of `metric` over the runs of `f`.
    fn median(&self, f: Filter, metric: impl Fn(&Flood) -> f64) -> f64 {
        median(&self.of(f).iter().map(metric).collect::<Vec<_>>())
    }

    /// The receive path's CPU per SYN: the filter's median per-SYN time minus the sink's.
    fn receive_ns(&self, f: Filter) -> f64 {
        self.median(f, Flood::ns_per_syn) - self.median(Filter::Sink, Flood::ns_per_syn)
    }
}

/// `(busy, total)` jiffies of one CPU from `/proc/stat`.
fn cpu_jiffies(cpu: &str) -> Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("cpu{cpu}")))
        .with_context(|| format!("no cpu{cpu} in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// `counter packets N` of an nftables listing.
fn nft_counter(listing: &str) -> Option<u64> {
    let at = listing.find("counter packets ")? + "counter packets ".len();
    listing[at..].split_whitespace().next()?.parse().ok()
}

fn filter_count(lab: &Lab, f: Filter) -> Result<u64> {
    match f {
        Filter::Sink => Lab::dev_stat(&lab.cli, CLI_IF, "tx_dropped"),
        Filter::Gate => {
            let st = lab.steer_probe(&["status", "--top", "0"])?;
            status_dropped(&st).with_context(|| format!("no dropped= in status: {st}"))
        }
        Filter::NftIngress | Filter::NftPrerouting => {
            let listing = capture(in_netns(&lab.srv, "nft").args(["list", "table", f.family(), NFT_TABLE]))?;
            nft_counter(&listing).with_context(|| format!("no counter in {listing}"))
        }
    }
}

fn offered_count(lab: &Lab) -> Result<u64> {
    Ok(Lab::dev_stat(&lab.cli, CLI_IF, "tx_packets")? + Lab::dev_stat(&lab.cli, CLI_IF, "tx_dropped")?)
}

/// `(busy jiffies, total jiffies, offered, dropped, when)`.
fn sample(lab: &Lab, f: Filter) -> Result<((u64, u64), u64, u64, Instant)> {
    let t = Instant::now();
    Ok((
        cpu_jiffies(SERVER_CORE)?,
        offered_count(lab)?,
        filter_count(lab, f)?,
        t,
    ))
}

fn flood(lab: &Lab, f: Filter, opts: Options, n: u32) -> Result<Flood> {
    let log = lab.dir.join(format!("hping3-{}-{n}.log", f.name()));
    let mut cmd = Command::new("ip");
    // `ip netns exec`: hping3 looks the interface up in /sys too.
    cmd.args(["netns", "exec", &lab.cli, "taskset", "-c", SERVER_CORE, "hping3"])
        .args([
            "-S",
            "-p",
            &PORT_FLOOD.to_string(),
            "--flood",
            "-q",
            "-n",
            "-I",
            CLI_IF,
            SRV_ADDR,
        ]);
    let mut generator = start("hping3", cmd, &log)?;
    sleep(FLOOD_RAMP);
    let (c0, o0, d0, t0) = sample(lab, f)?;
    sleep(Duration::from_secs(u64::from(opts.flood_seconds)));
    let (c1, o1, d1, t1) = sample(lab, f)?;
    if let Some(st) = generator.child.try_wait()? {
        bail!(
            "hping3 exited early ({st}): {}",
            one_line(&fs::read_to_string(&log).unwrap_or_default())
        );
    }
    generator.stop();
    let r = Flood {
        seconds: (t1 - t0).as_secs_f64(),
        offered: o1 - o0,
        dropped: d1 - d0,
        core_busy: (c1.0 - c0.0) as f64 / (c1.1 - c0.1).max(1) as f64,
    };
    eprintln!(
        "    {:<20} offered {:>8.0}/s, dropped {:>8.0}/s ({:.1}%), core {SERVER_CORE} busy {:>5.1}% = {:>5.0} ns per SYN",
        f.name(),
        r.offered_pps(),
        r.dropped_pps(),
        100.0 * r.dropped as f64 / r.offered.max(1) as f64,
        100.0 * r.core_busy,
        r.ns_per_syn(),
    );
    if r.dropped == 0 {
        bail!("{}: nothing dropped (log {})", f.name(), log.display());
    }
    Ok(r)
}

fn bench_syn(lab: &mut Lab, opts: Options) -> Result<Syn> {
    step(&format!(
        "SYN flood: hping3 on core {SERVER_CORE} -> {SRV_ADDR}:{PORT_FLOOD} over the veth (the receive path runs \
         on the same core), {} x {}s per filter",
        opts.flood_rounds, opts.flood_seconds
    ));
    let mut syn = Syn {
        runs: Vec::new(),
        xdp_mode: String::new(),
    };
    for n in 1..=opts.flood_rounds {
        for f in Filter::ALL {
            let r = match f {
                Filter::Sink => {
                    run(Command::new("ip").args(["-n", &lab.srv, "link", "set", SRV_IF, "down"]))?;
                    let r = flood(lab, f, opts, n);
                    run(Command::new("ip").args(["-n", &lab.srv, "link", "set", SRV_IF, "up"]))?;
                    r
                }
                Filter::Gate => {
                    if lab.agent.is_none() {
                        lab.start_agent()?;
                    }
                    syn.xdp_mode.clone_from(&lab.xdp_mode);
                    lab.steer_probe(&["gate", "drain", "--hold"])?;
                    let r = flood(lab, f, opts, n);
                    lab.steer_probe(&["gate", "open", "--hold"])?;
                    lab.stop_agent_and_detach()?;
                    r
                }
                Filter::NftIngress | Filter::NftPrerouting => {
                    let file = lab.dir.join(format!("{}.nft", f.name()));
                    fs::write(&file, f.ruleset().unwrap_or_default())?;
                    capture(in_netns(&lab.srv, "nft").arg("-f").arg(&file))?;
                    let r = flood(lab, f, opts, n);
                    capture(in_netns(&lab.srv, "nft").args(["delete", "table", f.family(), NFT_TABLE]))?;
                    r
                }
            };
            syn.runs.push((f, r?));
        }
    }
    Ok(syn)
}

// === output ===

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn print_table(rtt: &Result<Rtt>, syn: &Result<Syn>, opts: Options) {
    println!(
        "\nProbe: cost of the sock_ops program and the XDP gate, servers on core {SERVER_CORE}, clients on core {CLIENT_CORE}"
    );
    println!(
        "{:<38} | {:>12} | {:>12} | {:>16} | notes",
        "measure", "without", "with", "ratio/overhead"
    );
    println!(
        "{:-<38}-+-{:->12}-+-{:->12}-+-{:->16}-+-{:-<5}",
        "", "", "", "", ""
    );
    match rtt {
        Ok(r) => {
            let o = r.overhead_pct();
            println!(
                "{:<38} | {:>12.0} | {:>12.0} | {:>16} | median of {} x {}s each, 1 connection, {REQUEST_BYTES} B; \
                 target <= {TARGET_OVERHEAD_PCT}% fewer: {}; probe took {} RTT samples in {} round trips",
                "loopback TCP round trips/s",
                median(&r.without),
                median(&r.with),
                format!("{o:+.2}% fewer"),
                opts.rounds,
                opts.seconds,
                if o <= TARGET_OVERHEAD_PCT {
                    "met"
                } else {
                    "NOT met"
                },
                r.samples,
                r.with_round_trips
            );
        }
        Err(e) => println!(
            "{:<38} | {:>12} | {:>12} | {:>16} | not measured: {}",
            "loopback TCP round trips/s",
            "-",
            "-",
            "-",
            one_line(&format!("{e:#}"))
        ),
    }
    match syn {
        Ok(s) => {
            let g = |m: &dyn Fn(&Flood) -> f64| s.median(Filter::Gate, m);
            let sink = |m: &dyn Fn(&Flood) -> f64| s.median(Filter::Sink, m);
            for nft in [Filter::NftIngress, Filter::NftPrerouting] {
                let n = |m: &dyn Fn(&Flood) -> f64| s.median(nft, m);
                let what = nft.name().trim_start_matches("nft-");
                println!(
                    "{:<38} | {:>12.0} | {:>12.0} | {:>16} | without = {}; offered {:.0}/s (nft) vs {:.0}/s (gate), \
                     {} vs {} of them dropped",
                    format!("SYNs dropped/s, {what}"),
                    n(&Flood::dropped_pps),
                    g(&Flood::dropped_pps),
                    format!("{:.2}x", g(&Flood::dropped_pps) / n(&Flood::dropped_pps)),
                    nft.describe(),
                    n(&Flood::offered_pps),
                    g(&Flood::offered_pps),
                    pct(n(&|f| f.dropped as f64 / f.offered.max(1) as f64)),
                    pct(g(&|f| f.dropped as f64 / f.offered.max(1) as f64)),
                );
                println!(
                    "{:<38} | {:>12.0} | {:>12.0} | {:>16} | core {SERVER_CORE} time per SYN ({:.0} vs {:.0} ns, busy {} vs {}) \
                     minus the generator's own ({:.0} ns, sink)",
                    format!("receive path ns/SYN, {what}"),
                    s.receive_ns(nft),
                    s.receive_ns(Filter::Gate),
                    format!("{:.2}x", s.receive_ns(nft) / s.receive_ns(Filter::Gate)),
                    n(&Flood::ns_per_syn),
                    g(&Flood::ns_per_syn),
                    pct(n(&|f| f.core_busy)),
                    pct(g(&|f| f.core_busy)),
                    sink(&Flood::ns_per_syn),
                );
            }
            println!(
                "(SYN rows: one core runs hping3 and the receive path; without = the nftables rule, with = the gate in drain \
                 mode ({} XDP on the veth); ratio = gate/nft for SYNs/s, nft/gate for ns/SYN (>1: the gate is cheaper); \
                 median of {} x {}s each; sink: {:.0} SYNs/s offered with the server veth down)",
                s.xdp_mode,
                opts.flood_rounds,
                opts.flood_seconds,
                sink(&Flood::offered_pps),
            );
        }
        Err(e) => println!(
            "{:<38} | {:>12} | {:>12} | {:>16} | not measured: {}",
            "SYNs dropped/s, nft vs gate",
            "-",
            "-",
            "-",
            one_line(&format!("{e:#}"))
        ),
    }
}

fn json_f(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn json_list(v: &[f64]) -> String {
    format!(
        "[{}]",
        v.iter().map(|x| json_f(*x)).collect::<Vec<_>>().join(", ")
    )
}

fn json(rtt: &Result<Rtt>, syn: &Result<Syn>, opts: Options) -> String {
    let mut s = String::from("{\n  \"round_trips\": ");
    match rtt {
        Ok(r) => {
            let o = r.overhead_pct();
            let _ = write!(
                s,
                "{{\"transport\": \"loopback TCP in a network namespace, one connection\", \"request_bytes\": {REQUEST_BYTES}, \
                 \"seconds_per_run\": {}, \"rounds\": {}, \"without_per_s\": {}, \"with_per_s\": {}, \
                 \"without_median_per_s\": {}, \"with_median_per_s\": {}, \"overhead_pct\": {}, \
                 \"target_overhead_pct\": {TARGET_OVERHEAD_PCT}, \"target_met\": {}, \"probe_rtt_samples\": {}, \
                 \"with_round_trips\": {}}}",
                opts.seconds,
                opts.rounds,
                json_list(&r.without),
                json_list(&r.with),
                json_f(median(&r.without)),
                json_f(median(&r.with)),
                json_f(o),
                o <= TARGET_OVERHEAD_PCT,
                r.samples,
                r.with_round_trips
            );
        }
        Err(e) => {
            let _ = write!(s, "{{\"error\": {}}}", json_str(&format!("{e:#}")));
        }
    }
    s.push_str(",\n  \"syn_flood\": ");
    match syn {
        Ok(y) => {
            let _ = write!(
                s,
                "{{\"generator\": \"hping3 --flood -S, pinned to core {SERVER_CORE} with the receive path\", \
                 \"xdp_mode\": {}, \"seconds_per_run\": {}, \"rounds\": {}, \"filters\": [",
                json_str(&y.xdp_mode),
                opts.flood_seconds,
                opts.flood_rounds,
            );
            for (i, f) in Filter::ALL.iter().enumerate() {
                let runs = y.of(*f);
                let list = |m: fn(&Flood) -> f64| json_list(&runs.iter().map(m).collect::<Vec<_>>());
                let _ = write!(
                    s,
                    "{}\n    {{\"filter\": {}, \"describe\": {}, \"offered_per_s\": {}, \"dropped_per_s\": {}, \
                     \"core_busy_pct\": {}, \"core_ns_per_syn\": {}, \"median_offered_per_s\": {}, \
                     \"median_dropped_per_s\": {}, \"median_core_ns_per_syn\": {}, \"receive_path_ns_per_syn\": {}}}",
                    if i == 0 { "" } else { "," },
                    json_str(f.name()),
                    json_str(f.describe()),
                    list(Flood::offered_pps),
                    list(Flood::dropped_pps),
                    list(|r| 100.0 * r.core_busy),
                    list(Flood::ns_per_syn),
                    json_f(y.median(*f, Flood::offered_pps)),
                    json_f(y.median(*f, Flood::dropped_pps)),
                    json_f(y.median(*f, Flood::ns_per_syn)),
                    if *f == Filter::Sink {
                        "null".into()
                    } else {
                        json_f(y.receive_ns(*f))
                    },
                );
            }
            let gd = y.median(Filter::Gate, Flood::dropped_pps);
            let ratio = |f: Filter| {
                (
                    json_f(gd / y.median(f, Flood::dropped_pps)),
                    json_f(y.receive_ns(f) / y.receive_ns(Filter::Gate)),
                )
            };
            let (ri, ci) = ratio(Filter::NftIngress);
            let (rp, cp) = ratio(Filter::NftPrerouting);
            let _ = write!(
                s,
                "\n  ], \"dropped_per_s_gate_over_nft_ingress\": {ri}, \"receive_ns_per_syn_nft_ingress_over_gate\": {ci}, \
                 \"dropped_per_s_gate_over_nft_prerouting\": {rp}, \"receive_ns_per_syn_nft_prerouting_over_gate\": {cp}}}"
            );
        }
        Err(e) => {
            let _ = write!(s, "{{\"error\": {}}}", json_str(&format!("{e:#}")));
        }
    }
    s.push_str("\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_nft_and_client_output() {
        let status = "gate: Drain rate_per_s=0 burst=0 (held)\ngated ports: [8000, 8002]\nactive connections: 1\n\
                      new flows: seen=12 admitted=2 dropped=10\n\
                      mode             pass     unparsed     admitted   drop_drain    drop_rate  drop_prefix\n\
                      prefix                      samples     p50_us     p90_us     min_us  retrans\n\
                      127.0.0.0/24                  1234         20         30         10        0\n\
                      10.0.0.0/24                      6         20         30         10        0\n";
        assert_eq!(status_dropped(status), Some(10));
        assert_eq!(status_samples(status), 1240);
        let nft = "table netdev steer_bench {\n\tchain ingress {\n\t\ttcp dport 8002 counter packets 4242 bytes 169680 drop\n\t}\n}\n";
        assert_eq!(nft_counter(nft), Some(4242));
        assert_eq!(
            parse_client("round_trips=640 seconds=5.000100\n"),
            Some((640, 5.0001))
        );
        assert_eq!(owner_pid("steer-bench-probe-srv-4711"), Some(4711));
        assert_eq!(owner_pid("steer-lab-x-1"), None);
    }

    #[test]
    fn medians_and_rulesets() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&[4.0, 1.0]) - 2.5).abs() < 1e-9);
        for f in [Filter::NftIngress, Filter::NftPrerouting] {
            let r = f.ruleset().expect("an nft filter");
            assert!(r.contains("tcp flags & (syn | ack) == syn counter drop"), "{r}");
            assert!(r.contains(&format!("table {} {NFT_TABLE}", f.family())), "{r}");
        }
        assert!(Filter::Gate.ruleset().is_none());
    }
}
