// pusher-js 8 through `relay serve` (issue 7): the client reads /v1/client-config, authorizes channels at
// /v1/auth/channel and signs in at /v1/auth/user with the user's JWT (Authorization: Bearer …), and receives what
// Node fetch publishes through /v1/publish with the backend's API token.
//
// Environment (from tests/gateway/test_gateway_node.py): RELAY_GATEWAY_URL, RELAY_API_TOKEN, and the HS256 JWTs
// RELAY_JWT_ALICE (sub alice, name "Alice Liddell"), RELAY_JWT_BOB (sub bob) and RELAY_JWT_FORGED (a wrong key).
import {
  PusherJS,
  Scenario,
  assert,
  collect,
  once,
  serverClient,
  sleep,
  subscribe,
  subscribeRefused,
  until,
} from './lib.mjs';

const gateway = process.env.RELAY_GATEWAY_URL;
const token = process.env.RELAY_API_TOKEN;

async function clientConfig() {
  const response = await fetch(`${gateway}/v1/client-config`);
  assert.equal(response.status, 200);
  return response.json();
}

/** A pusher-js client configured only from /v1/client-config and the user's JWT (null: no JWT at all). */
async function connectAs(s, config, jwt) {
  const headers = jwt ? { Authorization: `Bearer ${jwt}` } : {};
  const client = new PusherJS(config.key, {
    cluster: config.cluster,
    wsHost: config.wsHost,
    wsPort: config.wsPort,
    forceTLS: config.forceTLS,
    enabledTransports: ['ws'],
    enableStats: false,
    channelAuthorization: { endpoint: new URL(config.channelAuthEndpoint, gateway).href, transport: 'ajax', headers },
    userAuthentication: { endpoint: new URL(config.userAuthEndpoint, gateway).href, transport: 'ajax', headers },
  });
  s.onCleanup(() => client.disconnect());
  await once(client.connection, 'connected', { what: 'pusher-js to connect' });
  return client;
}

