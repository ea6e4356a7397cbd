// What GraphQL clients expect (issue #21, and the GraphQL-over-HTTP part of #16), driven by the
// real npm clients where the behaviour is theirs: Apollo Client (partial errors, APQ), urql,
// graphql-ws (lazy close), graphql-http's spec audit; raw fetch for the HTTP details. Needs
// GATEWAY_A and GATEWAY_B; the stream test also needs EMULATOR_CONTEXT (see scripts/test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import { auditServer } from 'graphql-http';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql as apolloGql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { Client as UrqlClient, fetchExchange } from '@urql/core';
import { A, deploy, gql, liveSkip, post, queue, skip, wsUrl } from './lib/gateway.mjs';

const sha256 = (s) => createHash('sha256').update(s).digest('hex');
const code = (body, i = 0) => body.errors?.[i]?.extensions?.code;

const PARTLY_FAILED = `query PartlyFailed {
  a: registries(first: 1) { totalCount }
  b: server(id: "not-an-id") { id name }
  c: node(id: "garbage") { id }
}`;

test('Apollo Client with errorPolicy all reads a partly failed query, and readQuery sees it', { skip }, async () => {
  const client = new ApolloClient({ link: new HttpLink({ uri: A + '/graphql' }), cache: new InMemoryCache() });
  const query = apolloGql(PARTLY_FAILED);
  const result = await client.query({ query, errorPolicy: 'all', fetchPolicy: 'network-only' });
  assert.equal(typeof result.data.a.totalCount, 'number');
  assert.equal(result.data.b, null);
  assert.equal(result.data.c, null);
  const errors = result.error?.errors ?? [];
  assert.equal(errors.length, 2, String(result.error));
  for (const e of errors) assert.equal(e.extensions.code, 'BAD_USER_INPUT');
  const cached = client.readQuery({ query });
  assert.ok(cached, 'readQuery returned null: the cache holds an incomplete result');
  assert.equal(cached.b, null);
  client.stop();
});

test('urql sees null for the failed root fields and their typed errors', { skip }, async () => {
  const client = new UrqlClient({ url: A + '/graphql', exchanges: [fetchExchange] });
  const r = await client.query(PARTLY_FAILED, {}).toPromise();
  assert.deepEqual(Object.keys(r.data).sort(), ['a', 'b', 'c']);
  assert.equal(r.data.b, null);
  assert.deepEqual(r.error.graphQLErrors.map((e) => e.extensions.code), ['BAD_USER_INPUT', 'BAD_USER_INPUT']);
  assert.deepEqual(r.error.graphQLErrors.map((e) => e.path[0]).sort(), ['b', 'c']);
});

/** Apollo with the APQ link over `method`; returns the client and the requests it sent. */
function apqClient(useGET) {
  const sent = [];
  const recordingFetch = async (url, init) => {
    const u = new URL(url);
    sent.push({ method: init.method, hasQuery: init.method === 'GET' ? u.searchParams.has('query') : JSON.parse(init.body).query !== undefined });
    return fetch(url, init);
  };
  const link = ApolloLink.from([
    new PersistedQueryLink({ sha256, useGETForHashedQueries: useGET }),
    new HttpLink({ uri: A + '/graphql', fetch: recordingFetch }),
  ]);
  return { client: new ApolloClient({ link, cache: new InMemoryCache() }), sent };
}

for (const useGET of [false, true]) {
  test(`Apollo automatic persisted queries over ${useGET ? 'GET' : 'POST'}: register once, then hash only`, { skip }, async () => {
    // A document no earlier run registered.
    const query = apolloGql(`query Apq${useGET ? 'Get' : 'Post'}${Date.now()} { viewer { subject } }`);
    const first = apqClient(useGET);
    const r1 = await first.client.query({ query, fetchPolicy: 'network-only' });
    assert.equal(r1.data.viewer.subject, 'local');
    assert.deepEqual(first.sent.map((s) => s.hasQuery), [false, true], JSON.stringify(first.sent));
    assert.equal(first.sent[0].method, useGET ? 'GET' : 'POST');
    const second = apqClient(useGET);
    const r2 = await second.client.query({ query, fetchPolicy: 'network-only' });
    assert.equal(r2.data.viewer.subject, 'local');
    assert.deepEqual(second.sent, [{ method: useGET ? 'GET' : 'POST', hasQuery: false }]);
    first.client.stop();
    second.client.stop();
  });
}

