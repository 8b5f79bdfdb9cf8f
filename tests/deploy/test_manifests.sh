#!/usr/bin/env bash
# test_manifests: validates deploy/kubernetes offline (validate.mjs: own
# kustomize rendering, compared with `kubectl kustomize` when installed;
# Kubernetes API schemas from the kubernetes-models npm package pinned by
# package-lock.json; cross-checks with the real binary), then feeds it
# broken copies of the manifests, one fault each, and requires each to be
# reported with its reason.
#   test_manifests.sh SOURCE_DIR BUILD_DIR AGENTDB_BIN
# Exits 77 (ctest: skipped) with a message when npm is not installed.
set -euo pipefail
src=$1 build=$2 bin=$3
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "test_manifests: SKIPPED: node/npm not installed (scripts/deps.sh installs them)"
  exit 77
fi
# The node project, installed from its lockfile into the build folder.
work=$build/manifest-validate
mkdir -p "$work"
cp "$src/deploy/kubernetes/validate/validate.mjs" "$work/"
for f in package.json package-lock.json; do # a changed lockfile: npm ci again
  if ! cmp -s "$src/deploy/kubernetes/validate/$f" "$work/$f"; then
    cp "$src/deploy/kubernetes/validate/$f" "$work/$f"
    rm -rf "$work/node_modules"
  fi
done
if [ ! -d "$work/node_modules" ]; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error >npm-ci.log 2>&1) ||
    { cat "$work/npm-ci.log"; echo "test_manifests: FAIL: npm ci"; exit 1; }
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/agentdb-manifests.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
validate() { # dir -> output in $tmp/out, status
  (cd "$1" && node "$work/validate.mjs" --bin "$bin" base overlays/production) >"$tmp/out" 2>&1
}

echo "== the manifests"
validate "$src/deploy/kubernetes" || { cat "$tmp/out"; echo "test_manifests: FAIL: the manifests do not validate"; exit 1; }
cat "$tmp/out"

# Each fault in its own copy of the manifests, all validated by one run.
# fault NAME FILE SED-EXPRESSION EXPECTED-TEXT
names=() files=() wants=()
fault() {
  local name=$1 file=$2 expr=$3
  cp -r "$src/deploy/kubernetes" "$tmp/$name" && rm -rf "$tmp/$name/validate"
  sed -i -e "$expr" "$tmp/$name/$file"
  if cmp -s "$src/deploy/kubernetes/$file" "$tmp/$name/$file"; then
    echo "test_manifests: FAIL: fault '$name' changed nothing in $file"; exit 1
  fi
  names+=("$name") wants+=("$4")
}
fault unknown-field base/deployment.yaml 's/^  replicas: 3/  replica: 3/' "unknown field /spec/replica"
fault wrong-type base/deployment.yaml 's/containerPort: 8080/containerPort: "8080"/' "containerPort type"
fault bad-enum base/service.yaml 's/type: ClusterIP/type: Cluster/' "/spec/type enum"
fault missing-required base/hpa.yaml '/^    name: agentdb$/d' "missingProperty"
fault unknown-env base/configmap.yaml 's/AGENTDB_POOL_SIZE/AGENTDB_POOLSIZE/' "AGENTDB_POOLSIZE is not in"
fault unknown-flag base/deployment.yaml 's/args: \["serve"\]/args: ["serve", "--pool", "4"]/' "flag --pool is not in"
fault bad-value base/configmap.yaml 's/AGENTDB_DURABILITY: "sync"/AGENTDB_DURABILITY: "never"/' "does not start with these settings"
fault probe-path base/deployment.yaml 's|path: /readyz|path: /ready|' "answers 404 on /ready"
fault probe-port base/deployment.yaml '0,/port: http/s//port: 9090/' "port 9090 is not the listen port"
fault listen-port base/configmap.yaml 's/0.0.0.0:8080/0.0.0.0:8081/' "no containerPort for the listen port 8081"
fault image-tag overlays/production/kustomization.yaml 's/newTag: "0.1.0"/newTag: "0.2.0"/' "is not the binary's version"
fault short-grace base/deployment.yaml 's/terminationGracePeriodSeconds: 45/terminationGracePeriodSeconds: 20/' "terminationGracePeriodSeconds 20"
fault root-user base/deployment.yaml '0,/runAsNonRoot: true/s//runAsNonRoot: false/' "not runAsNonRoot"
fault service-selector base/service.yaml 's/app.kubernetes.io\/component: server/app.kubernetes.io\/component: srv/' "no Service selects the pods"
fault secret-key base/deployment.yaml '0,/key: AGENTDB_STORE/s//key: STORE/' "key STORE, which does not exist"
fault pg-password base/secret.yaml 's/POSTGRES_PASSWORD: "CHANGE-ME"/POSTGRES_PASSWORD: "other"/' "differ from the PostgreSQL StatefulSet"
fault patch-target overlays/production/hpa.yaml 's/name: agentdb/name: agentdb-hpa/' "no HorizontalPodAutoscaler/agentdb-hpa to patch"
fault no-schema-wait base/deployment.yaml 's/args: \["migrate", "--wait", "600"\]/args: ["migrate"]/' "no init container waiting for the schema"

echo "== ${#names[@]} broken manifests"
dirs=()
for n in "${names[@]}"; do dirs+=("$n/base" "$n/overlays/production"); done
if (cd "$tmp" && node "$work/validate.mjs" --kubectl off --bin "$bin" "${dirs[@]}") >"$tmp/out" 2>&1; then
  cat "$tmp/out"; echo "test_manifests: FAIL: the broken manifests passed"; exit 1
fi
failures=0
for i in "${!names[@]}"; do
  n=${names[$i]} want=${wants[$i]}
  if line=$(grep -m1 -F -- "PROBLEM $n/" "$tmp/out" | grep -F -- "$want"); then
    echo "rejected '$n': ${line#PROBLEM }"
  elif grep -qF -- "$want" <<<"$(grep -F -- "PROBLEM $n/" "$tmp/out")"; then
    echo "rejected '$n': $(grep -F -- "PROBLEM $n/" "$tmp/out" | grep -m1 -F -- "$want")"
  else
    grep -F -- "PROBLEM $n/" "$tmp/out" || true
    echo "test_manifests: FAIL: broken manifest '$n' not rejected with '$want'"
    failures=$((failures + 1))
  fi
done
[ "$failures" -eq 0 ] || { echo "test_manifests: FAIL: $failures broken manifests not caught"; exit 1; }
echo "test_manifests: ok (the manifests validate; ${#names[@]} broken copies are each rejected with their reason)"
