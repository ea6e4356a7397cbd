// Headless-Chromium test of the gateway's GraphiQL page with the network cut off.
//
//   GATEWAY_URL=http://127.0.0.1:8080 node --test tests/browser/graphiql_offline.mjs
//
// Environment:
//   GATEWAY_URL      base URL of a running gateway (required), e.g. http://127.0.0.1:8080
//   GRAPHIQL_QUERY   query to run (default: "{ __typename }")
//   GRAPHIQL_EXPECT  text the result pane must contain (default: '"__typename": "')
//   GRAPHIQL_PATH    path of the page (default: /graphql)
//   CHROMIUM_PATH    browser binary (default: /usr/bin/chromium)
//   SCREENSHOT_PATH  where to save the screenshot (default: <repo>/target/browser/graphiql.png)
//
// Then the playground itself: the Docs pane lists the query, mutation and subscription roots
// (so the standard introspection query was answered), typing `{ regi` offers `registries`, a
// subscription started from GraphiQL shows its first payload, and no GraphQL request made while
// the page loads is answered with errors.
//
// Chromium resolves no host but the gateway's (--host-resolver-rules), and every request to
// another origin is aborted and recorded by a route handler; the test fails if any was tried,
// on any page error, console error, failed or >= 400 same-origin request, or CSP violation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');

const gatewayUrl = process.env.GATEWAY_URL;
const query = process.env.GRAPHIQL_QUERY || '{ __typename }';
const expected = process.env.GRAPHIQL_EXPECT || '"__typename": "';
const pagePath = process.env.GRAPHIQL_PATH || '/graphql';
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const screenshotPath =
  process.env.SCREENSHOT_PATH || path.join(repoRoot, 'target', 'browser', 'graphiql.png');

const TIMEOUT_MS = 30_000;

test('GraphiQL loads offline, runs a query and shows the result', { timeout: 120_000 }, async (t) => {
  assert.ok(gatewayUrl, 'GATEWAY_URL is not set (e.g. GATEWAY_URL=http://127.0.0.1:8080)');
  const gateway = new URL(gatewayUrl);
  const origin = gateway.origin;
  const wsOrigin = `${gateway.protocol === 'https:' ? 'wss:' : 'ws:'}//${gateway.host}`;

  const userDataDir = await mkdtemp(path.join(tmpdir(), 'hivegraph-chromium-'));
  t.after(() => rm(userDataDir, { recursive: true, force: true }));

  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Only the gateway's host resolves: everything else fails as if air-gapped.
      `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${gateway.hostname}`,
    ],
  });
  t.after(() => context.close());

  const offOrigin = []; // requests that tried to leave the gateway's origin
  const problems = []; // page errors, console errors, failed requests, CSP violations
  const failures = []; // failed checks, reported together at the end

  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    offOrigin.push(`${route.request().method()} ${url}`);
    return route.abort('internetdisconnected');
  });
  // WebSockets bypass context.route: check their URL as well.
  await context.routeWebSocket(/.*/, (ws) => {
    const url = new URL(ws.url());
    if (`${url.protocol}//${url.host}` === wsOrigin) {
      ws.connectToServer();
    } else {
      offOrigin.push(`WEBSOCKET ${ws.url()}`);
      ws.close();
    }
  });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
    });
  });

  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  page.on('requestfailed', (req) => {
    if (new URL(req.url()).origin === origin) {
      problems.push(`request failed: ${req.url()} (${req.failure()?.errorText})`);
    }
  });
  const graphqlErrors = []; // GraphQL answers that carry errors
  page.on('response', async (res) => {
    if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.url()}`);
    if (res.request().method() === 'POST' && new URL(res.url()).pathname === pagePath) {
      const text = await res.text().catch(() => '');
      if (/"errors"\s*:/.test(text)) graphqlErrors.push(text.slice(0, 300));
    }
  });

  try {
    const response = await page.goto(new URL(pagePath, gateway).href, {
      waitUntil: 'load',
      timeout: TIMEOUT_MS,
    });
    assert.ok(response, 'no response for the GraphiQL page');
    const body = response.status() === 200 ? '' : await response.text();
    assert.equal(response.status(), 200, `GraphiQL page answered ${response.status()}: ${body}`);
    assert.match(response.headers()['content-type'] ?? '', /^text\/html/);
    const csp = response.headers()['content-security-policy'] ?? '';
    if (!/script-src 'self'/.test(csp)) {
      failures.push(`the page has no Content-Security-Policy restricting scripts: ${JSON.stringify(csp)}`);
    }

    // The editor is up once CodeMirror has mounted the query editor.
    const editor = page.locator('.graphiql-query-editor .CodeMirror');
    await editor.waitFor({ state: 'visible', timeout: TIMEOUT_MS });

    // A dialog exercises the styles GraphiQL injects at run time (allowed by the page's CSP).
    await page.locator('button[aria-label="Open settings dialog"]').click();
    const dialog = page.getByRole('dialog');
    await dialog.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden', timeout: TIMEOUT_MS });

    // Type the query as a person would (select all, replace), then make sure it is exactly
    // what we meant: the editor's auto-closing brackets may interfere with typed input.
    await editor.click();
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.press('Delete');
    await page.keyboard.insertText(query);
    const typed = await editor.evaluate((el) => el.CodeMirror.getValue());
    if (typed !== query) {
      console.log(`typed text came out as ${JSON.stringify(typed)}: setting the query directly`);
      await editor.evaluate((el, q) => el.CodeMirror.setValue(q), query);
    }

    await page.locator('button.graphiql-execute-button').click();

    const resultPane = page.locator('.graphiql-response .CodeMirror');
    const shown = await page
      .waitForFunction(
        (text) => {
          const cm = document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror;
          const value = cm ? cm.getValue() : '';
          return value.includes(text) ? value : false;
        },
        expected,
        { timeout: TIMEOUT_MS },
      )
      .then((handle) => handle.jsonValue())
      .catch(async () => {
        const actual = await resultPane
          .evaluate((el) => el.CodeMirror.getValue())
          .catch(() => '<no result pane>');
        assert.fail(`the result pane does not show ${JSON.stringify(expected)}; it shows:\n${actual}`);
      });
    console.log(`result pane:\n${shown}`);
    if (!process.env.GRAPHIQL_EXPECT) {
      assert.doesNotMatch(shown, /"errors"/, 'the query answered with errors');
    }
    if (graphqlErrors.length > 0) {
      failures.push(`GraphQL requests of the page answered with errors:\n  ${graphqlErrors.join('\n  ')}`);
    }
    await checkDocs(page, failures);
    await checkCompletion(page, editor, failures);
    await checkSubscription(page, editor, gateway, failures);
  } catch (err) {
    failures.push(err.message);
  } finally {
    await mkdir(path.dirname(screenshotPath), { recursive: true });
    await page.screenshot({ path: screenshotPath, fullPage: true }).catch((err) => {
      console.error(`could not save the screenshot: ${err.message}`);
    });
    console.log(`screenshot: ${screenshotPath}`);
  }

  if (offOrigin.length > 0) {
    failures.push(`requests tried to leave the gateway's origin ${origin}:\n  ${offOrigin.join('\n  ')}`);
  }
  if (problems.length > 0) {
    failures.push(`the page reported problems:\n  ${problems.join('\n  ')}`);
  }
  assert.ok(failures.length === 0, `GraphiQL offline check failed:\n- ${failures.join('\n- ')}`);
});

