//! The controller against a mock API server (tower-test, in the manner of kube-rs/controller-rs's
//! ApiServerVerifier) and fake nodes: each scenario asserts the exact requests one reconcile
//! makes, in order, with their patch bodies, and answers them. A request that is missing, extra
//! or different fails the test, and so does one the chart's RBAC would refuse.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use raftkv_operator::controller::{Context, error_policy, reconcile};
use raftkv_operator::crd::{KvCluster, KvClusterStatus};
use raftkv_operator::metrics::Metrics;
use raftkv_operator::nodes::{NodeApi, NodeError, NodeTls};
use raftkv_proto::v1 as pb;
use serde_json::{Value, json};

#[path = "support/rbac.rs"]
mod rbac;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Nodes that answer from a table, and record every change asked of them.
#[derive(Default)]
struct FakeNodes {
    statuses: BTreeMap<String, pb::StatusResponse>,
    calls: Mutex<Vec<String>>,
    /// The TLS material of the last call (`Some(None)`: plain text).
    tls: Mutex<Option<Option<NodeTls>>>,
}

impl NodeApi for FakeNodes {
    async fn status(
        &self,
        addr: &str,
        tls: Option<&NodeTls>,
    ) -> Result<pb::StatusResponse, NodeError> {
        self.record_tls(tls);
        self.statuses
            .get(addr)
            .cloned()
            .ok_or_else(|| NodeError::Unreachable(addr.into(), "fake: no answer".into()))
    }
    async fn add_member(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
        node_id: u64,
        peer_addr: String,
        client_addr: String,
    ) -> Result<(), NodeError> {
        self.record_tls(tls);
        self.record(format!(
            "add_member {node_id} {peer_addr} {client_addr} via {}",
            endpoints[0]
        ));
        Ok(())
    }
    async fn remove_member(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
        node_id: u64,
    ) -> Result<(), NodeError> {
        self.record_tls(tls);
        self.record(format!("remove_member {node_id} via {}", endpoints[0]));
        Ok(())
    }
    async fn transfer_leader(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
    ) -> Result<u64, NodeError> {
        self.record_tls(tls);
        self.record(format!("transfer_leader via {}", endpoints[0]));
        Ok(2)
    }
}

impl FakeNodes {
    /// Remembers the TLS material of every call (the last one wins).
    fn record_tls(&self, tls: Option<&NodeTls>) {
        *self.tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(tls.cloned());
    }
    fn record(&self, call: String) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

const FQDN: &str = "demo-peers.ns.svc.cluster.local";
const UID: &str = "6f1e7c1a-0000-4000-8000-000000000001";

fn context(handle_nodes: FakeNodes) -> (Arc<Context<FakeNodes>>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "ns");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "raftkv-operator".into(),
            instance: None,
        },
    );
    let mut ctx = Context::new(client, recorder, Arc::new(Metrics::default()), handle_nodes);
    ctx.now = Box::new(|| {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("valid time"))
    });
    (Arc::new(ctx), handle)
}

fn kvc(replicas: i32, status: Option<KvClusterStatus>) -> KvCluster {
    let mut k = KvCluster::new(
        "demo",
        serde_json::from_value(json!({
            "replicas": replicas, "image": "raftkv/kvnode:0.1.0", "storage": {"size": "1Gi"}
        }))
        .expect("spec"),
    );
    k.metadata.namespace = Some("ns".into());
    k.metadata.uid = Some(UID.into());
    k.metadata.generation = Some(2);
    k.status = status;
    k
}

fn initialized() -> Option<KvClusterStatus> {
    Some(KvClusterStatus {
        initial_replicas: Some(3),
        cluster_id: Some("c1".into()),
        ..Default::default()
    })
}

/// The start of a reconcile of an existing StatefulSet: its read, the pods' list, and the
/// applies of every owned object.
fn reads_and_applies(statefulset: Answer, pods: Vec<Value>) -> Vec<Expect> {
    let mut expected = vec![get_statefulset(statefulset, 200), list_pods(pods)];
    expected.extend(apply_owned());
    expected
}

/// One expected request: method, path and query, and the answer.
struct Expect {
    method: &'static str,
    uri: String,
    code: u16,
    answer: Answer,
}

enum Answer {
    /// Echo the request body back (server-side apply, create).
    Echo,
    /// A fixed JSON body.
    Json(Value),
}

fn not_found() -> Answer {
    Answer::Json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "not found"
    }))
}

const APPLY: &str = "?&force=true&fieldManager=raftkv-operator";

fn get_statefulset(answer: Answer, code: u16) -> Expect {
    Expect {
        method: "GET",
        uri: "/apis/apps/v1/namespaces/ns/statefulsets/demo".into(),
        code,
        answer,
    }
}

