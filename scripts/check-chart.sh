#!/usr/bin/env bash
# Chart and manifest checks (issue 10), run by CI and `make chart`:
#   - helm lint, with the default values and with every optional part switched on;
#   - helm template (CRDs included) | kubernetes-validate --strict, for both RBAC scopes;
#   - `kv-operator render -f examples/kvcluster.yaml` | kubernetes-validate --strict;
#   - examples/kvcluster.yaml and the chart's example KvCluster validate against the CRD's
#     openAPIV3Schema (kubernetes-validate knows no custom resources);
#   - a KvCluster that breaks the schema is rejected (the check can fail);
#   - the e2e workflow validates against the GitHub workflow schema.
# The CRD's freshness and structure are cargo tests (operator/tests/crd.rs).
# Needs .tools/bin/helm (scripts/install-helm.sh) and, in .venv, kubernetes-validate and
# check-jsonschema; builds kv-operator unless KV_OPERATOR names one.
set -euo pipefail
cd "$(dirname "$0")/.."

helm=.tools/bin/helm
venv=.venv/bin
k8s_version=1.33.0
chart=charts/raftkv
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf -- '--- %s\n' "$1"; }

step "helm lint"
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" --set exampleCluster.enabled=true \
  --set metrics.serviceMonitor.enabled=true --set scope=Namespace --set watchNamespace=apps \
  --set exampleCluster.tls.client.mode=secret --set exampleCluster.tls.client.secretName=certs \
  --set exampleCluster.tls.client.requireClientCertificate=true

step "helm template | kubernetes-validate --strict (k8s $k8s_version)"
"$helm" template raftkv "$chart" --namespace raftkv-system --include-crds \
  --set exampleCluster.enabled=true >"$work/cluster-scope.yaml"
"$helm" template raftkv "$chart" --namespace raftkv-system --include-crds \
  --set scope=Namespace --set watchNamespace=apps >"$work/namespace-scope.yaml"
"$venv/kubernetes-validate" --strict --quiet -k "$k8s_version" \
  "$work/cluster-scope.yaml" "$work/namespace-scope.yaml"

step "kv-operator render | kubernetes-validate --strict"
# KV_OPERATOR: an already built kv-operator (CI passes the one its tests built; a build of the
# operator alone would unify features differently and compile kube and tokio again).
operator=${KV_OPERATOR:-}
if [ -z "$operator" ]; then
  cargo build -q -p raftkv-operator --bin kv-operator
  operator=./target/debug/kv-operator
fi
"$operator" render -f examples/kvcluster.yaml >"$work/render.yaml"
"$venv/kubernetes-validate" --strict --quiet -k "$k8s_version" "$work/render.yaml"

step "KvClusters against the CRD's schema"
# The schema as JSON; the chart's example KvCluster as its own file.
"$venv/python" - "$chart/crds/kvclusters.raftkv.dev.yaml" "$work/cluster-scope.yaml" "$work" <<'PY'
import json, sys, yaml
crd_path, rendered_path, work = sys.argv[1:]
with open(crd_path) as f:
    crd = yaml.safe_load(f)
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
with open(f"{work}/kvcluster.schema.json", "w") as f:
    json.dump(schema, f)
with open(rendered_path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "KvCluster"]
if len(docs) != 1:
    sys.exit(f"expected one KvCluster in the chart's output, found {len(docs)}")
with open(f"{work}/chart-kvcluster.json", "w") as f:
    json.dump(docs[0], f)
bad = dict(docs[0], spec=dict(docs[0]["spec"], replicas=10, storage={"size": "lots"}))
with open(f"{work}/bad-kvcluster.json", "w") as f:
    json.dump(bad, f)
PY
"$venv/check-jsonschema" --schemafile "$work/kvcluster.schema.json" \
  examples/kvcluster.yaml "$work/chart-kvcluster.json"
if "$venv/check-jsonschema" --schemafile "$work/kvcluster.schema.json" \
  "$work/bad-kvcluster.json" >/dev/null 2>&1; then
  echo "check-chart: a KvCluster with replicas 10 and size 'lots' passed the schema" >&2
  exit 1
fi

step "workflow schema"
"$venv/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/e2e.yaml

echo "check-chart: ok"
