// Replicas that survive each other, and a database that restarts: real gateway processes
// (HIVEGRAPH_BIN) on one PostgreSQL that this test owns (it stops and starts it), with the
// simulated cluster (EMULATOR_BIN), and the npm graphql-ws client. Run by
// scripts/lib/replicas-test.sh, which creates that PostgreSQL; see the README ("Running on
// Kubernetes", "What is tested").
//
// Env: HIVEGRAPH_BIN, EMULATOR_BIN, PG_URL (the owned database), PG_STOP and PG_START (shell
// commands that stop and start that PostgreSQL), WORK (a directory for logs).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execSync } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, openSync } from 'node:fs';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';

const { HIVEGRAPH_BIN, EMULATOR_BIN, PG_URL, PG_STOP, PG_START, WORK } = process.env;
const skip = !HIVEGRAPH_BIN || !EMULATOR_BIN || !PG_URL ? 'run by scripts/lib/replicas-test.sh' : false;
const LEASE_SECONDS = 2;
const procs = [];
after(() => { for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL'); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () => new Promise((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});
const psql = (sql) => execSync(`psql "${PG_URL}" -qtAc "${sql}"`, { encoding: 'utf8' }).trim();

function launch(name, cmd, args, env) {
  const log = openSync(`${WORK}/${name}.log`, 'a');
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', log, log] });
  p.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
  procs.push(p);
  return p;
}

async function until(what, ms, probe) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(100);
  }
}

async function startEmulator(speed) {
  const port = await freePort();
  const kubeconfig = `${WORK}/kubeconfig`;
  launch('kube-emulator', EMULATOR_BIN, ['--listen', `127.0.0.1:${port}`, '--kubeconfig', kubeconfig,
    '--scenario-speed', String(speed), '--no-auth', '--no-tls'], {});
  await until('kube-emulator starts', 10000, async () => existsSync(kubeconfig));
  return kubeconfig;
}

/** A gateway process; resolves once /readyz answers 200. */
async function startGateway(name, kubeconfig, env = {}) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = launch(name, HIVEGRAPH_BIN, ['serve'], {
    DATABASE_URL: PG_URL, HIVEGRAPH_LISTEN: `127.0.0.1:${port}`, KUBECONFIG: kubeconfig,
    HIVEGRAPH_K8S_LEASE_SECONDS: String(LEASE_SECONDS), HIVEGRAPH_K8S_POLL_MS: '300',
    HIVEGRAPH_MONITORING: 'false', HIVEGRAPH_SYNC_SCHEDULER: 'false', RUST_LOG: 'info', ...env,
  });
  await until(`gateway ${name} ready`, 30000, async () => (await fetch(url + '/readyz')).ok);
  return { name, url, proc, ws: url.replace(/^http/, 'ws') + '/graphql' };
}