fn list_pods(items: Vec<Value>) -> Expect {
    Expect {
        method: "GET",
        uri: "/api/v1/namespaces/ns/pods?&labelSelector=app.kubernetes.io%2Fname%3Draftkv%2Capp.kubernetes.io%2Finstance%3Ddemo".into(),
        code: 200,
        answer: Answer::Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})),
    }
}

fn apply(path: &str) -> Expect {
    Expect {
        method: "PATCH",
        uri: format!("{path}{APPLY}"),
        code: 200,
        answer: Answer::Echo,
    }
}

/// The six server-side applies of the owned objects, in order.
fn apply_owned() -> Vec<Expect> {
    vec![
        apply("/api/v1/namespaces/ns/services/demo-peers"),
        apply("/api/v1/namespaces/ns/services/demo"),
        apply("/api/v1/namespaces/ns/services/demo-leader"),
        apply("/apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo"),
        apply("/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/demo-peers"),
        apply("/apis/apps/v1/namespaces/ns/statefulsets/demo"),
    ]
}

fn event() -> Expect {
    Expect {
        method: "POST",
        uri: "/apis/events.k8s.io/v1/namespaces/ns/events?".into(),
        code: 201,
        answer: Answer::Echo,
    }
}

fn status_patch() -> Expect {
    Expect {
        method: "PATCH",
        uri: format!("/apis/raftkv.dev/v1alpha1/namespaces/ns/kvclusters/demo/status{APPLY}"),
        code: 200,
        answer: Answer::Echo,
    }
}

fn label_patch(pod: &str, code: u16) -> Expect {
    Expect {
        method: "PATCH",
        uri: format!("/api/v1/namespaces/ns/pods/{pod}?"),
        code,
        answer: if code == 200 {
            Answer::Echo
        } else {
            Answer::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "InternalError", "code": code, "message": "injected"
            }))
        },
    }
}

/// The API server's answer to an apply or create: the object, completed where the request
/// left out what a stored object always has (a status patch carries no metadata or spec).
fn echo(body: &Value) -> Value {
    let mut object = body.clone();
    if object.get("metadata").is_none() {
        object["metadata"] = json!({"name": "demo", "namespace": "ns"});
    }
    if object["kind"] == "KvCluster" && object.get("spec").is_none() {
        object["spec"] = json!({"image": "raftkv/kvnode:0.1.0", "storage": {"size": "1Gi"}});
    }
    object
}

/// Answers `expected` in order and returns the request bodies; fails on any difference, and on
/// a request that does not come within a second.
async fn serve(mut handle: Handle, expected: Vec<Expect>) -> Vec<Value> {
    let mut bodies = vec![];
    for (i, e) in expected.into_iter().enumerate() {
        let (request, send) = tokio::time::timeout(Duration::from_secs(1), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("request {i} ({} {}) never came", e.method, e.uri))
            .expect("the client is alive");
        assert_eq!(
            (request.method().as_str(), request.uri().to_string()),
            (e.method, e.uri.clone()),
            "request {i}"
        );
        // The chart's RBAC must allow it (tests/rbac.rs checks the chart against the same list).
        assert!(
            rbac::allowed(rbac::MANAGED, e.method, &e.uri),
            "request {i} ({} {}) is not in the declared permissions",
            e.method,
            e.uri
        );
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        let answer = match e.answer {
            Answer::Echo => echo(&body),
            Answer::Json(v) => v,
        };
        bodies.push(body);
        send.send_response(
            Response::builder()
                .status(e.code)
                .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
                .expect("response"),
        );
    }
    // Nothing more may come.
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
    {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
    bodies
}

fn member(id: u64, healthy: bool) -> pb::Member {
    pb::Member {
        id,
        peer_addr: format!("demo-{}.{FQDN}:7101", id - 1),
        client_addr: format!("demo-{}.{FQDN}:7001", id - 1),
        role: pb::MemberRole::Voter.into(),
        match_index: 10,
        healthy,
    }
}

/// Nodes of a healthy cluster of `n` voters with `leader` (an ordinal) leading at `term`.
fn healthy_nodes(n: u64, leader: u64, term: u64) -> FakeNodes {
    let members: Vec<_> = (1..=n).map(|id| member(id, true)).collect();
    let statuses = (0..n)
        .map(|ordinal| {
            (
                format!("demo-{ordinal}.{FQDN}:7001"),
                pb::StatusResponse {
                    node_id: ordinal + 1,
                    role: if ordinal == leader {
                        pb::Role::Leader
                    } else {
                        pb::Role::Follower
                    }
                    .into(),
                    term,
                    leader_id: leader + 1,
                    cluster_id: "c1".into(),
                    members: members.clone(),
                    member_state: pb::MemberState::Voter.into(),
                    last_log_index: 10,
                    ..Default::default()
                },
            )
        })
        .collect();
    FakeNodes {
        statuses,
        ..FakeNodes::default()
    }
}

fn pod(ordinal: u32, role_label: Option<&str>) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/name": "raftkv",
        "app.kubernetes.io/instance": "demo",
        "controller-revision-hash": "demo-r1",
    });
    if let Some(role) = role_label {
        labels["raftkv.dev/role"] = json!(role);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("demo-{ordinal}"), "namespace": "ns", "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2023-11-14T22:00:00Z"}]}
    })
}

