//! Every steer metric that the Grafana dashboard and the alert rules use is exported by the
//! binaries: steerd's by scraping a real steerd on 127.0.0.1 (names and the label values the
//! expressions match on), steer-probe's by the names compiled into the binary (a scrape needs the
//! BPF programs attached, which needs root and an interface to attach to).

use deploy_check::kube::Object;
use deploy_check::promql::{self, MetricRef, Series};

/// Starts steerd with deploy/examples on loopback, makes it refuse one report (so that the
/// rejection family has a series), and returns its /metrics.
fn scrape_steerd() -> String {
    let root = deploy_check::root();
    let steerd = deploy_check::steerd::Steerd::start(
        &root.join("deploy/examples/policy.yaml"),
        &root.join("deploy/examples/zone.db"),
    );
    let bad = steerd.http(
        "POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{x}",
    );
    assert!(bad.starts_with("HTTP/1.1 4"), "a bad report is refused: {bad}");
    // One good report, so that the per-region series that only exist with data (RTT quantiles) are there.
    let report = serde_json::json!({
        "version": 1, "region": "us-east", "host": "h1", "seq": 1, "sent_at_ms": 1, "interval_ms": 1000,
        "health": {"ok": true, "checks": []},
        "load": {"queue_depth": 0, "kv_cache_usage": 0.0, "active_connections": 0},
        "gate": {"mode": "open", "syn_seen": 0, "syn_admitted": 0, "syn_dropped": 0},
        "rtt": [{"prefix": "198.18.1.0/24", "samples": 5, "srtt_us_p50": 9000, "srtt_us_p90": 9500, "srtt_us_min": 8000}]
    })
    .to_string();
    let good = steerd.http(
        &format!(
            "POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{report}",
            report.len()
        ),
    );
    assert!(good.starts_with("HTTP/1.1 200"), "a good report is taken: {good}");
    let resp = steerd.metrics();
    drop(steerd);
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Collects the `expr` (and query-variable) strings of a dashboard.
fn walk(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" || (k == "definition" && v.as_str().is_some_and(|s| s.contains('('))) {
                    out.push((
                        "deploy/grafana/steer.json".to_owned(),
                        v.as_str().expect("a string").to_owned(),
                    ));
                } else if k == "query" && v.get("query").is_some() {
                    out.push((
                        "deploy/grafana/steer.json".to_owned(),
                        v["query"].as_str().expect("a string").to_owned(),
                    ));
                } else {
                    walk(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
        _ => {}
    }
}

/// Every `PromQL` expression of the dashboard and of the alert rules of every rendering.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dash: serde_json::Value = serde_json::from_str(&deploy_check::read("deploy/grafana/steer.json"))
        .expect("the dashboard is JSON");
    walk(&dash, &mut out);
    for (name, objs) in deploy_check::renderings() {
        for o in &objs {
            if let Object::PrometheusRule(r) = o {
                for rule in r.spec.groups.iter().flat_map(|g| &g.rules) {
                    out.push((
                        format!("{name} {}", rule.alert.as_deref().unwrap_or("?")),
                        rule.expr.clone(),
                    ));
                }
            }
        }
    }
    out
}

fn refs() -> Vec<(String, MetricRef)> {
    let exprs = expressions();
    assert!(
        exprs.len() > 20,
        "the dashboard and the rules have expressions: {}",
        exprs.len()
    );
    exprs
        .into_iter()
        .flat_map(|(o, e)| promql::metric_refs(&e).into_iter().map(move |r| (o.clone(), r)))
        .collect()
}

/// Whether `r` can match a series of the scrape; `Err` says why not.
fn matches(r: &MetricRef, series: &[Series], declared: &[String]) -> Result<(), String> {
    let names = promql::family_names(&r.name);
    let of: Vec<&Series> = series.iter().filter(|s| names.contains(&s.name)).collect();
    if of.is_empty() && !names.iter().any(|n| declared.contains(n)) {
        return Err(format!("{} is not exported", r.name));
    }
    for (label, op, value) in &r.matchers {
        let has_label = of.iter().any(|s| s.labels.iter().any(|(l, _)| l == label));
        let ok = match op.as_str() {
            "=" => of
                .iter()
                .any(|s| s.labels.iter().any(|(l, v)| l == label && v == value)),
            _ => has_label,
        };
        if !ok {
            return Err(format!("{}: no series with {label}{op}{value:?}", r.name));
        }
    }
    Ok(())
}

#[test]
fn steerd_exports_every_steerd_metric_used() {
    let body = scrape_steerd();
    let series = promql::parse_exposition(&body);
    let declared: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let mut missing = Vec::new();
    let mut checked = 0;
    for (origin, r) in refs() {
        if !r.name.starts_with("steerd_") {
            continue;
        }
        checked += 1;
        if let Err(e) = matches(&r, &series, &declared) {
            missing.push(format!("{origin}: {e}"));
        }
    }
    missing.sort();
    missing.dedup();
    assert!(checked > 20, "steerd metrics are used: {checked}");
    assert!(
        missing.is_empty(),
        "not exported by steerd:\n{}",
        missing.join("\n")
    );
}

#[test]
fn steer_probe_exports_every_steer_probe_metric_used() {
    let bin = &deploy_check::bins::bins().steer_probe;
    let mut missing = Vec::new();
    let mut checked = 0;
    for (origin, r) in refs() {
        if !r.name.starts_with("steer_probe_") {
            continue;
        }
        checked += 1;
        let found = promql::family_names(&r.name)
            .iter()
            .any(|n| deploy_check::bins::contains_word(bin, n));
        if !found {
            missing.push(format!("{origin}: {}", r.name));
        }
    }
    missing.sort();
    missing.dedup();
    assert!(checked > 5, "steer-probe metrics are used: {checked}");
    assert!(
        missing.is_empty(),
        "not in the steer-probe binary:\n{}",
        missing.join("\n")
    );
}

/// The check itself: a name that no binary exports is caught.
#[test]
fn an_unknown_metric_is_caught() {
    let series = promql::parse_exposition("steerd_a_total{result=\"ok\"} 1\n");
    let r = |e: &str| promql::metric_refs(e).remove(0);
    assert!(matches(&r("rate(steerd_a_total[5m])"), &series, &[]).is_ok());
    assert!(matches(&r("steerd_a_total{result=\"failed\"}"), &series, &[]).is_err());
    assert!(matches(&r("steerd_b_total"), &series, &[]).is_err());
    let bin = &deploy_check::bins::bins().steer_probe;
    assert!(!deploy_check::bins::contains_word(
        bin,
        "steer_probe_no_such_metric_total"
    ));
}
