//! Installs what the build and the tests need, idempotently, saying what and why.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use crate::{run, step};

/// The bpf-linker release known to work with aya 0.14 and this toolchain.
const BPF_LINKER_VERSION: &str = "0.10.0";

/// Debian packages the tests, the lab and the benchmarks use.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("knot-dnsutils", "kdig, a DNS client for black-box tests"),
    ("dnsutils", "dig, a second DNS client"),
    ("unbound", "a real recursive resolver with ECS in front of steerd"),
    ("dnsperf", "the DNS load generator for benchmarks"),
    ("iproute2", "ip netns / veth for the lab"),
    (
        "iptables",
        "the NFQUEUE target that feeds the lab's WAN delay line (this kernel has no nft queue)",
    ),
    (
        "nftables",
        "nft: the rules `cargo xtask bench probe` compares the XDP gate with",
    ),
    (
        "util-linux",
        "chrt: real-time priority keeps the delay line's delays accurate under load",
    ),
    (
        "prometheus",
        "promtool, which checks and unit-tests the alert rules in deploy/",
    ),
    (
        "systemd",
        "systemd-analyze, which verifies the units in deploy/systemd",
    ),
];

pub(crate) fn ensure_all() -> Result<()> {
    ensure_bpf_toolchain()?;
    ensure_bpf_linker()?;
    ensure_debian_packages()?;
    Ok(())
}

pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_bpf_toolchain() -> Result<()> {
    step("prerequisite: nightly toolchain with rust-src (the BPF crate builds `core` for bpfel)");
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("    nightly toolchain missing: installing it (minimal profile)");
        if run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
            .is_err()
        {
            eprintln!(
                "    could not install nightly: falling back to stable + `RUSTC_BOOTSTRAP`.for the BPF crate"
            );
            // ebpf-probes/agent/build.rs reads STEER_BPF_TOOLCHAIN and tells aya-build to use stable.
            run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "stable"]))?;
            BPF_ON_STABLE.store(true, Ordering::Relaxed);
            return Ok(());
        }
    }
    let comps =
        output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .unwrap_or_default();
    if comps.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("    ok: nightly rust-src is installed");
    } else {
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

/// Set when nightly could not be had: the BPF crate then builds with stable + `RUSTC_BOOTSTRAP`.
static BPF_ON_STABLE: AtomicBool = AtomicBool::new(false);

/// Environment variables that the prerequisite checks decided on, for the cargo commands that follow.
pub(crate) fn env_overrides() -> Vec<(&'static str, &'static str)> {
    if BPF_ON_STABLE.load(Ordering::Relaxed) {
        vec![("STEER_BPF_TOOLCHAIN", "stable")]
    } else {
        Vec::new()
    }
}

fn ensure_bpf_linker() -> Result<()> {
    step(&format!(
        "prerequisite: bpf-linker {BPF_LINKER_VERSION} (links the BPF programs)"
    ));
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        eprintln!("    ok: {}", have.trim());
        return Ok(());
    }
    eprintln!("    installing bpf-linker {BPF_LINKER_VERSION} from crates.io (about 2 minutes on 2 cores)");
    run(Command::new("cargo").args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked"]))
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

pub(crate) fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn ensure_debian_packages() -> Result<()> {
    let missing = missing_debian("the tests and the lab", DEBIAN_PACKAGES)?;
    apt_install(&missing)
}

/// Prints one line per `(package, why)` saying whether it is installed, and returns the missing ones.
/// Fails (saying what to run) when some are missing and this is not root.
pub(crate) fn missing_debian<'a>(what: &str, packages: &[(&'a str, &str)]) -> Result<Vec<&'a str>> {
    step(&format!("prerequisite: Debian packages for {what}"));
    let missing: Vec<&str> = packages
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    for (p, why) in packages {
        let state = if missing.contains(p) { "missing" } else { "ok" };
        eprintln!("    {state:<8}{p:<20}{why}");
    }
    if !missing.is_empty() && !is_root() {
        bail!(
            "packages missing ({}) and not root: run `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    Ok(missing)
}

/// `apt-get update` then `apt-get install` of `packages` (nothing when empty), non-interactively.
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get update")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get install")
}
