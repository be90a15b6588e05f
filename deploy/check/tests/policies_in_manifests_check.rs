//! The policy and zone that the manifests ship (the base `ConfigMap`, the chart's default values)
//! pass the real `steerd check --policy FILE --zone FILE`, and the base `ConfigMap` is
//! deploy/examples as it is.

use std::process::Command;

use deploy_check::kube::{Object, find};

#[test]
fn shipped_policies_pass_steerd_check() {
    let steerd = &deploy_check::bins::bins().steerd;
    for (name, objs) in deploy_check::renderings() {
        let Object::ConfigMap(cm) = find(&objs, "ConfigMap/steerd-policy") else {
            unreachable!()
        };
        let data = cm.data.as_ref().expect("data");
        let dir = std::env::temp_dir().join(format!(
            "deploy-check-policy-{}-{}",
            std::process::id(),
            name.len()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for key in ["policy.yaml", "zone.db"] {
            std::fs::write(
                dir.join(key),
                data.get(key).unwrap_or_else(|| panic!("{name}: no {key}")),
            )
            .expect("write");
        }
        let out = Command::new(steerd)
            .args(["check", "--policy"])
            .arg(dir.join("policy.yaml"))
            .arg("--zone")
            .arg(dir.join("zone.db"))
            .output()
            .expect("steerd check runs");
        assert!(
            out.status.success(),
            "{name}: steerd check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name.contains("k8s/base") {
            for key in ["policy.yaml", "zone.db"] {
                let example = deploy_check::read(&format!("deploy/examples/{key}"));
                let norm = |s: &str| {
                    s.lines()
                        .map(str::trim_end)
                        .collect::<Vec<_>>()
                        .join("\n")
                        .trim_end()
                        .to_owned()
                };
                assert_eq!(
                    norm(&data[key]),
                    norm(&example),
                    "{name}: {key} is deploy/examples/{key}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