/// Pods `demo-0` .. `demo-<n-1>`, labelled with `demo-<leader>` as the leader and the others
/// as followers.
fn labelled_pods(n: u32, leader: u32) -> Vec<Value> {
    (0..n)
        .map(|o| pod(o, Some(if o == leader { "leader" } else { "follower" })))
        .collect()
}

fn statefulset(replicas: i32) -> Answer {
    statefulset_at(replicas, "demo-r1")
}

/// A StatefulSet of `replicas` pods whose pods should be at `update_revision`.
fn statefulset_at(replicas: i32, update_revision: &str) -> Answer {
    Answer::Json(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "demo", "namespace": "ns"},
        "spec": {
            "replicas": replicas,
            "serviceName": "demo-peers",
            "selector": {"matchLabels": {"app.kubernetes.io/name": "raftkv", "app.kubernetes.io/instance": "demo"}},
            "template": {"metadata": {}, "spec": {"containers": []}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]
        },
        "status": {"replicas": replicas, "updateRevision": update_revision}
    }))
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn create_first_freezes_initial_replicas_then_applies_every_object() {
    // First pass: only the status (and an Event): the initial size must be recorded before any
    // node is started with it.
    let (ctx, handle) = context(FakeNodes::default());
    let server = tokio::spawn(serve(
        handle,
        vec![
            get_statefulset(not_found(), 404),
            list_pods(vec![]),
            event(),
            status_patch(),
        ],
    ));
    reconcile(Arc::new(kvc(3, None)), ctx)
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    assert_eq!(bodies[2]["reason"], "InitializeStatus");
    assert_eq!(bodies[2]["type"], "Normal");
    assert_eq!(bodies[2]["regarding"]["name"], "demo");
    let status = &bodies[3];
    assert_eq!(status["apiVersion"], "raftkv.dev/v1alpha1");
    assert_eq!(status["kind"], "KvCluster");
    assert_eq!(status["status"]["initialReplicas"], 3);
    assert_eq!(status["status"]["phase"], "Creating");
    assert_eq!(status["status"]["observedGeneration"], 2);
    assert_eq!(
        status["status"]["currentAction"],
        "recording 3 initial members"
    );
    assert_eq!(
        status["status"]["selector"],
        "app.kubernetes.io/instance=demo,app.kubernetes.io/name=raftkv"
    );
    assert_eq!(condition(&status["status"], "Available")["status"], "False");
    assert_eq!(
        condition(&status["status"], "Available")["lastTransitionTime"],
        "2023-11-14T22:13:20Z"
    );

    // Second pass: the objects, at the initial size, with the UID as the cluster token.
    let (ctx, handle) = context(FakeNodes::default());
    let mut expected = vec![get_statefulset(not_found(), 404), list_pods(vec![])];
    expected.extend(apply_owned());
    expected.extend([event(), status_patch()]);
    let server = tokio::spawn(serve(handle, expected));
    let mut k = kvc(5, None);
    k.status = Some(KvClusterStatus {
        initial_replicas: Some(3),
        ..Default::default()
    });
    reconcile(Arc::new(k), ctx).await.expect("reconciles");
    let bodies = server.await.expect("verifier");
    let kinds: Vec<_> = bodies[2..8]
        .iter()
        .map(|b| {
            format!(
                "{} {}",
                b["kind"].as_str().unwrap_or(""),
                b["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Service demo-peers",
            "Service demo",
            "Service demo-leader",
            "PodDisruptionBudget demo",
            "NetworkPolicy demo-peers",
            "StatefulSet demo"
        ]
    );
    for b in &bodies[2..8] {
        assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], UID);
    }
    let sts = &bodies[7];
    assert_eq!(sts["spec"]["replicas"], 3);
    let args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args");
    assert!(args.contains(&json!("--initial-cluster-size=3")));
    assert!(args.contains(&json!(format!("--initial-cluster-token={UID}"))));
    assert_eq!(bodies[3 + 3 + 2]["reason"], "CreateCluster");
    assert_eq!(
        bodies[9]["status"]["currentAction"],
        "creating the cluster with 3 members"
    );
}

