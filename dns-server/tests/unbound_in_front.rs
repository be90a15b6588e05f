//! A real unbound in front of steerd (stub zone, `send-client-subnet`): the steered answer reaches
//! clients through it, per client subnet (unbound caches by the scope steerd returns), and a
//! failover reaches them within the answer's TTL.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use common::{Opts, POLICY, Steerd, wait_until};

/// The answer TTL in this test: short, so the failover test is quick.
const TTL_NORMAL_S: u64 = 3;

struct Unbound {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let p = s.local_addr().expect("addr").port();
    drop(s);
    p
}

fn start_unbound(steerd: SocketAddr) -> Unbound {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let conf = format!(
        r#"server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    pidfile: ""
    directory: "{dir}"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    do-ip6: no
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    qname-minimisation: no
    module-config: "subnetcache iterator"
    send-client-subnet: 127.0.0.1
    client-subnet-always-forward: yes
    max-client-subnet-ipv4: 24
    max-client-subnet-ipv6: 56
    prefetch: no
    serve-expired: no
    cache-min-ttl: 0
remote-control:
    control-enable: no
stub-zone:
    name: "infer.example.com."
    stub-addr: 127.0.0.1@{sport}
"#,
        dir = dir.path().display(),
        sport = steerd.port()
    );
    let path = dir.path().join("unbound.conf");
    std::fs::write(&path, conf).expect("write unbound.conf");
    let child = Command::new("unbound")
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("unbound.log")).expect("log"))
        .spawn()
        .expect("unbound is installed");
    let u = Unbound {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    };
    wait_until(Duration::from_secs(10), "unbound to answer", || {
        common::dig(u.addr, &["+short", "+recurse", "ns1.infer.example.com", "A"]).trim() == "198.18.0.53"
    });
    u
}

fn via(u: &Unbound, subnet: Option<&str>) -> String {
    let mut args = vec!["+short", "+recurse", "api.infer.example.com", "A"];
    let s;
    if let Some(sub) = subnet {
        s = format!("+subnet={sub}");
        args.push(&s);
    }
    common::dig(u.addr, &args).trim().to_owned()
}

#[test]
fn steered_answers_and_failover_reach_clients_through_unbound() {
    let policy = POLICY.replace(
        "ttl: { normal: 20s, min: 2s }",
        &format!("ttl: {{ normal: {TTL_NORMAL_S}s, min: 1s }}"),
    );
    let s = Steerd::start_with(Opts {
        policy: Some(policy),
        ..Opts::default()
    });
    // unbound's own address (its ECS for clients without one) is closer to us-east; a client
    // subnet of 10.2.3.0/24 is closer to eu-west.
    let rtt_us = [("127.0.0.0/24", 5_000, 90_000), ("10.2.3.0/24", 90_000, 5_000)];
    let us: Vec<(&str, u32)> = rtt_us.iter().map(|(p, u, _)| (*p, *u)).collect();
    let eu: Vec<(&str, u32)> = rtt_us.iter().map(|(p, _, e)| (*p, *e)).collect();
    assert_eq!(s.report("us-east", "u1", 1, &us).0, 200);
    assert_eq!(s.report("eu-west", "e1", 1, &eu).0, 200);
    std::thread::sleep(Duration::from_millis(400));
    let u = start_unbound(s.dns);

    assert_eq!(via(&u, None), "198.19.1.10", "unbound's own /24 goes to us-east");
    assert_eq!(
        via(&u, Some("10.2.3.0/24")),
        "198.19.2.10",
        "the client's subnet goes to eu-west"
    );
    // Both are cached side by side (scope /24) and stay apart.
    assert_eq!(via(&u, None), "198.19.1.10");
    assert_eq!(via(&u, Some("10.2.3.0/24")), "198.19.2.10");

    // us-east fails: its host reports unhealthy (fall 1). Keep eu-west fresh meanwhile.
    let failed_at = SystemTime::now();
    let (st, _) = s.post(
        "/v1/reports",
        Some(common::US_TOKEN),
        &common::report_json("us-east", "u1", 2, false, &[]),
    );
    assert_eq!(st, 200);
    let mut seq = 2;
    wait_until(
        Duration::from_secs(TTL_NORMAL_S + 4),
        "failover through unbound",
        || {
            seq += 1;
            let _ = s.report("eu-west", "e1", seq, &eu);
            via(&u, None) == "198.19.2.10"
        },
    );
    let took = failed_at.elapsed().unwrap_or_default();
    assert!(
        took <= Duration::from_secs(TTL_NORMAL_S + 2),
        "clients behind unbound saw the failover after {took:?}, the TTL is {TTL_NORMAL_S}s"
    );
}
