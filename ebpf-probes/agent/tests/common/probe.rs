//! Driving the real `steer-probe` binary and the pinned gate from tests.
#![allow(
    clippy::disallowed_types,
    reason = "real sockets and real processes are timed by the real monotonic clock (no tokio here)"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunOptions, Xdp};

use super::{Netns, ip};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_steer-probe");
pub(crate) const XDP_DROP: u32 = 1;
pub(crate) const XDP_PASS: u32 = 2;

/// A veth pair `srv_if` (in `srv`, address `srv_addr/16`) <-> `cli_if` (in `cli`).
pub(crate) fn veth(srv: &Netns, srv_if: &str, srv_addr: &str, cli: &Netns, cli_if: &str, cli_addr: &str) {
    ip(&[
        "link", "add", srv_if, "netns", &srv.name, "type", "veth", "peer", "name", cli_if, "netns", &cli.name,
    ]);
    ip(&[
        "-n",
        &srv.name,
        "addr",
        "add",
        &format!("{srv_addr}/16"),
        "dev",
        srv_if,
    ]);
    ip(&[
        "-n",
        &cli.name,
        "addr",
        "add",
        &format!("{cli_addr}/16"),
        "dev",
        cli_if,
    ]);
    ip(&["-n", &srv.name, "link", "set", srv_if, "up"]);
    ip(&["-n", &cli.name, "link", "set", cli_if, "up"]);
}

/// A free TCP port on 127.0.0.1 in `ns` (bound and released; the namespace is the test's own).
pub(crate) fn free_port(ns: &Netns) -> u16 {
    ns.run(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("binding 127.0.0.1:0")
            .local_addr()
            .expect("addr")
            .port()
    })
}

/// Runs `steer-probe ARGS` to completion (bounded by the commands themselves: status and gate
/// only touch pinned maps). Returns (status, stdout, stderr).
pub(crate) fn cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running steer-probe {args:?}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `steer-probe ARGS`, which must succeed; its stdout.
pub(crate) fn cli_ok(args: &[&str]) -> String {
    let (st, out, err) = cli(args);
    assert!(st.success(), "steer-probe {args:?} failed ({st}):\n{err}");
    out
}

/// `steer-probe status --pin-dir DIR`.
pub(crate) fn status(pin_dir: &Path) -> String {
    cli_ok(&["status", "--pin-dir", pin_dir.to_str().expect("utf-8 pin dir")])
}

/// The mode word of `status` output ("Open", "Drain", "Surge").
pub(crate) fn status_mode(pin_dir: &Path) -> String {
    let out = status(pin_dir);
    out.lines()
        .find_map(|l| l.strip_prefix("gate: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no gate line in status output:\n{out}"))
        .to_owned()
}

/// The `new flows: seen=A admitted=B dropped=C` numbers of `status` output.
pub(crate) fn status_flows(pin_dir: &Path) -> (u64, u64, u64) {
    let out = status(pin_dir);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("new flows: "))
        .unwrap_or_else(|| panic!("no new flows line in status output:\n{out}"));
    let num = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
    };
    (num("seen="), num("admitted="), num("dropped="))
}

/// Waits until `ok()` or panics with `what` after `timeout` (polling every 20 ms).
pub(crate) fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// An Ethernet/IPv4/TCP SYN from `src` to 198.18.0.1:`port`.
pub(crate) fn syn_frame(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&[198, 18, 0, 1]);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02;
    f.append(&mut ip);
    f.append(&mut tcp);
    f
}

/// Runs the pinned gate program on `frame` `n` times (`BPF_PROG_RUN`); the verdicts.
pub(crate) fn prog_run(pin_dir: &Path, frame: &[u8], n: usize) -> Vec<u32> {
    let prog = Xdp::from_pin(
        pin_dir.join(steer_probe::loader::PROG_GATE),
        aya_obj::programs::XdpAttachType::Interface,
    )
    .unwrap_or_else(|e| panic!("opening the pinned gate program: {e}"));
    (0..n)
        .map(|_| {
            let opts = TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::new()
            };
            prog.test_run(opts)
                .unwrap_or_else(|e| panic!("BPF_PROG_RUN: {e:?}"))
                .return_value
        })
        .collect()
}

/// A running `steer-probe run` inside a network namespace; killed (`SIGKILL`) on drop. Its stderr goes to
/// a log file that panics quote.
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Agent {
    /// `steer-probe run ARGS` in the network namespace `ns` (entered between fork and exec, so
    /// unlike `ip netns exec` the agent keeps the host's mounts: the cgroup2 and bpffs paths).
    pub(crate) fn spawn(ns: &Netns, args: &[String], log: PathBuf) -> Agent {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::process::CommandExt as _;
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let ns_path = format!("/var/run/netns/{}", ns.name);
        let ns_file = std::fs::File::open(&ns_path).unwrap_or_else(|e| panic!("opening {ns_path}: {e}"));
        let ns_fd = ns_file.as_raw_fd();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .args(args)
            .env("STEER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        // SAFETY: setns is async-signal-safe and touches only the child; `ns_file` outlives spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning steer-probe run: {e}"));
        drop(ns_file);
        Agent { child, log }
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the logs) if the agent has exited.
    pub(crate) fn assert_running(&mut self, when: &str) {
        if let Some(st) = self.child.try_wait().expect("try_wait") {
            panic!("the agent exited ({st}) {when}; its log:\n{}", self.logs());
        }
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for the agent to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the agent did not exit within {timeout:?}; its log:\n{}",
            self.logs()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url` from inside `ns`; (status, body).
pub(crate) fn http_get(ns: &Netns, url: &str) -> (u16, String) {
    let url = url.to_owned();
    ns.run(move || {
        match ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build()
            .get(&url)
            .call()
        {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
            Err(e) => panic!("GET {url}: {e}"),
        }
    })
}

/// A work directory next to a pin dir (logs, config) with a token file in it: `(work, token)`.
pub(crate) fn work_dir_with_token(pins: &Path) -> (PathBuf, PathBuf) {
    let work = std::env::temp_dir().join(format!(
        "{}-work",
        pins.file_name().expect("name").to_string_lossy()
    ));
    std::fs::create_dir_all(&work).expect("work dir");
    let token = work.join("token");
    std::fs::write(&token, "t0k3n\n").expect("token");
    (work, token)
}
