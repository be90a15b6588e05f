//! `cargo xtask <task>`: the project's automation, in Rust (matklad's xtask pattern).
//!
//! Tasks install what they need, visibly and idempotently, so that a fresh machine needs nothing
//! but `cargo xtask demo` and `cargo xtask test`.

#![allow(
    clippy::disallowed_types,
    reason = "xtask times its steps on the wall clock for people; no injected time here"
)]

mod bench_dns;
mod bench_probe;
mod codegen;
mod prereqs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <task>

tasks:
  test            install prerequisites, then fmt check, clippy (warnings denied) and every test
  ci              the same as test (what .ci/run calls)
  demo [--keep]   build everything and run the steering story end to end, printed as tables
  lab up|down|status
                  bring the lab up for exploring by hand, remove leftovers, or list its namespaces
  bench [core|dns|probe|all]
                  benchmarks with ratios (core: engine decisions at 1k/100k/1M prefixes;
                  dns: steerd vs gdnsd, NSD, Knot, hickory-dns under dnsperf, CPU per query;
                  probe: loopback round trips with/without sock_ops, SYN drops gate vs nftables)
  codegen [--check]
                  generate docs/policy.md from the policy types (--check: fail if it is stale)
  prereqs         only install the prerequisites
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    std::env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))?;
    let task = args.first().map_or("help", String::as_str);
    match task {
        "test" | "ci" => test(),
        "prereqs" => prereqs::ensure_all(),
        "demo" => demo(&args[1..]),
        "lab" => lab(&args[1..]),
        "codegen" => codegen::run(args[1..].iter().any(|a| a == "--check")),
        "bench" => bench(&args[1..]),
        "help" | "--help" | "-h" => {
            eprint!("{HELP}");
            Ok(())
        }
        other => bail!("unknown task {other:?}\n{HELP}"),
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Prints a step header; every long-running step says what it does before it starts.
pub(crate) fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// Runs a command, echoing it, and fails with its exit status.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("    $ {}", render(cmd));
    let started = Instant::now();
    let status = cmd.status().with_context(|| format!("spawn {}", render(cmd)))?;
    eprintln!("    ({:.1}s)", started.elapsed().as_secs_f64());
    if !status.success() {
        bail!("`{}` failed: {status}", render(cmd));
    }
    Ok(())
}

fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    c.envs(prereqs::env_overrides());
    c
}

fn test() -> Result<()> {
    let started = Instant::now();
    prereqs::ensure_all()?;
    step("formatting (cargo fmt --check)");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("lints (cargo clippy, warnings denied)");
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    step("tests (unit, integration, black-box; the eBPF tests need root)");
    run(cargo().args(["test", "--all-targets"]).env("RUST_BACKTRACE", "1"))?;
    step("doc tests");
    run(cargo().args(["test", "--doc"]))?;
    eprintln!(
        "\nxtask test: all green in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn demo(args: &[String]) -> Result<()> {
    prereqs::ensure_all()?;
    step("the steering story");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    steer_demo(&args)
}

/// Builds every binary in release (the lab starts steerd, steer-probe and its helpers from target/release)
/// and runs `steer-demo` with `args`.
fn steer_demo(args: &[&str]) -> Result<()> {
    run(cargo().args(["build", "--release", "--bins"]))?;
    run(cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "steer-lab",
            "--bin",
            "steer-demo",
            "--",
        ])
        .args(args))
}

fn lab(args: &[String]) -> Result<()> {
    let what = args.first().map_or("status", String::as_str);
    if !matches!(what, "up" | "down" | "status") {
        bail!("usage: cargo xtask lab up|down|status");
    }
    if what == "up" {
        prereqs::ensure_all()?;
    }
    step(&format!("lab {what}"));
    steer_demo(&["lab", what])
}

fn bench(args: &[String]) -> Result<()> {
    let which = args.first().map_or("all", String::as_str);
    if !matches!(which, "core" | "dns" | "probe" | "all") {
        bail!("unknown benchmark {which:?} (known: core, dns, probe, all)");
    }
    if matches!(which, "core" | "all") {
        step("engine: decisions per second at 1k, 100k and 1M client prefixes x 5 regions");
        run(cargo().args(["bench", "-p", "steering-core", "--bench", "decide"]))?;
    }
    if matches!(which, "dns" | "all") {
        // `bench dns [--prefixes N] [--seconds N]`; `bench all` runs it with the defaults.
        let rest = if which == "dns" { &args[1..] } else { &[] };
        bench_dns::bench(rest)?;
    }
    if matches!(which, "probe" | "all") {
        // `bench probe [--seconds N] [--rounds N] [--flood-seconds N] [--flood-rounds N]`.
        let rest = if which == "probe" { &args[1..] } else { &[] };
        bench_probe::bench(rest)?;
    }
    Ok(())
}
