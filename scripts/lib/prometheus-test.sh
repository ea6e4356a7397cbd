#!/usr/bin/env bash
# Observability against the real tools: two gateway processes on one database, scraped by
# Debian's Prometheus (2.42) with deploy/prometheus/alerts.yaml loaded, and exporting traces
# over OTLP/HTTP to a small receiver (scripts/lib/otlp_receiver.py, PyPI opentelemetry-proto).
# Checks:
#   - `up` is 1 for both targets; PromQL over the new series answers (subscriptions summed
#     across the replicas after opening 3 + 2, build info, pool, syncs, statement latency,
#     process metrics) and Prometheus loaded the 8 alert rules;
#   - `promtool check metrics` is clean on a busy gateway's classic-format /metrics, and
#     OpenMetrics is served to a scraper that asks for it;
#   - a request with a W3C traceparent arrives at the receiver as a trace continuing that id:
#     the HTTP server span's parent is the caller's span, with a GraphQL operation span (name,
#     kind) and SQL statement spans below it; no variable value appears in any span.
#   - a deploy started by a request with a traceparent runs its driver in a span of that trace,
#     linked to the request's span, with the Kubernetes API calls as its client spans.
# Needs: prometheus and promtool (Debian package `prometheus`), python3-venv, PostgreSQL on
# 127.0.0.1:5432 (role hivegraph), node with tests/js/node_modules, built target/debug/hivegraph
# and target/debug/kube-emulator.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WORK="$ROOT/target/prometheus-test"
# Left behind for a look after a failure (scripts/test drops every hg_test_* database when it
# starts; dropping one forces a checkpoint, 20 s on a busy machine).
DB=hg_test_observability
VENV="$ROOT/target/observability-venv"
rm -rf "$WORK"
mkdir -p "$WORK"
PIDS=()
if [ "$(id -u)" = 0 ]; then as_pg() { su postgres -c "$1"; }; else as_pg() { sudo -u postgres sh -c "$1"; }; fi
cleanup() {
  # All at once: each gateway's graceful shutdown runs beside the others'.
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
phase() { echo "[${SECONDS}s] $*"; }
fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 150); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; fail "$1 did not answer"; }

phase "the OTLP receiver"
# --- the OTLP receiver -----------------------------------------------------------------------
[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import opentelemetry.proto' 2>/dev/null \
  || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'opentelemetry-proto==1.*'; } || fail "pip install opentelemetry-proto"
OTLP_PORT=$(free_port)
SPANS="$WORK/spans.jsonl"
"$VENV/bin/python" scripts/lib/otlp_receiver.py "$OTLP_PORT" "$SPANS" >"$WORK/receiver.log" 2>&1 &
PIDS+=($!)

phase "the simulated cluster and two gateways"
# --- the simulated cluster and two gateways ----------------------------------------------------
KUBECONFIG_FILE="$WORK/kubeconfig"
target/debug/kube-emulator --listen "127.0.0.1:$(free_port)" --kubeconfig "$KUBECONFIG_FILE" \
  --scenario-speed 20 --no-auth --no-tls >"$WORK/kube-emulator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$KUBECONFIG_FILE" ] && break; sleep 0.1; done
[ -s "$KUBECONFIG_FILE" ] || fail "kube-emulator did not start"
as_pg "dropdb --if-exists $DB; createdb -O hivegraph $DB" >/dev/null
GW=()
for name in a b; do
  port=$(free_port)
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" OTEL_SERVICE_NAME="hivegraph-$name" OTEL_BSP_SCHEDULE_DELAY=200 \
    HIVEGRAPH_ALLOW_FILE_REGISTRIES=true HIVEGRAPH_ALLOW_PRIVATE_REGISTRIES=true KUBECONFIG="$KUBECONFIG_FILE" \
    DATABASE_URL="postgres://hivegraph:hivegraph@127.0.0.1:5432/$DB" HIVEGRAPH_LISTEN="127.0.0.1:$port" \
    RUST_LOG=warn target/debug/hivegraph serve >"$WORK/gateway-$name.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/readyz"
  GW+=("127.0.0.1:$port")
