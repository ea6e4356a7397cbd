// Helpers shared by the JS tests that run against the gateways started by scripts/test
// (GATEWAY_A, GATEWAY_B, EMULATOR_CONTEXT).
import assert from 'node:assert/strict';

export const A = process.env.GATEWAY_A;
export const B = process.env.GATEWAY_B;
export const CONTEXT = process.env.EMULATOR_CONTEXT;
export const skip = !A || !B ? 'GATEWAY_A and GATEWAY_B are not set' : false;
export const liveSkip = skip || (!CONTEXT ? 'EMULATOR_CONTEXT is not set' : false);
export const wsUrl = (base) => base.replace(/^http/, 'ws') + '/graphql';

/** POSTs a request; returns the fetch Response and its parsed body. */
export async function post(base, body, headers = {}) {
  const res = await fetch(base + '/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = { text }; }
  return { res, body: json };
}

/** Runs an operation that must succeed; returns its data. */
export async function gql(base, query, variables = {}) {
  const { body } = await post(base, { query, variables });
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

/** Collects messages into a queue that tests can await one at a time. */
export function queue() {
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

const FIXTURE = new URL('../fixtures/live-registry.json', import.meta.url).href;
let livePromise;

/** Registers the emulator's cluster and syncs the fixture registry once; returns their ids. */
export function live() {
  livePromise ??= (async () => {
    const suffix = Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    const cluster = await gql(A, 'mutation($i: RegisterClusterInput!) { registerCluster(input: $i) { id status } }', {
      i: { name: `emu-${suffix}`, context: CONTEXT },
    });
    assert.equal(cluster.registerCluster.status, 'CONNECTED');
    const reg = await gql(A, 'mutation($i: CreateRegistryInput!) { createRegistry(input: $i) { id } }', {
      i: { name: `live-${suffix}`, url: FIXTURE },
    });
    const registryId = reg.createRegistry.id;
    await gql(A, 'mutation($id: ID!) { syncRegistry(id: $id) { id } }', { id: registryId });
    const servers = {};
    for (let i = 0; i < 100 && Object.keys(servers).length < 2; i++) {
      const data = await gql(A, 'query($id: ID!) { registry(id: $id) { status servers(first: 10) { edges { node { id name } } } } }', { id: registryId });
      for (const e of data.registry.servers.edges) servers[e.node.name] = e.node.id;
      if (Object.keys(servers).length < 2) await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(servers['healthy-web'] && servers['crashing-web'], JSON.stringify(servers));
    return { clusterId: cluster.registerCluster.id, servers };
  })();
  return livePromise;
}

/** Deploys a server of the fixture registry; returns `{ id, instanceId }`. */
export async function deploy(serverName, name) {
  const { clusterId, servers } = await live();
  const data = await gql(A, 'mutation($i: DeployServerInput!) { deployServer(input: $i) { id instanceId } }', {
    i: { serverId: servers[serverName], clusterId, namespace: 'hivegraph', name: `${name}-${Date.now().toString(36)}`,
         resources: { limits: { cpu: '250m', memory: '128Mi' } } },
  });
  return data.deployServer;
}
