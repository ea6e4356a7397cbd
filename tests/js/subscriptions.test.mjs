// Live subscriptions with the real npm clients, over both websocket protocols, and across two
// gateway processes sharing one database. Needs GATEWAY_A and GATEWAY_B (http base URLs of two
// gateways on the same database); skipped without them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import pkg from 'subscriptions-transport-ws';
import { A, B, deploy, gql, liveSkip, queue, skip, wsUrl } from './lib/gateway.mjs';
const { SubscriptionClient } = pkg;

async function newRegistry(base, name) {
  const data = await gql(base, 'mutation($i: CreateRegistryInput!) { createRegistry(input: $i) { id } }', {
    i: { name: `${name}-${Date.now()}`, url: 'http://127.0.0.1:9/registry.json' },
  });
  return data.createRegistry.id;
}

const SYNC = 'subscription($id: ID!) { registrySync(registryId: $id) { name description status } }';
const describe = (base, id, d) =>
  gql(base, 'mutation($id: ID!, $d: String) { updateRegistry(id: $id, input: { description: $d }) { id } }', { id, d });

test('graphql-transport-ws (graphql-ws client): current state first, then changes', { skip }, async () => {
  const id = await newRegistry(A, 'gqlws');
  const client = createClient({ url: wsUrl(A), webSocketImpl: WebSocket, retryAttempts: 0 });
  const q = queue();
  const dispose = client.subscribe({ query: SYNC, variables: { id } }, {
    next: (v) => q.push(v), error: (e) => q.push({ error: e }), complete: () => {},
  });
  try {
    const first = await q.next();
    assert.equal(first.data.registrySync.status, 'INACTIVE');
    await describe(A, id, 'pushed over graphql-transport-ws');
    const second = await q.next();
    assert.equal(second.data.registrySync.description, 'pushed over graphql-transport-ws');
  } finally {
    dispose();
    await client.dispose();
  }
});

test('legacy graphql-ws (subscriptions-transport-ws client): current state first, then changes', { skip }, async () => {
  const id = await newRegistry(A, 'legacy');
  const client = new SubscriptionClient(wsUrl(A), { reconnect: false }, WebSocket);
  const q = queue();
  const sub = client.request({ query: SYNC, variables: { id } }).subscribe({
    next: (v) => q.push(v), error: (e) => q.push({ error: e }),
  });
  try {
    const first = await q.next();
    assert.equal(first.data.registrySync.status, 'INACTIVE');
    await describe(A, id, 'pushed over legacy graphql-ws');
    const second = await q.next();
    assert.equal(second.data.registrySync.description, 'pushed over legacy graphql-ws');
  } finally {
    sub.unsubscribe();
    client.close();
  }
});

test('a subscriber on one gateway process sees a change made through another', { skip }, async () => {
  const id = await newRegistry(A, 'cross');
  const client = createClient({ url: wsUrl(A), webSocketImpl: WebSocket, retryAttempts: 0 });
  const q = queue();
  const dispose = client.subscribe({ query: SYNC, variables: { id } }, {
    next: (v) => q.push(v), error: (e) => q.push({ error: e }), complete: () => {},
  });
  try {
    await q.next();
    await describe(B, id, 'changed through gateway B');
    const pushed = await q.next();
    assert.equal(pushed.data.registrySync.description, 'changed through gateway B');
  } finally {
    dispose();
    await client.dispose();
  }
});

test('an unknown subprotocol is refused', { skip }, async () => {
  const status = await new Promise((resolve) => {
    const ws = new WebSocket(wsUrl(A), 'not-graphql');
    ws.on('unexpected-response', (req, res) => {
      resolve(res.statusCode);
      // Nothing else would end the refused request's socket, and it keeps node from exiting.
      req.destroy();
      ws.terminate();
    });
    ws.on('open', () => { ws.close(); resolve(101); });
    ws.on('error', () => {});
  });
  assert.equal(status, 400);
});

// --- live instances on the simulated cluster ------------------------------------------------
// Needs EMULATOR_CONTEXT (a kubeconfig context of the gateways' KUBECONFIG, served by
// kube-emulator) and file registries allowed; scripts/test sets both.

/** Messages until `done(message)` holds; returns them all. */
async function until(q, done, ms = 60000) {
  const seen = [];
  const deadline = Date.now() + ms;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`condition not met in ${ms} ms; saw ${JSON.stringify(seen)}`);
    const m = await q.next(left);
    if (m.error) throw new Error(JSON.stringify(m.error));
    seen.push(m);
    if (done(m)) return seen;
  }
}

