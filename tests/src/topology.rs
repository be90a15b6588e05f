//! A lab topology from a declarative spec: a core namespace routing between one namespace per region, one per
//! client site and a `dns` namespace for steerd, with the WAN delay line applying the site x region delay matrix.
//!
//! Address plan (all inside 198.18.0.0/15, the benchmarking range):
//! - dns:        198.18.0.0/24, core side .1, steerd [`Topology::dns_addr`] = 198.18.0.53
//! - region i:   198.18.(10+i).0/24, core side .1, host [`Topology::region_host`] = .10
//! - site j:     198.18.(100+j).0/24, core side .1, clients [`Topology::site_client`] = .10, resolver
//!   [`Topology::site_resolver`] = .53
//!
//! Every leaf namespace has one veth `wan0` into the core and a default route via .1; the core's ends are named
//! `dns`, `r<i>` and `s<j>`. MAC addresses are fixed (`02:00:c6:12:<third octet>:<01 core | 0a leaf>`) and
//! neighbour entries are static, so no ARP exchange ever sits in a measured round trip or drops a burst.
//!
//! The delay applies between site j and region i in both directions (one-way `delay_ms[j][i]`), and optionally
//! between a site and the dns namespace (`site_dns_delay_ms`). Region <-> dns traffic (probe reports) is not
//! delayed. The lead starts steerd, steer-probe and unbound later with [`Topology::exec_in`] / [`NetNs::command`].

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::delay_line::{self, Rule};
use crate::netns::{ChildGuard, LabError, NetNs, Veth, VethEnd};

/// Most regions (third octets 10..=99).
pub const REGIONS_MAX: usize = 90;
/// Most client sites (third octets 100..=254).
pub const SITES_MAX: usize = 155;
/// util-linux's chrt, to run the delay line with a real-time priority.
const CHRT: &str = "/usr/bin/chrt";
/// `SCHED_FIFO` priority of the delay line.
const DELAY_LINE_RT_PRIO: &str = "20";
/// How long the delay line may take to print `ready`.
const DELAY_LINE_READY_MS: u64 = 5_000;

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct TopologySpec {
    /// Region names, e.g. `us-east`.
    pub regions: Vec<String>,
    /// Client site names, e.g. `berlin`.
    pub sites: Vec<String>,
    /// One-way delay in ms, `delay_ms[site][region]`, applied in both directions.
    pub delay_ms: Vec<Vec<f64>>,
    /// One-way delay in ms between each site and the dns namespace; empty means none.
    pub site_dns_delay_ms: Vec<f64>,
    /// Loss percentage per `[site][region]` pair; empty means none.
    pub loss_pct: Vec<Vec<f64>>,
    /// Bound of the delay line's queue; 0 means [`delay_line::QUEUE_MAX_DEFAULT`].
    pub queue_max: usize,
}

impl TopologySpec {
    fn validate(&self) -> Result<(), LabError> {
        let bad = |m: String| Err(LabError::Spec(m));
        if self.regions.is_empty() || self.regions.len() > REGIONS_MAX {
            return bad(format!(
                "regions: {} given, 1..={REGIONS_MAX} allowed",
                self.regions.len()
            ));
        }
        if self.sites.len() > SITES_MAX {
            return bad(format!("sites: {} given, at most {SITES_MAX}", self.sites.len()));
        }
        if self.delay_ms.len() != self.sites.len()
            || self.delay_ms.iter().any(|r| r.len() != self.regions.len())
        {
            return bad(format!(
                "delay_ms must be {} sites x {} regions",
                self.sites.len(),
                self.regions.len()
            ));
        }
        if !self.site_dns_delay_ms.is_empty() && self.site_dns_delay_ms.len() != self.sites.len() {
            return bad("site_dns_delay_ms must have one entry per site".into());
        }
        if !self.loss_pct.is_empty()
            && (self.loss_pct.len() != self.sites.len()
                || self.loss_pct.iter().any(|r| r.len() != self.regions.len()))
        {
            return bad("loss_pct must be sites x regions".into());
        }
        Ok(())
    }
}

fn subnet(octet: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, octet as u8, 0)
}

fn host(octet: usize, h: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, octet as u8, h)
}

fn mac(octet: usize, h: u8) -> String {
    format!("02:00:c6:12:{octet:02x}:{h:02x}")
}

const DNS_OCTET: usize = 0;
fn region_octet(i: usize) -> usize {
    10 + i
}
fn site_octet(j: usize) -> usize {
    100 + j
}

/// A built topology; tears everything down on drop (links first, then namespaces).
#[derive(Debug)]
pub struct Topology {
    spec: TopologySpec,
    // Field order is drop order: processes, then links, then namespaces.
    delay_line: Option<ChildGuard>,
    links: Vec<Veth>,
    core: NetNs,
    dns: NetNs,
    regions: Vec<NetNs>,
    sites: Vec<NetNs>,
}

