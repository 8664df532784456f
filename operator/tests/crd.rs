//! The committed CRD is `crdgen`'s output, and it is a structural schema the API server accepts
//! (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema),
//! with a description on every field, so that `kubectl explain kvc.spec` explains everything, and
//! whose CEL rules do what their messages say (evaluated offline by kube-cel).

use std::path::PathBuf;

use serde_json::Value;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/raftkv/crds/kvclusters.raftkv.dev.yaml")
}

fn generated() -> String {
    raftkv_operator::crd::crd_yaml().expect("the CRD serializes")
}

fn schema() -> Value {
    let crd: Value = serde_yaml_ng::from_str(&generated()).expect("the CRD is YAML");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn committed_crd_is_fresh() {
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == generated(),
        "charts/raftkv/crds/kvclusters.raftkv.dev.yaml is stale: run `make crd` and commit it"
    );
}

/// Walks a schema node and records every violation of the structural rules.
fn check_structural(node: &Value, path: &str, inside_combinator: bool, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        errors.push(format!("{path}: not an object"));
        return;
    };
    if obj.contains_key("$ref") {
        errors.push(format!("{path}: $ref"));
    }
    if inside_combinator {
        // Only value validations inside anyOf/oneOf/allOf/not.
        const FORBIDDEN: [&str; 7] = [
            "type",
            "description",
            "default",
            "nullable",
            "additionalProperties",
            "x-kubernetes-int-or-string",
            "x-kubernetes-preserve-unknown-fields",
        ];
        for k in FORBIDDEN {
            if obj.contains_key(k) {
                errors.push(format!("{path}: `{k}` inside a combinator"));
            }
        }
    } else {
        let typed = obj.contains_key("type")
            || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if !typed {
            errors.push(format!("{path}: no type"));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), inside_combinator, errors);
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(v) = obj.get(k).filter(|v| v.is_object()) {
            check_structural(v, &format!("{path}.{k}"), inside_combinator, errors);
        }
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = obj.get(k).and_then(Value::as_array) {
            for (i, v) in list.iter().enumerate() {
                check_structural(v, &format!("{path}.{k}[{i}]"), true, errors);
            }
        }
    }
    if let Some(v) = obj.get("not") {
        check_structural(v, &format!("{path}.not"), true, errors);
    }
}

#[test]
fn crd_is_a_structural_schema() {
    let mut errors = vec![];
    check_structural(&schema(), "", false, &mut errors);
    assert!(errors.is_empty(), "not structural:\n{}", errors.join("\n"));
}

#[test]
fn structural_check_catches_violations() {
    // The check above proves something only if it can fail.
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"$ref": "#/definitions/x"},
            "b": {"description": "untyped"},
            "c": {"type": "string", "anyOf": [{"type": "string"}]}
        }
    });
    let mut errors = vec![];
    check_structural(&bad, "", false, &mut errors);
    assert_eq!(
        errors,
        [
            ".a: $ref",
            ".a: no type",
            ".b: no type",
            ".c.anyOf[0]: `type` inside a combinator"
        ]
    );
}

