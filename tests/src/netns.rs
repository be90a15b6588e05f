//! Network namespaces, veth pairs and processes inside them, as RAII guards.
//!
//! Everything the lab creates is named `steer-<pid>-<counter>-<label>` so that parallel tests and parallel runs
//! never collide, and so that [`cleanup_leftovers`] can find what a crashed run left behind. Guards tear down on
//! `Drop`, which also runs while a panic unwinds.
//!
//! Child processes run through `ip netns exec` (which `exec`s the program, so the child's pid is the program's).
//! In-process sockets are created by a thread that has joined the namespace with `setns` ([`NetNs::run_in`]); a
//! socket stays in the namespace it was created in, so it can be used from any thread afterwards.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

/// Every namespace and link the lab creates starts with this.
pub const PREFIX: &str = "steer-";

/// How long a guard waits for a child to exit after SIGTERM before it sends SIGKILL.
const TERM_GRACE_MS: u64 = 2_000;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Errors of the lab's setup and teardown.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command ran and exited non-zero.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command could not be started or waited for.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An I/O operation of the lab failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Joining a namespace failed.
    #[error("setns into {ns}: {source}")]
    Setns {
        /// The namespace name.
        ns: String,
        /// The OS error.
        source: nix::Error,
    },
    /// A child process did not print what was expected in time, or exited.
    #[error("{0}")]
    Child(String),
    /// A topology or delay-line spec is invalid.
    #[error("invalid spec: {0}")]
    Spec(String),
}

/// A name unique to this process and call: `steer-<pid>-<counter>-<label>`.
#[must_use]
pub fn unique_name(label: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}-{label}", std::process::id())
}

fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, feeding it `stdin`; returns its stdout or an error carrying its stderr.
pub fn run_cmd(cmd: &mut Command, stdin: Option<&str>) -> Result<String, LabError> {
    let shown = display(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
        cmd: shown.clone(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| LabError::Spawn {
                cmd: shown.clone(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| LabError::Spawn {
        cmd: shown.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmd: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `ip ARGS` in the root namespace.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    run_cmd(Command::new("ip").args(args), None)
}

/// Names of all network namespaces (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>, LabError> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Names of the links of a namespace (`None`: the root namespace).
pub fn list_links(ns: Option<&str>) -> Result<Vec<String>, LabError> {
    let out = match ns {
        Some(ns) => ip(&["-n", ns, "-o", "link", "show"])?,
        None => ip(&["-o", "link", "show"])?,
    };
    // Lines look like `7: name@peer: <FLAGS> ...`.
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect())
}

/// What [`cleanup_leftovers`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Root-namespace links deleted.
    pub links: Vec<String>,
    /// Processes killed because they still ran inside a deleted namespace.
    pub pids_killed: Vec<i32>,
}

/// Deletes every namespace and root-namespace link whose name starts with `prefix` (`cargo xtask lab down` passes
/// [`PREFIX`]), killing the processes still inside those namespaces first. Tests pass a prefix of their own so that
/// they never touch a lab that another test or engineer is running.
pub fn cleanup_leftovers(prefix: &str) -> Result<Cleanup, LabError> {
    let mut done = Cleanup::default();
    for ns in list_namespaces()?.into_iter().filter(|n| n.starts_with(prefix)) {
        done.pids_killed.extend(kill_pids_in(&ns));
        ip(&["netns", "del", &ns])?;
        done.namespaces.push(ns);
    }
    for link in list_links(None)?.into_iter().filter(|n| n.starts_with(prefix)) {
        // A veth whose peer was in a namespace deleted above is already gone.
        if ip(&["link", "del", &link]).is_ok() {
            done.links.push(link);
        }
    }
    Ok(done)
}

/// SIGKILLs every process inside namespace `ns`; only called for namespaces the lab created.
fn kill_pids_in(ns: &str) -> Vec<i32> {
    let Ok(out) = ip(&["netns", "pids", ns]) else {
        return Vec::new();
    };
    let pids: Vec<i32> = out.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    pids
}

// === impl NetNs ===

/// A network namespace, deleted on drop (with the processes still inside it).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    armed: bool,
}

impl NetNs {
    /// Creates `steer-<pid>-<n>-<label>` with its loopback up.
    pub fn new(label: &str) -> Result<Self, LabError> {
        Self::with_name(&unique_name(label))
    }

    /// Creates a namespace with exactly this name (loopback up).
    pub fn with_name(name: &str) -> Result<Self, LabError> {
        ip(&["netns", "add", name])?;
        let ns = NetNs {
            name: name.to_owned(),
            armed: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The full namespace name, for `ip netns exec`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Disarms the guard: the namespace outlives it (for `cargo xtask lab up --keep` and leftover tests).
    #[must_use]
    pub fn leak(mut self) -> String {
        self.armed = false;
        std::mem::take(&mut self.name)
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        run_cmd(&mut cmd, None)
    }

    /// A `Command` that runs `program` inside the namespace (`ip netns exec NAME program`).
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `args[0] args[1..]` inside the namespace to completion; returns its stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String, LabError> {
        self.exec_stdin(args, None)
    }

    /// Like [`exec`](Self::exec), feeding `stdin` to the command (e.g. `iptables-restore`).
    pub fn exec_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String, LabError> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| LabError::Spec("empty command".into()))?;
        let mut cmd = self.command(program);
        cmd.args(rest);
        run_cmd(&mut cmd, stdin)
    }

    /// Adds an address (`198.18.10.1/24`) to a device.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<(), LabError> {
        self.ip(&["addr", "add", cidr, "dev", dev]).map(drop)
    }

    /// Adds a route (`default` or a CIDR) via a gateway.
    pub fn add_route(&self, dst: &str, via: &str) -> Result<(), LabError> {
        self.ip(&["route", "add", dst, "via", via]).map(drop)
    }

    /// Writes a sysctl of this namespace, e.g. `net/ipv4/ip_forward`.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let path = format!("/proc/sys/{key}");
        let value = value.to_owned();
        self.run_in(move || {
            std::fs::write(&path, value).map_err(|source| LabError::Io {
                context: path,
                source,
            })
        })?
    }

    /// Runs `f` on a thread that has joined this namespace, and waits for it. Sockets created by `f` stay in the
    /// namespace and can be returned and used from any thread.
    pub fn run_in<F, T>(&self, f: F) -> Result<T, LabError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = self.open()?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Setns {
                    ns: self.name.clone(),
                    source,
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Spawns a thread that joins this namespace and runs `f` (a server loop, a tokio runtime, ...).
    pub fn spawn_thread<F, T>(&self, f: F) -> Result<std::thread::JoinHandle<Result<T, LabError>>, LabError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let file = self.open()?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("ns-{name}"))
            .spawn(move || {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| LabError::Setns { ns: name, source })?;
                Ok(f())
            })
            .map_err(|source| LabError::Io {
                context: "spawn namespace thread".into(),
                source,
            })
    }

    fn open(&self) -> Result<File, LabError> {
        let path = format!("/run/netns/{}", self.name);
        File::open(&path).map_err(|source| LabError::Io {
            context: path,
            source,
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        kill_pids_in(&self.name);
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::warn!(ns = %self.name, error = %e, "namespace teardown failed");
        }
    }
}

// === impl Veth ===

/// One end of a veth pair: a namespace (`None`: the root namespace), a device name and an optional MAC address.
#[derive(Debug, Clone)]
pub struct VethEnd {
    /// The namespace, `None` for the root namespace.
    pub ns: Option<String>,
    /// The device name (at most 15 bytes).
    pub dev: String,
    /// A fixed MAC address, so that neighbour entries can be static.
    pub mac: Option<String>,
}

/// A veth pair created directly inside its namespaces (no name ever appears in the root namespace unless an end
/// is placed there), both ends up; deleted on drop.
#[derive(Debug)]
pub struct Veth {
    a: VethEnd,
    b: VethEnd,
}

