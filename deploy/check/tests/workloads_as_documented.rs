//! The properties the operations guide promises hold in every rendering (kustomize base, example
//! overlay, Helm chart defaults): the probe's least privilege, steerd's state and config volumes, the
//! DNS service, the RBAC, and the alerts.

use std::collections::BTreeSet;

use deploy_check::kube::{Object, find};
use k8s_openapi::api::core::v1::{Container, PodSpec};

fn arg<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    let args = c.args.as_ref()?;
    let prefix = format!("{flag}=");
    args.iter().find_map(|a| a.strip_prefix(&prefix))
}

fn container<'a>(spec: &'a PodSpec, name: &str) -> &'a Container {
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn mount_of<'a>(c: &'a Container, volume: &str) -> &'a k8s_openapi::api::core::v1::VolumeMount {
    c.volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume)
        .unwrap_or_else(|| panic!("container {} does not mount {volume}", c.name))
}

#[test]
fn probe_runs_with_only_the_capabilities_it_needs() {
    for (name, objs) in deploy_check::renderings() {
        let ds = find(&objs, "DaemonSet/steer-probe");
        let spec = ds.pod_spec().expect("a pod spec");
        assert_eq!(
            spec.host_network,
            Some(true),
            "{name}: the gate and the RTT probe need the host's network"
        );
        assert_eq!(
            spec.automount_service_account_token,
            Some(false),
            "{name}: the agent needs no API token"
        );
        let c = container(spec, "steer-probe");
        let sc = c.security_context.as_ref().expect("a security context");
        assert_ne!(sc.privileged, Some(true), "{name}: not privileged");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{name}: drop ALL first"
        );
        let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
        assert_eq!(
            added,
            BTreeSet::from(["BPF", "NET_ADMIN", "PERFMON"]),
            "{name}: exactly these capabilities"
        );

        // GPU nodes: selected, and their taints tolerated.
        let sel = spec.node_selector.as_ref().expect("a node selector");
        assert!(
            sel.keys().any(|k| k.starts_with("nvidia.com/")),
            "{name}: GPU node selector {sel:?}"
        );
        let tol = spec.tolerations.iter().flatten();
        let tolerated: BTreeSet<&str> = tol
            .filter(|t| t.key.as_deref() == Some("nvidia.com/gpu") && t.operator.as_deref() == Some("Exists"))
            .filter_map(|t| t.effect.as_deref())
            .collect();
        assert_eq!(
            tolerated,
            BTreeSet::from(["NoExecute", "NoSchedule"]),
            "{name}: GPU taints"
        );

        // Host paths: bpffs (pins survive pod restarts) and the cgroup v2 root, nothing else.
        let host_paths: BTreeSet<&str> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.host_path.as_ref().map(|h| h.path.as_str()))
            .collect();
        assert_eq!(
            host_paths,
            BTreeSet::from(["/sys/fs/bpf", "/sys/fs/cgroup"]),
            "{name}"
        );
        let bpffs = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == "/sys/fs/bpf"));
        let bpffs = mount_of(c, &bpffs.expect("bpffs").name);
        let pin_dir = arg(c, "--pin-dir").expect("--pin-dir");
        assert!(
            pin_dir.starts_with(&format!("{}/", bpffs.mount_path)),
            "{name}: pins {pin_dir} on the bpffs mount"
        );
        let cg = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == "/sys/fs/cgroup"));
        let cg = mount_of(c, &cg.expect("cgroup").name);
        assert_eq!(cg.read_only, Some(true), "{name}: the cgroup tree is read-only");
        assert_eq!(
            arg(c, "--cgroup"),
            Some(cg.mount_path.as_str()),
            "{name}: --cgroup is the mounted cgroup root"
        );

        // Health checks on the agent's own metrics port.
        let listen = arg(c, "--metrics-listen").expect("--metrics-listen");
        let port: i32 = listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        let ports = c.ports.iter().flatten();
        let metrics = ports
            .filter(|p| p.container_port == port)
            .find_map(|p| p.name.clone());
        let metrics = metrics.unwrap_or_else(|| panic!("{name}: no named container port {port}"));
        for (which, probe) in [("liveness", &c.liveness_probe), ("readiness", &c.readiness_probe)] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .unwrap_or_else(|| panic!("{name}: {which}"));
            assert_eq!(
                get.port,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(metrics.clone()),
                "{name}: {which} on the metrics port"
            );
        }

        // The region comes from the node label through the init step, which alone holds a token.
        let init = spec.init_containers.as_ref().expect("the region init step");
        let script = init[0]
            .command
            .iter()
            .flatten()
            .chain(init[0].args.iter().flatten())
            .cloned()
            .collect::<String>();
        assert!(
            script.contains("kubectl get node"),
            "{name}: init step reads the node"
        );
        assert!(
            script.contains("topology") || script.contains("$LABEL"),
            "{name}: the region label"
        );
        let token_mounts: Vec<&str> = init
            .iter()
            .chain(&spec.containers)
            .filter(|c| {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.mount_path.starts_with("/var/run/secrets/kubernetes.io"))
            })
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            token_mounts,
            ["region"],
            "{name}: only the init step mounts the API token"
        );
        assert_eq!(
            arg(c, "--config"),
            Some("/run/steer-probe/node.toml"),
            "{name}: the init step's output"
        );
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == "/etc/steer-probe/tokens"),
            "{name}: the token Secret is mounted where node.toml points"
        );
    }
}

