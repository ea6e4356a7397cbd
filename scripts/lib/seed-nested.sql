-- Synthetic data for the nested read graph: {{registries}} registries x {{servers}} servers x
-- {{instances}} instances, each instance with its deploy operation (2 log lines) and {{metrics}}
-- monitoring samples, spread over 3 clusters. Used by tests/it/read_graph.rs and scripts/bench-nested,
-- which replace the {{...}} placeholders with numbers.
--
-- Additive: each run adds {{registries}} new registries and fills only rows that have no children
-- yet, so it can be run again on the same database to grow it.

INSERT INTO clusters (name, endpoint, status, version, access_level, simulated, capabilities)
SELECT 'bench-cluster-' || c, 'https://bench-cluster-' || c || '.example:6443', 'connected',
       'v1.31.0', 'deploy', true, ARRAY['apps/v1', 'core/v1']
FROM generate_series(1, 3) AS c
ON CONFLICT DO NOTHING;

INSERT INTO registries (name, url, description, status, format, server_count, last_sync_at)
SELECT 'bench-reg-' || lpad((base.n + r)::text, 5, '0'),
       'https://registry.example.com/bench/' || (base.n + r) || '.json',
       'Synthetic registry ' || (base.n + r), 'active', 'toolhive', {{servers}}, now()
FROM generate_series(1, {{registries}}) AS r
CROSS JOIN (SELECT count(*) AS n FROM registries) AS base;

INSERT INTO servers (registry_id, name, original_name, description, version, image, transport,
                     tier, status, category, capabilities, repository_url, pull_count, stars,
                     last_updated)
SELECT reg.id,
       'server-' || lpad(s::text, 5, '0'),
       'server-' || lpad(s::text, 5, '0'),
       'Synthetic MCP server ' || s || ' for ' || (ARRAY['databases', 'source control', 'monitoring', 'search', 'cloud'])[1 + s % 5],
       '1.' || (s % 10) || '.0',
       'ghcr.io/example/server-' || s || ':1.' || (s % 10) || '.0',
       (ARRAY['stdio', 'http', 'sse'])[1 + s % 3],
       (ARRAY['official', 'community'])[1 + s % 2],
       (ARRAY['available', 'available', 'available', 'experimental', 'deprecated'])[1 + s % 5],
       ARRAY[(ARRAY['database', 'git', 'monitoring', 'search', 'cloud'])[1 + s % 5], 'tier-' || (s % 3)],
       ARRAY['tool_' || (s % 7), 'tool_' || (s % 11), 'list_items'],
       'https://github.com/example/server-' || s,
       (s * 7919) % 100000,
       (s * 104729) % 5000,
       CASE WHEN s % 10 = 0 THEN NULL ELSE now() - make_interval(hours => s) END
FROM registries AS reg
CROSS JOIN generate_series(1, {{servers}}) AS s
WHERE reg.name LIKE 'bench-reg-%'
  AND NOT EXISTS (SELECT 1 FROM servers x WHERE x.registry_id = reg.id);

INSERT INTO instances (server_id, cluster_id, name, namespace, status, phase, replicas_desired,
                       replicas_current, replicas_ready, deployed_at, health_status, created_at)
SELECT sv.id, cl.id,
       'inst-' || substr(replace(sv.id::text, '-', ''), 1, 16) || '-' || i,
       'team-' || ((hashtext(sv.id::text) & 2147483647) % 4),
       'running', 'ready', 1, 1, 1,
       now() - interval '1 day', 'healthy',
       now() - interval '1 day' + make_interval(secs => i)
FROM servers AS sv
CROSS JOIN generate_series(1, {{instances}}) AS i
JOIN (SELECT id, row_number() OVER (ORDER BY name) - 1 AS n
      FROM clusters WHERE name LIKE 'bench-cluster-%') AS cl
  ON cl.n = ((hashtext(sv.id::text) & 2147483647) + i) % 3
WHERE sv.name LIKE 'server-%'
  AND NOT EXISTS (SELECT 1 FROM instances x WHERE x.server_id = sv.id);

INSERT INTO deployments (instance_id, server_id, operation, initiated_by, status, started_at,
                         completed_at, parameters, steps)
SELECT i.id, i.server_id, 'deploy', 'bench', 'completed', i.created_at,
       i.created_at + interval '1 minute', '{"replicas": 1}'::jsonb,
       jsonb_build_array(jsonb_build_object('name', 'apply-deployment', 'status', 'succeeded',
                                            'at', i.created_at + interval '1 minute'))
FROM instances AS i
WHERE i.name LIKE 'inst-%'
  AND NOT EXISTS (SELECT 1 FROM deployments x WHERE x.instance_id = i.id);

INSERT INTO deployment_logs (deployment_id, logged_at, level, message)
SELECT d.id, d.started_at + make_interval(secs => k), 'info',
       (ARRAY['applying the deployment', 'rollout complete'])[k]
FROM deployments AS d
CROSS JOIN generate_series(1, 2) AS k
WHERE d.initiated_by = 'bench'
  AND NOT EXISTS (SELECT 1 FROM deployment_logs x WHERE x.deployment_id = d.id);

INSERT INTO monitoring_metrics (instance_id, "timestamp", cpu_usage, memory_usage, network_io,
                                request_count, response_time, error_rate, health_checks)
SELECT i.id, date_trunc('minute', now()) - make_interval(mins => k),
       (k * 7 + (hashtext(i.id::text) & 2147483647)) % 100, 50000000 + k * 1024,
       jsonb_build_object('ingressBytes', k * 100, 'egressBytes', k * 50),
       k * 3, 10 + k % 40, (k % 5)::float8 / 10, '{"liveness": "ok"}'::jsonb
FROM instances AS i
CROSS JOIN generate_series(0, {{metrics}} - 1) AS k
WHERE i.name LIKE 'inst-%'
  AND NOT EXISTS (SELECT 1 FROM monitoring_metrics x WHERE x.instance_id = i.id);

ANALYZE registries, servers, clusters, instances, deployments, deployment_logs, monitoring_metrics;