#[tokio::test]
async fn status_update_reports_the_cluster_and_is_skipped_when_unchanged() {
    let pods = labelled_pods(3, 0);
    let (ctx, handle) = context(healthy_nodes(3, 0, 2));
    let mut expected = reads_and_applies(statefulset(3), pods.clone());
    expected.push(status_patch());
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(kvc(3, initialized())), ctx)
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    let status = &bodies[8]["status"];
    assert_eq!(status["phase"], "Available");
    assert_eq!(
        (
            status["replicas"].as_i64(),
            status["readyReplicas"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(status["leader"], json!({"id": 1, "pod": "demo-0"}));
    assert_eq!(status["term"], 2);
    assert_eq!(status["clusterId"], "c1");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        status["members"][1],
        json!({"id": 2, "pod": "demo-1", "role": "voter", "state": "Voter", "healthy": true, "matchIndex": 10})
    );
    assert_eq!(condition(status, "Available")["status"], "True");
    assert_eq!(condition(status, "Progressing")["status"], "False");
    assert_eq!(condition(status, "Degraded")["status"], "False");
    // The existing StatefulSet keeps its (immutable) claim templates.
    assert_eq!(
        bodies[7]["spec"]["volumeClaimTemplates"],
        json!([{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}])
    );

    // The same observation again: no status write.
    let written: KvClusterStatus = serde_json::from_value(status.clone()).expect("status");
    let (ctx, handle) = context(healthy_nodes(3, 0, 2));
    let expected = reads_and_applies(statefulset(3), pods);
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(kvc(3, Some(written))), ctx)
        .await
        .expect("reconciles");
    server.await.expect("verifier");
}

#[tokio::test]
async fn scale_up_grows_the_statefulset_by_one() {
    let pods = labelled_pods(3, 0);
    let (ctx, handle) = context(healthy_nodes(3, 0, 2));
    let mut expected = reads_and_applies(statefulset(3), pods);
    expected.extend([event(), status_patch()]);
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(kvc(5, initialized())), ctx.clone())
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    assert_eq!(
        bodies[5]["spec"]["minAvailable"], 3,
        "PDB keeps a quorum of 4"
    );
    assert_eq!(bodies[7]["spec"]["replicas"], 4);
    assert_eq!(bodies[8]["reason"], "ScaleStatefulSet");
    assert_eq!(bodies[8]["note"], "growing the StatefulSet to 4 pods");
    assert_eq!(bodies[9]["status"]["phase"], "Scaling");
    assert!(ctx.nodes.calls().is_empty());
    assert!(
        ctx.metrics
            .render()
            .contains("raftkv_operator_actions_total{kind=\"ScaleStatefulSet\"} 1")
    );
}

#[tokio::test]
async fn scale_up_adds_the_waiting_pod_as_a_learner_through_the_leader() {
    let pods = vec![
        pod(0, Some("leader")),
        pod(1, Some("follower")),
        pod(2, Some("follower")),
        pod(3, Some("follower")),
    ];
    let mut nodes = healthy_nodes(3, 0, 2);
    nodes.statuses.insert(
        format!("demo-3.{FQDN}:7001"),
        pb::StatusResponse {
            node_id: 4,
            term: 2,
            leader_id: 1,
            cluster_id: "c1".into(),
            member_state: pb::MemberState::WaitingToBeAdded.into(),
            ..Default::default()
        },
    );
    let (ctx, handle) = context(nodes);
    let mut expected = reads_and_applies(statefulset(4), pods);
    expected.extend([event(), status_patch()]);
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(kvc(5, initialized())), ctx.clone())
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    assert_eq!(bodies[8]["reason"], "AddLearner");
    assert_eq!(
        ctx.nodes.calls(),
        [format!(
            "add_member 4 demo-3.{FQDN}:7101 demo-3.{FQDN}:7001 via demo-0.{FQDN}:7001"
        )]
    );
}