async function publish(body, authorization = `Bearer ${token}`, path = '/v1/publish') {
  const headers = { 'Content-Type': 'application/json' };
  if (authorization) {
    headers.Authorization = authorization;
  }
  const response = await fetch(`${gateway}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  return { status: response.status, body: await response.json() };
}

new Scenario('gateway-pusher-js').run(async (s) => {
  const config = await clientConfig();
  assert.equal(config.provider, 'emulator');
  assert.equal(config.wsPort, Number(process.env.RELAY_PORT));
  const alice = await connectAs(s, config, process.env.RELAY_JWT_ALICE);
  const bob = await connectAs(s, config, process.env.RELAY_JWT_BOB);
  s.check('client-config');

  // Default rules: private-user-{sub} only for that user.
  const { channel: own } = await subscribe(alice, 'private-user-alice');
  s.check('private-allowed');
  const refused = await subscribeRefused(alice, 'private-user-bob');
  assert.equal(refused.type, 'AuthError');
  assert.equal(refused.status, 403);
  assert.match(refused.error, /403/);
  const elsewhere = await subscribeRefused(alice, 'private-admin');
  assert.equal(elsewhere.status, 403);
  s.check('private-forbidden-403');

  // Presence: user_id = sub, user_info.name from the JWT's name claim.
  const { channel: lobbyA } = await subscribe(alice, 'presence-lobby');
  assert.equal(lobbyA.members.me.id, 'alice');
  assert.deepEqual(lobbyA.members.me.info, { name: 'Alice Liddell' });
  const added = once(lobbyA, 'pusher:member_added', { what: 'bob joining' });
  const { channel: lobbyB } = await subscribe(bob, 'presence-lobby');
  assert.deepEqual(await added, { id: 'bob', info: { name: 'Bob' } });
  assert.equal(lobbyB.members.count, 2);
  assert.deepEqual(lobbyB.members.get('alice'), { id: 'alice', info: { name: 'Alice Liddell' } });
  s.check('presence-name-from-jwt');

  // Signin through /v1/auth/user; the emulator then delivers server-to-user events to alice.
  alice.signin();
  await alice.user.signinDonePromise;
  assert.deepEqual(alice.user.user_data, { id: 'alice', user_info: { name: 'Alice Liddell' } });
  await until(() => alice.user.serverToUserChannel && alice.user.serverToUserChannel.subscribed, {
    what: 'the server-to-user channel',
  });
  const toAlice = once(alice.user, 'notice', { what: 'sendToUser' });
  assert.equal((await serverClient().sendToUser('alice', 'notice', { hi: 1 })).status, 200);
  assert.deepEqual(await toAlice, { hi: 1 });
  s.check('signin');

  // A client without a JWT may not join presence; one with a forged JWT gets 401 as subscription_error.
  const anonymous = await connectAs(s, config, null);
  assert.equal((await subscribeRefused(anonymous, 'presence-lobby')).status, 403);
  const forged = await connectAs(s, config, process.env.RELAY_JWT_FORGED);
  assert.equal((await subscribeRefused(forged, 'private-user-alice')).status, 401);
  s.check('anonymous-and-forged-refused');

  // Publishing with Node fetch and the API token reaches private and presence subscribers.
  const gotOwn = once(own, 'order-ready', { what: 'the private event' });
  const gotLobby = once(lobbyB, 'order-ready', { what: 'the presence event' });
  const both = ['private-user-alice', 'presence-lobby'];
  let response = await publish({ channels: both, event: 'order-ready', data: { id: 7 } });
  assert.equal(response.status, 200);
  assert.deepEqual(response.body.channels, ['private-user-alice', 'presence-lobby']);
  assert.deepEqual(await gotOwn, { id: 7 });
  assert.deepEqual(await gotLobby, { id: 7 });
  s.check('publish');

  // socket_id excludes the sender's own connection (toOthers).
  const echoed = collect(lobbyA, 'typing');
  const gotTyping = once(lobbyB, 'typing', { what: 'the toOthers event' });
  const socketId = alice.connection.socket_id;
  response = await publish({ channel: 'presence-lobby', event: 'typing', data: 'a', socket_id: socketId });
  assert.equal(response.status, 200);
  assert.equal(await gotTyping, 'a');
  s.check('publish-socket-id');

  // Batch publish.
  const batchOwn = once(own, 'b1', { what: 'batch event 1' });
  const batchLobby = once(lobbyA, 'b2', { what: 'batch event 2' });
  response = await publish(
    {
      events: [
        { channel: 'private-user-alice', event: 'b1', data: 1 },
        { channel: 'presence-lobby', event: 'b2', data: 2 },
      ],
    },
    `Bearer ${token}`,
    '/v1/publish/batch',
  );
  assert.equal(response.status, 200);
  assert.equal(await batchOwn, 1);
  assert.equal(await batchLobby, 2);
  s.check('publish-batch');

  // Without the token, or with a wrong one (or the user's JWT): 401, and nothing is delivered.
  const leaked = collect(own, 'sneaky');
  for (const authorization of [null, 'Bearer wrong-token', `Bearer ${process.env.RELAY_JWT_ALICE}`, token]) {
    response = await publish({ channel: 'private-user-alice', event: 'sneaky', data: 1 }, authorization);
    assert.equal(response.status, 401, `authorization ${authorization}`);
    assert.match(response.body.error, /API token/);
  }
  const sneakyBatch = { events: [{ channel: 'private-user-alice', event: 'sneaky', data: 1 }] };
  response = await publish(sneakyBatch, null, '/v1/publish/batch');
  assert.equal(response.status, 401);
  await sleep(150);
  assert.deepEqual(leaked, []);
  assert.deepEqual(echoed, []);
  s.check('publish-401');

  // Still serving: one more event after the refusals.
  const after = once(own, 'after', { what: 'the event after refusals' });
  assert.equal((await publish({ channel: 'private-user-alice', event: 'after', data: 'ok' })).status, 200);
  assert.equal(await after, 'ok');
  s.check('still-serving');
});
