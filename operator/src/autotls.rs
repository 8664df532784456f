//! `spec.tls.*.auto`: the two Secrets the operator keeps for a cluster, computed from what is
//! stored and the time, with no client (the controller reads and applies them).
//!
//! - `<name>-tls-ca` ([`podtls::ca_secret_name`]), read by the operator only: `ca.crt` / `ca.key`
//!   (the current CA), `previous-ca.crt` / `previous-ca.key` (the one before, during an overlap),
//!   and, with client TLS `auto`, `operator.crt` / `operator.key` (the operator's own client
//!   certificate).
//! - `<name>-tls` ([`podtls::certs_secret_name`]), mounted by every pod: `<pod>.crt` /
//!   `<pod>.key` for every ordinal below the StatefulSet's size (the larger of the current and
//!   the next, so that a pod being added finds its pair before it starts), and `ca.crt`, the trust
//!   bundle.
//!
//! Every pass checks every stored certificate as its peers would ([`certs::verify_leaf`]) and
//! makes again only what is missing, unusable or due ([`certs`] has the rules and the CA
//! overlap). A Secret is returned for applying only when its data changes, so a steady cluster
//! costs two reads per pass and no write. Both Secrets are owned by the KvCluster and go with it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::certs::{self, CaDecision, CertError, KeyedCert, LeafDecision, Signer, Usage};
use crate::crd::CertSource;
use crate::podtls::{self, CA_KEY};
use crate::resources::Cluster;

const CA_CERT: &str = "ca.crt";
const CA_PRIVATE: &str = "ca.key";
const PREVIOUS_CERT: &str = "previous-ca.crt";
const PREVIOUS_PRIVATE: &str = "previous-ca.key";
const OPERATOR_CERT: &str = "operator.crt";
const OPERATOR_PRIVATE: &str = "operator.key";
/// The common name of the operator's client certificate.
pub const OPERATOR_NAME: &str = "raftkv-operator";

/// What one pass decided.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoTlsPlan {
    /// The CA Secret, when its data changed.
    pub ca_secret: Option<Secret>,
    /// The pods' Secret, when its data changed.
    pub certs_secret: Option<Secret>,
    /// What was made, one phrase each (for the Event), e.g. `CA (new)`, `demo-3 (new)`.
    pub issued: Vec<String>,
    /// The trust bundle: the current CA, then the previous one while it is valid.
    pub bundle: String,
    /// The operator's client certificate (client TLS `auto` only).
    pub operator: Option<KeyedCert>,
}