done
A="http://${GW[0]}" B="http://${GW[1]}"
gql() { curl -fsS "$1/graphql" -H 'content-type: application/json' "${@:3}" -d "$2"; }

phase "a registry synced"
# A registry of three servers, synced through gateway A.
python3 - "$WORK/registry.json" <<'EOF'
import json, sys
for d in ("../shared", "/work/shared"):
    try:
        full = json.load(open(f"{d}/data/toolhive-registry.json"))
        break
    except OSError:
        continue
else:
    sys.exit("shared/data/toolhive-registry.json not found")
small = {k: v for k, v in full.items() if k != "servers"}
# Three servers without required environment variables: deployable as they are.
plain = [(k, v) for k, v in full["servers"].items() if not any(e.get("required") for e in v.get("env_vars") or [])]
small["servers"] = dict(plain[:3])
small["remote_servers"] = {}
json.dump(small, open(sys.argv[1], "w"))
EOF
REG=$(gql "$A" "{\"query\":\"mutation { createRegistry(input: { name: \\\"observed\\\", url: \\\"file://$WORK/registry.json\\\" }) { id } }\"}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["createRegistry"]["id"])') || fail "createRegistry"
gql "$A" "{\"query\":\"mutation { syncRegistry(id: \\\"$REG\\\") { id } }\"}" >/dev/null || fail "syncRegistry"
for _ in $(seq 1 100); do
  gql "$A" '{"query":"{ servers { totalCount } }"}' | grep -q '"totalCount":3' && break; sleep 0.2
done
gql "$A" '{"query":"{ servers { totalCount } }"}' | grep -q '"totalCount":3' || fail "the registry did not sync"

phase "subscriptions"
# Subscriptions: 3 on A, 2 on B, held open while Prometheus scrapes.
exec {HOLD}> >(cd tests/js && exec node hold-subscriptions.mjs "$REG" "$A:3" "$B:2" >"$WORK/hold.log" 2>&1)
PIDS+=($!)
for _ in $(seq 1 100); do grep -q ready "$WORK/hold.log" 2>/dev/null && break; sleep 0.2; done
grep -q ready "$WORK/hold.log" || fail "subscriptions did not start: $(cat "$WORK/hold.log")"

# Some traffic: queries on both, one refused by validation.
for g in "$A" "$B"; do
  for _ in 1 2 3; do gql "$g" '{"query":"query Listing { servers(first: 5) { totalCount } }"}' >/dev/null; done
  gql "$g" '{"query":"query Broken { nope }"}' >/dev/null || true
done

phase "promtool check metrics"
# --- promtool on a busy gateway's /metrics ---------------------------------------------------
curl -fsS "$A/metrics" -D "$WORK/classic.headers" -o "$WORK/classic.txt" || fail "GET /metrics"
grep -qi '^content-type: text/plain; version=0.0.4' "$WORK/classic.headers" || fail "the default format is not the classic one"
promtool check metrics <"$WORK/classic.txt" >"$WORK/promtool.log" 2>&1 || fail "promtool check metrics: $(cat "$WORK/promtool.log")"
[ ! -s "$WORK/promtool.log" ] || fail "promtool check metrics reported: $(cat "$WORK/promtool.log")"
grep -q '^hivegraph_subscriptions{field="registrySync"} 3$' "$WORK/classic.txt" || fail "gateway A does not count its 3 subscriptions"
curl -fsS "$A/metrics" -H 'Accept: application/openmetrics-text; version=1.0.0' -D "$WORK/om.headers" -o "$WORK/om.txt"
grep -qi '^content-type: application/openmetrics-text' "$WORK/om.headers" || fail "OpenMetrics was asked for and not served"
tail -1 "$WORK/om.txt" | grep -qx '# EOF' || fail "the OpenMetrics answer does not end with # EOF"

phase "Prometheus"
# --- Prometheus ------------------------------------------------------------------------------
PROM_PORT=$(free_port)
cp deploy/prometheus/alerts.yaml "$WORK/alerts.yaml"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yaml]
scrape_configs:
  - job_name: hivegraph
    static_configs:
      - targets: ["${GW[0]}", "${GW[1]}"]
