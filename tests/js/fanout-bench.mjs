// Fan-out benchmark client (run by scripts/bench-fanout): opens N `instanceStatus`
// subscriptions over graphql-transport-ws (PER_SOCKET per socket), waits for every current
// state, then asks the harness to make ONE status change and measures when each subscriber
// receives it. Prints one JSON line.
//
// Then, with the subscribers still connected (so that nothing freed skews the figure), IDLE
// more sockets (1,000 by default) are opened and acknowledged with no subscription: the RSS
// delta divided by IDLE is `idle_socket_bytes`, the gateway memory an idle websocket costs.
//
// Environment: GATEWAY (http base URL), INSTANCE_ID (global id), N, PER_SOCKET, IDLE, GATEWAY_PID,
// CHANGE_CMD (a shell command that changes the instance's status and prints the commit time in
// epoch milliseconds). Latency runs from that commit to each subscriber's message (one clock).
import WebSocket from 'ws';
import { exec } from 'node:child_process';
import { readFileSync } from 'node:fs';

const GATEWAY = process.env.GATEWAY;
const ID = process.env.INSTANCE_ID;
const N = Number(process.env.N ?? 50);
const PER_SOCKET = Number(process.env.PER_SOCKET ?? 50);
const PID = process.env.GATEWAY_PID;
const CHANGE = process.env.CHANGE_CMD;
const url = GATEWAY.replace(/^http/, 'ws') + '/graphql';
const QUERY = 'subscription($id: ID!) { instanceStatus(instanceId: $id) { status phase replicas { ready } } }';

const TICK = 100; // USER_HZ on Linux
function rssBytes() {
  const m = readFileSync(`/proc/${PID}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return Number(m[1]) * 1024;
}
function cpuSeconds() {
  const f = readFileSync(`/proc/${PID}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK; // utime + stime
}
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const rssBefore = rssBytes();
const cpuStart = cpuSeconds();
const subscribeStarted = performance.now();

let firstStates = 0;
let changeAt = null;
const arrivals = [];
let latencies = [];
const sockets = [];
let failures = 0;

function open(count, base) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, 'graphql-transport-ws');
    sockets.push(ws);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: {} })));
    ws.on('message', (raw) => {
      const m = JSON.parse(raw);
      if (m.type === 'connection_ack') {
        for (let i = 0; i < count; i++) {
          ws.send(JSON.stringify({ id: String(base + i), type: 'subscribe', payload: { query: QUERY, variables: { id: ID } } }));
        }
        resolve();
      } else if (m.type === 'next') {
        if (changeAt === null) firstStates++;
        else arrivals.push(Date.now());
      } else if (m.type === 'error') {
        if (failures++ === 0) console.error('first error:', JSON.stringify(m.payload));
      }
    });
    ws.on('error', () => { failures++; resolve(); });
    ws.on('close', (code) => { if (code !== 1000 && code !== 1005) failures++; });
  });
}

// Open sockets in waves, so that the handshake burst does not dominate.
for (let base = 0; base < N; base += PER_SOCKET * 20) {
  const wave = [];
  for (let b = base; b < Math.min(N, base + PER_SOCKET * 20); b += PER_SOCKET) {
    wave.push(open(Math.min(PER_SOCKET, N - b), b));
  }
  await Promise.all(wave);
}
const deadline = Date.now() + 120_000;
while (firstStates < N && Date.now() < deadline) await sleep(20);
const subscribeSeconds = (performance.now() - subscribeStarted) / 1000;
await sleep(500);
const rssSubscribed = rssBytes();
const cpuSubscribed = cpuSeconds();

changeAt = Date.now();
const committed = new Promise((resolve, reject) => {
  exec(CHANGE, (err, stdout) => (err ? reject(err) : resolve(Number(stdout.trim().split('\n').pop()))));
});
const deliveryDeadline = Date.now() + 60_000;
while (arrivals.length < firstStates && Date.now() < deliveryDeadline) await sleep(5);
const commitMs = await committed;
latencies = arrivals.map((t) => t - commitMs);
const cpuDelivered = cpuSeconds();

// --- idle sockets: connection_init acknowledged, nothing subscribed ---
const IDLE = Number(process.env.IDLE ?? 1000);
function openIdle() {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, 'graphql-transport-ws');
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: {} })));
    ws.on('message', (raw) => { if (JSON.parse(raw).type === 'connection_ack') resolve(ws); });
    ws.on('error', () => resolve(null));
  });
}
const rssIdleBefore = rssBytes();
const idle = [];
for (let i = 0; i < IDLE; i += 100) {
  idle.push(...(await Promise.all(Array.from({ length: Math.min(100, IDLE - i) }, openIdle))));
}
const idleOpen = idle.filter(Boolean).length;
await sleep(1000);
const rssIdle = rssBytes();
for (const ws of idle) ws?.close(1000);
for (const ws of sockets) ws.close(1000);

latencies.sort((a, b) => a - b);
const round = (x) => Math.round(x * 100) / 100;
console.log(JSON.stringify({
  fanout_subscribers: N,
  sockets: sockets.length,
  subscribed: firstStates,
  received: latencies.length,
  failures,
  fanout_p50_ms: round(percentile(latencies, 50) ?? NaN),
  fanout_p99_ms: round(percentile(latencies, 99) ?? NaN),
  fanout_max_ms: round(latencies.at(-1) ?? NaN),
  fanout_bytes_per_subscriber: Math.round((rssSubscribed - rssBefore) / Math.max(1, firstStates)),
  idle_sockets: idleOpen,
  idle_socket_bytes: Math.round((rssIdle - rssIdleBefore) / Math.max(1, idleOpen)),
  gateway_rss_mb_before: round(rssBefore / 1048576),
  gateway_rss_mb_subscribed: round(rssSubscribed / 1048576),
  subscribe_seconds: round(subscribeSeconds),
  gateway_cpu_seconds_subscribe: round(cpuSubscribed - cpuStart),
  gateway_cpu_seconds_delivery: round(cpuDelivered - cpuSubscribed),
}));
process.exit(latencies.length === N && failures === 0 && idleOpen === IDLE ? 0 : 1);
