// The Next.js guide (docs/gateway.md), executed: its route handler and its realtime module, compiled from the
// guide's own TypeScript by gateway_build_guide.mjs, against a real gateway and emulator. The route handler is
// called the way Next.js calls it (a Web Request and a params promise) and publishes with Node fetch; the
// realtime module drives pusher-js in Node, exactly as the client component does in the browser.
//
// Environment (from tests/gateway/test_gateway_nextjs_guide.py): RELAY_GUIDE_DIR (the compiled guide),
// RELAY_GATEWAY_URL, RELAY_API_TOKEN_FOR_APP, RELAY_JWT_SECRET_FOR_APP, RELAY_JWT_ALICE, RELAY_JWT_BOB,
// RELAY_JWT_EXPIRED.
// Step: {"step": "close-all-4200"} — the driver closes every emulator connection with pusher:error 4200.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Scenario, assert, sleep, step, until } from './lib.mjs';

const guide = process.env.RELAY_GUIDE_DIR;
const gatewayUrl = process.env.RELAY_GATEWAY_URL;
const load = (file) => import(pathToFileURL(path.join(guide, file)).href);

/** The guide's route handler, called as Next.js would for POST /api/orders/{orderId}/ready by the user of `jwt`. */
async function orderReady(POST, orderId, jwt, headers = {}) {
  const request = new Request(`http://shop.test/api/orders/${orderId}/ready`, {
    method: 'POST',
    headers: jwt ? { Authorization: `Bearer ${jwt}`, ...headers } : headers,
  });
  const response = await POST(request, { params: Promise.resolve({ orderId }) });
  assert.ok(response instanceof Response);
  return { status: response.status, body: await response.json() };
}

