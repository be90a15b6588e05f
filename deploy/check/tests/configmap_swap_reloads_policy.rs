//! A `ConfigMap` update reaches steerd without a restart: kubelet mounts a `ConfigMap` as
//! `policy.yaml -> ..data/policy.yaml` and `..data -> ..<timestamp>/`, and on a change writes a new
//! timestamped directory and renames a new `..data` link over the old one. The same layout is built
//! here and swapped under a real steerd; its /metrics must count the reload (and a bad policy must be
//! counted as refused, not served).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use deploy_check::steerd::Steerd;

fn metrics(steerd: &Steerd) -> String {
    steerd.metrics()
}

fn counter(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Writes `policy` as kubelet's atomic writer would: a new directory, then `..data` swapped by rename.
fn publish(dir: &Path, generation: u32, policy: &str, zone: &str) {
    let data = dir.join(format!("..2026_12_04_00_00_0{generation}.000000000"));
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("policy.yaml"), policy).expect("write policy");
    std::fs::write(data.join("zone.db"), zone).expect("write zone");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(data.file_name().expect("a name"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for f in ["policy.yaml", "zone.db"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            symlink(format!("..data/{f}"), dir.join(f)).expect("symlink");
        }
    }
}

fn wait_for(steerd: &Steerd, series: &str, at_least: u64) -> bool {
    // The poll is every second; kubelet's own sync takes up to a minute, this a few seconds.
    // 75 tries 200 ms apart: 15 s at most.
    for _ in 0..75 {
        if counter(&metrics(steerd), series) >= at_least {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn a_configmap_swap_reloads_the_policy_in_place() {
    let policy = deploy_check::read("deploy/examples/policy.yaml");
    let zone = deploy_check::read("deploy/examples/zone.db");
    let dir = std::env::temp_dir().join(format!("deploy-check-cm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    publish(&dir, 1, &policy, &zone);

    let steerd = Steerd::start(&dir.join("policy.yaml"), &dir.join("zone.db"));
    let ok = "steerd_policy_reloads_total{result=\"ok\"}";
    let failed = "steerd_policy_reloads_total{result=\"failed\"}";
    let before = metrics(&steerd);
    let (ok0, failed0) = (counter(&before, ok), counter(&before, failed));

    // A changed policy (one service's TTL) published the kubelet way.
    std::thread::sleep(Duration::from_millis(50));
    publish(&dir, 2, &policy.replace("normal: 60s", "normal: 30s"), &zone);
    assert!(
        wait_for(&steerd, ok, ok0 + 1),
        "steerd did not reload after the ..data swap"
    );

    // A broken policy is refused and counted; the old one keeps serving.
    publish(
        &dir,
        3,
        "zone: infer.example.com.\nregions: {}\nservices: {api: {regions: [nowhere]}}\n",
        &zone,
    );
    assert!(
        wait_for(&steerd, failed, failed0 + 1),
        "a bad policy was not counted as refused"
    );
    let after = metrics(&steerd);
    assert_eq!(counter(&after, ok), ok0 + 1, "the bad policy was not taken");
    assert!(
        after.contains("steerd_answers_total{service=\"batch\""),
        "the old policy still serves"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
