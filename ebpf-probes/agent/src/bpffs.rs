//! The pin dir must live on a bpffs. Production (k8s) mounts the host's /sys/fs/bpf into the
//! agent's pod so pins survive the pod; a bare host may not have it mounted, and then `run`
//! mounts one at /sys/fs/bpf itself. Any other location is the operator's to mount.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// The conventional bpffs mount point, the only one `run` mounts by itself.
pub const BPFFS_DEFAULT: &str = "/sys/fs/bpf";

/// Why the pin dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// The pin dir's parent is not a bpffs and is not the default mount point.
    #[error(
        "{parent} is not a bpffs: mount one there (`mount -t bpf bpf {parent}`) or choose a --pin-dir under /sys/fs/bpf"
    )]
    NotBpffs {
        /// The pin dir's parent.
        parent: PathBuf,
    },
    /// Mounting a bpffs at /sys/fs/bpf failed.
    #[error(
        "mounting a bpffs at {path} failed ({source}); mount it from the host (`mount -t bpf bpf {path}`)"
    )]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The pin dir has no parent or a path with a NUL byte.
    #[error("bad pin dir {0}")]
    BadPath(PathBuf),
}

/// Whether `path` is on a bpffs (false if it does not exist).
#[must_use]
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &raw mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure `pin_dir` can hold pins: it, or its parent, is on a bpffs. If the parent is
/// /sys/fs/bpf and nothing is mounted there, a bpffs is mounted (returns `true` then).
pub fn ensure(pin_dir: &Path) -> Result<bool, BpffsError> {
    if is_bpffs(pin_dir) {
        return Ok(false);
    }
    let parent = pin_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| BpffsError::BadPath(pin_dir.to_path_buf()))?;
    if is_bpffs(parent) {
        return Ok(false);
    }
    if parent != Path::new(BPFFS_DEFAULT) {
        return Err(BpffsError::NotBpffs {
            parent: parent.to_path_buf(),
        });
    }
    let mount_err = |source| BpffsError::Mount {
        path: parent.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(parent).map_err(mount_err)?;
    let target = CString::new(parent.as_os_str().as_encoded_bytes())
        .map_err(|_| BpffsError::BadPath(pin_dir.to_path_buf()))?;
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
    if rc != 0 {
        return Err(mount_err(std::io::Error::last_os_error()));
    }
    tracing::info!(path = %parent.display(), "mounted a bpffs");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_locations_are_not_mounted_but_explained() {
        let e = ensure(Path::new("/tmp/not-a-bpffs-steer/pins")).unwrap_err();
        assert!(
            e.to_string().contains("mount -t bpf bpf /tmp/not-a-bpffs-steer"),
            "{e}"
        );
        assert!(!is_bpffs(Path::new("/tmp")));
    }
}