const resultText = (page) =>
  page.evaluate(() => document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue() ?? '');

/** The Docs pane lists the three roots (the schema was fetched by introspection). */
async function checkDocs(page, failures) {
  try {
    await page.locator('button[aria-label="Show Documentation Explorer"]').click();
    const docs = page.locator('.graphiql-doc-explorer');
    await docs.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
    for (const root of ['QueryRoot', 'MutationRoot', 'SubscriptionRoot']) {
      await docs.getByText(root, { exact: true }).first().waitFor({ timeout: TIMEOUT_MS });
    }
    const text = await docs.innerText();
    if (/error fetching schema/i.test(text)) failures.push(`the Docs pane says: ${text.slice(0, 200)}`);
    console.log(`docs pane:\n${text.slice(0, 300)}`);
  } catch (err) {
    const text = await page.locator('.graphiql-doc-explorer').innerText().catch(() => '<no docs pane>');
    failures.push(`the Docs pane does not list the roots (${err.message.split('\n')[0]}); it shows:\n${text.slice(0, 300)}`);
  }
}

/** Typing `{ regi` offers `registries`. */
async function checkCompletion(page, editor, failures) {
  try {
    await editor.evaluate((el) => el.CodeMirror.setValue(''));
    await editor.click();
    await page.keyboard.type('{ regi', { delay: 50 });
    const hints = page.locator('.CodeMirror-hints .CodeMirror-hint');
    await hints.first().waitFor({ state: 'visible', timeout: TIMEOUT_MS });
    const offered = await hints.allInnerTexts();
    if (!offered.includes('registries')) failures.push(`typing "{ regi" offers ${JSON.stringify(offered)}, not registries`);
    await page.keyboard.press('Escape');
  } catch (err) {
    failures.push(`typing "{ regi" offers no completion: ${err.message.split('\n')[0]}`);
  }
}

/** A subscription started from GraphiQL shows its first payload (the current state). */
async function checkSubscription(page, editor, gateway, failures) {
  try {
    const res = await fetch(new URL('/graphql', gateway), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        query: 'mutation($i: CreateRegistryInput!) { createRegistry(input: $i) { id } }',
        variables: { i: { name: `graphiql-${Date.now()}`, url: 'http://127.0.0.1:9/registry.json' } },
      }),
    });
    const id = (await res.json()).data.createRegistry.id;
    const sub = `subscription WatchSync { registrySync(registryId: "${id}") { name status } }`;
    await editor.evaluate((el, q) => el.CodeMirror.setValue(q), sub);
    await page.waitForTimeout(500); // GraphiQL parses the edited document before it runs it
    await page.locator('button.graphiql-execute-button').click();
    await page.waitForFunction(
      () => (document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue() ?? '').includes('"registrySync"'),
      null,
      { timeout: TIMEOUT_MS },
    );
    const shown = await resultText(page);
    console.log(`subscription payload:\n${shown}`);
    if (!/"status": "INACTIVE"/.test(shown)) failures.push(`the subscription's first payload is not the current state:\n${shown}`);
    await page.locator('button.graphiql-execute-button').click(); // stops it
  } catch (err) {
    failures.push(`a subscription from GraphiQL shows no payload (${err.message.split('\n')[0]}):\n${await resultText(page)}`);
  }
}