#[tokio::test]
async fn leader_relabel_removes_the_old_label_before_adding_the_new_one() {
    // demo-1 won term 3; demo-0 still carries the leader label.
    let pods = labelled_pods(3, 0);
    let (ctx, handle) = context(healthy_nodes(3, 1, 3));
    let mut expected = vec![
        get_statefulset(statefulset(3), 200),
        list_pods(pods.clone()),
        label_patch("demo-0", 200),
        label_patch("demo-1", 200),
    ];
    expected.extend(apply_owned());
    expected.push(status_patch());
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(kvc(3, initialized())), ctx)
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    assert_eq!(
        bodies[2],
        json!({"metadata": {"labels": {"raftkv.dev/role": "follower"}}})
    );
    assert_eq!(
        bodies[3],
        json!({"metadata": {"labels": {"raftkv.dev/role": "leader"}}})
    );
    assert_eq!(
        bodies[10]["status"]["leader"],
        json!({"id": 2, "pod": "demo-1"})
    );
    assert_eq!(bodies[10]["status"]["term"], 3);

    // If removing the old label fails, the new one is not added: the reconcile stops there.
    let (ctx, handle) = context(healthy_nodes(3, 1, 3));
    let server = tokio::spawn(serve(
        handle,
        vec![
            get_statefulset(statefulset(3), 200),
            list_pods(pods),
            label_patch("demo-0", 500),
        ],
    ));
    let k = Arc::new(kvc(3, initialized()));
    let err = reconcile(k.clone(), ctx.clone())
        .await
        .expect_err("the label patch failed");
    assert_eq!(err.metric_label(), "kube");
    server.await.expect("verifier");
    // The failure backs off exponentially.
    let first = error_policy(k.clone(), &err, ctx.clone());
    let second = error_policy(k, &err, ctx.clone());
    assert_eq!(
        format!("{first:?}"),
        format!(
            "{:?}",
            kube::runtime::controller::Action::requeue(Duration::from_secs(1))
        )
    );
    assert_eq!(
        format!("{second:?}"),
        format!(
            "{:?}",
            kube::runtime::controller::Action::requeue(Duration::from_secs(2))
        )
    );
    assert!(
        ctx.metrics
            .render()
            .contains("raftkv_operator_reconcile_failures_total{error=\"kube\"} 2")
    );
}

#[tokio::test]
async fn quorum_lost_changes_nothing_but_status() {
    // Two of three voters are down and the user asks for 5: no scale, no event.
    let pods = labelled_pods(3, 0);
    let mut nodes = healthy_nodes(3, 0, 2);
    for s in nodes.statuses.values_mut() {
        s.members = vec![member(1, true), member(2, false), member(3, false)];
    }
    let (ctx, handle) = context(nodes);
    let mut expected = reads_and_applies(statefulset(3), pods);
    expected.push(status_patch());
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(kvc(5, initialized())), ctx)
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    assert_eq!(bodies[7]["spec"]["replicas"], 3);
    let status = &bodies[8]["status"];
    assert_eq!(status["phase"], "Degraded");
    assert_eq!(condition(status, "Degraded")["reason"], "NoQuorum");
    assert_eq!(condition(status, "Available")["status"], "False");
}

#[tokio::test]
async fn backoff_doubles_up_to_the_cap() {
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "ns");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "t".into(),
            instance: None,
        },
    );
    let ctx = Context::new(
        client,
        recorder,
        Arc::new(Metrics::default()),
        FakeNodes::default(),
    );
    let delays: Vec<u64> = (0..12)
        .map(|_| ctx.next_backoff("ns/demo").as_secs())
        .collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    assert_eq!(ctx.next_backoff("ns/other").as_secs(), 1, "per object");
}

#[tokio::test]
async fn image_change_deletes_one_follower_pod() {
    // Every pod is at demo-r1 and the StatefulSet's update revision is demo-r2: the highest
    // follower goes first, with an Event; nothing else is deleted.
    let pods = labelled_pods(3, 0);
    let (ctx, handle) = context(healthy_nodes(3, 0, 2));
    let mut expected = reads_and_applies(statefulset_at(3, "demo-r2"), pods);
    expected.push(Expect {
        method: "DELETE",
        uri: "/api/v1/namespaces/ns/pods/demo-2?".into(),
        code: 200,
        answer: Answer::Json(pod(2, Some("follower"))),
    });
    expected.extend([event(), status_patch()]);
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(kvc(3, initialized())), ctx)
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    assert_eq!(bodies[9]["reason"], "DeletePod");
    assert_eq!(bodies[9]["note"], "replacing demo-2 with the new revision");
    assert_eq!(bodies[10]["status"]["phase"], "Upgrading");
}

#[tokio::test]
async fn paused_applies_nothing_and_says_so() {
    // Work to do (scale to 5, a new revision), but paused: only the status is written.
    let pods = labelled_pods(3, 0);
    let (ctx, handle) = context(healthy_nodes(3, 0, 2));
    let server = tokio::spawn(serve(
        handle,
        vec![
            get_statefulset(statefulset_at(3, "demo-r2"), 200),
            list_pods(pods),
            status_patch(),
        ],
    ));
    let mut k = kvc(5, initialized());
    k.spec.paused = true;
    reconcile(Arc::new(k), ctx).await.expect("reconciles");
    let bodies = server.await.expect("verifier");
    let status = &bodies[2]["status"];
    assert_eq!(status["phase"], "Paused");
    assert_eq!(
        status["currentAction"],
        "paused: spec.paused is set, the operator changes nothing"
    );
    assert_eq!(condition(status, "Progressing")["reason"], "Paused");
}

