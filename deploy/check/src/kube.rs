//! Strict parsing of manifests into the real Kubernetes API types (k8s-openapi).
//!
//! k8s-openapi's deserializers skip unknown fields, as the API server's lenient decoding does; a
//! misspelt field (`tolerationSeconds` as `tolerationSecond`, `readOnlyRootFileSystem`) would then
//! vanish without a word. `serde_ignored` records every skipped path, and any is an error here.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;

use crate::crd::{PrometheusRule, ServiceMonitor};

/// One parsed manifest object.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "a handful of objects per test; boxing would only add noise"
)]
pub enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    DaemonSet(DaemonSet),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
    ServiceMonitor(ServiceMonitor),
    PrometheusRule(PrometheusRule),
}

/// Deserializes `v` as `T`, failing on any field that `T` does not know.
pub fn strict<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    let mut ignored = Vec::new();
    let t: T =
        serde_ignored::deserialize(v, |path| ignored.push(path.to_string())).map_err(|e| e.to_string())?;
    if ignored.is_empty() {
        Ok(t)
    } else {
        Err(format!("unknown fields: {}", ignored.join(", ")))
    }
}

/// `apiVersion` and `kind` of a manifest document.
#[must_use]
pub fn type_of(v: &serde_json::Value) -> (String, String) {
    let s = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (s("apiVersion"), s("kind"))
}

/// kustomize and some editors wrap long base64 values; the API server's decoder skips the line
/// breaks, k8s-openapi's does not.
fn unwrap_secret_data(v: &mut serde_json::Value) {
    if let Some(data) = v.get_mut("data").and_then(serde_json::Value::as_object_mut) {
        for val in data.values_mut() {
            if let Some(s) = val.as_str() {
                *val = serde_json::Value::String(s.split_whitespace().collect());
            }
        }
    }
}

/// Parses one document into the type its `apiVersion` and `kind` name.
pub fn parse(mut v: serde_json::Value) -> Result<Object, String> {
    let (api, kind) = type_of(&v);
    let o = match (api.as_str(), kind.as_str()) {
        ("v1", "Namespace") => Object::Namespace(strict(v)?),
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(v)?),
        ("v1", "ConfigMap") => Object::ConfigMap(strict(v)?),
        ("v1", "Secret") => {
            unwrap_secret_data(&mut v);
            Object::Secret(strict(v)?)
        }
        ("v1", "Service") => Object::Service(strict(v)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(strict(v)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => Object::ClusterRoleBinding(strict(v)?),
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(strict(v)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Object::RoleBinding(strict(v)?),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(strict(v)?),
        ("apps/v1", "Deployment") => Object::Deployment(strict(v)?),
        ("apps/v1", "StatefulSet") => Object::StatefulSet(strict(v)?),
        ("policy/v1", "PodDisruptionBudget") => Object::PodDisruptionBudget(strict(v)?),
        ("networking.k8s.io/v1", "NetworkPolicy") => Object::NetworkPolicy(strict(v)?),
        ("monitoring.coreos.com/v1", "ServiceMonitor") => Object::ServiceMonitor(strict(v)?),
        ("monitoring.coreos.com/v1", "PrometheusRule") => Object::PrometheusRule(strict(v)?),
        _ => return Err(format!("no type for apiVersion {api:?} kind {kind:?}")),
    };
    Ok(o)
}

/// Parses every document of a text, panicking with the origin, the document's kind and name, and the
/// error.
#[must_use]
pub fn parse_all(text: &str, origin: &str) -> Vec<Object> {
    crate::yaml_docs(text, origin)
        .into_iter()
        .map(|v| {
            let (api, kind) = type_of(&v);
            let name = v
                .pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?")
                .to_owned();
            parse(v).unwrap_or_else(|e| panic!("{origin}: {api} {kind} {name}: {e}"))
        })
        .collect()
}

impl Object {
    /// The kind and the name, for messages.
    #[must_use]
    pub fn id(&self) -> String {
        let (kind, meta) = match self {
            Object::Namespace(o) => ("Namespace", &o.metadata),
            Object::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Object::ClusterRole(o) => ("ClusterRole", &o.metadata),
            Object::ClusterRoleBinding(o) => ("ClusterRoleBinding", &o.metadata),
            Object::Role(o) => ("Role", &o.metadata),
            Object::RoleBinding(o) => ("RoleBinding", &o.metadata),
            Object::ConfigMap(o) => ("ConfigMap", &o.metadata),
            Object::Secret(o) => ("Secret", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
            Object::DaemonSet(o) => ("DaemonSet", &o.metadata),
            Object::Deployment(o) => ("Deployment", &o.metadata),
            Object::StatefulSet(o) => ("StatefulSet", &o.metadata),
            Object::PodDisruptionBudget(o) => ("PodDisruptionBudget", &o.metadata),
            Object::NetworkPolicy(o) => ("NetworkPolicy", &o.metadata),
            Object::ServiceMonitor(o) => ("ServiceMonitor", &o.metadata),
            Object::PrometheusRule(o) => ("PrometheusRule", &o.metadata),
        };
        format!("{kind}/{}", meta.name.as_deref().unwrap_or("?"))
    }

    /// The pod template's spec of a workload.
    #[must_use]
    pub fn pod_spec(&self) -> Option<&PodSpec> {
        match self {
            Object::DaemonSet(o) => o.spec.as_ref()?.template.spec.as_ref(),
            Object::Deployment(o) => o.spec.as_ref()?.template.spec.as_ref(),
            Object::StatefulSet(o) => o.spec.as_ref()?.template.spec.as_ref(),
            _ => None,
        }
    }
}

/// Every container (init containers too) of every workload, with the workload's id.
#[must_use]
pub fn containers(objs: &[Object]) -> Vec<(String, &Container)> {
    let mut out = Vec::new();
    for o in objs {
        if let Some(spec) = o.pod_spec() {
            for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
                out.push((o.id(), c));
            }
        }
    }
    out
}

/// The one object of a kind and name; panics when there is none.
#[must_use]
pub fn find<'a>(objs: &'a [Object], id: &str) -> &'a Object {
    objs.iter().find(|o| o.id() == id).unwrap_or_else(|| {
        panic!(
            "no {id} among {:?}",
            objs.iter().map(Object::id).collect::<Vec<_>>()
        )
    })
}
