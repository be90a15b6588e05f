//! The whole system in namespaces: a [`Topology`] plus steerd (in the dns namespace), a mock inference server
//! in its own cgroup and a real `steer-probe` per region, and a real `unbound` per client site that forwards to
//! steerd with ECS. Built by [`Lab::up`], torn down on drop (also on panic).
//!
//! steerd is never told the delay matrix: it learns RTT only from the probes' reports of real traffic.

#![allow(
    clippy::disallowed_types,
    reason = "the lab drives real processes and sockets on the real monotonic clock"
)]

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::{ChildGuard, LabError, NetNs};
use crate::topology::{Topology, TopologySpec};

/// The port the mock inference servers listen on (and the probes watch and gate).
pub const INFER_PORT: u16 = 8000;
/// steerd's admin/ingest port in the dns namespace.
pub const ADMIN_PORT: u16 = 8053;
/// The steered service's name.
pub const SERVICE: &str = "api.infer.lab.";
/// The zone delegated to steerd.
pub const ZONE: &str = "infer.lab.";
/// Token of the admin API (tokens only matter inside the lab's namespaces).
const ADMIN_TOKEN: &str = "lab-admin-token-0123456789";
/// How long any one lab process may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest admin API reply read.
const HTTP_REPLY_BYTES_MAX: u64 = 4 << 20;

/// What to build: the topology plus the steering knobs of the lab's policy.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub topology: TopologySpec,
    /// Normal and minimum TTL of the steered answer, seconds.
    pub ttl_normal_s: u32,
    pub ttl_min_s: u32,
    pub slow_start_s: u32,
    /// Probe report interval.
    pub report_interval_ms: u32,
    /// Sites whose clients `GeoIP` places in a country fenced to one region: (site, country, region).
    pub fences: Vec<(usize, String, usize)>,
}

impl LabSpec {
    /// Region and site names with a delay matrix; the other knobs at values that make a fast lab.
    #[must_use]
    pub fn new(regions: &[&str], sites: &[&str], delay_ms: Vec<Vec<f64>>) -> LabSpec {
        LabSpec {
            topology: TopologySpec {
                regions: regions.iter().map(|s| (*s).to_owned()).collect(),
                sites: sites.iter().map(|s| (*s).to_owned()).collect(),
                delay_ms,
                ..TopologySpec::default()
            },
            ttl_normal_s: 4,
            ttl_min_s: 1,
            slow_start_s: 20,
            report_interval_ms: 500,
            fences: Vec::new(),
        }
    }

    /// The oracle: the region with the lowest configured delay for `site`.
    #[must_use]
    pub fn best_region(&self, site: usize, excluding: &[usize]) -> usize {
        let row = &self.topology.delay_ms[site];
        (0..row.len())
            .filter(|i| !excluding.contains(i))
            .min_by(|&a, &b| row[a].total_cmp(&row[b]))
            .expect("at least one region")
    }

    fn policy_yaml(&self, topo: &Topology) -> String {
        let mut y = format!("zone: {ZONE}\nregions:\n");
        for (i, name) in self.topology.regions.iter().enumerate() {
            let _ = writeln!(y, "  {name}: {{ endpoints: [{}] }}", topo.region_host(i));
        }
        let _ = writeln!(
            y,
            "services:\n  api:\n    mode: latency\n    ttl: {{ normal: {}s, min: {}s }}\n    stabilize: {{ ms: 3, pct: 10 }}\n    explore: 0\n    when_all_down: open\n    slow_start: {}s",
            self.ttl_normal_s, self.ttl_min_s, self.slow_start_s
        );
        if !self.fences.is_empty() {
            y.push_str("    fences:\n");
            for (_, country, region) in &self.fences {
                let _ = writeln!(
                    y,
                    "      - {{ countries: [{country}], allow: [{}], strict: true }}",
                    self.topology.regions[*region]
                );
            }
        }
        // Stale after six missed reports: a probe restart (a few seconds) is not an outage; a dead server
        // is seen much sooner, by the probe's failing health check.
        let stale_ms = self.report_interval_ms * 6;
        let _ = writeln!(
            y,
            "health: {{ fall: 2, rise: 2, stale_after: {stale_ms}ms, min_healthy_fraction: 0.5, min_healthy_hosts: 1 }}"
        );
        y
    }
}