#[test]
fn region_lookup_rbac_is_get_nodes_only() {
    for (name, objs) in deploy_check::renderings() {
        let roles: Vec<_> = objs
            .iter()
            .filter_map(|o| match o {
                Object::ClusterRole(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(roles.len(), 1, "{name}: one ClusterRole");
        let rules = roles[0].rules.as_ref().expect("rules");
        assert_eq!(rules.len(), 1, "{name}");
        assert_eq!(
            rules[0].api_groups.as_deref(),
            Some(&[String::new()][..]),
            "{name}"
        );
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["nodes".to_owned()][..]),
            "{name}"
        );
        assert_eq!(rules[0].verbs, ["get"], "{name}");
        assert!(
            !objs
                .iter()
                .any(|o| matches!(o, Object::Role(_) | Object::RoleBinding(_))),
            "{name}: no other RBAC"
        );
    }
}

#[test]
fn steerd_keeps_state_and_reloads_its_policy_in_place() {
    for (name, objs) in deploy_check::renderings() {
        let Object::StatefulSet(sts) = find(&objs, "StatefulSet/steerd") else {
            unreachable!()
        };
        let spec = sts.spec.as_ref().expect("a spec");
        assert!(spec.replicas.unwrap_or(1) >= 2, "{name}: several replicas");
        let pod = spec.template.spec.as_ref().expect("a pod spec");
        let c = container(pod, "steerd");
        assert_eq!(
            c.args.as_ref().and_then(|a| a.first()).map(String::as_str),
            Some("serve"),
            "{name}"
        );

        // The state file sits on the claim template's volume.
        let state = arg(c, "--state").expect("--state");
        let claims: Vec<&str> = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .filter_map(|t| t.metadata.name.as_deref())
            .collect();
        assert_eq!(claims, ["state"], "{name}");
        let m = mount_of(c, "state");
        assert!(
            state.starts_with(&format!("{}/", m.mount_path)),
            "{name}: {state} on the state volume"
        );

        // Policy and zone from the ConfigMap, mounted as a directory: a subPath mount never updates.
        let policy = arg(c, "--policy").expect("--policy");
        let cm = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.config_map.is_some())
            .expect("a ConfigMap volume");
        let m = mount_of(c, &cm.name);
        assert!(
            m.sub_path.is_none(),
            "{name}: no subPath, or kubelet never updates the policy"
        );
        assert!(
            policy.starts_with(&format!("{}/", m.mount_path)),
            "{name}: {policy} from the ConfigMap"
        );
        assert!(
            arg(c, "--zone").expect("--zone").starts_with(&m.mount_path),
            "{name}"
        );
        assert!(
            arg(c, "--tokens").is_some(),
            "{name}: a non-loopback admin listener needs tokens"
        );

        let sc = c.security_context.as_ref().expect("a security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert!(
            caps.add.as_ref().is_none_or(Vec::is_empty),
            "{name}: steerd needs no capability"
        );
        assert_eq!(
            pod.security_context.as_ref().and_then(|s| s.run_as_non_root),
            Some(true),
            "{name}"
        );
        let res = c.resources.as_ref().expect("resources");
        assert!(
            res.requests
                .as_ref()
                .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")),
            "{name}"
        );
        assert!(
            res.limits.as_ref().is_some_and(|r| r.contains_key("memory")),
            "{name}"
        );

        // The DNS listener's port is the one the Service targets, UDP and TCP.
        let dns_port: i32 = arg(c, "--dns")
            .and_then(|a| a.rsplit(':').next()?.parse().ok())
            .expect("--dns");
        let named: BTreeSet<(String, String)> = c
            .ports
            .iter()
            .flatten()
            .filter(|p| p.container_port == dns_port)
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.protocol.clone().unwrap_or_default(),
                )
            })
            .collect();
        let Object::Service(svc) = find(&objs, "Service/steerd-dns") else {
            unreachable!()
        };
        let sp = svc.spec.as_ref().expect("a spec");
        let mut seen = BTreeSet::new();
        for p in sp.ports.iter().flatten() {
            assert_eq!(p.port, 53, "{name}");
            let target = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s.clone(),
                other => panic!("{name}: target port {other:?} should name the container port"),
            };
            let proto = p.protocol.clone().unwrap_or_default();
            assert!(
                named.contains(&(target, proto.clone())),
                "{name}: {proto} 53 reaches --dns ({named:?})"
            );
            seen.insert(proto);
        }
        assert_eq!(
            seen,
            BTreeSet::from(["TCP".to_owned(), "UDP".to_owned()]),
            "{name}"
        );

        // Probes report to every replica by name.
        let ds = find(&objs, "DaemonSet/steer-probe")
            .pod_spec()
            .expect("a pod spec");
        let servers: Vec<&String> = container(ds, "steer-probe")
            .args
            .iter()
            .flatten()
            .filter(|a| a.starts_with("--server="))
            .collect();
        assert_eq!(
            servers.len(),
            spec.replicas.unwrap_or(1) as usize,
            "{name}: one --server per replica"
        );
        for (i, s) in servers.iter().enumerate() {
            assert!(
                s.contains(&format!(
                    "steerd-{i}.{}",
                    spec.service_name.as_deref().unwrap_or("?")
                )),
                "{name}: {s}"
            );
        }
    }
}

