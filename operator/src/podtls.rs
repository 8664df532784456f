//! How a pod gets its TLS material: the Secrets it mounts, where, and the kvnode flags that
//! point at them (`spec.tls`, docs/operator-tls.md).
//!
//! A leaf module (it knows the CRD, nothing else), so that both the StatefulSet builder
//! ([`crate::resources`]) and the certificate keeper ([`crate::autotls`]) take their names from
//! one place.
//!
//! All pods of a StatefulSet share one template, yet each member needs its own certificate: in
//! `auto` mode one Secret holds every pod's pair as `<pod>.crt` / `<pod>.key` plus the trust
//! bundle `ca.crt`, it is mounted whole, and the flags name the pod's own files through
//! Kubernetes' `$(POD_NAME)` expansion of a downward-API variable. kvnode re-reads the files
//! when the kubelet refreshes the mounted Secret, so renewals need no restart.

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, ObjectFieldSelector, SecretVolumeSource, Volume, VolumeMount,
};

use crate::crd::{CertSource, TlsSpec};

/// Where the `auto` Secret (every pod's pair and the trust bundle) is mounted.
pub const AUTO_DIR: &str = "/etc/raftkv/tls";
/// Where `spec.tls.peer.secretName` is mounted.
pub const PEER_DIR: &str = "/etc/raftkv/peer";
/// Where `spec.tls.client.secretName` is mounted.
pub const CLIENT_DIR: &str = "/etc/raftkv/client";
/// The environment variable holding the pod's name (downward API), for `$(POD_NAME)` in args.
pub const POD_NAME_ENV: &str = "POD_NAME";
/// The plain gRPC health port kvnode serves (`--listen-health`) when its client port has TLS:
/// the kubelet's gRPC probe cannot speak TLS, so readiness is probed here.
pub const HEALTH_PORT: i32 = 7201;
/// The trust bundle's key in every TLS Secret (the cert-manager layout's name).
pub const CA_KEY: &str = "ca.crt";

/// The Secret holding the cluster's CA (current and previous) and the operator's own client
/// certificate: read by the operator only, never mounted.
pub fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-tls-ca")
}

/// The Secret every pod mounts in `auto` mode: `<pod>.crt`, `<pod>.key`, `ca.crt`.
pub fn certs_secret_name(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// The Secret (cert-manager layout) the operator authenticates with when the client port uses
/// `secretName` and requires client certificates.
pub fn operator_client_secret_name(cluster: &str) -> String {
    format!("{cluster}-operator-client-tls")
}

/// The DNS names a member's certificate carries: its stable names under the headless Service,
/// the first being the one it advertises (what its peers check), and the client Services' names,
/// so that the same certificate serves the client port whichever way it is reached.
pub fn member_names(cluster: &str, namespace: &str, pod: &str) -> Vec<String> {
    let headless = format!("{cluster}-peers");
    let mut names = vec![
        format!("{pod}.{headless}.{namespace}.svc.cluster.local"),
        format!("{pod}.{headless}.{namespace}.svc"),
        format!("{pod}.{headless}"),
    ];
    for service in [cluster.to_string(), format!("{cluster}-leader")] {
        names.extend([
            format!("{service}.{namespace}.svc.cluster.local"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}"),
            service,
        ]);
    }
    names
}

/// Whether either port's certificates are made by the operator. A port whose setting is
/// invalid counts as neither (callers refuse such a spec first: [`validate`]).
pub fn uses_auto(tls: Option<&TlsSpec>) -> bool {
    let Some(tls) = tls else { return false };
    let peer = tls.peer.as_ref().and_then(|p| p.source().ok());
    let client = tls.client.as_ref().and_then(|c| c.source().ok());
    peer == Some(CertSource::Auto) || client == Some(CertSource::Auto)
}

/// Refuses a TLS setting with neither or both of `secretName` and `auto` (the CRD's rule, for
/// an API server that did not enforce it).
pub fn validate(tls: Option<&TlsSpec>) -> Result<(), crate::crd::TlsSpecError> {
    if let Some(tls) = tls {
        if let Some(p) = &tls.peer {
            p.source()?;
        }
        if let Some(c) = &tls.client {
            c.source()?;
        }
    }
    Ok(())
}

/// What the pod template gains for TLS.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodTls {
    /// kvnode flags.
    pub args: Vec<String>,
    /// Secret volumes.
    pub volumes: Vec<Volume>,
    /// Their mounts in the kvnode container.
    pub mounts: Vec<VolumeMount>,
    /// The `POD_NAME` variable, when a flag names a per-pod file.
    pub env: Vec<EnvVar>,
    /// Whether the client port speaks TLS; then kvnode also serves plain gRPC health on
    /// [`HEALTH_PORT`] for the kubelet's probe.
    pub client_tls: bool,
}

