//! Every manifest under deploy/k8s, both kustomizations, and the Helm chart rendered with its default
//! values parse into the real Kubernetes API types (k8s-openapi, API 1.33) with no unknown field.

use deploy_check::kube::{self, Object};

#[test]
fn every_base_file_parses_on_its_own() {
    let files: Vec<_> = deploy_check::yaml_files("deploy/k8s/base")
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    assert!(files.len() >= 10, "the base has its manifests: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        let objs = kube::parse_all(&text, &f.display().to_string());
        assert!(!objs.is_empty(), "{}: no object", f.display());
    }
}

#[test]
fn kustomizations_and_chart_render_and_parse() {
    let kinds = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Service",
        "DaemonSet",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    ];
    for (name, objs) in deploy_check::renderings() {
        for kind in kinds {
            if name.contains("helm") && kind == "Namespace" {
                continue; // Helm installs into a namespace it is given.
            }
            assert!(
                objs.iter().any(|o| o.id().starts_with(&format!("{kind}/"))),
                "{name}: no {kind} among {:?}",
                objs.iter().map(Object::id).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn the_overlay_supplies_the_secrets_the_base_refers_to() {
    let all = deploy_check::renderings();
    let (_, overlay) = all
        .iter()
        .find(|(n, _)| n.contains("overlays/example"))
        .expect("the overlay");
    let secrets: Vec<String> = overlay
        .iter()
        .filter_map(|o| match o {
            Object::Secret(s) => s.metadata.name.clone(),
            _ => None,
        })
        .collect();
    for o in overlay {
        for v in o.pod_spec().iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_ref()) {
                assert!(
                    secrets.contains(s),
                    "{}: Secret {s} is not in the overlay ({secrets:?})",
                    o.id()
                );
            }
        }
    }
}

/// The check itself: a misspelt field is an error, not silently dropped as k8s-openapi would.
#[test]
fn a_misspelt_field_is_refused() {
    let ok = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIP: None}\n";
    assert!(kube::parse_all(ok, "ok").len() == 1);
    for bad in [
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIp: None}\n",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  selector: {}\n  template:\n    spec:\n      containers: [{name: c, securityContext: {readOnlyRootFileSystem: true}}]\n",
        "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: x}\nspec: {groups: [{name: g, rules: [{alert: a, expr: up, fro: 1m}]}]}\n",
    ] {
        let docs = deploy_check::yaml_docs(bad, "bad");
        let err =
            kube::parse(docs.into_iter().next().expect("a doc")).expect_err("a misspelt field is refused");
        assert!(err.contains("unknown field"), "{err}");
    }
}
