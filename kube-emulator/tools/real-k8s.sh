#!/usr/bin/env bash
# Copied from the project's shared tools (shared/tools/real-k8s.sh); used by scripts/test for the
# real-cluster tier of the emulator scenarios (kube-emulator/tests/real_cluster.rs).
# A real Kubernetes control plane for fidelity checks: etcd (Debian) + kube-apiserver and
# kube-controller-manager v1.20.2 built from Debian's `kubernetes` source package, plus a tiny fake
# kubelet that marks pods Running/Ready (no real containers: no logs, no metrics).
#   real-k8s.sh build          # once per machine, 5-11 min (Debian 12: golang-go, etcd-server, the kubernetes source package)
#   real-k8s.sh start DIR      # writes DIR/kubeconfig, DIR/pids
#   real-k8s.sh stop DIR
set -euo pipefail
CACHE="${REALK8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/real-k8s}"
BIN="${REALK8S_BIN:-$CACHE/src/kubernetes-1.20.2/_output/bin}"
cmd="${1:-}"; dir="${2:-}"

build() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && { echo "already built: $BIN"; return; }
  apt-get update -qq && apt-get install -y -qq golang-go etcd-server rsync golang-github-modern-go-reflect2-dev openssl >/dev/null
  mkdir -p "$CACHE/src" && cd "$CACHE/src"
  if [ ! -d kubernetes-1.20.2 ]; then
    src_list=/etc/apt/sources.list.d/real-k8s-src.sources
    # deb-src from the same Debian mirror the machine's apt sources already use
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    [ -n "$uri" ] || uri=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" > "$src_list"
    apt-get update -qq
    apt-get source --download-only kubernetes >/dev/null
    rm -f "$src_list"; apt-get update -qq
    tar xzf kubernetes_*.orig.tar.gz
  fi
  cd kubernetes-1.20.2
  # Go >= 1.18: the vendored reflect2 1.0.1 crashes the apiserver; replace it with Debian's 1.0.2.
  r=vendor/github.com/modern-go/reflect2
  rm -f "$r"/*.go "$r"/*.s
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$r"/
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r"/ 2>/dev/null || true
  export GOPATH="$CACHE/gopath" CGO_ENABLED=0 GOPROXY=off GOFLAGS=
  mkdir -p "$GOPATH/src/k8s.io" && ln -sfn "$PWD" "$GOPATH/src/k8s.io/kubernetes"
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >/dev/null
  echo "built: $BIN"
}

start() {
  [ -n "$dir" ] || { echo "usage: $0 start DIR"; exit 2; }
  mkdir -p "$dir"; cd "$dir"
  free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
  ec=$(free_port); ep=$(free_port); ap=$(free_port); cp=$(free_port)
  openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  echo 'real-k8s-token,admin,uid-admin,"system:masters"' > tokens.csv
  etcd --data-dir etcd-data --listen-client-urls "http://127.0.0.1:$ec" --advertise-client-urls "http://127.0.0.1:$ec" \
    --listen-peer-urls "http://127.0.0.1:$ep" --initial-advertise-peer-urls "http://127.0.0.1:$ep" \
    --initial-cluster "default=http://127.0.0.1:$ep" >etcd.log 2>&1 & echo $! > pids
  sleep 1
  "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ec" --bind-address=127.0.0.1 --secure-port="$ap" \
    --advertise-address=127.0.0.1 --cert-dir=certs --token-auth-file=tokens.csv \
    --service-account-issuer=https://kubernetes.default.svc --service-account-signing-key-file=sa.key \
    --service-account-key-file=sa.pub --service-cluster-ip-range=10.96.0.0/24 \
    --authorization-mode=AlwaysAllow --disable-admission-plugins=ServiceAccount >apiserver.log 2>&1 & echo $! >> pids
  cat > kubeconfig <<KC
apiVersion: v1
kind: Config
clusters: [{name: real, cluster: {server: "https://127.0.0.1:$ap", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: real-k8s-token}}]
contexts: [{name: real, context: {cluster: real, user: admin, namespace: default}}]
current-context: real
KC
  for _ in $(seq 1 100); do kubectl --kubeconfig kubeconfig get --raw /readyz >/dev/null 2>&1 && break; sleep 0.2; done
  "$BIN/kube-controller-manager" --kubeconfig=kubeconfig --leader-elect=false \
    --controllers=deployment,replicaset,statefulset,garbagecollector,namespace --bind-address=127.0.0.1 \
    --secure-port="$cp" --port=0 >kcm.log 2>&1 & echo $! >> pids
  python3 - "$ap" >kubelet.log 2>&1 <<'PY' & echo $! >> pids
import json, ssl, sys, time, urllib.request, datetime
base = f"https://127.0.0.1:{sys.argv[1]}"; ctx = ssl._create_unverified_context()
H = {"Authorization": "Bearer real-k8s-token"}
def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(base + path, method=method, headers=dict(H, **{"Content-Type": ctype}),
                                 data=json.dumps(body).encode() if body is not None else None)
    return json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
n = 0
while True:
    try:
        for p in call("GET", "/api/v1/pods")["items"]:
            st = p.get("status", {}); md = p["metadata"]
            if md.get("deletionTimestamp"):
                call("DELETE", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}", {"gracePeriodSeconds": 0}); continue
            if st.get("phase") == "Running": continue
            now = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"); n += 1
            conds = [{"type": t, "status": "True", "lastTransitionTime": now} for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
            cs = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True, "started": True, "restartCount": 0,
                   "state": {"running": {"startedAt": now}}} for c in p["spec"]["containers"]]
            call("PATCH", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}/status",
                 {"status": {"phase": "Running", "conditions": conds, "containerStatuses": cs, "podIP": f"10.244.0.{n % 250 + 2}",
                             "hostIP": "10.0.0.1", "startTime": now}}, "application/merge-patch+json")
    except Exception as e:
        print("kubelet:", e, flush=True)
    time.sleep(0.5)
PY
  echo "kubeconfig: $dir/kubeconfig"
}

stop() { [ -f "$dir/pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done < "$dir/pids"; }

case "$cmd" in build) build;; start) start;; stop) stop;; *) echo "usage: $0 build|start DIR|stop DIR"; exit 2;; esac
