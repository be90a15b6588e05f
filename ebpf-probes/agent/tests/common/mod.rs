//! RAII helpers shared by the privileged tests: temporary pin dirs, named network namespaces,
//! cgroups, and CPU pinning. Every guard cleans up on drop, also while panicking.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Panics unless running as root: these tests need `CAP_BPF`, `CAP_NET_ADMIN` and cgroup writes,
/// which CI (root) always has.
pub(crate) fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load BPF programs and create namespaces: run them as root"
    );
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &raw mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// A fresh pin directory, removed (with its pins) on drop. It lives under /sys/fs/bpf when that
/// is a bpffs; otherwise on a private bpffs mounted for this test only (and unmounted on drop),
/// so the tests never change the host's mounts.
#[derive(Debug)]
pub(crate) struct PinDir(pub(crate) PathBuf, Option<PathBuf>);

impl PinDir {
    pub(crate) fn new(name: &str) -> PinDir {
        let sys = Path::new("/sys/fs/bpf");
        let (base, mount) = if is_bpffs(sys) {
            (sys.to_path_buf(), None)
        } else {
            let m = std::env::temp_dir().join(unique("steer-bpffs"));
            std::fs::create_dir_all(&m).unwrap_or_else(|e| panic!("creating {}: {e}", m.display()));
            let target = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).expect("path");
            // SAFETY: NUL-terminated strings; a plain bpffs mount with no data.
            let rc = unsafe {
                libc::mount(
                    c"bpf".as_ptr(),
                    target.as_ptr(),
                    c"bpf".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            assert_eq!(
                rc,
                0,
                "mounting a bpffs at {}: {}",
                m.display(),
                std::io::Error::last_os_error()
            );
            (m.clone(), Some(m))
        };
        let path = base.join(unique(name));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        PinDir(path, mount)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = steer_probe::loader::unpin_all(&self.0) {
            eprintln!("cleanup of {}: {e}", self.0.display());
        }
        if let Some(m) = &self.1 {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: NUL-terminated path of a mount we made.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = std::fs::remove_dir(m);
        }
    }
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn new(name: &str) -> Netns {
        let name = unique(name);
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Moves the calling thread into this namespace (sockets it creates afterwards live there).
    pub(crate) fn enter(&self) {
        use std::os::fd::AsRawFd as _;
        let path = format!("/var/run/netns/{}", self.name);
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: a valid namespace fd; only the calling thread changes namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    }
}

impl Netns {
    /// Enters the namespace without owning it (for threads; the test's guard deletes it).
    pub(crate) fn enter_and_forget(self) {
        self.enter();
        std::mem::forget(self);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A child of the cgroup2 root that this whole process is moved into; on drop the process goes
/// back to the root and the cgroup is removed.
#[derive(Debug)]
pub(crate) struct TestCgroup {
    pub(crate) path: PathBuf,
    root: PathBuf,
    entered: bool,
}

/// The cgroup2 mount point.
pub(crate) fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("reading /proc/self/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .expect("no cgroup2 mount: sock_ops needs cgroup v2")
}

impl TestCgroup {
    pub(crate) fn enter(name: &str) -> TestCgroup {
        let root = cgroup2_root();
        let path = root.join(unique(name));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let cg = TestCgroup {
            path,
            root,
            entered: true,
        };
        std::fs::write(cg.path.join("cgroup.procs"), format!("{}\n", std::process::id()))
            .unwrap_or_else(|e| panic!("moving into {}: {e}", cg.path.display()));
        cg
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if self.entered {
            let _ = std::fs::write(
                self.root.join("cgroup.procs"),
                format!("{}\n", std::process::id()),
            );
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Pins the calling thread to one CPU, so per-CPU limiter state is one state in the test.
pub(crate) fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds for small cpu.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
        assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
    }
}

impl TestCgroup {
    /// A fresh child of the cgroup2 root that nothing is moved into (for the agent binary to
    /// attach `sock_ops` to); removed on drop.
    pub(crate) fn create(name: &str) -> TestCgroup {
        let root = cgroup2_root();
        let path = root.join(unique(name));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TestCgroup {
            path,
            root,
            entered: false,
        }
    }
}

impl Netns {
    /// Runs `f` on a thread that lives in this namespace, and returns its result.
    pub(crate) fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name.clone();
        std::thread::spawn(move || {
            Netns { name }.enter_and_forget();
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

pub(crate) mod http;
pub(crate) mod probe;