fn missing_descriptions(node: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            if v.get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                out.push(p.clone());
            }
            missing_descriptions(v, &p, out);
        }
    }
    if let Some(items) = node.get("items") {
        missing_descriptions(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_spec_and_status_field_is_described() {
    let s = schema();
    let mut missing = vec![];
    missing_descriptions(&s["properties"]["spec"], ".spec", &mut missing);
    missing_descriptions(&s["properties"]["status"], ".status", &mut missing);
    // Kubernetes' own types (Condition, Affinity, ...) come with their upstream descriptions;
    // none may be missing either.
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn crd_has_scale_status_short_name_columns_and_bounds() {
    let crd: Value = serde_yaml_ng::from_str(&generated()).expect("the CRD is YAML");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["kvc"])
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(
        v["subresources"]["scale"],
        serde_json::json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"})
    );
    assert_eq!(v["subresources"]["status"], serde_json::json!({}));
    let columns: Vec<_> = v["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        columns,
        ["Replicas", "Ready", "Leader", "Term", "Phase", "Age"]
    );
    let spec = &schema()["properties"]["spec"];
    let replicas = &spec["properties"]["replicas"];
    assert_eq!(
        (replicas["minimum"].as_f64(), replicas["maximum"].as_f64()),
        (Some(1.0), Some(9.0))
    );
    assert_eq!(replicas["default"], 3);
    let rules: Vec<_> = spec["properties"]["storage"]["x-kubernetes-validations"]
        .as_array()
        .expect("storage rules")
        .iter()
        .map(|r| r["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        rules.contains(&"storage size cannot shrink".to_string()),
        "{rules:?}"
    );
}

/// The CRD's CEL rules, evaluated offline as the API server does (defaults applied first; rules
/// with `oldSelf` only on updates). Returns the failed rules' messages.
fn cel(object: &Value, old: Option<&Value>) -> Vec<String> {
    match kube_cel::validate(&schema(), object, old) {
        Ok(()) => vec![],
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

fn example() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kvcluster.yaml");
    let text = std::fs::read_to_string(path).expect("examples/kvcluster.yaml");
    serde_yaml_ng::from_str(&text).expect("the example is YAML")
}

fn with(base: &Value, pointer: &str, value: Value) -> Value {
    let mut v = base.clone();
    *v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} in the example")) = value;
    v
}

#[test]
fn cel_rules_accept_the_example_and_growth() {
    let ex = example();
    assert_eq!(cel(&ex, None), Vec::<String>::new());
    assert_eq!(cel(&ex, Some(&ex)), Vec::<String>::new());
    let grown = with(&ex, "/spec/storage/size", "2Gi".into());
    assert_eq!(cel(&grown, Some(&ex)), Vec::<String>::new());
    // A bare manifest (every default applied by the API server) passes too.
    let minimal = serde_json::json!({
        "apiVersion": "raftkv.dev/v1alpha1", "kind": "KvCluster", "metadata": {"name": "m"},
        "spec": {"image": "raftkv/kvnode:0.1.0", "storage": {"size": "1Gi"}}
    });
    assert_eq!(cel(&minimal, None), Vec::<String>::new());
}

#[test]
fn cel_rules_reject_shrinking_zero_size_class_changes_and_slow_elections() {
    let ex = example();
    let shrunk = with(&ex, "/spec/storage/size", "512Mi".into());
    assert_eq!(cel(&shrunk, Some(&ex)), ["storage size cannot shrink"]);
    // The same value written differently is not a change.
    let same = with(&ex, "/spec/storage/size", "1024Mi".into());
    assert_eq!(cel(&same, Some(&ex)), Vec::<String>::new());
    let zero = with(&ex, "/spec/storage/size", "0".into());
    assert_eq!(cel(&zero, None), ["storage size must be greater than zero"]);

    let classed = with(
        &ex,
        "/spec/storage",
        serde_json::json!({"size": "1Gi", "storageClassName": "fast"}),
    );
    assert_eq!(
        cel(&classed, Some(&ex)),
        ["storageClassName cannot change after creation"]
    );
    let reclassed = with(&classed, "/spec/storage/storageClassName", "slow".into());
    assert_eq!(
        cel(&reclassed, Some(&classed)),
        ["storageClassName cannot change after creation"]
    );
    assert_eq!(cel(&classed, Some(&classed)), Vec::<String>::new());

    let slow = with(
        &ex,
        "/spec/tuning",
        serde_json::json!({"tickMillis": 1000, "electionTicks": 100, "snapshotEntries": 10000}),
    );
    assert_eq!(
        cel(&slow, None),
        ["the election timeout (tickMillis * electionTicks) must be at most 60 seconds"]
    );
}

#[test]
fn tls_takes_exactly_one_source_per_port() {
    let ex = example();
    assert_eq!(
        ex["spec"]["tls"],
        serde_json::json!({"peer": {"auto": {}}}),
        "the example has peer TLS on, made by the operator"
    );
    let tls = |v: Value| with(&ex, "/spec/tls", v);
    for ok in [
        serde_json::json!({"peer": {"secretName": "peer-certs"}}),
        serde_json::json!({"peer": {"auto": {}}, "client": {"auto": {}, "requireClientCertificate": true}}),
        serde_json::json!({"peer": {"auto": {}}, "client": {"secretName": "client-certs"}}),
    ] {
        assert_eq!(cel(&tls(ok.clone()), None), Vec::<String>::new(), "{ok}");
    }
    let one = "set exactly one of secretName and auto";
    assert_eq!(cel(&tls(serde_json::json!({"peer": {}})), None), [one]);
    assert_eq!(
        cel(
            &tls(serde_json::json!({"peer": {"auto": {}, "secretName": "x"}})),
            None
        ),
        [one]
    );
    assert_eq!(
        cel(
            &tls(
                serde_json::json!({"peer": {"auto": {}}, "client": {"requireClientCertificate": true}})
            ),
            None
        ),
        [one]
    );
    // An empty Secret name is refused by the schema's bounds before any rule runs.
    let peer = &schema()["properties"]["spec"]["properties"]["tls"]["properties"]["peer"];
    assert_eq!(peer["properties"]["secretName"]["minLength"], 1);
}

#[test]
fn tls_cannot_be_turned_on_or_off_or_change_peer_mode_after_creation() {
    let ex = example();
    let plain = {
        let mut v = ex.clone();
        v["spec"].as_object_mut().map(|s| s.remove("tls"));
        v
    };
    let peer_msg = "spec.tls.peer cannot be added or removed after creation: members with and without peer TLS cannot talk to each other";
    assert_eq!(cel(&ex, Some(&plain)), [peer_msg]);
    assert_eq!(cel(&plain, Some(&ex)), [peer_msg]);
    assert_eq!(cel(&plain, Some(&plain)), Vec::<String>::new());

    let with_client = with(
        &ex,
        "/spec/tls",
        serde_json::json!({"peer": {"auto": {}}, "client": {"auto": {}, "requireClientCertificate": false}}),
    );
    assert_eq!(
        cel(&with_client, Some(&ex)),
        [
            "spec.tls.client cannot be added or removed after creation: during the roll the operator could reach only some of the members"
        ]
    );
    // Requiring client certificates later is a setting, not a switch of TLS.
    let required = with(
        &with_client,
        "/spec/tls/client/requireClientCertificate",
        true.into(),
    );
    assert_eq!(cel(&required, Some(&with_client)), Vec::<String>::new());

    let from_secret = with(
        &ex,
        "/spec/tls",
        serde_json::json!({"peer": {"secretName": "certs"}}),
    );
    assert_eq!(
        cel(&from_secret, Some(&ex)),
        [
            "spec.tls.peer cannot switch between auto and secretName: members trusting different CAs cannot talk to each other"
        ]
    );
    let other_secret = with(&from_secret, "/spec/tls/peer/secretName", "certs-2".into());
    assert_eq!(cel(&other_secret, Some(&from_secret)), Vec::<String>::new());
}
