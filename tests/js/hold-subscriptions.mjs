// Opens subscriptions and keeps them open, for scripts/lib/prometheus-test.sh (which counts
// them through Prometheus). Usage: node hold-subscriptions.mjs REGISTRY_ID URL:COUNT... —
// prints "ready" once every subscription has delivered its first result, then holds them
// until stdin closes.
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';

const [registryId, ...targets] = process.argv.slice(2);
const query = `subscription Held($id: ID!) { registrySync(registryId: $id) { id status } }`;
const firsts = [];
for (const target of targets) {
  const at = target.lastIndexOf(':');
  const url = target.slice(0, at).replace(/^http/, 'ws') + '/graphql';
  const count = Number(target.slice(at + 1));
  const client = createClient({ url, webSocketImpl: WebSocket, lazy: false, retryAttempts: 0 });
  for (let i = 0; i < count; i++) {
    firsts.push(new Promise((resolve, reject) => {
      client.subscribe({ query, variables: { id: registryId } }, {
        next: (r) => (r.errors ? reject(new Error(JSON.stringify(r.errors))) : resolve()),
        error: reject,
        complete: () => reject(new Error('the subscription completed')),
      });
    }));
  }
}
const timer = setTimeout(() => { console.error('no first result within 20 s'); process.exit(1); }, 20000);
try {
  await Promise.all(firsts);
} catch (e) {
  console.error(`subscription failed: ${e.message ?? e}`);
  process.exit(1);
}
clearTimeout(timer);
console.log('ready');
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