fn text(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn pair(secret: Option<&Secret>, cert: &str, key: &str) -> Option<KeyedCert> {
    Some(KeyedCert {
        cert_pem: text(secret, cert)?,
        key_pem: text(secret, key)?,
    })
}

/// Keeps `stored` if it verifies against `trust` and is not due, else issues a new one signed
/// by `signing`, noting why under `label`.
#[allow(clippy::too_many_arguments)]
fn keep_or_issue(
    stored: Option<KeyedCert>,
    trust: &[&str],
    signing: &KeyedCert,
    label: &str,
    names: &[String],
    usage: Usage,
    now: i64,
    issued: &mut Vec<String>,
) -> Result<KeyedCert, CertError> {
    let checked = stored
        .as_ref()
        .map(|leaf| certs::verify_leaf(leaf, trust, names, usage, now));
    let validity = stored
        .as_ref()
        .and_then(|leaf| certs::validity(&leaf.cert_pem).ok());
    match (certs::leaf_decision(checked, validity, now), stored) {
        (LeafDecision::Keep, Some(leaf)) => Ok(leaf),
        (decision, _) => {
            let reason = match decision {
                LeafDecision::Issue(reason) => reason,
                LeafDecision::Keep => "new".into(),
            };
            issued.push(format!("{label} ({reason})"));
            let common_name = names.first().map_or(label, String::as_str);
            certs::issue(signing, common_name, names, usage, now)
        }
    }
}

/// The pass for cluster `c` whose StatefulSet has (or is about to have) `pods` pods, given the
/// stored Secrets, at `now` (Unix seconds).
pub fn plan(
    c: &Cluster,
    pods: u32,
    stored_ca: Option<&Secret>,
    stored_certs: Option<&Secret>,
    now: i64,
) -> Result<AutoTlsPlan, CertError> {
    let mut issued = vec![];
    let label = format!("{}/{}", c.namespace, c.name);

    // The CA: keep, rotate (the old one becomes the previous) or start over.
    let stored_current = pair(stored_ca, CA_CERT, CA_PRIVATE);
    let current_validity = stored_current
        .as_ref()
        .and_then(|ca| certs::validity(&ca.cert_pem).ok());
    let mut previous = pair(stored_ca, PREVIOUS_CERT, PREVIOUS_PRIVATE);
    let current = match (certs::ca_decision(current_validity, now), stored_current) {
        (CaDecision::Keep, Some(ca)) => ca,
        (CaDecision::Rotate, Some(old)) => {
            issued.push("CA (less than a third of its lifetime left)".into());
            previous = Some(old);
            certs::new_ca(&label, now)?
        }
        (_, _) => {
            issued.push("CA (new)".into());
            previous = None;
            certs::new_ca(&label, now)?
        }
    };
    let current_validity = certs::validity(&current.cert_pem)?;
    let previous_validity = previous
        .as_ref()
        .and_then(|p| certs::validity(&p.cert_pem).ok());
    if !certs::keep_previous(previous_validity, now) {
        previous = None;
    }
    let previous_validity = previous.as_ref().and(previous_validity);
    let signing = match (
        certs::signer(current_validity, previous_validity, now),
        &previous,
    ) {
        (Signer::Previous, Some(p)) => p,
        _ => &current,
    };
    let mut trust = vec![current.cert_pem.as_str()];
    if let Some(p) = &previous {
        trust.push(p.cert_pem.as_str());
    }
    let bundle: String = trust.concat();

    // The operator's client certificate, with client TLS `auto`.
    let client_auto = c
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.client.as_ref())
        .is_some_and(|cl| cl.source() == Ok(CertSource::Auto));
    let operator = if client_auto {
        Some(keep_or_issue(
            pair(stored_ca, OPERATOR_CERT, OPERATOR_PRIVATE),
            &trust,
            signing,
            OPERATOR_NAME,
            &[],
            Usage::Client,
            now,
            &mut issued,
        )?)
    } else {
        None
    };

    // One pair per pod.
    let mut certs_data = BTreeMap::from([(CA_KEY.to_string(), bundle.clone())]);
    for ordinal in 0..pods {
        let pod = c.pod_name(ordinal);
        let names = podtls::member_names(&c.name, &c.namespace, &pod);
        let leaf = keep_or_issue(
            pair(stored_certs, &format!("{pod}.crt"), &format!("{pod}.key")),
            &trust,
            signing,
            &pod,
            &names,
            Usage::Member,
            now,
            &mut issued,
        )?;
        certs_data.insert(format!("{pod}.crt"), leaf.cert_pem);
        certs_data.insert(format!("{pod}.key"), leaf.key_pem);
    }

    let mut ca_data = BTreeMap::from([
        (CA_CERT.to_string(), current.cert_pem.clone()),
        (CA_PRIVATE.to_string(), current.key_pem.clone()),
    ]);
    if let Some(p) = &previous {
        ca_data.insert(PREVIOUS_CERT.into(), p.cert_pem.clone());
        ca_data.insert(PREVIOUS_PRIVATE.into(), p.key_pem.clone());
    }
    if let Some(op) = &operator {
        ca_data.insert(OPERATOR_CERT.into(), op.cert_pem.clone());
        ca_data.insert(OPERATOR_PRIVATE.into(), op.key_pem.clone());
    }
    Ok(AutoTlsPlan {
        ca_secret: changed(c, podtls::ca_secret_name(&c.name), stored_ca, ca_data),
        certs_secret: changed(
            c,
            podtls::certs_secret_name(&c.name),
            stored_certs,
            certs_data,
        ),
        issued,
        bundle,
        operator,
    })
}

/// The trust bundle and operator certificate as stored, without deciding anything: what the
/// operator dials the nodes with before this pass's plan (`None` without a stored CA).
pub fn stored_client_material(stored_ca: Option<&Secret>) -> Option<(String, Option<KeyedCert>)> {
    let mut bundle = text(stored_ca, CA_CERT)?;
    if let Some(previous) = text(stored_ca, PREVIOUS_CERT) {
        bundle.push_str(&previous);
    }
    Some((bundle, pair(stored_ca, OPERATOR_CERT, OPERATOR_PRIVATE)))
}

