//! The systemd units pass `systemd-analyze verify` (with `ExecStart` pointed at the built binaries,
//! which are not installed under /usr/local/bin here) and keep a low exposure score in
//! `systemd-analyze security --offline=yes`.

use std::process::Command;

const UNITS: [&str; 2] = ["steerd.service", "steer-probe.service"];

fn staged_units() -> std::path::PathBuf {
    let b = deploy_check::bins::bins();
    let dir = std::env::temp_dir().join(format!("deploy-check-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for u in UNITS {
        let text = deploy_check::read(&format!("deploy/systemd/{u}"))
            .replace("/usr/local/bin/steerd ", &format!("{} ", b.steerd.display()))
            .replace(
                "/usr/local/bin/steer-probe ",
                &format!("{} ", b.steer_probe.display()),
            );
        std::fs::write(dir.join(u), text).expect("write unit");
    }
    dir
}

fn analyze(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze cannot run ({e}): `apt-get install -y systemd` provides it")
        })
}

#[test]
fn units_verify() {
    let dir = staged_units();
    let mut args = vec!["verify"];
    let paths: Vec<String> = UNITS.iter().map(|u| format!("./{u}")).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = analyze(&args, &dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

#[test]
fn units_are_sandboxed() {
    let dir = staged_units();
    for u in UNITS {
        let path = format!("./{u}");
        let out = analyze(&["security", "--offline=yes", "--no-pager", &path], &dir);
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{u}: no exposure score in:\n{text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        // systemd calls up to 3.9 "OK"; 10 is an unsandboxed root service.
        assert!(score <= 3.0, "{u}: exposure {score}:\n{text}");
    }
    let probe = deploy_check::read("deploy/systemd/steer-probe.service");
    let bounding = probe
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a bounding set");
    let mut caps: Vec<&str> = bounding.split_whitespace().collect();
    caps.sort_unstable();
    assert_eq!(
        caps,
        ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"],
        "steer-probe's capabilities"
    );
    assert!(
        probe.contains("ReadWritePaths=/sys/fs/bpf"),
        "pins need bpffs writable under ProtectSystem=strict"
    );
    let steerd = deploy_check::read("deploy/systemd/steerd.service");
    assert!(
        steerd.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"),
        "steerd binds 53 and nothing else"
    );
    assert!(
        steerd.contains("DynamicUser=yes") && steerd.contains("StateDirectory=steerd"),
        "state survives restarts"
    );
    assert!(
        steerd.contains("--state /var/lib/steerd/"),
        "the state file is in the StateDirectory"
    );
}