#[tokio::test]
async fn time_with_a_wrong_leader_label_is_measured() {
    // First pass: demo-1 leads but demo-0 has the label (misrouted from now on); second pass:
    // the labels are right again, and the time in between is counted.
    let wrong = vec![
        pod(0, Some("leader")),
        pod(1, Some("follower")),
        pod(2, Some("follower")),
    ];
    let right = labelled_pods(3, 1);
    let (ctx, handle) = context(healthy_nodes(3, 1, 3));
    let mut expected = vec![
        get_statefulset(statefulset(3), 200),
        list_pods(wrong),
        label_patch("demo-0", 200),
        label_patch("demo-1", 200),
    ];
    expected.extend(apply_owned());
    expected.push(status_patch());
    expected.extend(reads_and_applies(statefulset(3), right));
    expected.push(status_patch());
    let server = tokio::spawn(serve(handle, expected));
    let metric = |ctx: &Context<FakeNodes>| {
        ctx.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("raftkv_operator_leader_service_misrouted_seconds_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("the misrouting counter")
    };
    reconcile(Arc::new(kvc(3, initialized())), ctx.clone())
        .await
        .expect("first pass");
    assert_eq!(metric(&ctx), 0.0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    reconcile(Arc::new(kvc(3, initialized())), ctx.clone())
        .await
        .expect("second pass");
    server.await.expect("verifier");
    let seconds = metric(&ctx);
    assert!((0.05..10.0).contains(&seconds), "{seconds}");
}

fn list_claims(items: Vec<Value>) -> Expect {
    Expect {
        method: "GET",
        uri: "/api/v1/namespaces/ns/persistentvolumeclaims?&labelSelector=app.kubernetes.io%2Finstance%3Ddemo%2Capp.kubernetes.io%2Fname%3Draftkv".into(),
        code: 200,
        answer: Answer::Json(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": items})),
    }
}

/// A bound claim asking for `size`.
fn claim(name: &str, size: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "ns",
                     "labels": {"app.kubernetes.io/name": "raftkv", "app.kubernetes.io/instance": "demo"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        "status": {"phase": "Bound", "capacity": {"storage": size}}
    })
}

#[tokio::test]
async fn storage_growth_expands_every_smaller_claim_once_and_reports_it() {
    let pods = labelled_pods(3, 0);
    let mut k = kvc(3, initialized());
    k.spec.storage.size = "2Gi".into();
    // demo-1's claim was grown already (in other units); data-demo-3 is retained from a
    // scale-down and grows too, so that it fits if the set grows again.
    let claims = vec![
        claim("data-demo-0", "1Gi"),
        claim("data-demo-1", "2048Mi"),
        claim("data-demo-2", "1Gi"),
        claim("data-demo-3", "1Gi"),
    ];
    let (ctx, handle) = context(healthy_nodes(3, 0, 2));
    let mut expected = reads_and_applies(statefulset(3), pods.clone());
    expected.push(list_claims(claims));
    for name in ["data-demo-0", "data-demo-2", "data-demo-3"] {
        expected.push(apply(&format!(
            "/api/v1/namespaces/ns/persistentvolumeclaims/{name}"
        )));
    }
    expected.extend([event(), status_patch()]);
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(k.clone()), ctx.clone())
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    // The StatefulSet keeps its (immutable) claim template.
    assert_eq!(
        bodies[7]["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "1Gi"
    );
    // Exactly the storage request, nothing else of the claim.
    for (i, name) in [(9, "data-demo-0"), (10, "data-demo-2"), (11, "data-demo-3")] {
        assert_eq!(
            bodies[i],
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": name, "namespace": "ns"},
                   "spec": {"resources": {"requests": {"storage": "2Gi"}}}})
        );
    }
    let note = "expanding the volume claims data-demo-0, data-demo-2, data-demo-3 to 2Gi";
    assert_eq!(bodies[12]["reason"], "ExpandVolumes");
    assert_eq!(bodies[12]["type"], "Normal");
    assert_eq!(bodies[12]["note"], note);
    let status = &bodies[13]["status"];
    assert_eq!(status["phase"], "Available");
    assert!(
        status["currentAction"]
            .as_str()
            .is_some_and(|a| a.starts_with(note)),
        "{status}"
    );
    assert!(
        ctx.metrics
            .render()
            .contains("raftkv_operator_actions_total{kind=\"ExpandVolumes\"} 1")
    );

    // Once every claim asks for the new size: a list, no patch, no Event.
    let written: KvClusterStatus = serde_json::from_value(status.clone()).expect("status");
    k.status = Some(written);
    let (ctx, handle) = context(healthy_nodes(3, 0, 2));
    let mut expected = reads_and_applies(statefulset(3), pods);
    expected.push(list_claims(
        (0..4)
            .map(|i| claim(&format!("data-demo-{i}"), "2Gi"))
            .collect(),
    ));
    expected.push(status_patch());
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(k), ctx).await.expect("reconciles");
    let bodies = server.await.expect("verifier");
    assert_eq!(
        bodies[9]["status"]["currentAction"],
        "3 members, demo-0 leads"
    );
}

