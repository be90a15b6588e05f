//! Architecture invariants that a test can check: steering-core's dependency tree holds no IO or async
//! machinery, and ARCHITECTURE.md's Code Map names every crate of the workspace.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

#[test]
fn steering_core_depends_on_no_io_or_async_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "steering-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && tree.contains("steering-core"),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for banned in ["tokio", "hickory", "aya", "mio", "socket2", "hyper", "libc"] {
        let hit = tree.lines().find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|name| name.starts_with(banned))
        });
        assert!(hit.is_none(), "steering-core depends on {banned}: {hit:?}");
    }
}

#[test]
fn code_map_names_every_crate() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("members list");
    for m in members
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .filter(|s| !s.is_empty())
    {
        let top = m.split('/').next().unwrap_or(m);
        assert!(
            arch.contains(&format!("### `{top}`")),
            "ARCHITECTURE.md's Code Map does not name {top}"
        );
    }
}