async function post(base, query, variables = {}) {
  const res = await fetch(base + '/graphql', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }), signal: AbortSignal.timeout(10000),
  });
  return res.json();
}
async function gql(base, query, variables) {
  const body = await post(base, query, variables);
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

/** A graphql-ws subscription whose messages (and close events) land in `seen`. */
function subscribe(urls, query, variables) {
  let i = 0;
  const seen = { data: [], closes: [], connects: 0, errors: [] };
  const client = createClient({
    url: () => urls[i++ % urls.length], webSocketImpl: WebSocket,
    retryAttempts: 10, retryWait: () => sleep(200), shouldRetry: () => true,
    on: { closed: (e) => seen.closes.push(e.code), connected: () => { seen.connects += 1; } },
  });
  const dispose = client.subscribe({ query, variables }, {
    next: (v) => seen.data.push(v), error: (e) => seen.errors.push(e), complete: () => {},
  });
  seen.stop = async () => { dispose(); await client.dispose(); };
  return seen;
}

const PROGRESS = 'subscription($id: ID!) { deploymentProgress(deploymentId: $id) { status steps { name status } } }';
const STATUS = 'subscription($id: ID!) { instanceStatus(instanceId: $id) { status replicas { desired } } }';
const ORDER = ['INITIATED', 'IN_PROGRESS', 'COMPLETED'];

function seedServer(image) {
  psql(`INSERT INTO registries (name, url) VALUES ('reg', 'https://example.com/reg');
    INSERT INTO servers (registry_id, name, original_name, image, transport, deployment_requirements)
    SELECT id, 'web', 'io.example/web', '${image}', 'http', '{\\"targetPort\\": 9090}'::jsonb FROM registries WHERE name = 'reg'`);
  return psql("SELECT id FROM servers WHERE name = 'web'");
}

// One flow, three phases sharing the gateways: kill -9 mid-deploy, SIGTERM, database restart.
let gw = [];
let instanceId;

test('kill -9 of the replica driving a deploy: another one finishes it, once, seen in order by every subscriber', { skip, timeout: 120000 }, async () => {
  // A slow start (image pull 15 s, Ready at 30 s simulated) at 3x: the deploy takes ~10 s.
  const kubeconfig = await startEmulator(3);
  gw = await Promise.all(['a', 'b', 'c'].map((n) => startGateway(n, kubeconfig)));
  const cluster = await gql(gw[0].url, 'mutation { registerCluster(input: {name: "emu", context: "kube-emulator"}) { id status } }');
  assert.equal(cluster.registerCluster.status, 'CONNECTED');
  const rawServer = seedServer('ghcr.io/example/slow-start:1');
  const server = (await gql(gw[0].url, '{ servers(first: 1) { edges { node { id } } } }')).servers.edges[0].node.id;
  assert.ok(server && rawServer);
  const d = (await gql(gw[0].url, 'mutation($i: DeployServerInput!) { deployServer(input: $i) { id instanceId } }', {
    i: { serverId: server, clusterId: cluster.registerCluster.id, namespace: 'hivegraph', name: 'web' },
  })).deployServer;
  instanceId = d.instanceId;
  const opRaw = psql(`SELECT id FROM deployments WHERE instance_id = (SELECT id FROM instances WHERE name = 'web')`);

  // The driver: the process holding the lease, while the rollout is under way.
  const owner = await until('an in-progress deploy with a lease', 15000, async () =>
    psql(`SELECT lease_owner FROM deployments WHERE id = '${opRaw}' AND status = 'in_progress' AND lease_owner IS NOT NULL`) || undefined);
  const pid = Number(owner.split('/')[1]);
  const driver = gw.find((g) => g.proc.pid === pid);
  assert.ok(driver, `lease owner ${owner} is one of the gateways`);
  const survivors = gw.filter((g) => g !== driver);
  const subs = survivors.map((g) => subscribe([g.ws], PROGRESS, { id: d.id }));
  await until('subscribers have their first state', 10000, async () => subs.every((s) => s.data.length > 0));
  driver.proc.kill('SIGKILL');
  await driver.proc.exited;
  const killedAt = Date.now();
  assert.equal(psql(`SELECT status FROM deployments WHERE id = '${opRaw}'`), 'in_progress', 'killed mid-deploy');

  const done = await until('the deploy completes on a survivor', 60000, async () => {
    const o = (await gql(survivors[0].url, 'query($id: ID!) { deployment(id: $id) { status steps { name status } } }', { id: d.id })).deployment;
    return ['COMPLETED', 'FAILED', 'CANCELLED'].includes(o.status) ? o : undefined;
  });
  assert.equal(done.status, 'COMPLETED', JSON.stringify(done));
  assert.ok(Date.now() - killedAt < 30000);
  // Recorded once: one operation for the instance, no step twice.
  assert.equal(psql(`SELECT count(*) FROM deployments WHERE instance_id = (SELECT instance_id FROM deployments WHERE id = '${opRaw}')`), '1');
  // Each step succeeds once: the new driver resumes after the last finished step.
  const finished = done.steps.filter((s) => s.status === 'succeeded').map((s) => s.name);
  assert.deepEqual(finished, [...new Set(finished)], `no step done twice: ${JSON.stringify(done.steps)}`);

  await until('both subscribers see the end', 10000, async () =>
    subs.every((s) => s.data.at(-1)?.data?.deploymentProgress?.status === 'COMPLETED'));
  for (const s of subs) {
    const states = s.data.map((m) => m.data.deploymentProgress);
    const ranks = states.map((st) => ORDER.indexOf(st.status));
    assert.ok(ranks.every((r, i) => r >= 0 && (i === 0 || r >= ranks[i - 1])), `in order: ${JSON.stringify(states.map((x) => x.status))}`);
    const counts = states.map((st) => st.steps.length);
    assert.ok(counts.every((c, i) => i === 0 || c >= counts[i - 1]), `steps only grow: ${counts}`);
    assert.equal(s.errors.length, 0);
    await s.stop();
  }
  gw = survivors;
});

test('SIGTERM: unready at once, websockets closed with 1012, the client reconnects to another replica and is current, leases handed over', { skip, timeout: 60000 }, async () => {
  assert.equal(gw.length, 2, 'the first test left two gateways');
  const [leaving, staying] = gw;
  const sub = subscribe([leaving.ws, staying.ws], STATUS, { id: instanceId });
  await until('first state', 10000, async () => sub.data.length > 0);
  assert.equal(sub.data[0].data.instanceStatus.status, 'RUNNING');

  // The drain delay, on a fourth process: after SIGTERM /readyz answers 503 at once while
  // requests are still served; the process exits cleanly once the delay is over.
  const drained = await startGateway('d', `${WORK}/kubeconfig`, { HIVEGRAPH_DRAIN_DELAY_MS: '3000' });
  const termAt = Date.now();
  drained.proc.kill('SIGTERM');
  const unready = await until('/readyz 503 during the drain delay', 2000, async () => {
    const r = await fetch(drained.url + '/readyz');
    return r.status === 503 ? await r.text() : undefined;
  });
  assert.match(unready, /shutting down/);
  const served = await post(drained.url, '{ viewer { subject } }');
  assert.equal(served.data.viewer.subject, 'local', 'requests are still served during the drain delay');
  assert.deepEqual(await drained.proc.exited, { code: 0, signal: null });
  const took = Date.now() - termAt;
  assert.ok(took >= 2900 && took < 20000, `exited ${took} ms after SIGTERM`);

  const before = sub.data.length;
  leaving.proc.kill('SIGTERM');
  assert.deepEqual(await leaving.proc.exited, { code: 0, signal: null });
  await until('closed with 1012', 5000, async () => sub.closes.includes(1012));
  await until('reconnected', 10000, async () => sub.connects >= 2);
  // After reconnecting, the first payload is the current state.
  await until('current state after reconnecting', 10000, async () => sub.data.length > before);
  assert.equal(sub.data[before].data.instanceStatus.status, 'RUNNING');
  assert.equal(sub.data[before].data.instanceStatus.replicas.desired, 1);
  // ...and it is live: a change through the remaining replica arrives.
  const op = (await gql(staying.url, 'mutation($id: ID!) { scaleInstance(id: $id, replicas: 2) { id } }', { id: instanceId })).scaleInstance;
  await until('the scale reaches the subscriber', 20000, async () =>
    sub.data.some((m) => m.data.instanceStatus.replicas.desired === 2));
  await until('the scale completes', 30000, async () =>
    (await gql(staying.url, 'query($id: ID!) { deployment(id: $id) { status } }', { id: op.id })).deployment.status === 'COMPLETED');
  assert.equal(sub.errors.length, 0);
  await sub.stop();

  // SIGTERM gives the lease back: a replica with a 60 s lease is stopped while it drives a
  // restart, and the other one finishes the operation long before that lease would lapse.
  const holder = await startGateway('e', `${WORK}/kubeconfig`, { HIVEGRAPH_K8S_LEASE_SECONDS: '60' });
  const restart = (await gql(holder.url, 'mutation($id: ID!) { restartInstance(id: $id) { id } }', { id: instanceId })).restartInstance;
  await until('the restart is driven by the new replica', 10000, async () =>
    psql(`SELECT lease_owner FROM deployments WHERE status = 'in_progress' AND lease_owner LIKE '%/${holder.proc.pid}/%'`) || undefined);
  const stoppedAt = Date.now();
  holder.proc.kill('SIGTERM');
  assert.deepEqual(await holder.proc.exited, { code: 0, signal: null });
  const steps = () => gql(staying.url, 'query($id: ID!) { deployment(id: $id) { status steps { name message } } }', { id: restart.id });
  await until('the other replica picks the restart up', 10000, async () =>
    (await steps()).deployment.steps.some((st) => st.name === 'resume' && st.message.includes(`/${staying.proc.pid}/`)));
  const pickedUp = Date.now() - stoppedAt;
  assert.ok(pickedUp < 10000, `picked up ${pickedUp} ms after SIGTERM, long before the 60 s lease`);
  await until('the restart completes', 60000, async () => (await steps()).deployment.status === 'COMPLETED');
  gw = [staying];
});

test('PostgreSQL restarts: UPSTREAM_UNAVAILABLE while down, everything back within 2 s, subscriptions keep their sockets', { skip, timeout: 90000 }, async () => {
  const [g] = gw;
  const reg = (await gql(g.url, '{ registries(first: 1) { edges { node { id } } } }')).registries.edges[0].node.id;
  const sub = subscribe([g.ws], 'subscription($id: ID!) { registrySync(registryId: $id) { description } }', { id: reg });
  await until('first state', 10000, async () => sub.data.length > 0);
  // An operation under way when the database goes.
  const op = (await gql(g.url, 'mutation($id: ID!) { restartInstance(id: $id) { id } }', { id: instanceId })).restartInstance;

  execSync(PG_STOP);
  const t = Date.now();
  const down = await post(g.url, '{ registries { totalCount } }');
  assert.ok(Date.now() - t < 5000, 'answered, not hung');
  assert.equal(down.errors?.[0]?.extensions?.code, 'UPSTREAM_UNAVAILABLE', JSON.stringify(down));
  const write = await post(g.url, 'mutation($id: ID!) { updateRegistry(id: $id, input: {description: "while down"}) { id } }', { id: reg });
  assert.equal(write.errors?.[0]?.extensions?.code, 'UPSTREAM_UNAVAILABLE', JSON.stringify(write));
  const ready = await fetch(g.url + '/readyz');
  assert.equal(ready.status, 503);
  await sleep(1000);
  assert.equal(g.proc.exitCode, null, 'the gateway is still running');

  execSync(PG_START);
  const up = Date.now();
  await until('queries work again', 2000, async () => !(await post(g.url, '{ registries { totalCount } }')).errors);
  const back = Date.now() - up;
  await until('/readyz 200', 2000, async () => (await fetch(g.url + '/readyz')).ok);
  // A mutation, and its change notification through the re-established LISTEN connection, all
  // within 2 s of the database coming back.
  await gql(g.url, 'mutation($id: ID!) { updateRegistry(id: $id, input: {description: "after the restart"}) { id } }', { id: reg });
  await until('the subscription delivers the next change (LISTEN is back)', Math.max(2000 - (Date.now() - up), 300), async () =>
    sub.data.some((m) => m.data.registrySync.description === 'after the restart'));
  const live = Date.now() - up;
  assert.deepEqual(sub.closes, [], 'the socket stayed open');
  assert.equal(sub.connects, 1);
  // No operation lost or left open.
  const end = await until('the interrupted operation ends', 60000, async () => {
    const s = (await gql(g.url, 'query($id: ID!) { deployment(id: $id) { status } }', { id: op.id })).deployment.status;
    return ['COMPLETED', 'FAILED', 'CANCELLED'].includes(s) ? s : undefined;
  });
  assert.equal(end, 'COMPLETED');
  assert.equal(psql("SELECT count(*) FROM deployments WHERE status IN ('initiated', 'in_progress')"), '0');
  assert.equal(psql('SELECT count(*) FROM deployments'), '4', 'deploy, scale and two restarts: none lost');
  console.log(`database back: queries answered ${back} ms, a change delivered ${live} ms after PostgreSQL accepted connections`);
  await sub.stop();
});
