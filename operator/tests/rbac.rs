//! The chart's RBAC grants exactly the permissions the operator declares it uses
//! (tests/support/rbac.rs), no fewer and no more: least privilege, checked both ways. The
//! controller tests check that every request they see is declared.

#[path = "support/rbac.rs"]
mod rbac;

use std::collections::BTreeSet;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

type Grants = BTreeSet<(String, String, String)>;

fn grants(rules: &[Rule]) -> Grants {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in &r.api_groups {
            for res in &r.resources {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

fn declared(list: &[(&str, &str, &[&str])]) -> Grants {
    list.iter()
        .flat_map(|(g, r, vs)| {
            vs.iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

/// The `rules:` lists of the chart's rbac.yaml, in order (template lines dropped: the rules
/// themselves are plain YAML).
fn chart_rules() -> Vec<Vec<Rule>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/raftkv/templates/rbac.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the chart's rbac.yaml");
    text.split("\n---")
        .filter_map(|doc| doc.split_once("\nrules:\n").map(|(_, rules)| rules))
        .map(|rules| {
            let plain: String = rules
                .lines()
                .filter(|l| !l.contains("{{"))
                .map(|l| format!("{l}\n"))
                .collect();
            serde_yaml_ng::from_str(&plain).expect("rules are YAML")
        })
        .collect()
}

#[test]
fn chart_grants_exactly_what_the_operator_uses() {
    let rules = chart_rules();
    assert_eq!(
        rules.len(),
        2,
        "the managed-namespace role and the leader-election role"
    );
    assert_eq!(grants(&rules[0]), declared(rbac::MANAGED));
    assert_eq!(grants(&rules[1]), declared(rbac::LEADER_ELECTION));
}

#[test]
fn request_mapping() {
    use rbac::needed;
    let n = |m, u| needed(m, u);
    assert_eq!(
        n("GET", "/apis/apps/v1/namespaces/ns/statefulsets/demo"),
        ("apps".into(), "statefulsets".into(), vec!["get"])
    );
    assert_eq!(
        n("GET", "/api/v1/namespaces/ns/pods?&labelSelector=x"),
        ("".into(), "pods".into(), vec!["list"])
    );
    assert_eq!(
        n(
            "PATCH",
            "/apis/raftkv.dev/v1alpha1/namespaces/ns/kvclusters/demo/status?&force=true&fieldManager=m"
        ),
        (
            "raftkv.dev".into(),
            "kvclusters/status".into(),
            vec!["patch"]
        )
    );
    assert_eq!(
        n("DELETE", "/api/v1/namespaces/ns/pods/demo-2?"),
        ("".into(), "pods".into(), vec!["delete"])
    );
    assert!(!rbac::allowed(
        rbac::MANAGED,
        "DELETE",
        "/api/v1/namespaces/ns/services/demo?"
    ));
    assert!(rbac::allowed(
        rbac::MANAGED,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/ns/events?"
    ));
}
