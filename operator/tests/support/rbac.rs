//! The operator's API permissions, declared once for two checks: every request the controller
//! tests see is covered (tests/controller.rs), and the chart's RBAC grants exactly these, no
//! more (tests/rbac.rs).

// Each test binary uses a different part of this module.
#![allow(dead_code)]

/// (API group, resource, verbs) the operator needs in the namespaces it manages. Watches come
/// from the controller (`run.rs`), the rest from the reconcile (`controller.rs`).
pub const MANAGED: &[(&str, &str, &[&str])] = &[
    ("raftkv.dev", "kvclusters", &["list", "watch"]),
    ("raftkv.dev", "kvclusters/status", &["patch"]),
    // Owner references with blockOwnerDeletion need update on the owner's finalizers.
    ("raftkv.dev", "kvclusters/finalizers", &["update"]),
    (
        "apps",
        "statefulsets",
        &["get", "list", "watch", "create", "patch"],
    ),
    ("", "services", &["create", "patch"]),
    ("", "pods", &["list", "watch", "patch", "delete"]),
    // TLS (spec.tls): get the Secrets the spec names or `auto` keeps, apply the `auto` ones,
    // list and watch the operator's own (run.rs owns them).
    ("", "secrets", &["get", "list", "watch", "create", "patch"]),
    // Volume expansion: the members' claims are listed and their storage request applied.
    ("", "persistentvolumeclaims", &["list", "patch"]),
    ("policy", "poddisruptionbudgets", &["create", "patch"]),
    ("networking.k8s.io", "networkpolicies", &["create", "patch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// What kube-lease-manager does with the leader-election Lease, in the operator's namespace.
pub const LEADER_ELECTION: &[(&str, &str, &[&str])] =
    &[("coordination.k8s.io", "leases", &["get", "create", "patch"])];

/// The (group, resource, verbs) one request needs. A server-side apply (a PATCH with a field
/// manager) may create the object, so it needs create as well as patch (not on a subresource,
/// which it cannot create).
pub fn needed(method: &str, uri: &str) -> (String, String, Vec<&'static str>) {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/namespaces/NS/RES[/NAME[/SUB]] or /apis/GROUP/VERSION/namespaces/NS/RES[/NAME[/SUB]]
    let (group, rest) = match parts.first() {
        Some(&"api") => ("", &parts[2..]),
        _ => (parts[1], &parts[3..]),
    };
    let rest = if rest.first() == Some(&"namespaces") {
        &rest[2..]
    } else {
        rest
    };
    let mut resource = rest[0].to_string();
    if let Some(sub) = rest.get(2) {
        resource = format!("{resource}/{sub}");
    }
    let named = rest.len() > 1;
    let verbs = match (method, named) {
        ("GET", true) => vec!["get"],
        ("GET", false) if query.contains("watch=true") => vec!["watch"],
        ("GET", false) => vec!["list"],
        ("POST", _) => vec!["create"],
        // The operator applies only claims it has just listed (volume expansion): the API server
        // asks for create only when an apply would create the object, and a claim that vanished
        // in between must not be recreated by the operator (the StatefulSet owns claims).
        ("PATCH", _) if query.contains("fieldManager=") && resource == "persistentvolumeclaims" => {
            vec!["patch"]
        }
        ("PATCH", _) if query.contains("fieldManager=") && !resource.contains('/') => {
            vec!["patch", "create"]
        }
        ("PATCH", _) => vec!["patch"],
        ("PUT", _) => vec!["update"],
        ("DELETE", _) => vec!["delete"],
        _ => vec!["?"],
    };
    (group.to_string(), resource, verbs)
}

/// Whether `declared` grants the request.
pub fn allowed(declared: &[(&str, &str, &[&str])], method: &str, uri: &str) -> bool {
    let (group, resource, verbs) = needed(method, uri);
    verbs.iter().all(|verb| {
        declared
            .iter()
            .any(|(g, r, vs)| *g == group && *r == resource && vs.contains(verb))
    })
}
