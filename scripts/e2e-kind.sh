#!/usr/bin/env bash
# End-to-end test on a local kind cluster (`make e2e-kind`, and .github/workflows/e2e.yaml).
# Needs docker, kind, kubectl and helm. It cannot run on this project's own machines (no cluster
# can be created there); it is for users and for CI runners with Docker.
#
# Creates a kind cluster, builds both images from the Dockerfile's `node` and `operator` targets
# (the node image must contain kvctl: the checks run it with `kubectl exec`), installs the chart,
# applies examples/kvcluster.yaml, and then:
#   put/get through the client Service; deletes the leader's pod under a writer (the leader label
#   must move and every acknowledged write must be readable afterwards); scales 3 -> 5 -> 3;
#   rolls an image change; deletes the cluster and uninstalls, checking that only the claims the
#   retention policy keeps are left.
# Not covered here: growing spec.storage.size (kind's default StorageClass, local-path, does not
# allow volume expansion, so the operator's claim patch would be refused) and a removed member
# back on a retained volume (the example scales with whenScaled: Delete); both are covered by
# `cargo test -p raftkv-operator` (tests/controller.rs, tests/planner_processes.rs).
# KEEP_CLUSTER=1 keeps the kind cluster afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

kind_cluster=${KIND_CLUSTER:-raftkv-e2e}
ns=raftkv-e2e
node_image=raftkv/kvnode:e2e
node_image2=raftkv/kvnode:e2e-rolled
operator_image=raftkv/kv-operator:e2e
selector=app.kubernetes.io/instance=demo
timeout=300s

log() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
k() { kubectl -n "$ns" "$@"; }
cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$kind_cluster" || true; fi
}
trap cleanup EXIT

leader_pod() { k get pods -l "$selector,raftkv.dev/role=leader" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true; }
# kvctl inside the cluster, from a pod other than $1 (the client Service finds the leader).
kvctl_from() { k exec "$1" -c kvnode -- kvctl --endpoints demo:7001 "${@:2}"; }
# Waits until `kubectl get` of the arguments lists nothing.
wait_gone() {
  local deadline=$((SECONDS + 300))
  while [ -n "$(k get "$@" -o name 2>/dev/null)" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "still there: $*" >&2; return 1; }
    sleep 2
  done
}
wait_available() {
  k wait kvc/demo --for=jsonpath='{.status.readyReplicas}'="$1" --timeout="$timeout"
  k wait kvc/demo --for=condition=Available --timeout="$timeout"
}

log "kind cluster and images"
kind get clusters | grep -qx "$kind_cluster" || kind create cluster --name "$kind_cluster" --wait 120s
docker build --target node -t "$node_image" .
docker build --target operator -t "$operator_image" .
docker tag "$node_image" "$node_image2"
kind load docker-image --name "$kind_cluster" "$node_image" "$node_image2" "$operator_image"

log "helm install"
helm install raftkv charts/raftkv --namespace raftkv-system --create-namespace \
  --set image.tag=e2e --set image.pullPolicy=Never --wait --timeout "$timeout"

log "KvCluster demo"
kubectl create namespace "$ns"
sed -e "s|image: raftkv/kvnode:.*|image: $node_image|" -e "s|imagePullPolicy: .*|imagePullPolicy: Never|" \
  examples/kvcluster.yaml | k apply -f -
wait_available 3
kvctl_from demo-0 put greeting hello
test "$(kvctl_from demo-1 get greeting)" = hello

log "delete the leader's pod under a writer"
old_leader=$(leader_pod)
test -n "$old_leader"
writer_pod=demo-0
[ "$old_leader" = demo-0 ] && writer_pod=demo-1
acked=$(mktemp)
(
  for i in $(seq 1 200); do
    if kvctl_from "$writer_pod" --timeout 10s put "e2e-$i" "v$i" >/dev/null 2>&1; then echo "$i" >>"$acked"; fi
  done
) &
writer=$!
sleep 3
k delete pod "$old_leader" --wait=false
until new_leader=$(leader_pod) && [ -n "$new_leader" ] && [ "$new_leader" != "$old_leader" ]; do sleep 1; done
echo "leader label moved: $old_leader -> $new_leader"
wait "$writer"
test -s "$acked"
while read -r i; do
  test "$(kvctl_from "$writer_pod" get "e2e-$i")" = "v$i" || { echo "acknowledged write e2e-$i is missing" >&2; exit 1; }
done <"$acked"
echo "$(wc -l <"$acked") acknowledged writes, all present"
wait_available 3

log "scale 3 -> 5 -> 3"
k scale kvc demo --replicas 5
wait_available 5
k scale kvc demo --replicas 3
wait_available 3
wait_gone pod demo-4 demo-3 --ignore-not-found
test "$(kvctl_from demo-0 get greeting)" = hello

log "roll an image change"
k patch kvc demo --type merge -p "{\"spec\":{\"image\":\"$node_image2\"}}"
deadline=$((SECONDS + 600))
until [ "$(k get pods -l "$selector" -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | grep -cx "$node_image2")" = 3 ]; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "image roll did not finish" >&2; exit 1; }
  sleep 5
done
wait_available 3
test "$(kvctl_from demo-0 get greeting)" = hello

log "delete and uninstall"
k delete kvc demo --wait=true --timeout="$timeout"
wait_gone pods -l "$selector"
helm uninstall raftkv --namespace raftkv-system --wait
# The garbage collector removes the owned objects after the KvCluster; give it the usual time.
wait_gone statefulsets,services,pods,poddisruptionbudgets,networkpolicies
# (Helm never deletes CRDs on uninstall: kvclusters.raftkv.dev stays, by Helm's design.)
# whenDeleted: Retain keeps the three members' claims; whenScaled: Delete removed demo-3's and demo-4's.
claims=$(k get pvc -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort | tr '\n' ' ')
test "$claims" = "data-demo-0 data-demo-1 data-demo-2 " || { echo "unexpected claims: $claims" >&2; exit 1; }

log "e2e passed"
