#!/usr/bin/env python3
"""The side-by-side nested-query benchmark of scripts/bench.

Starts, on one seeded database: hivegraph with its read caches off ("cold") and on ("warm"),
PostGraphile v4 (and v5 when given), and the precomputed-response limit (examples/static_limit.rs
serving the bytes of a real hivegraph answer). Checks that every server answers the same data for
the same nested query shape (registries -> servers -> instances -> latest metrics), then measures
each with `hey` at a fixed concurrency, several runs interleaved so that machine noise hits every
target alike, and writes medians, raw runs and ratios as JSON.

Standard library only. Called by scripts/bench, which installs everything first.
"""

import argparse
import csv
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def log(msg):
    print(f"[bench-peers] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def post(url, body, headers=None, timeout=120):
    req = urllib.request.Request(
        url,
        data=body,
        headers={"content-type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def wait_ready(url, proc, logfile, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:  # answering at all (e.g. 405 to a GET) is ready
                return
            time.sleep(0.25)
        except Exception:
            time.sleep(0.25)
    with open(logfile) as f:
        tail = f.read()[-3000:]
    raise SystemExit(f"{url} did not become ready:\n{tail}")


class Target:
    def __init__(self, name, cmd, env, port, body, ready_path, workdir, cwd=None):
        self.name, self.port, self.body = name, port, body
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.logfile = os.path.join(workdir, f"{name}.log")
        self.bodyfile = os.path.join(workdir, f"{name}.body.json")
        with open(self.bodyfile, "wb") as f:
            f.write(body)
        log(f"starting {name} on port {port}")
        self.proc = subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            cwd=cwd,
            stdout=open(self.logfile, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.runs = []
        try:
            wait_ready(f"http://127.0.0.1:{port}{ready_path}", self.proc, self.logfile)
        except SystemExit:
            self.stop()
            raise

    def answer(self, headers=None):
        return json.loads(post(self.url, self.body, headers))

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def rss_mb(self):
        """Resident memory of the process tree's leader, in MiB."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        return None


def hey(target, seconds, concurrency, workdir, tag):
    out = os.path.join(workdir, f"{target.name}-{tag}.csv")
    with open(out, "w") as f:
        subprocess.run(
            ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST",
             "-T", "application/json", "-D", target.bodyfile, "-o", "csv", target.url],
            stdout=f, check=True,
        )
    rows = list(csv.DictReader(open(out)))
    ok = [r for r in rows if r.get("status-code") == "200"]
    lat = sorted(float(r["response-time"]) * 1000 for r in ok)
    span = max((float(r["offset"]) + float(r["response-time"]) for r in rows), default=seconds)

    def pct(p):
        if not lat:
            return None
        return round(lat[min(len(lat) - 1, max(0, int(round(p / 100 * len(lat))) - 1))], 2)

    return {
        "requests": len(rows),
        "non_200": len(rows) - len(ok),
        "rps": round(len(ok) / span, 2) if span else 0.0,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
    }


# --- the query shape, per server ---------------------------------------------------------------

def hivegraph_query(r, s, i):
    return """query Nested { registries(first: %d) { nodes { name
  servers(first: %d) { nodes { name
    instances(first: %d) { nodes { name
      latestMetrics { timestamp cpuUsage memoryUsage } } } } } } } }""" % (r, s, i)


def postgraphile_query(r, s, i, instance_order):
    return """query Nested { allRegistries(first: %d, orderBy: NAME_ASC) { nodes { name
  serversByRegistryId(first: %d, orderBy: NAME_ASC) { nodes { name
    instancesByServerId(first: %d, orderBy: %s) { nodes { name
      monitoringMetricsByInstanceId(first: 1, orderBy: TIMESTAMP_DESC) {
        nodes { timestamp cpuUsage memoryUsage } } } } } } } } }""" % (r, s, i, instance_order)


def ts(v):
    return round(dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp(), 3)


def metric(m):
    if m is None:
        return None
    return (ts(m["timestamp"]),
            None if m["cpuUsage"] is None else round(float(m["cpuUsage"]), 6),
            None if m["memoryUsage"] is None else int(m["memoryUsage"]))


def normalize_hivegraph(doc):
    assert not doc.get("errors"), doc.get("errors")
    return [
        (reg["name"], [
            (srv["name"], sorted(
                (ins["name"], metric(ins["latestMetrics"]))
                for ins in srv["instances"]["nodes"]))
            for srv in reg["servers"]["nodes"]])
        for reg in doc["data"]["registries"]["nodes"]
    ]


def normalize_postgraphile(doc):
    assert not doc.get("errors"), doc.get("errors")
    return [
        (reg["name"], [
            (srv["name"], sorted(
                (ins["name"], metric((ins["monitoringMetricsByInstanceId"]["nodes"] or [None])[0]))
                for ins in srv["instancesByServerId"]["nodes"]))
            for srv in reg["serversByRegistryId"]["nodes"]])
        for reg in doc["data"]["allRegistries"]["nodes"]
    ]


def counts(shape):
    servers = sum(len(s) for _, s in shape)
    instances = sum(len(i) for _, s in shape for _, i in s)
    metrics = sum(1 for _, s in shape for _, i in s for _, m in i if m is not None)
    return {"registries": len(shape), "servers": servers, "instances": instances,
            "latest_metrics": metrics}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db-url", required=True)
    ap.add_argument("--hivegraph", required=True)
    ap.add_argument("--static", required=True)
    ap.add_argument("--pgl4", help="directory with postgraphile@4 installed")
    ap.add_argument("--pgl5", help="directory with postgraphile@5 installed")
    ap.add_argument("--node22", help="a Node 22 binary, for PostGraphile v5")
    ap.add_argument("--registries", type=int, default=10)
    ap.add_argument("--servers", type=int, default=20)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="hg-bench-")
    targets = []
    failures = {}
    try:
        hg_body = json.dumps({"query": hivegraph_query(a.registries, a.servers, a.instances),
                              "operationName": "Nested"}).encode()
        hg_env = {"DATABASE_URL": a.db_url, "HIVEGRAPH_SYNC_SCHEDULER": "false",
                  "HIVEGRAPH_DB_POOL_SIZE": str(a.concurrency * 6), "RUST_LOG": "warn",
                  "HIVEGRAPH_DB_WAIT_MS": "5000",
                  # The per-user query-cost limit would answer most requests with RATE_LIMITED.
                  "HIVEGRAPH_RATE_LIMIT_PER_HOUR": "0", "HIVEGRAPH_RATE_LIMIT_PER_MINUTE": "0"}
        cold = Target("hivegraph_cold", [a.hivegraph, "serve"],
                      {**hg_env, "HIVEGRAPH_READ_CACHES": "off",
                       "HIVEGRAPH_LISTEN": f"127.0.0.1:{(p := free_port())}"},
                      p, hg_body, "/readyz", work)
        targets.append(cold)
        warm = Target("hivegraph_warm", [a.hivegraph, "serve"],
                      {**hg_env, "HIVEGRAPH_READ_CACHES": "on",
                       "HIVEGRAPH_LISTEN": f"127.0.0.1:{(p := free_port())}"},
                      p, hg_body, "/readyz", work)
        targets.append(warm)

        reference_doc = cold.answer()
        reference = normalize_hivegraph(reference_doc)
        shape = counts(reference)
        log(f"hivegraph answers {shape}")
        if shape["instances"] == 0 or shape["latest_metrics"] == 0:
            raise SystemExit("the seeded answer is empty: nothing to compare")
        # Statements of the peer query, and of a page a tenth the size: the count must not grow
        # with the rows. Each document is asked twice, so that the second answer is the
        # compiled path's (the executor answers a document first, see src/graphql/compiled).
        def statements(body):
            debug = {"x-hivegraph-debug": "sql"}
            first = json.loads(post(cold.url, body, debug)).get("extensions", {}).get("sqlStatements")
            then = json.loads(post(cold.url, body, debug)).get("extensions", {}).get("sqlStatements")
            return first, then
        small = json.dumps({"query": hivegraph_query(max(1, a.registries // 5), max(1, a.servers // 10),
                                                     1), "operationName": "Nested"}).encode()
        sql_executor, sql = statements(hg_body)
        sql_small_executor, sql_small = statements(small)
        if normalize_hivegraph(warm.answer()) != reference:
            raise SystemExit("hivegraph with caches on answers differently from caches off")

        # The limit serves the exact bytes of a real answer.
        limit_file = os.path.join(work, "answer.json")
        with open(limit_file, "wb") as f:
            f.write(post(warm.url, hg_body))
        p = free_port()
        limit = Target("limit", [a.static, f"127.0.0.1:{p}", limit_file], {}, p, hg_body,
                       "/readyz", work)
        targets.append(limit)

        peers = []
        if a.pgl4:
            peers.append(("postgraphile_v4", ["node", os.path.join(a.pgl4, "node_modules/.bin/postgraphile")], a.pgl4, "CREATED_AT_ASC"))
        if a.pgl5 and a.node22:
            peers.append(("postgraphile_v5", [a.node22, os.path.join(a.pgl5, "node_modules/.bin/postgraphile")], a.pgl5, "CREATED_AT_ASC"))
        for name, cmd, cwd, order in peers:
            p = free_port()
            body = json.dumps({"query": postgraphile_query(a.registries, a.servers, a.instances, order),
                               "operationName": "Nested"}).encode()
            if name == "postgraphile_v4":
                args = cmd + ["-c", a.db_url, "-s", "public", "-n", "127.0.0.1", "-p", str(p),
                              "--disable-query-log", "--no-setof-functions-contain-nulls"]
                env = {}
            else:
                args = cmd + ["-C", os.path.join(cwd, "graphile.config.mjs")]
                env = {"PGL_DATABASE_URL": a.db_url, "PGL_PORT": str(p)}
            try:
                t = Target(name, args, {**env, "NODE_ENV": "production"}, p, body, "/graphql", work, cwd=cwd)
            except SystemExit as e:
                failures[name] = str(e)[-1500:]
                log(f"{name} did not start: {failures[name][:300]}")
                continue
            try:
                theirs = normalize_postgraphile(t.answer())
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                failures[name] = f"bad answer: {e}"
                log(f"{name}: {failures[name][:500]}")
                t.stop()
                continue
            if theirs != reference:
                t.stop()
                raise SystemExit(f"{name} answers different data than hivegraph for the same query")
            log(f"{name} answers the same data")
            targets.append(t)

        for t in targets:  # warm-up: connections, JIT, caches
            hey(t, 2, a.concurrency, work, "warmup")
        for run in range(a.runs):
            for t in targets:
                r = hey(t, a.duration, a.concurrency, work, f"run{run}")
                r["rss_mb_after"] = t.rss_mb()
                t.runs.append(r)
                log(f"run {run + 1}/{a.runs} {t.name}: {r['rps']} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")

        # hey counts HTTP statuses only: check that answers are still complete after the load.
        if normalize_hivegraph(cold.answer()) != reference or normalize_hivegraph(warm.answer()) != reference:
            raise SystemExit("hivegraph's answer changed under load (rate limit or errors?)")
        results = {}
        for t in targets:
            results[t.name] = {
                "median_rps": statistics.median(r["rps"] for r in t.runs),
                "median_p50_ms": statistics.median(r["p50_ms"] for r in t.runs),
                "median_p99_ms": statistics.median(r["p99_ms"] for r in t.runs),
                "non_200": sum(r["non_200"] for r in t.runs),
                "runs": t.runs,
            }

        def ratio(x, y):
            if x in results and y in results and results[y]["median_rps"]:
                return round(results[x]["median_rps"] / results[y]["median_rps"], 2)
            return None

        summary = {
            "benchmark": "nested_query_vs_peers",
            "query_shape": "registries -> servers -> instances -> latest metrics",
            "query_page": {"registries": a.registries, "servers": a.servers, "instances": a.instances},
            "answer": shape,
            "answer_bytes": os.path.getsize(limit_file),
            "sql_statements": sql,
            "sql_statements_small_page": sql_small,
            "sql_statements_executor": sql_executor,
            "sql_statements_small_page_executor": sql_small_executor,
            "duration_seconds": a.duration,
            "concurrency": a.concurrency,
            "runs": a.runs,
            "targets": results,
            "ratios": {
                "hivegraph_cold_over_postgraphile_v4": ratio("hivegraph_cold", "postgraphile_v4"),
                "hivegraph_cold_over_postgraphile_v5": ratio("hivegraph_cold", "postgraphile_v5"),
                "hivegraph_warm_over_postgraphile_v4": ratio("hivegraph_warm", "postgraphile_v4"),
                "hivegraph_warm_over_limit": ratio("hivegraph_warm", "limit"),
                "hivegraph_cold_over_limit": ratio("hivegraph_cold", "limit"),
            },
            "failures": failures,
        }
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=2)
        print(json.dumps(summary["ratios"]))
    finally:
        for t in targets:
            t.stop()


if __name__ == "__main__":
    main()