/// The Secret `name` with `data`, if that differs from what `stored` holds.
fn changed(
    c: &Cluster,
    name: String,
    stored: Option<&Secret>,
    data: BTreeMap<String, String>,
) -> Option<Secret> {
    let data: BTreeMap<String, ByteString> = data
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    if stored.and_then(|s| s.data.as_ref()) == Some(&data) {
        return None;
    }
    Some(Secret {
        metadata: c.metadata(name),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CA_LIFETIME, LEAF_LIFETIME, PROPAGATION, Validity};
    use crate::crd::{AutoTls, ClientTls, KvClusterSpec, PeerTls, TlsSpec};

    const NOW: i64 = 1_800_000_000;

    fn cluster(client_auto: bool) -> Cluster {
        let mut spec: KvClusterSpec = serde_json::from_value(serde_json::json!({
            "image": "raftkv/kvnode:0.1.0", "storage": {"size": "1Gi"}
        }))
        .expect("spec");
        spec.tls = Some(TlsSpec {
            peer: Some(PeerTls {
                secret_name: None,
                auto: Some(AutoTls {}),
            }),
            client: client_auto.then_some(ClientTls {
                secret_name: None,
                auto: Some(AutoTls {}),
                require_client_certificate: true,
            }),
        });
        Cluster {
            name: "demo".into(),
            namespace: "ns".into(),
            uid: "uid-1".into(),
            spec,
            initial_replicas: 3,
        }
    }

    fn keys(s: &Secret) -> Vec<String> {
        s.data
            .as_ref()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn get(s: &Secret, key: &str) -> String {
        text(Some(s), key).unwrap_or_else(|| panic!("{key} in the Secret"))
    }

    #[test]
    fn first_pass_makes_a_ca_and_one_verified_pair_per_pod() {
        let p = plan(&cluster(false), 3, None, None, NOW).expect("plan");
        let ca = p.ca_secret.expect("the CA Secret is written");
        let certs = p.certs_secret.expect("the pods' Secret is written");
        assert_eq!(keys(&ca), ["ca.crt", "ca.key"]);
        assert_eq!(
            keys(&certs),
            [
                "ca.crt",
                "demo-0.crt",
                "demo-0.key",
                "demo-1.crt",
                "demo-1.key",
                "demo-2.crt",
                "demo-2.key"
            ]
        );
        assert_eq!(
            p.issued,
            ["CA (new)", "demo-0 (new)", "demo-1 (new)", "demo-2 (new)"]
        );
        assert_eq!(get(&certs, "ca.crt"), get(&ca, "ca.crt"));
        assert_eq!(p.bundle, get(&ca, "ca.crt"));
        assert!(p.operator.is_none());
        let owner = &certs.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("KvCluster", "uid-1")
        );
        for ordinal in 0..3 {
            let pod = format!("demo-{ordinal}");
            let leaf = KeyedCert {
                cert_pem: get(&certs, &format!("{pod}.crt")),
                key_pem: get(&certs, &format!("{pod}.key")),
            };
            let names = podtls::member_names("demo", "ns", &pod);
            assert_eq!(
                certs::verify_leaf(&leaf, &[&p.bundle], &names, Usage::Member, NOW),
                Ok(())
            );
        }
    }

    #[test]
    fn a_steady_cluster_writes_nothing_and_scaling_up_adds_only_the_new_pod() {
        let first = plan(&cluster(true), 3, None, None, NOW).expect("plan");
        let (ca, certs) = (
            first.ca_secret.expect("ca"),
            first.certs_secret.expect("certs"),
        );
        assert!(keys(&ca).contains(&"operator.crt".to_string()));
        let op = first.operator.expect("the operator's certificate");
        assert_eq!(
            certs::verify_leaf(&op, &[&first.bundle], &[], Usage::Client, NOW),
            Ok(())
        );

        let again = plan(&cluster(true), 3, Some(&ca), Some(&certs), NOW + 60).expect("plan");
        assert_eq!(again.ca_secret, None);
        assert_eq!(again.certs_secret, None);
        assert!(again.issued.is_empty());
        assert_eq!(again.operator, Some(op));

        let grown = plan(&cluster(true), 4, Some(&ca), Some(&certs), NOW + 60).expect("plan");
        assert_eq!(grown.ca_secret, None);
        assert_eq!(grown.issued, ["demo-3 (new)"]);
        let new_certs = grown.certs_secret.expect("written");
        for kept in ["demo-0.crt", "demo-0.key", "demo-2.key"] {
            assert_eq!(get(&new_certs, kept), get(&certs, kept), "{kept} is kept");
        }

        // Shrinking drops the removed pod's pair.
        let shrunk = plan(&cluster(true), 2, Some(&ca), Some(&certs), NOW + 60).expect("plan");
        let shrunk = shrunk.certs_secret.expect("written");
        assert!(!keys(&shrunk).contains(&"demo-2.key".to_string()));
    }

    #[test]
    fn leaves_renew_after_two_thirds_of_their_life() {
        let first = plan(&cluster(false), 1, None, None, NOW).expect("plan");
        let (ca, certs) = (
            first.ca_secret.expect("ca"),
            first.certs_secret.expect("certs"),
        );
        let due = NOW + LEAF_LIFETIME * 2 / 3 + 1;
        let renewed = plan(&cluster(false), 1, Some(&ca), Some(&certs), due).expect("plan");
        assert_eq!(renewed.ca_secret, None);
        assert_eq!(
            renewed.issued,
            ["demo-0 (less than a third of its lifetime left)"]
        );
        let leaf = get(&renewed.certs_secret.expect("written"), "demo-0.crt");
        assert_eq!(
            certs::validity(&leaf).expect("validity").not_after,
            due + LEAF_LIFETIME
        );
    }

    #[test]
    fn ca_rotation_overlaps_trust_then_moves_signing() {
        let first = plan(&cluster(false), 1, None, None, NOW).expect("plan");
        let (ca, certs) = (
            first.ca_secret.expect("ca"),
            first.certs_secret.expect("certs"),
        );
        let old_ca = get(&ca, "ca.crt");

        // Two thirds into the CA's life: a new CA joins the bundle; the old stays as previous.
        let t = NOW + CA_LIFETIME * 2 / 3 + 1;
        let rotated = plan(&cluster(false), 1, Some(&ca), Some(&certs), t).expect("plan");
        let ca2 = rotated.ca_secret.expect("rotated");
        assert_eq!(get(&ca2, "previous-ca.crt"), old_ca);
        assert_ne!(get(&ca2, "ca.crt"), old_ca);
        let certs2 = rotated.certs_secret.expect("the bundle changed");
        assert_eq!(
            get(&certs2, "ca.crt"),
            format!("{}{old_ca}", get(&ca2, "ca.crt"))
        );
        // The pod's leaf (due as well) is renewed, but by the old CA: peers may not trust the
        // new one yet.
        let leaf = KeyedCert {
            cert_pem: get(&certs2, "demo-0.crt"),
            key_pem: get(&certs2, "demo-0.key"),
        };
        let names = podtls::member_names("demo", "ns", "demo-0");
        assert_eq!(
            certs::verify_leaf(&leaf, &[&old_ca], &names, Usage::Member, t),
            Ok(())
        );

        // Once the new CA has propagated, it signs; a leaf that fails verification (here:
        // removed) is made by it.
        let later = t + PROPAGATION;
        let mut without_leaf = certs2.clone();
        if let Some(d) = without_leaf.data.as_mut() {
            d.remove("demo-0.crt");
        }
        let moved = plan(&cluster(false), 1, Some(&ca2), Some(&without_leaf), later).expect("plan");
        let leaf = KeyedCert {
            cert_pem: get(moved.certs_secret.as_ref().expect("written"), "demo-0.crt"),
            key_pem: get(moved.certs_secret.as_ref().expect("written"), "demo-0.key"),
        };
        assert_eq!(
            certs::verify_leaf(&leaf, &[&get(&ca2, "ca.crt")], &names, Usage::Member, later),
            Ok(())
        );

        // When the previous CA expires it leaves the bundle.
        let old_end = certs::validity(&old_ca).expect("validity").not_after;
        let gone = plan(&cluster(false), 1, Some(&ca2), Some(&certs2), old_end).expect("plan");
        let ca3 = gone.ca_secret.expect("previous dropped");
        assert_eq!(keys(&ca3), ["ca.crt", "ca.key"]);
        assert_eq!(gone.bundle, get(&ca2, "ca.crt"));
    }

    #[test]
    fn an_expired_or_unreadable_ca_starts_over() {
        let first = plan(&cluster(false), 1, None, None, NOW).expect("plan");
        let ca = first.ca_secret.expect("ca");
        let end = certs::validity(&get(&ca, "ca.crt"))
            .map(|v: Validity| v.not_after)
            .expect("validity");
        let again = plan(&cluster(false), 1, Some(&ca), None, end).expect("plan");
        assert_eq!(again.issued[0], "CA (new)");
        assert!(!keys(&again.ca_secret.expect("new")).contains(&"previous-ca.crt".to_string()));

        let mut broken = ca.clone();
        if let Some(d) = broken.data.as_mut() {
            d.insert("ca.crt".into(), ByteString(b"garbage".to_vec()));
        }
        let again = plan(&cluster(false), 1, Some(&broken), None, NOW).expect("plan");
        assert_eq!(again.issued[0], "CA (new)");
    }
}