#[test]
fn disruption_budget_network_policy_and_monitors_select_steerd() {
    for (name, objs) in deploy_check::renderings() {
        let Object::StatefulSet(sts) = find(&objs, "StatefulSet/steerd") else {
            unreachable!()
        };
        let labels = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("pod labels");
        let matches = |sel: &Option<std::collections::BTreeMap<String, String>>| {
            sel.as_ref()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
        };
        let Object::PodDisruptionBudget(pdb) = find(&objs, "PodDisruptionBudget/steerd") else {
            unreachable!()
        };
        assert!(
            matches(
                &pdb.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|s| s.match_labels.clone())
            ),
            "{name}: PDB"
        );
        let Object::NetworkPolicy(np) = find(&objs, "NetworkPolicy/steerd") else {
            unreachable!()
        };
        let nps = np.spec.as_ref().expect("a spec");
        assert!(
            matches(&nps.pod_selector.as_ref().and_then(|s| s.match_labels.clone())),
            "{name}: NetworkPolicy"
        );
        let types = nps.policy_types.clone().unwrap_or_default();
        assert!(
            types.contains(&"Egress".to_owned()) && nps.egress.as_ref().is_some_and(Vec::is_empty),
            "{name}: no egress"
        );

        for (sm, svc_id) in [
            ("ServiceMonitor/steerd", "Service/steerd-admin"),
            ("ServiceMonitor/steer-probe", "Service/steer-probe-metrics"),
        ] {
            let Object::ServiceMonitor(m) = find(&objs, sm) else {
                unreachable!()
            };
            let Object::Service(svc) = find(&objs, svc_id) else {
                unreachable!()
            };
            let svc_labels = svc.metadata.labels.clone().unwrap_or_default();
            let sel = m.spec.selector.match_labels.clone().unwrap_or_default();
            assert!(
                !sel.is_empty() && sel.iter().all(|(k, v)| svc_labels.get(k) == Some(v)),
                "{name}: {sm} selects {svc_id}"
            );
            let port_names: Vec<String> = svc
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .filter_map(|p| p.name.clone())
                .collect();
            for e in &m.spec.endpoints {
                assert!(port_names.contains(&e.port), "{name}: {sm} port {}", e.port);
                for d in e.interval.iter().chain(&e.scrape_timeout) {
                    assert!(deploy_check::crd::is_duration(d), "{name}: {d}");
                }
            }
        }
    }
}

#[test]
fn alerts_cover_the_failure_modes_and_chart_matches_base() {
    let all = deploy_check::renderings();
    let mut specs = Vec::new();
    for (name, objs) in &all {
        let Object::PrometheusRule(r) = find(objs, "PrometheusRule/steer") else {
            unreachable!()
        };
        let alerts: BTreeSet<&str> = r
            .spec
            .groups
            .iter()
            .flat_map(|g| &g.rules)
            .filter_map(|r| r.alert.as_deref())
            .collect();
        for want in [
            "SteerRegionDown",
            "SteerAllRegionsDown",
            "SteerPolicyReloadFailed",
            "SteerProbesStale",
            "SteerDrainStuck",
        ] {
            assert!(alerts.contains(want), "{name}: alert {want}");
        }
        for rule in r.spec.groups.iter().flat_map(|g| &g.rules) {
            assert!(
                rule.for_.as_deref().is_none_or(deploy_check::crd::is_duration),
                "{name}: {:?}",
                rule.for_
            );
            assert!(
                rule.labels.contains_key("severity"),
                "{name}: {:?} has a severity",
                rule.alert
            );
        }
        specs.push((name.clone(), r.spec.clone()));
    }
    for (name, spec) in &specs[1..] {
        assert_eq!(spec, &specs[0].1, "{name}: the same alerts as {}", specs[0].0);
    }
}
