//! The probe's region comes from its node's `topology.kubernetes.io/region` label: the init step's
//! real script (from every rendering), run here with a stand-in `kubectl`, writes a node.toml that the
//! real steer-probe accepts as its `--config` (region and token file), and it refuses a node without
//! the label.

use std::path::Path;
use std::process::Command;

use deploy_check::kube::find;

fn script_of(objs: &[deploy_check::kube::Object]) -> (Vec<String>, Vec<(String, String)>) {
    let spec = find(objs, "DaemonSet/steer-probe")
        .pod_spec()
        .expect("a pod spec");
    let init = &spec.init_containers.as_ref().expect("init containers")[0];
    let cmd: Vec<String> = init
        .command
        .iter()
        .flatten()
        .chain(init.args.iter().flatten())
        .cloned()
        .collect();
    let env = init
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    (cmd, env)
}

/// A `kubectl` that answers `get node gpu-1 -o jsonpath=...region...` with `label`.
fn fake_kubectl(dir: &Path, label: &str) {
    let p = dir.join("kubectl");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n[ \"$1 $2 $3 $4\" = \"get node gpu-1 -o\" ] || {{ echo \"unexpected: $*\" >&2; exit 3; }}\ncase \"$5\" in *'topology\\.kubernetes\\.io/region}}'*) printf '%s' '{label}';; *) echo \"bad jsonpath $5\" >&2; exit 4;; esac\n"
        ),
    )
    .expect("write kubectl");
    Command::new("chmod").arg("+x").arg(&p).status().expect("chmod");
}

fn run_init(dir: &Path, cmd: &[String], env: &[(String, String)]) -> std::process::Output {
    let (prog, args) = cmd.split_first().expect("a command");
    // The script's fixed paths, moved under the test's directory.
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("/run/steer-probe/", &format!("{}/run/", dir.display()))
                .replace("/etc/steer-probe/tokens/", &format!("{}/tokens/", dir.display()))
        })
        .collect();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(prog)
        .args(args)
        .envs(env.iter().cloned())
        .env("NODE_NAME", "gpu-1")
        .env("PATH", path)
        .output()
        .expect("the init script runs")
}

#[test]
fn init_step_writes_a_config_that_steer_probe_reads() {
    let probe = &deploy_check::bins::bins().steer_probe;
    for (name, objs) in deploy_check::renderings() {
        let (cmd, env) = script_of(&objs);
        let dir =
            std::env::temp_dir().join(format!("deploy-check-init-{}-{}", std::process::id(), name.len()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).expect("mkdir");
        std::fs::create_dir_all(dir.join("tokens")).expect("mkdir");
        std::fs::write(dir.join("tokens/us-east"), "example-us-east-token-0123456789\n").expect("token");
        fake_kubectl(&dir, "us-east");
        let out = run_init(&dir, &cmd, &env);
        assert!(
            out.status.success(),
            "{name}: init step failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.join("run/node.toml");
        let text = std::fs::read_to_string(&config).expect("node.toml written");
        assert!(text.contains("region = \"us-east\""), "{name}: {text}");

        // The real agent takes region and token file from it: validation gets past both and stops
        // at the cgroup, which does not exist here (so nothing is loaded or attached).
        let out = Command::new(probe)
            .arg("run")
            .arg(format!("--config={}", config.display()))
            .args([
                "--server=http://127.0.0.1:9",
                "--ports=8000",
                "--iface=lo",
                "--cgroup=/nonexistent/cgroup",
            ])
            .output()
            .expect("steer-probe runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{name}: a config error exits 64: {err}"
        );
        assert!(
            err.contains("is not a cgroup v2 directory"),
            "{name}: region and token file were accepted: {err}"
        );

        // A node without the label: the init step fails, and the pod does not start.
        fake_kubectl(&dir, "");
        std::fs::remove_file(&config).expect("rm");
        let out = run_init(&dir, &cmd, &env);
        assert!(
            !out.status.success(),
            "{name}: a node without a region label is refused"
        );
        assert!(!config.exists(), "{name}: no config for a node without a region");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