test('an unknown persisted query is PERSISTED_QUERY_NOT_FOUND; a wrong hash is BAD_USER_INPUT', { skip }, async () => {
  const hash = sha256(`{ unknown${Date.now()} }`);
  const ext = (h) => ({ persistedQuery: { version: 1, sha256Hash: h } });
  let r = await post(A, { extensions: ext(hash) });
  assert.equal(code(r.body), 'PERSISTED_QUERY_NOT_FOUND');
  assert.equal(r.body.errors[0].message, 'PersistedQueryNotFound');
  r = await fetch(`${A}/graphql?extensions=${encodeURIComponent(JSON.stringify(ext(hash)))}`);
  assert.equal(code(await r.json()), 'PERSISTED_QUERY_NOT_FOUND');
  r = await post(A, { query: '{ viewer { subject } }', extensions: ext(hash) });
  assert.equal(code(r.body), 'BAD_USER_INPUT');
});

test('graphql-ws: a lazy close ends with 1000, not 1006', { skip }, async () => {
  const closes = [];
  const client = createClient({
    url: wsUrl(A), webSocketImpl: WebSocket, retryAttempts: 0, lazy: true, lazyCloseTimeout: 0,
    on: { closed: (e) => closes.push(e.code) },
  });
  const result = await new Promise((resolve, reject) => {
    let value;
    client.subscribe({ query: '{ viewer { subject } }' }, {
      next: (v) => { value = v; }, error: reject, complete: () => resolve(value),
    });
  });
  assert.equal(result.data.viewer.subject, 'local');
  for (let i = 0; i < 50 && closes.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(closes, [1000]);
  await client.dispose();
});

test('a raw websocket close frame is answered with the same code', { skip }, async () => {
  const ws = new WebSocket(wsUrl(A), 'graphql-transport-ws');
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const closed = new Promise((resolve) => ws.on('close', (c) => resolve(c)));
  ws.close(4000, 'bye');
  assert.equal(await closed, 4000);
});

test('graphql-http audit of the GraphQL-over-HTTP spec: no errors, no warnings', { skip }, async () => {
  const results = await auditServer({ url: A + '/graphql' });
  const bad = results.filter((r) => r.status === 'error' || r.status === 'warn')
    .map((r) => `${r.status}: ${r.name}: ${r.reason}`);
  assert.deepEqual(bad, []);
  assert.ok(results.length > 20, `only ${results.length} audits ran`);
});

test('content negotiation: application/json by default, graphql-response+json when preferred', { skip }, async () => {
  const q = { query: '{ viewer { subject } }' };
  for (const accept of [undefined, '*/*', 'application/json']) {
    const { res } = await post(A, q, accept ? { accept } : {});
    assert.equal(res.headers.get('content-type'), 'application/json', `Accept: ${accept}`);
  }
  const { res } = await post(A, q, { accept: 'application/graphql-response+json' });
  assert.equal(res.headers.get('content-type'), 'application/graphql-response+json');
  for (const [body, expected] of [[{ query: '{ viewer {' }, 'GRAPHQL_PARSE_FAILED'], [{ query: '{ nope }' }, 'GRAPHQL_VALIDATION_FAILED']]) {
    const strict = await post(A, body, { accept: 'application/graphql-response+json' });
    assert.equal(strict.res.status, 400);
    assert.equal('data' in strict.body, false);
    assert.equal(code(strict.body), expected);
    const lenient = await post(A, body, { accept: 'application/json' });
    assert.equal(lenient.res.status, 200);
    assert.equal(code(lenient.body), expected);
  }
});

/** A POST declaring a 100 MB body (none sent): the raw answer's head and body. */
function declaredTooLarge() {
  const { hostname, port } = new URL(A);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), hostname, () => {
      sock.write(`POST /graphql HTTP/1.1\r\nhost: ${hostname}\r\ncontent-type: application/json\r\n` +
        'content-length: 100000000\r\nconnection: close\r\n\r\n');
    });
    let raw = '';
    sock.on('data', (d) => { raw += d; });
    sock.on('end', () => {
      const [head, body] = raw.split('\r\n\r\n');
      resolve({ head, body });
    });
    sock.on('error', reject);
  });
}

