//! The alert rules and the dashboard's queries are valid `PromQL` (`promtool check rules`, Debian's
//! `prometheus` package), and the main alerts fire on the series steerd really exports, and stay
//! quiet otherwise (`promtool test rules`).

use std::process::Command;

use deploy_check::kube::{Object, find};

fn promtool(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let out = Command::new("promtool").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("promtool cannot run ({e}): `apt-get install -y --no-install-recommends prometheus` provides it")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn workdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("deploy-check-promtool-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// The base's rule groups as a plain Prometheus rules file.
fn rules_file() -> String {
    let objs = deploy_check::kube::parse_all(&deploy_check::kustomize("deploy/k8s/base"), "base");
    let Object::PrometheusRule(r) = find(&objs, "PrometheusRule/steer") else {
        unreachable!()
    };
    serde_yaml_ng::to_string(&serde_json::json!({ "groups": r.spec.groups })).expect("yaml")
}

#[test]
fn alert_rules_and_dashboard_queries_are_valid_promql() {
    let dir = workdir("check");
    std::fs::write(dir.join("rules.yaml"), rules_file()).expect("write");
    let (ok, text) = promtool(&["check", "rules", "rules.yaml"], &dir);
    assert!(ok, "promtool check rules:\n{text}");

    // Every dashboard query as a recording rule, with Grafana's variables filled in.
    let dash: serde_json::Value = serde_json::from_str(&deploy_check::read("deploy/grafana/steer.json"))
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("an expr").to_owned());
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            exprs.push(e.to_owned());
        }
    }
    assert!(exprs.len() > 20, "dashboard queries: {}", exprs.len());
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e.replace("$__rate_interval", "1m").replace("$region", ".*");
            serde_json::json!({ "record": format!("steer:dashboard_query_{i}"), "expr": e })
        })
        .collect();
    let file =
        serde_yaml_ng::to_string(&serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] }))
            .expect("yaml");
    std::fs::write(dir.join("dashboard.yaml"), file).expect("write");
    let (ok, text) = promtool(&["check", "rules", "dashboard.yaml"], &dir);
    assert!(ok, "promtool check rules (dashboard queries):\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

const TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 15s
tests:
  # us-east goes down on both replicas, eu-west stays up.
  - interval: 15s
    input_series:
      - series: 'steerd_region_health{pod="steerd-0",region="us-east"}'
        values: '1 1 0x20'
      - series: 'steerd_region_health{pod="steerd-1",region="us-east"}'
        values: '1 1 0x20'
      - series: 'steerd_region_health{pod="steerd-0",region="eu-west"}'
        values: '1x22'
      - series: 'steerd_region_health{pod="steerd-1",region="eu-west"}'
        values: '1x22'
    alert_rule_test:
      - eval_time: 4m
        alertname: SteerRegionDown
        exp_alerts:
          - exp_labels: { severity: warning, region: us-east }
            exp_annotations:
              summary: "Region us-east is down on every steerd replica"
              description: "steerd no longer answers with us-east; check its probes and inference servers (docs/operations.md#troubleshooting)."
      - eval_time: 4m
        alertname: SteerAllRegionsDown
        exp_alerts: []
  # Every region down: the critical alert.
  - interval: 15s
    input_series:
      - series: 'steerd_region_health{pod="steerd-0",region="us-east"}'
        values: '0x20'
      - series: 'steerd_region_health{pod="steerd-0",region="eu-west"}'
        values: '-1x20'
    alert_rule_test:
      - eval_time: 2m
        alertname: SteerAllRegionsDown
        exp_alerts:
          - exp_labels: { severity: critical }
            exp_annotations:
              summary: "No region is up on any steerd replica"
              description: "Answers follow each service's when_all_down (open answers with every candidate, closed answers empty)."
  # A rejected reload, as steerd counts it.
  - interval: 15s
    input_series:
      - series: 'steerd_policy_reloads_total{pod="steerd-0",result="failed"}'
        values: '0 0 1 1 1'
      - series: 'steerd_policy_reloads_total{pod="steerd-0",result="ok"}'
        values: '0 1 1 1 1'
    alert_rule_test:
      - eval_time: 1m
        alertname: SteerPolicyReloadFailed
        exp_alerts:
          - exp_labels: { severity: warning, pod: steerd-0, result: failed }
            exp_annotations:
              summary: "steerd steerd-0 rejected a policy reload"
              description: "The old policy keeps serving. Run `steerd check --policy FILE` on the new policy, or read the replica's log."
  # A region whose probes stopped reporting (not drained) versus a drained one.
  - interval: 15s
    input_series:
      - series: 'steerd_region_hosts_live{pod="steerd-0",region="us-east"}'
        values: '0x20'
      - series: 'steerd_region_drained{pod="steerd-0",region="us-east"}'
        values: '0x20'
      - series: 'steerd_region_hosts_live{pod="steerd-0",region="eu-west"}'
        values: '0x20'
      - series: 'steerd_region_drained{pod="steerd-0",region="eu-west"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 4m
        alertname: SteerProbesStale
        exp_alerts:
          - exp_labels: { severity: warning, region: us-east }
            exp_annotations:
              summary: "No live probe reports for region us-east"
              description: "No host of the region reported within stale_after; the region counts as down."
  # A drain only some replicas have.
  - interval: 15s
    input_series:
      - series: 'steerd_region_drained{pod="steerd-0",region="eu-west"}'
        values: '1x40'
      - series: 'steerd_region_drained{pod="steerd-1",region="eu-west"}'
        values: '0x40'
    alert_rule_test:
      - eval_time: 6m
        alertname: SteerDrainInconsistent
        exp_alerts:
          - exp_labels: { severity: warning, region: eu-west }
            exp_annotations:
              summary: "eu-west is drained on some steerd replicas only"
              description: "Drains are per replica: repeat the drain (or undrain) on every replica."
"#;

#[test]
fn alerts_fire_when_they_should_and_only_then() {
    let dir = workdir("test");
    std::fs::write(dir.join("rules.yaml"), rules_file()).expect("write");
    std::fs::write(dir.join("tests.yaml"), TESTS).expect("write");
    let (ok, text) = promtool(&["test", "rules", "tests.yaml"], &dir);
    assert!(ok, "promtool test rules:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
