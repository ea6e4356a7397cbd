// Live subscriptions with the real npm clients, over both websocket protocols, and across two
// gateway processes sharing one database. Needs GATEWAY_A and GATEWAY_B (http base URLs of two
// gateways on the same database); skipped without them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import pkg from 'subscriptions-transport-ws';
const { SubscriptionClient } = pkg;

const A = process.env.GATEWAY_A;
const B = process.env.GATEWAY_B;
const skip = !A || !B ? 'GATEWAY_A and GATEWAY_B are not set' : false;
const wsUrl = (base) => base.replace(/^http/, 'ws') + '/graphql';

async function gql(base, query, variables = {}) {
  const res = await fetch(base + '/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

async function newRegistry(base, name) {
  const data = await gql(base, 'mutation($i: CreateRegistryInput!) { createRegistry(input: $i) { id } }', {
    i: { name: `${name}-${Date.now()}`, url: 'http://127.0.0.1:9/registry.json' },
  });
  return data.createRegistry.id;
}

const SYNC = 'subscription($id: ID!) { registrySync(registryId: $id) { name description status } }';
const describe = (base, id, d) =>
  gql(base, 'mutation($id: ID!, $d: String) { updateRegistry(id: $id, input: { description: $d }) { id } }', { id, d });

/** Collects messages into a queue that tests can await one at a time. */
function queue() {
  const items = [];
  const waiters = [];
  return {
    push(v) { const w = waiters.shift(); if (w) w(v); else items.push(v); },
    next(ms = 10000) {
      if (items.length) return Promise.resolve(items.shift());
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms);
        waiters.push((v) => { clearTimeout(t); resolve(v); });
      });
    },
  };
}

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
