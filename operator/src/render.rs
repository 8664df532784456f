//! `kv-operator render`: the objects the first reconcile of a KvCluster would apply, as YAML,
//! built by the same builders as the controller and with no cluster needed, so that GitOps users
//! can review what the operator will create.
//!
//! A manifest on disk has no UID or status yet: the API server assigns the UID and the first
//! reconcile freezes `status.initialReplicas` to `spec.replicas`. Rendering does the same, and
//! puts [`PLACEHOLDER_UID`] where the UID will go (the owner references and the nodes'
//! `--initial-cluster-token`).

use crate::crd::KvCluster;
use crate::resources::{Cluster, owned_objects};

/// Stands for the UID the API server will assign to the KvCluster.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Why a manifest cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The input is not a KvCluster.
    #[error("not a KvCluster manifest: {0}")]
    Parse(#[source] serde_yaml_ng::Error),
    /// The input is a different kind or version.
    #[error("expected apiVersion raftkv.dev/v1alpha1 and kind KvCluster, found {0} {1}")]
    WrongKind(String, String),
    /// The KvCluster has no `metadata.name`.
    #[error("the KvCluster has no metadata.name")]
    NoName,
    /// An object could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Write(#[source] serde_yaml_ng::Error),
}

/// Renders the objects for the KvCluster manifest `yaml`, in `namespace` unless the manifest
/// names one.
pub fn render(yaml: &str, namespace: &str) -> Result<String, RenderError> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).map_err(RenderError::Parse)?;
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if api_version != "raftkv.dev/v1alpha1" || kind != "KvCluster" {
        return Err(RenderError::WrongKind(api_version.into(), kind.into()));
    }
    let kvc: KvCluster = serde_yaml_ng::from_value(value).map_err(RenderError::Parse)?;
    let initial_replicas = kvc
        .status
        .as_ref()
        .and_then(|s| s.initial_replicas)
        .unwrap_or(kvc.spec.replicas);
    let cluster = Cluster {
        name: kvc.metadata.name.clone().ok_or(RenderError::NoName)?,
        namespace: kvc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string()),
        uid: kvc
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| PLACEHOLDER_UID.to_string()),
        spec: kvc.spec,
        initial_replicas,
    };
    // The first apply creates the StatefulSet with the initial members; later ones join one by one.
    let o = owned_objects(&cluster, initial_replicas);
    let docs = [
        serde_yaml_ng::to_string(&o.headless_service),
        serde_yaml_ng::to_string(&o.client_service),
        serde_yaml_ng::to_string(&o.leader_service),
        serde_yaml_ng::to_string(&o.pod_disruption_budget),
        serde_yaml_ng::to_string(&o.network_policy),
        serde_yaml_ng::to_string(&o.statefulset),
    ];
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&doc.map_err(RenderError::Write)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: raftkv.dev/v1alpha1
kind: KvCluster
metadata:
  name: demo
spec:
  replicas: 5
  image: raftkv/kvnode:0.1.0
  storage:
    size: 1Gi
";

    #[test]
    fn renders_every_owned_object_in_apply_order() {
        let out = render(MANIFEST, "team-a").expect("renders");
        let docs: Vec<serde_yaml_ng::Value> = out
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml_ng::from_str(d).expect("each document is YAML"))
            .collect();
        let kinds: Vec<_> = docs
            .iter()
            .map(|d| {
                format!(
                    "{} {} {}",
                    d["apiVersion"].as_str().unwrap_or_default(),
                    d["kind"].as_str().unwrap_or_default(),
                    d["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "v1 Service demo-peers",
                "v1 Service demo",
                "v1 Service demo-leader",
                "policy/v1 PodDisruptionBudget demo",
                "networking.k8s.io/v1 NetworkPolicy demo-peers",
                "apps/v1 StatefulSet demo",
            ]
        );
        for d in &docs {
            assert_eq!(d["metadata"]["namespace"].as_str(), Some("team-a"));
        }
        let sts = &docs[5];
        assert_eq!(sts["spec"]["replicas"].as_i64(), Some(5));
        let args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_sequence()
            .expect("args");
        assert!(args.contains(&"--initial-cluster-size=5".into()));
        assert!(args.contains(&format!("--initial-cluster-token={PLACEHOLDER_UID}").into()));
    }

    #[test]
    fn rejects_other_kinds() {
        let other = MANIFEST.replace("kind: KvCluster", "kind: ConfigMap");
        assert!(matches!(
            render(&other, "default"),
            Err(RenderError::WrongKind(..))
        ));
        assert!(matches!(
            render("a: [", "default"),
            Err(RenderError::Parse(_))
        ));
    }
}
