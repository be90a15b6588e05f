//! Test harness: spawn the real `steerd` on 127.0.0.1 with port 0, talk to it over the wire.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]
#![allow(unreachable_pub, reason = "test harness module")]

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable as _, BinEncodable as _};

pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
pub const US_TOKEN: &str = "us-east-token-0123456789abcdef";
pub const EU_TOKEN: &str = "eu-west-token-0123456789abcdef";

/// How long a test waits for one answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

pub const POLICY: &str = r#"
zone: infer.example.com.
regions:
  us-east: { endpoints: [198.19.1.10, "2001:db8:1::10"], location: { lat: 39.0, lon: -77.5 } }
  eu-west: { endpoints: [198.19.2.10, "2001:db8:2::10"], location: { lat: 53.3, lon: -6.2 } }
services:
  api:
    mode: latency
    regions: [us-east, eu-west]
    answers: 1
    ttl: { normal: 20s, min: 2s }
    stabilize: { ms: 5, pct: 5 }
    explore: 0
    when_all_down: open
    slow_start: 0s
    fences:
      - { countries: [DE], allow: [eu-west], strict: true }
  batch:
    mode: failover
    regions: [eu-west, us-east]
    ttl: { normal: 30s, min: 2s }
health: { fall: 1, rise: 1, stale_after: 2s, min_healthy_fraction: 0.5, min_healthy_hosts: 1 }
"#;

/// The zone of the tests: the example zone plus a TXT set too large for a 512-byte UDP answer.
pub fn zone_text() -> String {
    let mut z = std::fs::read_to_string(repo_root().join("deploy/examples/zone.db")).expect("example zone");
    for i in 0..12 {
        let _ = writeln!(z, "big IN TXT \"record {i:02} {}\"", "x".repeat(60));
    }
    z
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A running steerd, killed on drop.
pub struct Steerd {
    pub child: Child,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub stderr_path: PathBuf,
}

#[derive(Default)]
pub struct Opts {
    pub policy: Option<String>,
    pub geoip: Option<PathBuf>,
    pub state: bool,
    pub no_tokens: bool,
    pub dir: Option<tempfile::TempDir>,
}

impl Steerd {
    pub fn start() -> Steerd {
        Steerd::start_with(Opts::default())
    }

    pub fn start_with(o: Opts) -> Steerd {
        let dir = o.dir.unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let policy = dir.path().join("policy.yaml");
        if !policy.exists() || o.policy.is_some() {
            std::fs::write(&policy, o.policy.as_deref().unwrap_or(POLICY)).expect("write policy");
        }
        let zone = dir.path().join("zone.db");
        std::fs::write(&zone, zone_text()).expect("write zone");
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!("admin {ADMIN_TOKEN}\nregion us-east {US_TOKEN}\nregion eu-west {EU_TOKEN}\n"),
        )
        .expect("write tokens");
        let stderr_path = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_steerd"));
        cmd.args([
            "serve",
            "--dns",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--udp-workers",
            "2",
        ])
        .arg("--policy")
        .arg(&policy)
        .arg("--zone")
        .arg(&zone)
        .env("STEER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
        if !o.no_tokens {
            cmd.arg("--tokens").arg(&tokens);
        }
        if o.state {
            cmd.arg("--state").arg(dir.path().join("state.json"));
        }
        if let Some(g) = &o.geoip {
            cmd.arg("--geoip").arg(g);
        }
        let mut child = cmd.spawn().expect("spawn steerd");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let (dns, admin) = parse_listening(&line).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "steerd did not start: {line:?}\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            )
        });
        Steerd {
            child,
            dns,
            admin,
            dir,
            stderr_path,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    /// Stops the server (SIGTERM-free: kill) and hands back its directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        http(self.admin, "POST", path, token, body)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http(self.admin, "GET", path, token, "")
    }

    /// Posts a healthy report with the given RTTs (prefix, µs) for `region`.
    pub fn report(&self, region: &str, host: &str, seq: u64, rtt: &[(&str, u32)]) -> (u16, String) {
        let token = match region {
            "us-east" => US_TOKEN,
            _ => EU_TOKEN,
        };
        self.post(
            "/v1/reports",
            Some(token),
            &report_json(region, host, seq, true, rtt),
        )
    }
}

impl Drop for Steerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let mut dns = None;
    let mut admin = None;
    for w in line.split_whitespace() {
        if let Some(v) = w.strip_prefix("dns=") {
            dns = v.parse().ok();
        }
        if let Some(v) = w.strip_prefix("admin=") {
            admin = v.parse().ok();
        }
    }
    Some((dns?, admin?))
}

pub fn report_json(region: &str, host: &str, seq: u64, ok: bool, rtt: &[(&str, u32)]) -> String {
    let rtt: Vec<serde_json::Value> = rtt
        .iter()
        .map(|(p, us)| {
            serde_json::json!({"prefix": p, "samples": 50, "srtt_us_p50": us, "srtt_us_p90": us + us / 10,
                "srtt_us_min": us - us / 10, "retrans": 0})
        })
        .collect();
    serde_json::json!({
        "version": 1, "region": region, "host": host, "seq": seq, "sent_at_ms": now_ms(), "interval_ms": 1000,
        "health": {"ok": ok, "checks": [{"name": "http", "ok": ok, "latency_ms": 3}]},
        "load": {"queue_depth": 1, "kv_cache_usage": 0.2, "active_connections": 4},
        "gate": {"mode": "open", "syn_seen": 0, "syn_admitted": 0, "syn_dropped": 0},
        "rtt": rtt,
    })
    .to_string()
}

/// A minimal HTTP/1.1 client (Connection: close).
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write request");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: bad reply {resp:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// A query message built with hickory-proto.
pub fn query(name: &str, rtype: RecordType, edns: bool, ecs: Option<&str>) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    if edns || ecs.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        if let Some(s) = ecs {
            e.options_mut()
                .insert(EdnsOption::Subnet(s.parse::<ClientSubnet>().expect("ecs")));
        }
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    (now_ms() as u16) ^ (std::process::id() as u16).rotate_left(7)
}

pub fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.send_to(bytes, addr).expect("send");
    let mut buf = vec![0u8; 65535];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

pub fn tcp_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("tcp connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).expect("tcp write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("tcp length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).expect("tcp body");
    buf
}

pub fn udp(addr: SocketAddr, m: &Message) -> Message {
    let bytes = m.to_bytes().expect("encode");
    let resp = udp_raw(addr, &bytes).unwrap_or_else(|| panic!("no UDP answer to {:?}", m.queries));
    Message::from_bytes(&resp).unwrap_or_else(|e| panic!("bad answer {resp:?}: {e}"))
}

pub fn tcp(addr: SocketAddr, m: &Message) -> Message {
    let bytes = m.to_bytes().expect("encode");
    let resp = tcp_raw(addr, &bytes);
    Message::from_bytes(&resp).unwrap_or_else(|e| panic!("bad answer {resp:?}: {e}"))
}

/// Runs kdig against the server and returns its stdout.
pub fn kdig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("kdig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=2", "+retry=1"])
        .args(args)
        .output()
        .expect("kdig is installed (knot-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs dig (dnsutils) against the server and returns its stdout.
pub fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=2", "+tries=2", "+norecurse"])
        .args(args)
        .output()
        .expect("dig is installed (dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The A/AAAA addresses of an answer, as text.
pub fn addrs(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

/// Polls `f` every 50 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::SystemTime::now();
    for _ in 0..10_000 {
        if f() {
            return;
        }
        if start.elapsed().unwrap_or_default() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}