/// Finds a workspace binary next to the running test or tool (target/<profile>/NAME).
#[must_use]
pub fn workspace_bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("STEER_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir.join(name)
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Io { context, source }
}

/// A filesystem mounted for the lab (bpffs for the probes' pins, a second view of the cgroup2 hierarchy),
/// unmounted on drop.
///
/// Both live under the lab's directory in /tmp, not /sys: `ip netns exec` mounts a fresh sysfs for the
/// namespace, which hides everything mounted below /sys from the processes it starts.
#[derive(Debug)]
struct Mount {
    path: PathBuf,
}

impl Mount {
    fn new(fstype: &str, path: PathBuf) -> Result<Mount, LabError> {
        std::fs::create_dir_all(&path).map_err(io(format!("mkdir {}", path.display())))?;
        let out = Command::new("mount")
            .args(["-t", fstype, fstype])
            .arg(&path)
            .output()
            .map_err(io("mount"))?;
        if !out.status.success() {
            return Err(LabError::Child(format!(
                "mount -t {fstype} {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(Mount { path })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A cgroup v2 directory, removed on drop (after its processes are gone).
#[derive(Debug)]
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates `name` under the cgroup2 hierarchy mounted at `root`.
    fn new(root: &Path, name: &str) -> Result<Cgroup, LabError> {
        let path = root.join(name);
        std::fs::create_dir_all(&path).map_err(io(format!("mkdir {}", path.display())))?;
        Ok(Cgroup { path })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One region's processes.
#[derive(Debug)]
struct RegionProcs {
    // Field order is drop order.
    probe: Option<ChildGuard>,
    mock: Option<ChildGuard>,
    cgroup: Cgroup,
    pin_dir: PathBuf,
    token_file: PathBuf,
}

/// The running lab. Drop order: resolvers, probes and servers, steerd, cgroups, bpffs, the topology.
#[derive(Debug)]
pub struct Lab {
    unbound: Vec<ChildGuard>,
    regions: Vec<RegionProcs>,
    steerd: Option<ChildGuard>,
    cgroup2: Option<Mount>,
    bpffs: Option<Mount>,
    pub topo: Topology,
    pub spec: LabSpec,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.unbound.clear();
        for r in &mut self.regions {
            r.probe = None;
            r.mock = None;
        }
        self.regions.clear();
        self.steerd = None;
        self.cgroup2 = None;
        self.bpffs = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// Builds the topology and starts every process, reporting each step to `progress`.
    pub fn up(spec: LabSpec, progress: &mut dyn FnMut(&str)) -> Result<Lab, LabError> {
        progress("network namespaces and the WAN delay line");
        let mut topo = Topology::up(&spec.topology)?;
        topo.start_delay_line(&workspace_bin("steer-delay-line"))?;
        let dir = std::env::temp_dir().join(topo.core().name());
        std::fs::create_dir_all(&dir).map_err(io("mkdir lab dir"))?;
        let bpffs = Mount::new("bpf", dir.join("bpf"))?;
        let cgroup2 = Mount::new("cgroup2", dir.join("cgroup"))?;
        let mut lab = Lab {
            unbound: Vec::new(),
            regions: Vec::new(),
            steerd: None,
            cgroup2: Some(cgroup2),
            bpffs: Some(bpffs),
            topo,
            spec,
            dir,
        };

        progress("steerd (policy, zone, tokens) in the dns namespace");
        lab.start_steerd()?;
        for i in 0..lab.spec.topology.regions.len() {
            progress(&format!(
                "region {}: mock inference server + steer-probe",
                lab.spec.topology.regions[i]
            ));
            lab.start_region(i)?;
        }
        for j in 0..lab.spec.topology.sites.len() {
            progress(&format!(
                "site {}: unbound resolver with ECS",
                lab.spec.topology.sites[j]
            ));
            lab.start_unbound(j)?;
        }
        progress("waiting for every region to report healthy");
        lab.wait_all_up(READY_TIMEOUT)?;
        Ok(lab)
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, LabError> {
        let p = self.dir.join(name);
        std::fs::write(&p, text).map_err(io(format!("write {}", p.display())))?;
        Ok(p)
    }

    fn start_steerd(&mut self) -> Result<(), LabError> {
        let policy = self.write("policy.yaml", &self.spec.policy_yaml(&self.topo))?;
        let dns = self.topo.dns_addr();
        let zone = format!(
            "$ORIGIN {ZONE}\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 5\n@ IN NS ns1\nns1 IN A {dns}\n"
        );
        let zone = self.write("zone.db", &zone)?;
        let mut tokens = format!("admin {ADMIN_TOKEN}\n");
        for name in &self.spec.topology.regions {
            let _ = writeln!(tokens, "region {name} lab-token-{name}-0123456789");
        }
        let tokens = self.write("tokens", &tokens)?;
        let mut cmd = self
            .topo
            .dns()
            .command(&workspace_bin("steerd").to_string_lossy());
        cmd.arg("serve")
            .arg("--policy")
            .arg(&policy)
            .arg("--zone")
            .arg(&zone)
            .arg("--tokens")
            .arg(&tokens)
            .arg("--dns")
            .arg(format!("{dns}:53"))
            .arg("--admin")
            .arg(format!("{dns}:{ADMIN_PORT}"))
            .arg("--state")
            .arg(self.dir.join("steerd.state"));
        if !self.spec.fences.is_empty() {
            let db = self.dir.join("geo.mmdb");
            let nets: Vec<(String, String)> = self
                .spec
                .fences
                .iter()
                .map(|(site, country, _)| (format!("198.18.{}.0/24", 100 + site), country.clone()))
                .collect();
            write_country_mmdb(&db, &nets)?;
            cmd.arg("--geoip").arg(&db);
        }
        cmd.env(
            "STEER_LOG",
            std::env::var("STEER_LAB_LOG").unwrap_or_else(|_| "warn".into()),
        );
        self.steerd = Some(ChildGuard::spawn("steerd", cmd)?);
        self.wait_http_ok("/healthz", READY_TIMEOUT)
    }

    fn start_region(&mut self, i: usize) -> Result<(), LabError> {
        let name = self.spec.topology.regions[i].clone();
        let ns = self.topo.region(i).name().to_owned();
        let cgroup = Cgroup::new(
            &self.cgroup2.as_ref().expect("cgroup2").path,
            &format!("{ns}-infer"),
        )?;
        let token_file = self.write(
            &format!("token-{name}"),
            &format!("lab-token-{name}-0123456789\n"),
        )?;
        let pin_dir = self.bpffs.as_ref().expect("bpffs").path.join(&name);
        let mut procs = RegionProcs {
            probe: None,
            mock: None,
            cgroup,
            pin_dir,
            token_file,
        };
        procs.mock = Some(self.spawn_mock(i, &procs.cgroup)?);
        self.regions.push(procs);
        self.start_probe(i)?;
        Ok(())
    }

    /// Starts region `i`'s mock server inside its cgroup (so the `sock_ops` probe sees its sockets).
    fn spawn_mock(&self, i: usize, cgroup: &Cgroup) -> Result<ChildGuard, LabError> {
        let host = self.topo.region_host(i);
        let procs = cgroup.path.join("cgroup.procs");
        // The shell joins the cgroup first, then execs into the namespace and the server: every socket the
        // server creates belongs to the cgroup.
        let script = format!(
            "echo $$ > {} && exec ip netns exec {} {} --listen {host}:{INFER_PORT} --region {} --tokens-per-s 50 --ttft-ms 20",
            procs.display(),
            self.topo.region(i).name(),
            workspace_bin("steer-mock-infer").display(),
            self.spec.topology.regions[i],
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let mut child = ChildGuard::spawn(&format!("mock-{i}"), cmd)?;
        child.wait_for_line(|l| l.starts_with("listening"), READY_TIMEOUT)?;
        Ok(child)
    }

    /// Starts (or restarts) region `i`'s steer-probe.
    pub fn start_probe(&mut self, i: usize) -> Result<(), LabError> {
        let host = self.topo.region_host(i);
        let dns = self.topo.dns_addr();
        let r = &self.regions[i];
        let mut cmd = self
            .topo
            .region(i)
            .command(&workspace_bin("steer-probe").to_string_lossy());
        cmd.arg("run")
            .arg("--region")
            .arg(&self.spec.topology.regions[i])
            .arg("--host")
            .arg(format!("{}-host0", self.spec.topology.regions[i]))
            .arg("--server")
            .arg(format!("http://{dns}:{ADMIN_PORT}"))
            .arg("--token-file")
            .arg(&r.token_file)
            .arg("--cgroup")
            .arg(&r.cgroup.path)
            .arg("--iface")
            .arg("wan0")
            .arg("--ports")
            .arg(INFER_PORT.to_string())
            .arg("--health-url")
            .arg(format!("http://{host}:{INFER_PORT}/health"))
            .arg("--metrics-url")
            .arg(format!("http://{host}:{INFER_PORT}/metrics"))
            .arg("--pin-dir")
            .arg(&r.pin_dir)
            .arg("--interval-ms")
            .arg(self.spec.report_interval_ms.to_string())
            .arg("--http-timeout-ms")
            .arg("400")
            .arg("--surge-ramp-ms")
            .arg("0");
        cmd.env(
            "STEER_LOG",
            std::env::var("STEER_LAB_LOG").unwrap_or_else(|_| "warn".into()),
        );
        self.regions[i].probe = Some(ChildGuard::spawn(&format!("probe-{i}"), cmd)?);
        Ok(())
    }

    /// Kills region `i`'s probe with SIGKILL (the pinned gate stays in force).
    pub fn kill_probe(&mut self, i: usize) -> Result<(), LabError> {
        if let Some(p) = self.regions[i].probe.take() {
            p.signal(nix::sys::signal::Signal::SIGKILL)?;
            drop(p);
        }
        Ok(())
    }

    /// Kills region `i`'s inference server (SIGKILL): its health check fails from now on.
    pub fn kill_server(&mut self, i: usize) -> Result<(), LabError> {
        if let Some(m) = self.regions[i].mock.take() {
            m.signal(nix::sys::signal::Signal::SIGKILL)?;
        }
        Ok(())
    }

    /// Starts region `i`'s inference server again.
    pub fn restart_server(&mut self, i: usize) -> Result<(), LabError> {
        let mock = self.spawn_mock(i, &self.regions[i].cgroup)?;
        self.regions[i].mock = Some(mock);
        Ok(())
    }

    fn start_unbound(&mut self, j: usize) -> Result<(), LabError> {
        let addr = self.topo.site_resolver(j);
        let dns = self.topo.dns_addr();
        let conf = format!(
            "server:\n  interface: {addr}\n  outgoing-interface: {addr}\n  port: 53\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  access-control: 198.18.0.0/15 allow\n  do-ip6: no\n  module-config: \"subnetcache iterator\"\n  send-client-subnet: {dns}\n  client-subnet-always-forward: yes\n  max-client-subnet-ipv4: 24\n  cache-min-ttl: 0\n  serve-expired: no\n  prefetch: no\n  harden-referral-path: no\n  target-fetch-policy: \"0 0 0 0 0\"\n  do-not-query-localhost: yes\n  infra-keep-probing: yes\n  infra-host-ttl: 2\nremote-control:\n  control-enable: no\nstub-zone:\n  name: \"{ZONE}\"\n  stub-addr: {dns}\n  stub-prime: no\n",
            dir = self.dir.display()
        );
        let conf = self.write(&format!("unbound-{j}.conf"), &conf)?;
        let mut cmd = self.topo.site(j).command("unbound");
        cmd.arg("-d").arg("-c").arg(&conf);
        let child = ChildGuard::spawn(&format!("unbound-{j}"), cmd)?;
        self.unbound.push(child);
        // Ready when it answers.
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self
                .dig(j, &addr.to_string(), "ns1.infer.lab.", None)
                .is_ok_and(|a| !a.is_empty())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(LabError::Child(format!(
            "unbound in site {j} did not answer within {READY_TIMEOUT:?}"
        )))
    }

    /// Runs `kdig` in site `j` against `server` and returns the A records of the answer.
    pub fn dig(
        &self,
        j: usize,
        server: &str,
        name: &str,
        ecs: Option<&str>,
    ) -> Result<Vec<Ipv4Addr>, LabError> {
        let mut args = vec![
            "kdig".to_owned(),
            format!("@{server}"),
            name.to_owned(),
            "A".to_owned(),
            "+short".to_owned(),
            "+timeout=1".to_owned(),
            "+retry=0".to_owned(),
        ];
        if let Some(e) = ecs {
            args.push(format!("+subnet={e}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.topo.site(j).exec(&refs)?;
        Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Asks steerd directly (from site `j`, with the site's /24 as ECS) which address it hands out now.
    pub fn steerd_answer(&self, j: usize) -> Result<Option<Ipv4Addr>, LabError> {
        let ecs = format!("198.18.{}.0/24", 100 + j);
        Ok(self
            .dig(j, &self.topo.dns_addr().to_string(), SERVICE, Some(&ecs))?
            .first()
            .copied())
    }

    /// Resolves the service through site `j`'s unbound, as the site's clients do.
    pub fn resolve(&self, j: usize) -> Result<Option<Ipv4Addr>, LabError> {
        Ok(self
            .dig(j, &self.topo.site_resolver(j).to_string(), SERVICE, None)?
            .first()
            .copied())
    }

    /// The region index an address belongs to.
    #[must_use]
    pub fn region_of(&self, addr: Ipv4Addr) -> Option<usize> {
        (0..self.spec.topology.regions.len()).find(|&i| self.topo.region_host(i) == addr)
    }

    /// A plain HTTP/1.0 request to steerd's admin API, made from inside the dns namespace.
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), LabError> {
        let addr = SocketAddr::from((self.topo.dns_addr(), ADMIN_PORT));
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: steerd\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            body.map_or(0, str::len),
            body.unwrap_or("")
        );
        self.topo
            .dns()
            .run_in(move || -> Result<(u16, String), LabError> {
                let mut s =
                    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io("connect admin"))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(io("timeout"))?;
                s.write_all(req.as_bytes()).map_err(io("write admin request"))?;
                let mut reply = String::new();
                s.take(HTTP_REPLY_BYTES_MAX)
                    .read_to_string(&mut reply)
                    .map_err(io("read admin reply"))?;
                let status = reply
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let body = reply
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_owned())
                    .unwrap_or_default();
                Ok((status, body))
            })?
    }

    fn wait_http_ok(&self, path: &str, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.admin("GET", path, None) {
                Ok((200, _)) => return Ok(()),
                Ok((s, b)) => last = format!("{s} {b}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(LabError::Child(format!(
            "steerd {path} not ok within {timeout:?}: {last}"
        )))
    }

    /// steerd's `/v1/state` as JSON.
    pub fn state(&self) -> Result<serde_json::Value, LabError> {
        let (status, body) = self.admin("GET", "/v1/state", None)?;
        if status != 200 {
            return Err(LabError::Child(format!("/v1/state: {status} {body}")));
        }
        serde_json::from_str(&body).map_err(|e| LabError::Child(format!("/v1/state is not JSON: {e}")))
    }

    /// The health status steerd reports for region `i` ("up", "down", "unknown").
    pub fn region_status(&self, i: usize) -> Result<String, LabError> {
        let st = self.state()?;
        let name = &self.spec.topology.regions[i];
        Ok(find_region(&st, name)
            .and_then(|r| r.get("status").and_then(|s| s.as_str()).map(str::to_lowercase))
            .unwrap_or_default())
    }

    fn wait_all_up(&self, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<String> = (0..self.spec.topology.regions.len())
                .map(|i| self.region_status(i).unwrap_or_default())
                .collect();
            if statuses.iter().all(|s| s == "up") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError::Child(format!(
                    "regions not all up within {timeout:?}: {statuses:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Drains or undrains region `i` through the admin API.
    pub fn set_drain(&self, i: usize, drain: bool) -> Result<(), LabError> {
        let verb = if drain { "drain" } else { "undrain" };
        let (status, body) = self.admin(
            "POST",
            &format!("/v1/regions/{}/{verb}", self.spec.topology.regions[i]),
            None,
        )?;
        if status / 100 != 2 {
            return Err(LabError::Child(format!("{verb}: {status} {body}")));
        }
        Ok(())
    }

    /// Runs `f` on a thread inside site `j`'s namespace with a tokio runtime (for the streaming clients).
    pub fn in_site<F, Fut, T>(&self, j: usize, f: F) -> Result<T, LabError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = T>,
        T: Send,
    {
        self.topo.site(j).run_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(f())
        })
    }

    /// Site `j`'s resolver address with port 53, for the clients.
    #[must_use]
    pub fn site_resolver(&self, j: usize) -> SocketAddr {
        SocketAddr::from((self.topo.site_resolver(j), 53))
    }

    /// The namespace of region `i`.
    #[must_use]
    pub fn region_ns(&self, i: usize) -> &NetNs {
        self.topo.region(i)
    }

    /// `steer-probe status` for region `i`'s pins (works while the probe is down).
    pub fn probe_status(&self, i: usize) -> Result<String, LabError> {
        let r = &self.regions[i];
        let mut cmd = self
            .topo
            .region(i)
            .command(&workspace_bin("steer-probe").to_string_lossy());
        cmd.arg("status").arg("--pin-dir").arg(&r.pin_dir);
        crate::netns::run_cmd(&mut cmd, None)
    }
}

/// What [`cleanup`] removed besides namespaces.
#[derive(Debug, Default)]
pub struct LabCleanup {
    pub netns: crate::netns::Cleanup,
    pub cgroups: Vec<PathBuf>,
    pub mounts: Vec<PathBuf>,
}

/// Removes everything labs whose names start with `prefix` left behind (a Ctrl-C, a `kill -9`): processes and
/// namespaces, then the inference cgroups and the bpffs/cgroup2 mounts under the labs' directories in /tmp.
/// `cargo xtask lab down` passes [`crate::netns::PREFIX`]; the demo's Ctrl-C handler passes its own run's prefix.
pub fn cleanup(prefix: &str) -> Result<LabCleanup, LabError> {
    let netns = crate::netns::cleanup_leftovers(prefix)?;
    let mut done = LabCleanup {
        netns,
        ..LabCleanup::default()
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(io("read /proc/self/mounts"))?;
    let tmp = std::env::temp_dir();
    let ours: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .filter(|m| m.parent().and_then(Path::parent) == Some(tmp.as_path()))
        .filter(|m| {
            m.parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    for m in ours {
        if m.file_name().is_some_and(|n| n == "cgroup")
            && let Ok(entries) = std::fs::read_dir(&m)
        {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                    && std::fs::remove_dir(&p).is_ok()
                {
                    done.cgroups.push(p);
                }
            }
        }
        if Command::new("umount").arg(&m).status().is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_dir(&m);
            done.mounts.push(m);
        }
    }
    Ok(done)
}

/// Finds a region's object in `/v1/state` (an array of objects with `name`, or a map keyed by name).
#[must_use]
pub fn find_region<'a>(state: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    let regions = state.get("regions")?;
    if let Some(arr) = regions.as_array() {
        return arr
            .iter()
            .find(|r| r.get("name").and_then(|n| n.as_str()) == Some(name));
    }
    regions.get(name)
}

/// Writes a `MaxMind` DB (Country layout) that maps each IPv4 network to its ISO country code.
pub fn write_country_mmdb(path: &Path, nets: &[(String, String)]) -> Result<(), LabError> {
    let bytes = crate::mmdb::country_db(nets).map_err(|e| LabError::Spec(format!("mmdb: {e}")))?;
    std::fs::write(path, bytes).map_err(io(format!("write {}", path.display())))
}
