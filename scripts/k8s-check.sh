#!/usr/bin/env bash
# `make k8s-check`: checks the Kubernetes manifests offline, without a cluster, kubectl or kustomize.
#
#   1. Renders k8s/ and k8s/with-jaeger with scripts/k8s_render.py (`resources:` + `images:`, like kustomize), and
#      checks that the two kustomizations' `images:` lists are equal.
#   2. Validates every rendered document strictly (unknown fields are errors) with kubernetes-validate, against
#      the oldest and the newest Kubernetes version it checks here.
#   3. Checks the manifests against the issue's requirements and builds each pod's environment as the kubelet
#      would (ConfigMap envFrom, env, $(POD_NAME), downward API, service links, HOSTNAME) for the node pods 0..3
#      (3 = a scale-up, which must join) and a proxy, and runs it through the binaries' own parsing:
#      `env -i ... reinado-node check-config`, `env -i ... reinado-proxy check-config` (scripts/k8s_check.py).
#   4. Self-test: deliberate mistakes (REINADO_DATA_DIRR in a pod's environment, `replicass` in a manifest, and
#      others) must be rejected, or the check has lost its teeth.
#
# Needs python3 (3.9+) with venv, PyPI (once: kubernetes-validate goes into target/k8s-venv), and the debug
# binaries (`make k8s-check` builds them; or set REINADO_NODE_BIN / REINADO_PROXY_BIN).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=target/k8s-venv
KUBERNETES_VALIDATE_VERSION=1.37.0
# The oldest Kubernetes the manifests support (native gRPC probes are GA since 1.27) and the newest bundled.
K8S_VERSIONS=(1.30.0 1.37.0)
NODE_BIN=${REINADO_NODE_BIN:-target/debug/reinado-node}
PROXY_BIN=${REINADO_PROXY_BIN:-target/debug/reinado-proxy}
OUT=target/k8s-check

for bin in "$NODE_BIN" "$PROXY_BIN"; do
    if [[ ! -x $bin ]]; then
        echo "k8s-check: $bin is missing: cargo build -p reinado-node -p reinado-proxy --bins (make k8s-check does)" >&2
        exit 1
    fi
done

# The venv, created (or re-created, if broken or of another version) only when needed.
if [[ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]] ||
    ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
    echo "k8s-check: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "PyYAML>=6"
fi
PY=$VENV/bin/python
VALIDATE=$VENV/bin/kubernetes-validate

rm -rf "$OUT"
mkdir -p "$OUT"

# 1. Render.
"$PY" scripts/k8s_render.py k8s >"$OUT/k8s.yaml"
"$PY" scripts/k8s_render.py k8s/with-jaeger >"$OUT/with-jaeger.yaml"
"$PY" scripts/k8s_check.py images k8s/kustomization.yaml k8s/with-jaeger/kustomization.yaml
for f in "$OUT/k8s.yaml" "$OUT/with-jaeger.yaml"; do
    echo "k8s-check: rendered $f: $(grep -c '^kind:' "$f") documents"
done

# 2. Validate strictly. kubernetes-validate exits non-zero on any invalid document.
validate() {
    local v
    for v in "${K8S_VERSIONS[@]}"; do
        "$VALIDATE" --strict --quiet --kubernetes-version "$v" "$@" || return 1
    done
}
validate "$OUT/k8s.yaml" "$OUT/with-jaeger.yaml"
echo "k8s-check: kubernetes-validate --strict: every document valid for Kubernetes ${K8S_VERSIONS[*]}"

# 3. Requirements, and each pod's environment through the binaries' check-config.
CHECK=("$PY" scripts/k8s_check.py --node-bin "$NODE_BIN" --proxy-bin "$PROXY_BIN")
"${CHECK[@]}" check "$OUT/k8s.yaml" "$OUT/with-jaeger.yaml"

# 4. Self-test: the check must reject deliberate mistakes.
sed 's/^\(\s*\)replicas:/\1replicass:/' "$OUT/k8s.yaml" >"$OUT/selftest-replicass.yaml"
grep -q 'replicass:' "$OUT/selftest-replicass.yaml"
if validate "$OUT/selftest-replicass.yaml" >"$OUT/selftest-replicass.log" 2>&1; then
    echo "k8s-check: FAILED: self-test: kubernetes-validate accepted \`replicass\`: the validation has lost its teeth" >&2
    exit 1
fi
if ! grep -q "'replicass' was unexpected" "$OUT/selftest-replicass.log"; then
    echo "k8s-check: FAILED: self-test: \`replicass\` was rejected, but not for the typo:" >&2
    cat "$OUT/selftest-replicass.log" >&2
    exit 1
fi
echo "k8s-check: self-test: replicass: rejected by kubernetes-validate --strict"
"${CHECK[@]}" selftest "$OUT/k8s.yaml"

echo "k8s-check: ok"