test('every bad request gets a typed client error, and is not charged', { skip }, async () => {
  const remaining = async () => (await post(A, { query: '{ viewer { subject } }' })).body.extensions.rateLimit.remaining;
  const before = await remaining();
  // A missing required variable, on the most expensive mutation.
  let r = await post(A, { query: 'mutation($i: DeployServerInput!) { deployServer(input: $i) { id } }' });
  assert.equal(code(r.body), 'BAD_USER_INPUT');
  assert.equal(r.body.errors[0].extensions.field, 'i');
  // The refused deployServer paid only the 1-point charge every request pays on arrival
  // (before any expensive walk), not the 50 of a deploy; the second viewer query paid 1.
  assert.equal(await remaining(), before - 2, 'the refused deployServer was not charged as a deploy');
  // NUL characters in variables and in literals.
  r = await post(A, { query: 'query($s: String) { servers(search: $s) { totalCount } }', variables: { s: 'a\u0000b' } });
  assert.equal(code(r.body), 'BAD_USER_INPUT');
  assert.equal(r.body.errors[0].extensions.field, 's');
  r = await post(A, { query: '{ auditLog(filter: { actor: "x\\u0000" }) { totalCount } }' });
  assert.equal(code(r.body), 'BAD_USER_INPUT');
  // No document at all.
  for (const body of [{}, { query: '' }]) {
    r = await post(A, body);
    assert.equal(r.res.status, 400);
    assert.equal(code(r.body), 'BAD_REQUEST');
    assert.match(r.body.errors[0].message, /no GraphQL document/);
  }
  // Operation selection.
  r = await post(A, { query: 'query X { viewer { subject } } query Y { viewer { subject } }' });
  assert.equal(code(r.body), 'GRAPHQL_VALIDATION_FAILED');
  r = await post(A, { query: 'query X { viewer { subject } }', operationName: 'Z' });
  assert.equal(code(r.body), 'GRAPHQL_VALIDATION_FAILED');
  assert.match(r.body.errors[0].message, /"Z"/);
  // A mutation over GET, and a body over the limit.
  const get = await fetch(`${A}/graphql?query=${encodeURIComponent('mutation { syncRegistry(id: "x") { id } }')}`);
  assert.equal(get.status, 405);
  assert.equal(get.headers.get('allow'), 'POST');
  const big = await declaredTooLarge();
  assert.match(big.head, /^HTTP\/1.1 413/);
  assert.match(big.head, /content-type: application\/json/i);
  assert.equal(code(JSON.parse(big.body)), 'BAD_REQUEST');
});

test('instance streams complete after deleteInstance, and new subscriptions get the final state', { skip: liveSkip }, async () => {
  const op = await deploy('healthy-web', 'ending');
  const id = op.instanceId;
  const client = createClient({ url: wsUrl(A), webSocketImpl: WebSocket, retryAttempts: 0 });
  const follow = (query) => {
    const q = queue();
    let completed = false;
    const done = new Promise((resolve, reject) => {
      client.subscribe({ query, variables: { id } }, {
        next: (v) => q.push(v), error: reject, complete: () => { completed = true; resolve(); },
      });
    });
    return { q, done, completed: () => completed };
  };
  const STATUS = 'subscription($id: ID!) { instanceStatus(instanceId: $id) { status phase } }';
  try {
    const status = follow(STATUS);
    const events = follow('subscription($id: ID!) { instanceEvents(instanceId: $id) { reason } }');
    const metrics = follow('subscription($id: ID!) { instanceMetrics(instanceId: $id) { timestamp } }');
    await status.q.next(30000);
    // Delete once the deploy operation has finished (a running one refuses the delete).
    for (let i = 0; ; i++) {
      const r = await post(A, { query: 'mutation($id: ID!) { deleteInstance(id: $id) { id } }', variables: { id } });
      if (!r.body.errors) break;
      assert.ok(code(r.body) === 'CONFLICT' && i < 120, JSON.stringify(r.body.errors));
      await new Promise((res) => setTimeout(res, 500));
    }
    const timeout = (p, what) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what} did not complete`)), 60000))]);
    await timeout(Promise.all([status.done, events.done, metrics.done]), 'the streams');
    // The last status message is the final state.
    let last;
    for (;;) { try { last = await status.q.next(10); } catch { break; } }
    if (last) assert.equal(last.data.instanceStatus.status, 'TERMINATED');
    // A new subscription to the terminated instance gets its state, then completes.
    const again = follow(STATUS);
    const m = await again.q.next(10000);
    assert.equal(m.data.instanceStatus.status, 'TERMINATED');
    await timeout(again.done, 'a new subscription');
  } finally {
    await client.dispose();
  }
});