fn get_secret(name: &str, answer: Answer, code: u16) -> Expect {
    Expect {
        method: "GET",
        uri: format!("/api/v1/namespaces/ns/secrets/{name}"),
        code,
        answer,
    }
}

/// A KvCluster with both ports' certificates made by the operator, client certificates required.
fn auto_tls(mut k: KvCluster) -> KvCluster {
    k.spec.tls = Some(
        serde_json::from_value(json!({
            "peer": {"auto": {}},
            "client": {"auto": {}, "requireClientCertificate": true}
        }))
        .expect("tls"),
    );
    k
}

fn secret_keys(body: &Value) -> Vec<String> {
    body["data"]
        .as_object()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

fn secret_text(body: &Value, key: &str) -> String {
    use k8s_openapi::api::core::v1::Secret;
    let secret: Secret = serde_json::from_value(body.clone()).expect("a Secret");
    let bytes = secret
        .data
        .and_then(|d| d.get(key).cloned())
        .unwrap_or_else(|| panic!("{key} in {body}"));
    String::from_utf8(bytes.0).expect("PEM text")
}

#[tokio::test]
async fn auto_tls_issues_certificates_before_the_statefulset_that_mounts_them() {
    // The second pass of a new cluster: the CA and the three pods' pairs are written, announced,
    // and only then the StatefulSet, which mounts them and names each pod's own files.
    let (ctx, handle) = context(FakeNodes::default());
    let mut expected = vec![
        get_statefulset(not_found(), 404),
        list_pods(vec![]),
        get_secret("demo-tls-ca", not_found(), 404),
        get_secret("demo-tls", not_found(), 404),
        apply("/api/v1/namespaces/ns/secrets/demo-tls-ca"),
        apply("/api/v1/namespaces/ns/secrets/demo-tls"),
        event(),
    ];
    expected.extend(apply_owned());
    expected.extend([event(), status_patch()]);
    let server = tokio::spawn(serve(handle, expected));
    let k = auto_tls(kvc(
        3,
        Some(KvClusterStatus {
            initial_replicas: Some(3),
            ..Default::default()
        }),
    ));
    reconcile(Arc::new(k), ctx.clone())
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");

    let (ca, certs) = (&bodies[4], &bodies[5]);
    assert_eq!(ca["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(certs["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(
        ca["metadata"]["labels"]["app.kubernetes.io/managed-by"], "raftkv-operator",
        "the operator's watch selects its Secrets by this label"
    );
    assert_eq!(
        secret_keys(ca),
        ["ca.crt", "ca.key", "operator.crt", "operator.key"]
    );
    assert_eq!(
        secret_keys(certs),
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
    assert_eq!(secret_text(certs, "ca.crt"), secret_text(ca, "ca.crt"));
    assert_eq!(bodies[6]["reason"], "IssueCertificates");
    assert_eq!(
        bodies[6]["note"],
        "issued certificates: CA (new), raftkv-operator (new), demo-0 (new), demo-1 (new), demo-2 (new)"
    );

    let pod = &bodies[12]["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "tls", "secret": {"secretName": "demo-tls", "defaultMode": 0o440}}])
    );
    let k = &pod["containers"][0];
    assert_eq!(
        k["env"],
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    );
    let args = k["args"].as_array().expect("args");
    for flag in [
        "--peer-cert=/etc/raftkv/tls/$(POD_NAME).crt",
        "--peer-key=/etc/raftkv/tls/$(POD_NAME).key",
        "--peer-ca=/etc/raftkv/tls/ca.crt",
        "--client-cert=/etc/raftkv/tls/$(POD_NAME).crt",
        "--client-key=/etc/raftkv/tls/$(POD_NAME).key",
        "--client-ca=/etc/raftkv/tls/ca.crt",
    ] {
        assert!(args.contains(&json!(flag)), "{flag} in {args:?}");
    }
    assert_eq!(
        k["volumeMounts"][1],
        json!({"name": "tls", "mountPath": "/etc/raftkv/tls", "readOnly": true})
    );
    // The kubelet's gRPC probe cannot speak TLS: readiness asks kvnode's plain health port,
    // which the NetworkPolicy opens like the client port.
    assert!(args.contains(&json!("--listen-health=0.0.0.0:7201")));
    assert_eq!(k["readinessProbe"]["grpc"], json!({"port": 7201}));
    assert_eq!(
        k["ports"][3],
        json!({"name": "health", "containerPort": 7201, "protocol": "TCP"})
    );
    assert_eq!(
        bodies[11]["spec"]["ingress"][1]["ports"][2],
        json!({"port": 7201, "protocol": "TCP"})
    );
    assert!(
        ctx.metrics
            .render()
            .contains("raftkv_operator_actions_total{kind=\"IssueCertificates\"} 1")
    );
}

#[tokio::test]
async fn auto_tls_steady_dials_with_the_stored_ca_and_scale_up_issues_the_new_pods_pair_first() {
    // Certificates as a first pass would store them.
    let (ctx, handle) = context(FakeNodes::default());
    let mut expected = vec![
        get_statefulset(not_found(), 404),
        list_pods(vec![]),
        get_secret("demo-tls-ca", not_found(), 404),
        get_secret("demo-tls", not_found(), 404),
        apply("/api/v1/namespaces/ns/secrets/demo-tls-ca"),
        apply("/api/v1/namespaces/ns/secrets/demo-tls"),
        event(),
    ];
    expected.extend(apply_owned());
    expected.extend([event(), status_patch()]);
    let server = tokio::spawn(serve(handle, expected));
    let first = KvClusterStatus {
        initial_replicas: Some(3),
        ..Default::default()
    };
    reconcile(Arc::new(auto_tls(kvc(3, Some(first)))), ctx)
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    let (ca, certs) = (bodies[4].clone(), bodies[5].clone());

    // A healthy cluster of 3: nothing written, and the nodes are asked over TLS with the CA
    // bundle and the operator's own certificate.
    let pods = labelled_pods(3, 0);
    let (ctx, handle) = context(healthy_nodes(3, 0, 2));
    let mut expected = vec![
        get_statefulset(statefulset(3), 200),
        list_pods(pods.clone()),
        get_secret("demo-tls-ca", Answer::Json(ca.clone()), 200),
        get_secret("demo-tls", Answer::Json(certs.clone()), 200),
    ];
    expected.extend(apply_owned());
    expected.push(status_patch());
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(auto_tls(kvc(3, initialized()))), ctx.clone())
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    assert_eq!(bodies[10]["status"]["phase"], "Available");
    let dialled = ctx
        .nodes
        .tls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(
        dialled,
        Some(Some(NodeTls {
            ca_pem: secret_text(&ca, "ca.crt"),
            identity: Some(raftkv_operator::certs::KeyedCert {
                cert_pem: secret_text(&ca, "operator.crt"),
                key_pem: secret_text(&ca, "operator.key"),
            }),
        }))
    );

    // Asked for 5: the StatefulSet grows to 4, and demo-3's pair is written before it.
    let (ctx, handle) = context(healthy_nodes(3, 0, 2));
    let mut expected = vec![
        get_statefulset(statefulset(3), 200),
        list_pods(pods),
        get_secret("demo-tls-ca", Answer::Json(ca.clone()), 200),
        get_secret("demo-tls", Answer::Json(certs.clone()), 200),
        apply("/api/v1/namespaces/ns/secrets/demo-tls"),
        event(),
    ];
    expected.extend(apply_owned());
    expected.extend([event(), status_patch()]);
    let server = tokio::spawn(serve(handle, expected));
    reconcile(Arc::new(auto_tls(kvc(5, initialized()))), ctx)
        .await
        .expect("reconciles");
    let bodies = server.await.expect("verifier");
    assert!(secret_keys(&bodies[4]).contains(&"demo-3.crt".to_string()));
    for kept in ["demo-0.crt", "demo-2.key", "ca.crt"] {
        assert_eq!(
            secret_text(&bodies[4], kept),
            secret_text(&certs, kept),
            "{kept} unchanged"
        );
    }
    assert_eq!(bodies[5]["note"], "issued certificates: demo-3 (new)");
    assert_eq!(bodies[11]["spec"]["replicas"], 4);
    assert_eq!(bodies[12]["reason"], "ScaleStatefulSet");
}

#[tokio::test]
async fn a_missing_tls_secret_is_named_in_an_event_and_the_error() {
    let (ctx, handle) = context(FakeNodes::default());
    let server = tokio::spawn(serve(
        handle,
        vec![
            get_statefulset(statefulset(3), 200),
            list_pods(labelled_pods(3, 0)),
            get_secret("peer-certs", not_found(), 404),
            event(),
        ],
    ));
    let mut k = kvc(3, initialized());
    k.spec.tls =
        Some(serde_json::from_value(json!({"peer": {"secretName": "peer-certs"}})).expect("tls"));
    let err = reconcile(Arc::new(k), ctx)
        .await
        .expect_err("no Secret, no pods that can start");
    let bodies = server.await.expect("verifier");
    assert_eq!(err.metric_label(), "tls");
    assert_eq!(err.to_string(), "TLS: Secret ns/peer-certs: not found");
    assert_eq!(bodies[3]["reason"], "TLSSecretInvalid");
    assert_eq!(bodies[3]["type"], "Warning");
    assert_eq!(bodies[3]["note"], "Secret ns/peer-certs: not found");
}