fn secret_volume(name: &str, secret: String, dir: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: name.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                // Readable by the pod's group (fsGroup), nobody else.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: name.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )
}

/// The flags, volumes and variables for `tls` of KvCluster `cluster`. Ports with an invalid
/// setting are left plain (refused earlier by [`validate`]).
pub fn pod_tls(cluster: &str, tls: Option<&TlsSpec>) -> PodTls {
    let mut out = PodTls::default();
    let Some(tls) = tls else { return out };
    let peer = tls.peer.as_ref().and_then(|p| p.source().ok());
    let client = tls
        .client
        .as_ref()
        .and_then(|c| Some((c.source().ok()?, c.require_client_certificate)));
    let mut per_pod = false;
    // Mounts the files of one port and says where its certificate, key and CA are: the pod's own
    // pair from the operator's Secret (`auto`), or the cert-manager layout of a named Secret.
    let mut files = |out: &mut PodTls, source: CertSource<'_>, volume: &str, dir: &'static str| {
        let (volume, secret, dir) = match source {
            CertSource::Auto => {
                per_pod = true;
                ("tls", certs_secret_name(cluster), AUTO_DIR)
            }
            CertSource::Secret(secret) => (volume, secret.to_string(), dir),
        };
        if !out.volumes.iter().any(|v| v.name == volume) {
            let (v, m) = secret_volume(volume, secret, dir);
            out.volumes.push(v);
            out.mounts.push(m);
        }
        let (cert, key) = match source {
            CertSource::Auto => (
                format!("{dir}/$({POD_NAME_ENV}).crt"),
                format!("{dir}/$({POD_NAME_ENV}).key"),
            ),
            CertSource::Secret(_) => (format!("{dir}/tls.crt"), format!("{dir}/tls.key")),
        };
        (cert, key, format!("{dir}/{CA_KEY}"))
    };
    if let Some(source) = peer {
        let (cert, key, ca) = files(&mut out, source, "peer-tls", PEER_DIR);
        out.args.extend([
            format!("--peer-cert={cert}"),
            format!("--peer-key={key}"),
            format!("--peer-ca={ca}"),
        ]);
    }
    if let Some((source, required)) = client {
        let (cert, key, ca) = files(&mut out, source, "client-tls", CLIENT_DIR);
        out.args.extend([
            format!("--client-cert={cert}"),
            format!("--client-key={key}"),
        ]);
        if required {
            out.args.push(format!("--client-ca={ca}"));
        }
        out.args
            .push(format!("--listen-health=0.0.0.0:{HEALTH_PORT}"));
        out.client_tls = true;
    }
    if per_pod {
        out.env.push(EnvVar {
            name: POD_NAME_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            value: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AutoTls, ClientTls, PeerTls};

    fn auto_peer() -> PeerTls {
        PeerTls {
            secret_name: None,
            auto: Some(AutoTls {}),
        }
    }

    #[test]
    fn no_tls_adds_nothing() {
        assert_eq!(pod_tls("demo", None), PodTls::default());
        assert_eq!(
            pod_tls("demo", Some(&TlsSpec::default())),
            PodTls::default()
        );
        assert!(!uses_auto(None));
    }

    #[test]
    fn auto_peer_names_the_pods_own_files_through_pod_name() {
        let tls = TlsSpec {
            peer: Some(auto_peer()),
            client: None,
        };
        let p = pod_tls("demo", Some(&tls));
        assert_eq!(
            p.args,
            [
                "--peer-cert=/etc/raftkv/tls/$(POD_NAME).crt",
                "--peer-key=/etc/raftkv/tls/$(POD_NAME).key",
                "--peer-ca=/etc/raftkv/tls/ca.crt",
            ]
        );
        assert_eq!(p.volumes.len(), 1);
        assert_eq!(
            p.volumes[0]
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("demo-tls")
        );
        assert_eq!(p.mounts[0].mount_path, "/etc/raftkv/tls");
        assert_eq!(p.mounts[0].read_only, Some(true));
        assert_eq!(p.env[0].name, "POD_NAME");
        assert!(!p.client_tls);
        assert!(uses_auto(Some(&tls)));
    }

    #[test]
    fn both_ports_auto_share_one_volume_and_secrets_use_the_cert_manager_layout() {
        let tls = TlsSpec {
            peer: Some(auto_peer()),
            client: Some(ClientTls {
                secret_name: None,
                auto: Some(AutoTls {}),
                require_client_certificate: true,
            }),
        };
        let p = pod_tls("demo", Some(&tls));
        assert_eq!(p.volumes.len(), 1);
        assert_eq!(p.env.len(), 1);
        assert!(p.client_tls);
        assert!(
            p.args
                .contains(&"--client-ca=/etc/raftkv/tls/ca.crt".to_string())
        );

        let tls = TlsSpec {
            peer: Some(PeerTls {
                secret_name: Some("peer-certs".into()),
                auto: None,
            }),
            client: Some(ClientTls {
                secret_name: Some("client-certs".into()),
                auto: None,
                require_client_certificate: false,
            }),
        };
        let p = pod_tls("demo", Some(&tls));
        assert_eq!(
            p.args,
            [
                "--peer-cert=/etc/raftkv/peer/tls.crt",
                "--peer-key=/etc/raftkv/peer/tls.key",
                "--peer-ca=/etc/raftkv/peer/ca.crt",
                "--client-cert=/etc/raftkv/client/tls.crt",
                "--client-key=/etc/raftkv/client/tls.key",
                "--listen-health=0.0.0.0:7201",
            ]
        );
        assert!(p.env.is_empty(), "no per-pod file, no POD_NAME");
        assert!(!uses_auto(Some(&tls)));
    }

    #[test]
    fn neither_or_both_sources_is_refused() {
        for peer in [
            PeerTls::default(),
            PeerTls {
                secret_name: Some("x".into()),
                auto: Some(AutoTls {}),
            },
        ] {
            let tls = TlsSpec {
                peer: Some(peer),
                client: None,
            };
            assert_eq!(
                validate(Some(&tls)).map_err(|e| e.to_string()),
                Err("spec.tls.peer: set exactly one of secretName and auto".to_string())
            );
            assert_eq!(pod_tls("demo", Some(&tls)), PodTls::default());
        }
    }

    #[test]
    fn member_names_start_with_the_advertised_host() {
        let names = member_names("demo", "ns", "demo-2");
        assert_eq!(names[0], "demo-2.demo-peers.ns.svc.cluster.local");
        assert_eq!(names[1], "demo-2.demo-peers.ns.svc");
        assert_eq!(names[2], "demo-2.demo-peers");
        assert!(names.contains(&"demo.ns.svc".to_string()));
        assert!(names.contains(&"demo-leader.ns.svc.cluster.local".to_string()));
    }
}