impl Topology {
    /// Builds the namespaces, links, addresses, routes and the core's forwarding and iptables NFQUEUE rule. The
    /// delay line is started separately ([`start_delay_line`](Self::start_delay_line)): until it runs, forwarded
    /// traffic is dropped.
    pub fn up(spec: &TopologySpec) -> Result<Self, LabError> {
        spec.validate()?;
        let core = NetNs::new("core")?;
        let dns = NetNs::new("dns")?;
        let regions = (0..spec.regions.len())
            .map(|i| NetNs::new(&format!("r{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let sites = (0..spec.sites.len())
            .map(|j| NetNs::new(&format!("s{j}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut topo = Topology {
            spec: spec.clone(),
            delay_line: None,
            links: Vec::new(),
            core,
            dns,
            regions,
            sites,
        };

        let mut leaves: Vec<(usize, String, usize, Vec<u8>)> =
            vec![(usize::MAX, "dns".into(), DNS_OCTET, vec![53])];
        leaves.extend((0..spec.regions.len()).map(|i| (i, format!("r{i}"), region_octet(i), vec![10])));
        leaves.extend((0..spec.sites.len()).map(|j| (j, format!("s{j}"), site_octet(j), vec![10, 53])));
        for (idx, core_dev, octet, hosts) in leaves {
            let leaf_name = match core_dev.as_bytes()[0] {
                b'r' => topo.regions[idx].name().to_owned(),
                b's' => topo.sites[idx].name().to_owned(),
                _ => topo.dns.name().to_owned(),
            };
            topo.link(&leaf_name, &core_dev, octet, &hosts)?;
        }
        topo.core.set_sysctl("net/ipv4/ip_forward", "1")?;
        let mut rule = vec!["iptables".to_owned()];
        rule.extend(delay_line::iptables_queue_rule(0));
        topo.core
            .exec(&rule.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(topo)
    }

    /// Wires one leaf namespace to the core: veth, addresses, static neighbours, default route.
    fn link(&mut self, leaf: &str, core_dev: &str, octet: usize, hosts: &[u8]) -> Result<(), LabError> {
        let veth = Veth::new(
            VethEnd {
                ns: Some(self.core.name().to_owned()),
                dev: core_dev.to_owned(),
                mac: Some(mac(octet, 1)),
            },
            VethEnd {
                ns: Some(leaf.to_owned()),
                dev: "wan0".into(),
                mac: Some(mac(octet, 10)),
            },
        )?;
        self.links.push(veth);
        let leaf_ns = [&self.dns]
            .into_iter()
            .chain(&self.regions)
            .chain(&self.sites)
            .find(|n| n.name() == leaf)
            .ok_or_else(|| LabError::Spec(format!("no namespace {leaf}")))?;
        self.core.add_addr(core_dev, &format!("{}/24", host(octet, 1)))?;
        for &h in hosts {
            leaf_ns.add_addr("wan0", &format!("{}/24", host(octet, h)))?;
            self.core.ip(&[
                "neigh",
                "replace",
                &host(octet, h).to_string(),
                "lladdr",
                &mac(octet, 10),
                "dev",
                core_dev,
                "nud",
                "permanent",
            ])?;
        }
        leaf_ns.ip(&[
            "neigh",
            "replace",
            &host(octet, 1).to_string(),
            "lladdr",
            &mac(octet, 1),
            "dev",
            "wan0",
            "nud",
            "permanent",
        ])?;
        leaf_ns.add_route("default", &host(octet, 1).to_string())?;
        Ok(())
    }

    /// The delay line's rules for this spec: both directions of every site x region pair (and site x dns).
    #[must_use]
    pub fn delay_rules(&self) -> Vec<Rule> {
        let cidr = |o: usize| format!("{}/24", subnet(o));
        let mut rules = Vec::new();
        let mut pair = |a: usize, b: usize, ms: f64, loss: f64| {
            for (s, d) in [(a, b), (b, a)] {
                let line = format!("{} {} {ms} {loss}", cidr(s), cidr(d));
                rules.push(Rule::parse(&line).expect("generated rule parses"));
            }
        };
        for (j, row) in self.spec.delay_ms.iter().enumerate() {
            for (i, &ms) in row.iter().enumerate() {
                let loss = self
                    .spec
                    .loss_pct
                    .get(j)
                    .and_then(|r| r.get(i))
                    .copied()
                    .unwrap_or(0.0);
                pair(site_octet(j), region_octet(i), ms, loss);
            }
        }
        for (j, &ms) in self.spec.site_dns_delay_ms.iter().enumerate() {
            pair(site_octet(j), DNS_OCTET, ms, 0.0);
        }
        rules
    }

    /// Starts `steer-delay-line` (at `bin`) in the core with [`delay_rules`](Self::delay_rules) and waits for
    /// `ready`. The topology owns it and stops it on drop; [`stop_delay_line`](Self::stop_delay_line) returns its
    /// final counters.
    pub fn start_delay_line(&mut self, bin: &Path) -> Result<(), LabError> {
        let file = std::env::temp_dir().join(format!("{}.delay", self.core.name()));
        std::fs::write(&file, delay_line::rules_file(&self.delay_rules())).map_err(|source| {
            LabError::Io {
                context: format!("write {}", file.display()),
                source,
            }
        })?;
        // Real-time priority (when chrt exists) keeps the delays accurate while other work loads the cores;
        // chrt execs the program, so the child's pid is still the delay line's.
        let mut cmd = if Path::new(CHRT).exists() {
            let mut c = self.core.command(CHRT);
            c.args(["-f", DELAY_LINE_RT_PRIO]).arg(bin);
            c
        } else {
            self.core.command(&bin.to_string_lossy())
        };
        cmd.arg("--rules").arg(&file);
        if self.spec.queue_max > 0 {
            cmd.arg("--queue-max").arg(self.spec.queue_max.to_string());
        }
        let mut child = ChildGuard::spawn("steer-delay-line", cmd)?;
        child.wait_for_line(
            |l| l.starts_with("ready"),
            Duration::from_millis(DELAY_LINE_READY_MS),
        )?;
        let _ = std::fs::remove_file(&file);
        self.delay_line = Some(child);
        Ok(())
    }

    /// Stops the delay line and returns the counters it printed at exit.
    pub fn stop_delay_line(&mut self) -> Result<delay_line::Counters, LabError> {
        let mut child = self
            .delay_line
            .take()
            .ok_or_else(|| LabError::Child("no delay line running".into()))?;
        let lines = child.terminate()?;
        lines
            .iter()
            .rev()
            .find_map(|l| delay_line::Counters::parse_line(l))
            .ok_or_else(|| LabError::Child(format!("delay line printed no counters: {lines:?}")))
    }

    /// The spec this was built from.
    #[must_use]
    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// The core namespace (forwarding, the iptables NFQUEUE rule, the delay line).
    #[must_use]
    pub fn core(&self) -> &NetNs {
        &self.core
    }

    /// The namespace where steerd runs.
    #[must_use]
    pub fn dns(&self) -> &NetNs {
        &self.dns
    }

    /// steerd's address, reachable from every site and region.
    #[must_use]
    pub fn dns_addr(&self) -> Ipv4Addr {
        host(DNS_OCTET, 53)
    }

    /// Region `i`'s namespace.
    #[must_use]
    pub fn region(&self, i: usize) -> &NetNs {
        &self.regions[i]
    }

    /// Region `i`'s inference host address.
    #[must_use]
    pub fn region_host(&self, i: usize) -> Ipv4Addr {
        host(region_octet(i), 10)
    }

    /// Region `i`'s prefix, `198.18.(10+i).0/24`.
    #[must_use]
    pub fn region_subnet(&self, i: usize) -> String {
        format!("{}/24", subnet(region_octet(i)))
    }

    /// Site `j`'s namespace.
    #[must_use]
    pub fn site(&self, j: usize) -> &NetNs {
        &self.sites[j]
    }

    /// Site `j`'s client address.
    #[must_use]
    pub fn site_client(&self, j: usize) -> Ipv4Addr {
        host(site_octet(j), 10)
    }

    /// Site `j`'s resolver address (for unbound).
    #[must_use]
    pub fn site_resolver(&self, j: usize) -> Ipv4Addr {
        host(site_octet(j), 53)
    }

    /// Site `j`'s prefix, `198.18.(100+j).0/24`.
    #[must_use]
    pub fn site_subnet(&self, j: usize) -> String {
        format!("{}/24", subnet(site_octet(j)))
    }

    /// Every namespace by role: `("core", name)`, `("dns", name)`, `("region:<name>", ns)`, `("site:<name>", ns)`.
    #[must_use]
    pub fn namespaces(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("core".to_owned(), self.core.name().to_owned()),
            ("dns".into(), self.dns.name().into()),
        ];
        for (r, ns) in self.spec.regions.iter().zip(&self.regions) {
            v.push((format!("region:{r}"), ns.name().into()));
        }
        for (s, ns) in self.spec.sites.iter().zip(&self.sites) {
            v.push((format!("site:{s}"), ns.name().into()));
        }
        v
    }

    /// A `Command` running `program` in namespace `ns` (a full name from [`namespaces`](Self::namespaces)).
    #[must_use]
    pub fn exec_in(ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }
}