new Scenario('gateway-nextjs-guide', { timeoutMs: 20000 }).run(async (s) => {
  const realtime = await load('lib/realtime.mjs');
  const { POST } = await load('app/api/orders/[orderId]/ready/route.mjs');
  // The Next.js server's environment, read by lib/relay-server.ts at each publish.
  process.env.RELAY_GATEWAY_URL = gatewayUrl;
  process.env.RELAY_API_TOKEN = process.env.RELAY_API_TOKEN_FOR_APP;
  process.env.RELAY_JWT_SECRET = process.env.RELAY_JWT_SECRET_FOR_APP; // lib/session.ts checks the caller's JWT
  const aliceJwt = process.env.RELAY_JWT_ALICE;

  // Pure mapping of pusher-js states.
  assert.equal(realtime.connectionStatus('initialized', false), 'connecting');
  assert.equal(realtime.connectionStatus('unavailable', false), 'connecting');
  assert.equal(realtime.connectionStatus('connecting', true), 'reconnecting');
  assert.equal(realtime.connectionStatus('unavailable', true), 'reconnecting');
  assert.equal(realtime.connectionStatus('failed', true), 'offline');

  // A gateway that cannot be reached (nothing listens on port 1): the error names the URL asked and what to check. It
  // was fetch's own TypeError, which the page showed as is ("TypeError: Failed to fetch" in a browser).
  await assert.rejects(realtime.fetchClientConfig('http://127.0.0.1:1/'), {
    message:
      'client-config: cannot reach the gateway at http://127.0.0.1:1/v1/client-config: is relay serve running ' +
      "there, and does its RELAY_CORS_ORIGINS list this page's origin?",
  });
  s.check('client-config-unreachable');

  // Connection status: connecting → connected.
  const statuses = [];
  const alice = await realtime.createRealtime({
    gatewayUrl,
    getJwt: () => process.env.RELAY_JWT_ALICE,
    onStatus: (status) => statuses.push(status),
  });
  s.onCleanup(() => alice.close());
  await until(() => statuses.at(-1) === 'connected', { what: 'alice to connect' });
  assert.deepEqual(statuses, ['connecting', 'connected']);
  s.check('status-connected');

  // The user's channel through /v1/auth/channel; another user's is refused with 403.
  const events = [];
  let ready = 0;
  alice.subscribe('private-user-alice', {
    onEvent: (event, data) => events.push({ event, data }),
    onReady: () => ready++,
  });
  const refusals = [];
  alice.subscribe('private-user-bob', {
    onEvent: () => assert.fail('no event on a refused channel'),
    onError: (status, message) => refusals.push({ status, message }),
  });
  await until(() => ready === 1 && refusals.length === 1, { what: 'subscriptions to settle' });
  assert.equal(refusals[0].status, 403);
  s.check('subscribe');

  // An expired JWT: the module reports 401 through onError.
  const expiredErrors = [];
  const expired = await realtime.createRealtime({
    gatewayUrl,
    getJwt: () => process.env.RELAY_JWT_EXPIRED,
    onStatus: () => {},
  });
  s.onCleanup(() => expired.close());
  expired.subscribe('private-user-alice', { onEvent: () => {}, onError: (status) => expiredErrors.push(status) });
  await until(() => expiredErrors.length === 1, { what: 'the expired JWT to be refused' });
  assert.deepEqual(expiredErrors, [401]);
  expired.close();
  s.check('expired-jwt-401');

  // Presence: members with the names from their JWTs.
  const seen = [];
  alice.presence('presence-shop', (members, me) => seen.push({ members, me }));
  await until(() => seen.length === 1, { what: 'alice in presence' });
  const me = { id: 'alice', name: 'Alice Liddell' };
  assert.deepEqual(seen[0], { members: [me], me });
  const bob = await realtime.createRealtime({ gatewayUrl, getJwt: () => process.env.RELAY_JWT_BOB, onStatus: () => {} });
  s.onCleanup(() => bob.close());
  bob.presence('presence-shop', () => {});
  await until(() => seen.length === 2, { what: 'bob joining' });
  assert.deepEqual(seen[1].members, [
    { id: 'alice', name: 'Alice Liddell' },
    { id: 'bob', name: 'Bob' },
  ]);
  s.check('presence');

  // A server component's presence query through GET /v1/channels/{channel}/users.
  const server = await load('lib/relay-server.mjs');
  assert.deepEqual(await server.presenceUserIds('presence-shop'), ['alice', 'bob']);
  await assert.rejects(server.presenceUserIds('orders'), /^Error: 'orders' is not a presence channel/);
  s.check('server-presence-query');

  // The route handler publishes to the customer's channel through /v1/publish.
  let response = await orderReady(POST, 'o-1', aliceJwt);
  assert.deepEqual(response, { status: 200, body: { ok: true, orderId: 'o-1' } });
  await until(() => events.length === 1, { what: 'order o-1 to arrive' });
  assert.deepEqual(events[0], { event: 'order-ready', data: { orderId: 'o-1' } });
  s.check('route-handler-publishes');

  // The caller is the session's (the JWT's sub), never the request's: bob's request reaches bob's channel, not
  // alice's, whatever customerId its body names; without a valid JWT (none, a forged one, an expired one) it is 401.
  const forged = `${aliceJwt.slice(0, aliceJwt.lastIndexOf('.'))}.${'A'.repeat(43)}`;
  for (const jwt of [null, forged, process.env.RELAY_JWT_EXPIRED]) {
    response = await orderReady(POST, 'o-forged', jwt);
    assert.equal(response.status, 401);
    assert.match(response.body.error, /^sign in first/);
  }
  const bobEvents = [];
  let bobReady = false;
  bob.subscribe('private-user-bob', { onEvent: (event, data) => bobEvents.push(data), onReady: () => (bobReady = true) });
  await until(() => bobReady, { what: "bob's subscription" });
  const bobRequest = new Request('http://shop.test/api/orders/o-bob/ready', {
    method: 'POST',
    headers: { Authorization: `Bearer ${process.env.RELAY_JWT_BOB}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ customerId: 'alice' }),
  });
  response = await POST(bobRequest, { params: Promise.resolve({ orderId: 'o-bob' }) });
  assert.equal(response.status, 200);
  await until(() => bobEvents.length === 1, { what: "o-bob on bob's channel" });
  assert.deepEqual(bobEvents, [{ orderId: 'o-bob' }]);
  s.check('route-handler-caller'); // and alice's next event is o-3: neither o-forged nor o-bob reached her

  // X-Socket-ID from the browser tab excludes that tab; the next event still arrives (so o-2 was not just late).
  assert.deepEqual(alice.socketIdHeader(), { 'X-Socket-ID': alice.pusher.connection.socket_id });
  response = await orderReady(POST, 'o-2', aliceJwt, alice.socketIdHeader());
  assert.equal(response.status, 200);
  response = await orderReady(POST, 'o-3', aliceJwt);
  await until(() => events.length === 2, { what: 'order o-3 to arrive' });
  assert.deepEqual(events[1].data, { orderId: 'o-3' });
  s.check('route-handler-socket-id');

  // A malformed X-Socket-ID: the gateway answers 400, and so does the route handler, with the gateway's reason (it
  // was a 502, "the gateway failed", for the caller's own mistake).
  response = await orderReady(POST, 'o-bad-socket', aliceJwt, { 'X-Socket-ID': 'not-a-socket-id' });
  assert.equal(response.status, 400, JSON.stringify(response));
  assert.match(response.body.error, /^realtime: invalid socket_id 'not-a-socket-id'/);
  s.check('route-handler-400');

  // A wrong API token: the gateway answers 401 and the route handler turns it into 502 with the reason.
  process.env.RELAY_API_TOKEN = 'not-the-token';
  response = await orderReady(POST, 'o-4', aliceJwt);
  assert.equal(response.status, 502);
  assert.match(response.body.error, /^realtime: missing or invalid API token/);
  process.env.RELAY_API_TOKEN = process.env.RELAY_API_TOKEN_FOR_APP;
  s.check('route-handler-401');

  // A proxy in front of the gateway answering its 502 with an HTML page: the route handler's 502 says so (reading the
  // page as JSON threw a SyntaxError, a 500 without a body). A final '/' on RELAY_GATEWAY_URL is dropped.
  const proxy = http.createServer((request, answer) => {
    answer.writeHead(502, { 'Content-Type': 'text/html' }).end('<html><body>Bad Gateway</body></html>');
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  s.onCleanup(() => proxy.close());
  process.env.RELAY_GATEWAY_URL = `http://127.0.0.1:${proxy.address().port}/`;
  response = await orderReady(POST, 'o-proxy', aliceJwt);
  assert.deepEqual(response, {
    status: 502,
    body: { error: 'realtime: the gateway answered HTTP 502, not JSON: <html><body>Bad Gateway</body></html>' },
  });
  process.env.RELAY_GATEWAY_URL = gatewayUrl;
  s.check('route-handler-not-json');

  // A gateway that cannot be reached: the 502 gives fetch's cause, which its own "fetch failed" leaves out, and an
  // https:// URL to the plain-HTTP gateway says to use http://.
  const closed = http.createServer();
  await new Promise((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const closedUrl = `http://127.0.0.1:${closed.address().port}`;
  await new Promise((resolve) => closed.close(resolve));
  process.env.RELAY_GATEWAY_URL = closedUrl;
  response = await orderReady(POST, 'o-down', aliceJwt);
  assert.deepEqual(response, {
    status: 502,
    body: { error: `realtime: could not reach the gateway at ${closedUrl}/v1/publish: fetch failed (ECONNREFUSED)` },
  });
  await assert.rejects(server.presenceUserIds('presence-shop'), {
    name: 'Error',
    status: 502,
    message: `could not reach the gateway at ${closedUrl}/v1/channels/presence-shop/users: fetch failed (ECONNREFUSED)`,
  });
  const httpsUrl = gatewayUrl.replace(/^http:/, 'https:');
  process.env.RELAY_GATEWAY_URL = httpsUrl;
  response = await orderReady(POST, 'o-tls', aliceJwt);
  assert.deepEqual(response, {
    status: 502,
    body: {
      error:
        `realtime: could not reach the gateway at ${httpsUrl.replace(/\/+$/, '')}/v1/publish: fetch failed ` +
        '(ERR_SSL_WRONG_VERSION_NUMBER): the gateway answers plain HTTP there, so RELAY_GATEWAY_URL should start ' +
        'with http://',
    },
  });
  process.env.RELAY_GATEWAY_URL = gatewayUrl;
  s.check('route-handler-unreachable');

  // The server drops every connection (4200): connected → reconnecting → connected, resubscribed.
  const aliceReady = ready;
  assert.equal(await step('close-all-4200'), 'ok');
  await until(() => statuses.length === 4 && ready === aliceReady + 1, { what: 'reconnect and resubscribe' });
  assert.deepEqual(statuses, ['connecting', 'connected', 'reconnecting', 'connected']);
  response = await orderReady(POST, 'o-5', aliceJwt);
  await until(() => events.length === 3, { what: 'order o-5 after the reconnect' });
  assert.deepEqual(events.map((e) => e.data.orderId), ['o-1', 'o-3', 'o-5']);
  s.check('reconnecting');

  // A retry with the publish's idempotency key is answered as the first and not delivered again: after o-6 alice's
  // next event is o-7, not o-6 a second time.
  const key = randomUUID();
  const first = await server.publish('private-user-alice', 'order-ready', { orderId: 'o-6' }, { idempotencyKey: key });
  const again = await server.publish('private-user-alice', 'order-ready', { orderId: 'o-6' }, { idempotencyKey: key });
  assert.deepEqual(again, first);
  await server.publish('private-user-alice', 'order-ready', { orderId: 'o-7' });
  await until(() => events.length === 5, { what: 'orders o-6 and o-7 to arrive' });
  assert.deepEqual(events.slice(3).map((event) => event.data.orderId), ['o-6', 'o-7']);
  s.check('route-handler-idempotent');

  // close(): offline, and nothing more is reported.
  alice.close();
  await sleep(50);
  assert.equal(statuses.at(-1), 'offline');
  const after = statuses.length;
  await sleep(100);
  assert.equal(statuses.length, after);
  s.check('offline');
});