const STATUS = 'subscription($id: ID!) { instanceStatus(instanceId: $id) { status phase healthStatus replicas { desired ready } } }';

test('a healthy deploy streams DEPLOYING then READY (graphql-ws client, subscribed on the other gateway)', { skip: liveSkip }, async () => {
  const op = await deploy('healthy-web', 'healthy');
  const client = createClient({ url: wsUrl(B), webSocketImpl: WebSocket, retryAttempts: 0 });
  const q = queue();
  const dispose = client.subscribe({ query: STATUS, variables: { id: op.instanceId } }, {
    next: (v) => q.push(v), error: (e) => q.push({ error: e }), complete: () => {},
  });
  try {
    const seen = await until(q, (m) => m.data.instanceStatus.phase === 'READY');
    const phases = seen.map((m) => m.data.instanceStatus.phase);
    assert.equal(phases[0], 'DEPLOYING', JSON.stringify(phases));
    const last = seen.at(-1).data.instanceStatus;
    assert.equal(last.status, 'RUNNING');
    assert.equal(last.replicas.ready, last.replicas.desired);
  } finally {
    dispose();
    await client.dispose();
  }
});

test('a crash loop streams FAILED/UNHEALTHY and its BackOff events (legacy client)', { skip: liveSkip }, async () => {
  const op = await deploy('crashing-web', 'crashing');
  const client = new SubscriptionClient(wsUrl(A), { reconnect: false }, WebSocket);
  const statusQ = queue();
  const eventsQ = queue();
  const s1 = client.request({ query: STATUS, variables: { id: op.instanceId } }).subscribe({
    next: (v) => statusQ.push(v), error: (e) => statusQ.push({ error: e }),
  });
  const s2 = client.request({
    query: 'subscription($id: ID!) { instanceEvents(instanceId: $id) { type reason message objectKind } }',
    variables: { id: op.instanceId },
  }).subscribe({ next: (v) => eventsQ.push(v), error: (e) => eventsQ.push({ error: e }) });
  try {
    const statuses = await until(statusQ, (m) => {
      const s = m.data.instanceStatus;
      return s.status === 'FAILED' || s.healthStatus === 'UNHEALTHY';
    });
    assert.ok(statuses.length >= 1);
    const events = await until(eventsQ, (m) => m.data.instanceEvents.reason === 'BackOff');
    const backoff = events.at(-1).data.instanceEvents;
    assert.equal(backoff.type, 'Warning');
    assert.equal(backoff.objectKind, 'Pod');
  } finally {
    s1.unsubscribe();
    s2.unsubscribe();
    client.close();
  }
});

test('metrics arrive on the fast test interval over both protocols', { skip: liveSkip }, async () => {
  const op = await deploy('healthy-web', 'metered');
  const METRICS = 'subscription($id: ID!) { instanceMetrics(instanceId: $id) { timestamp cpuUsage memoryUsage requestCount healthChecks } }';
  const client = createClient({ url: wsUrl(A), webSocketImpl: WebSocket, retryAttempts: 0 });
  const legacy = new SubscriptionClient(wsUrl(B), { reconnect: false }, WebSocket);
  const q = queue();
  const lq = queue();
  const dispose = client.subscribe({ query: METRICS, variables: { id: op.instanceId } }, {
    next: (v) => q.push(v), error: (e) => q.push({ error: e }), complete: () => {},
  });
  const sub = legacy.request({ query: METRICS, variables: { id: op.instanceId } }).subscribe({
    next: (v) => lq.push(v), error: (e) => lq.push({ error: e }),
  });
  try {
    const seen = await until(q, (m) => m.data.instanceMetrics.healthChecks?.mcp?.ok === true);
    const last = seen.at(-1).data.instanceMetrics;
    assert.ok(last.cpuUsage >= 0 && last.cpuUsage <= 100, JSON.stringify(last));
    assert.ok(last.memoryUsage > 0);
    assert.ok(last.requestCount >= 1);
    const stamps = new Set();
    const legacySeen = await until(lq, (m) => { stamps.add(m.data.instanceMetrics.timestamp); return stamps.size >= 2; });
    assert.ok(legacySeen.length >= 2);
  } finally {
    dispose();
    await client.dispose();
    sub.unsubscribe();
    legacy.close();
  }
});