EOF
promtool check config "$WORK/prometheus.yml" >"$WORK/promtool-config.log" 2>&1 || fail "promtool check config"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PROM_PORT/-/ready"
# Prints the value of an instant query's only sample (or of the sum of its samples: `sum`).
promql() {
  curl -fsS "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(" ".join(s["value"][1] for s in r))'
}
expect() {  # expect "description" "query" "python condition on v (a list of floats)"
  local got=""
  for _ in $(seq 1 60); do
    got=$(promql "$2" 2>/dev/null || true)
    python3 -c "v=[float(x) for x in '$got'.split()]; import sys; sys.exit(0 if ($3) else 1)" 2>/dev/null && { echo "ok: $1 ($2 = $got)"; return 0; }
    sleep 0.5
  done
  fail "$1: $2 = '$got', expected $3"
}
expect "both replicas are up" 'up{job="hivegraph"}' 'v == [1.0, 1.0]'
expect "subscriptions summed over the replicas" 'sum(hivegraph_subscriptions{field="registrySync"})' 'v == [5.0]'
expect "websockets by protocol, both replicas" 'sum by (protocol) (hivegraph_websockets)' 'sorted(v) == [0.0, 2.0]'
expect "build info of both" 'count(hivegraph_build_info == 1)' 'v == [2.0]'
expect "pool size of both" 'sum(hivegraph_db_pool_size)' 'len(v) == 1 and v[0] > 0'
expect "a successful sync" 'sum(hivegraph_registry_syncs_total{registry="observed", outcome="success"})' 'v == [1.0]'
expect "servers the sync added" 'sum(hivegraph_registry_sync_servers_total{change="added"})' 'v == [3.0]'
expect "read statement p50" 'histogram_quantile(0.5, sum by (le) (rate(hivegraph_db_statement_duration_seconds_bucket{kind="read"}[1m])))' 'len(v) == 1 and 0 < v[0] < 5'
expect "queries counted by name" 'sum(hivegraph_graphql_requests_total{operation="Listing", outcome="ok"})' 'v == [6.0]'
expect "resident memory" 'min(process_resident_memory_bytes{job="hivegraph"})' 'len(v) == 1 and v[0] > 1e6'
expect "ready replicas" 'sum(hivegraph_ready)' 'v == [2.0]'
rules=$(curl -fsS "http://127.0.0.1:$PROM_PORT/api/v1/rules" | python3 -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
[ "$rules" = 8 ] || fail "Prometheus loaded $rules alert rules, not 8"
echo "ok: Prometheus loaded the 8 alert rules"
firing=$(curl -fsS "http://127.0.0.1:$PROM_PORT/api/v1/alerts" | python3 -c 'import json,sys; print(" ".join(a["labels"]["alertname"] for a in json.load(sys.stdin)["data"]["alerts"]))')
[ -z "$firing" ] || fail "alerts fire on healthy gateways: $firing"

phase "traces"
# --- traces ----------------------------------------------------------------------------------
TRACE=4bf92f3577b34da6a3ce929d0e0e4736 PARENT=00f067aa0ba902b7
gql "$A" '{"query":"query Traced($first: Int, $name: String) { servers(first: $first, search: $name) { totalCount } }","variables":{"first":2,"name":"canary-9f1c7d"}}' \
  -H "traceparent: 00-$TRACE-$PARENT-01" >/dev/null || fail "the traced request failed"
for _ in $(seq 1 50); do grep -q "$TRACE" "$SPANS" 2>/dev/null && grep -q '"SQL ' "$SPANS" && break; sleep 0.2; done
sleep 1
python3 - "$SPANS" "$TRACE" "$PARENT" <<'EOF' || fail "the trace is not as expected"
import json, sys
path, trace, parent = sys.argv[1:]
text = open(path).read()
assert "canary-9f1c7d" not in text, "a variable value was exported in a span"
spans = [s for s in map(json.loads, text.splitlines()) if s["trace_id"] == trace]
by_id = {s["span_id"]: s for s in spans}
http = [s for s in spans if s["name"] == "POST /graphql"]
assert len(http) == 1 and http[0]["parent_id"] == parent, f"no HTTP span continuing the caller's: {spans}"
assert http[0]["kind"] == 2 and http[0]["attributes"]["http.response.status_code"] in (200, "200")
ops = [s for s in spans if s["name"] == "query Traced"]
assert len(ops) == 1 and ops[0]["parent_id"] == http[0]["span_id"], "no GraphQL span under the HTTP span"
assert ops[0]["attributes"]["graphql.operation.type"] == "query"
assert ops[0]["attributes"]["graphql.operation.name"] == "Traced"
sql = [s for s in spans if s["name"].startswith("SQL ") and s["parent_id"] == ops[0]["span_id"]]
assert sql, "no SQL span under the GraphQL span"
assert all(s["kind"] == 3 and s["attributes"]["db.system"] == "postgresql" for s in sql)
assert any("servers" in s["attributes"]["db.statement"] for s in sql)
assert all(s["service"] == "hivegraph-a" for s in spans)
print(f"ok: trace {trace}: HTTP span <- caller, GraphQL span, {len(sql)} SQL spans; no variable values")
EOF
phase "a traced deploy"
# A deploy: the driver continues the request's trace, linked to it; Kubernetes calls below it.
TRACE2=0af7651916cd43dd8448eb211c80319c PARENT2=b7ad6b7169203331
CLUSTER=$(gql "$A" '{"query":"mutation { registerCluster(input: {name: \"emu\", context: \"kube-emulator\"}) { id status } }"}' \
  | python3 -c 'import json,sys; c=json.load(sys.stdin)["data"]["registerCluster"]; assert c["status"]=="CONNECTED", c; print(c["id"])') || fail "registerCluster"
SERVER=$(gql "$A" '{"query":"{ servers(first: 1) { edges { node { id } } } }"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["servers"]["edges"][0]["node"]["id"])') || fail "servers"
gql "$A" "{\"query\":\"mutation(\$i: DeployServerInput!) { deployServer(input: \$i) { id } }\",\"variables\":{\"i\":{\"serverId\":\"$SERVER\",\"clusterId\":\"$CLUSTER\",\"namespace\":\"hivegraph\",\"name\":\"traced\"}}}" \
  -H "traceparent: 00-$TRACE2-$PARENT2-01" >"$WORK/deploy.json" || fail "deployServer"
grep -q '"deployServer":{"id"' "$WORK/deploy.json" || fail "deployServer: $(cat "$WORK/deploy.json")"
expect "the cluster's status" 'max(hivegraph_cluster_status{cluster="emu", status="connected"})' 'v == [1.0]'
expect "the deploy counted when it ends" 'sum(hivegraph_operations_total{kind="deploy"})' 'v == [1.0]'
for _ in $(seq 1 50); do grep -q '"operation driver"' "$SPANS" && break; sleep 0.2; done
python3 - "$SPANS" "$TRACE2" "$PARENT2" <<'EOF' || fail "the driver's trace is not as expected"
import json, sys
path, trace, parent = sys.argv[1:]
spans = [s for s in map(json.loads, open(path).read().splitlines()) if s["trace_id"] == trace]
by_id = {s["span_id"]: s for s in spans}
http = [s for s in spans if s["name"] == "POST /graphql" and s["parent_id"] == parent]
assert len(http) == 1, f"no HTTP span continuing the caller's: {[s['name'] for s in spans]}"
drivers = [s for s in spans if s["name"] == "operation driver"]
assert len(drivers) == 1, f"no driver span in the request's trace: {[s['name'] for s in spans]}"
links = drivers[0]["links"]
assert any(l["trace_id"] == trace and l["span_id"] in by_id for l in links), f"the driver is not linked to the request: {links}"
def under(s, ancestor):
    while s["parent_id"] in by_id:
        if s["parent_id"] == ancestor:
            return True
        s = by_id[s["parent_id"]]
    return False
assert under(drivers[0], http[0]["span_id"]), "the driver span is not in the request's span tree"
k8s = [s for s in spans if s["kind"] == 3 and "http.url" in s["attributes"] and under(s, drivers[0]["span_id"])]
assert k8s, "no Kubernetes API span under the driver"
print(f"ok: deploy in trace {trace}: driver span linked to the request, {len(k8s)} Kubernetes API spans below it")
EOF
phase "observability checks passed"
