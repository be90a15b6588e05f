//! Checks of `deploy/`: the manifests parse into the real Kubernetes API types with no unknown
//! field, the flags, environment variables and metrics they use exist in the real binaries, and the
//! systemd units verify. The tests in `tests/` call into the modules here.

pub mod bins;
pub mod crd;
pub mod helm;
pub mod invocation;
pub mod kube;
pub mod promql;
pub mod steerd;

use std::path::{Path, PathBuf};

/// The workspace root (`deploy/check/../..`).
#[must_use]
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// Reads a file under the workspace root, panicking with its path.
#[must_use]
pub fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The YAML files directly in `dir` (relative to the root), sorted.
#[must_use]
pub fn yaml_files(rel: &str) -> Vec<PathBuf> {
    let dir = root().join(rel);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    v.sort();
    v
}

/// Every document of a multi-document YAML text as JSON values; empty documents are dropped.
#[must_use]
pub fn yaml_docs(text: &str, origin: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = serde_json::Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: document {i}: {e}"));
        if !v.is_null() {
            out.push(v);
        }
    }
    out
}

/// Runs `kubectl kustomize DIR` (kustomize is built into kubectl; it needs no cluster).
#[must_use]
pub fn kustomize(rel: &str) -> String {
    let dir = root().join(rel);
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl (for its built-in kustomize) cannot run: {e}; install Debian's kubectl")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

/// The chart under deploy/helm.
pub const CHART: &str = "deploy/helm/steer";

/// Every way the manifests are deployed, each parsed strictly: the kustomize base, the example
/// overlay, and the Helm chart with its default values (release `steer` in namespace `steer`).
#[must_use]
pub fn renderings() -> Vec<(String, Vec<kube::Object>)> {
    let mut v = Vec::new();
    for dir in ["deploy/k8s/base", "deploy/k8s/overlays/example"] {
        let text = kustomize(dir);
        v.push((format!("kubectl kustomize {dir}"), kube::parse_all(&text, dir)));
    }
    let release = helm::Release {
        name: "steer".to_owned(),
        namespace: "steer".to_owned(),
    };
    let text = helm::render_chart(CHART, &release);
    v.push((format!("{CHART} (default values)"), kube::parse_all(&text, CHART)));
    v
}