impl Veth {
    /// Creates the pair and sets both ends up.
    pub fn new(a: VethEnd, b: VethEnd) -> Result<Self, LabError> {
        for end in [&a, &b] {
            if end.dev.len() > 15 {
                return Err(LabError::Spec(format!(
                    "device name {:?} is longer than 15 bytes",
                    end.dev
                )));
            }
        }
        let mut args: Vec<&str> = vec!["link", "add", &a.dev];
        if let Some(ns) = &a.ns {
            args.extend(["netns", ns]);
        }
        if let Some(mac) = &a.mac {
            args.extend(["address", mac]);
        }
        args.extend(["type", "veth", "peer", "name", &b.dev]);
        if let Some(ns) = &b.ns {
            args.extend(["netns", ns]);
        }
        if let Some(mac) = &b.mac {
            args.extend(["address", mac]);
        }
        ip(&args)?;
        let veth = Veth { a, b };
        for end in [&veth.a, &veth.b] {
            ip_in(end.ns.as_deref(), &["link", "set", &end.dev, "up"])?;
        }
        Ok(veth)
    }

    /// The first end.
    #[must_use]
    pub fn a(&self) -> &VethEnd {
        &self.a
    }

    /// The second end.
    #[must_use]
    pub fn b(&self) -> &VethEnd {
        &self.b
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting one end deletes the pair. If the namespace is already gone, so is the pair.
        let _ = ip_in(self.a.ns.as_deref(), &["link", "del", &self.a.dev]);
    }
}

fn ip_in(ns: Option<&str>, args: &[&str]) -> Result<String, LabError> {
    match ns {
        Some(ns) => {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            ip(&full)
        }
        None => ip(args),
    }
}

// === impl ChildGuard ===

/// A child process (usually started with [`NetNs::command`]) whose stdout is read line by line; SIGTERM then
/// SIGKILL on drop.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    // A Mutex (never contended: only `&mut self` methods read it) makes the guard Sync, so a lab that owns
    // guards can be shared with the threads that drive its sites.
    lines: std::sync::Mutex<mpsc::Receiver<String>>,
    seen: Vec<String>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout piped (stderr inherited, so its logs show in test output).
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self, LabError> {
        let shown = display(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|source| LabError::Spawn { cmd: shown, source })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LabError::Child("no stdout pipe".into()))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildGuard {
            name: name.to_owned(),
            child,
            lines: std::sync::Mutex::new(lines),
            seen: Vec::new(),
        })
    }

    /// The child's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the child prints a line for which `pred` holds, and returns it.
    pub fn wait_for_line(
        &mut self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .recv_timeout(left)
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Ok(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(LabError::Child(format!(
                        "{}: no matching line within {timeout:?}; saw {:?}",
                        self.name, self.seen
                    )));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    return Err(LabError::Child(format!(
                        "{}: exited ({status:?}) before a matching line; saw {:?}",
                        self.name, self.seen
                    )));
                }
            }
        }
    }

    /// Sends a signal to the child.
    pub fn signal(&self, sig: Signal) -> Result<(), LabError> {
        kill(Pid::from_raw(self.child.id() as i32), sig).map_err(|e| LabError::Io {
            context: format!("signal {sig} to {}", self.name),
            source: e.into(),
        })
    }

    /// Waits up to `limit` for the child to exit by itself; returns its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait (SIGKILL after a grace period), and return every stdout line printed after those already
    /// consumed by [`wait_for_line`](Self::wait_for_line).
    pub fn terminate(&mut self) -> Result<Vec<String>, LabError> {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.signal(Signal::SIGTERM);
        }
        self.reap(Duration::from_millis(TERM_GRACE_MS));
        // The reader thread ends at EOF, once the child is gone.
        Ok(self
            .lines
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .collect())
    }

    fn reap(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.signal(Signal::SIGTERM);
            self.reap(Duration::from_millis(TERM_GRACE_MS));
        }
    }
}
