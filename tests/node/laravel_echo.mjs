// laravel-echo 2 (broadcaster 'pusher', pusher-js underneath) the way a Laravel front end uses it: listen('.x')
// and namespaced listen, whisper / listenForWhisper, join().here/joining/leaving, .error() on a refused channel,
// and toOthers: axios carries Echo's X-Socket-ID to the app backend, which passes it to pusher-http-node as
// socket_id, so the sender's own connection is skipped.
import axios from 'axios';
import Echo from 'laravel-echo';
import { PusherJS, Scenario, assert, env, serverClient, sleep, startAuthServer, until } from './lib.mjs';

// Laravel's resources/js/bootstrap.js sets window.axios before creating Echo; Echo then registers an axios
// request interceptor that adds X-Socket-Id. In Node the global scope plays the part of window.
globalThis.axios = axios;

function makeEcho(s, auth, user) {
  const echo = new Echo({
    broadcaster: 'pusher',
    Pusher: PusherJS,
    key: env.key,
    cluster: 'mt1',
    wsHost: env.host,
    wsPort: env.port,
    wssPort: env.port,
    httpHost: env.host,
    statsHost: env.host,
    forceTLS: false,
    enabledTransports: ['ws'],
    enableStats: false,
    authEndpoint: `${auth.base}/pusher/auth`,
    // Echo fills in X-CSRF-TOKEN / Authorization by mutating its (shared, module-level) default `auth.headers`
    // object; one Echo per page never notices, two in one process would share them, so give each its own.
    auth: { headers: {} },
    userAuthentication: { endpoint: `${auth.base}/pusher/user-auth`, headers: {} },
    bearerToken: user,
    csrfToken: `csrf-${user}`,
  });
  s.onCleanup(() => echo.disconnect());
  return echo;
}

async function connected(echo) {
  await until(() => echo.connectionStatus() === 'connected' && echo.socketId(), { what: 'Echo to connect' });
  assert.match(echo.socketId(), /^\d+\.\d+$/);
}

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribed(resolve);
    channel.error((error) => reject(new Error(`subscription failed: ${JSON.stringify(error)}`)));
  });
}

new Scenario('laravel-echo').run(async (s) => {
  const auth = await startAuthServer(s);
  const api = serverClient();
  const alice = makeEcho(s, auth, 'alice');
  const bob = makeEcho(s, auth, 'bob');
  await Promise.all([connected(alice), connected(bob)]);
  s.check('connect');

  // listen('.x') takes the event name as is; listen('X') prefixes the App.Events namespace (App\Events\X).
  const orders = alice.channel('orders');
  const raw = [];
  const namespaced = [];
  orders.listen('.order.shipped', (data) => raw.push(data)).listen('OrderPlaced', (data) => namespaced.push(data));
  await subscribed(orders);
  await api.trigger('orders', 'order.shipped', { id: 1 });
  await api.trigger('orders', 'App\\Events\\OrderPlaced', { id: 2 });
  await until(() => raw.length === 1 && namespaced.length === 1, { what: 'Echo listen callbacks' });
  assert.deepEqual(raw, [{ id: 1 }]);
  assert.deepEqual(namespaced, [{ id: 2 }]);
  s.check('listen');

  // Private channels: authorized via the authEndpoint with Echo's bearer and CSRF headers.
  const chatA = alice.private('chat');
  const chatB = bob.private('chat');
  await Promise.all([subscribed(chatA), subscribed(chatB)]);
  const chatAuth = auth.requests.find((r) => r.form && r.form.channel_name === 'private-chat');
  assert.equal(chatAuth.headers['x-csrf-token'], 'csrf-alice');
  assert.equal(chatAuth.headers.authorization, 'Bearer alice');
  assert.equal(chatAuth.form.socket_id, alice.socketId());
  s.check('private-auth');

  // whisper / listenForWhisper: reaches the other client, not the sender.
  const heardByA = [];
  const heardByB = [];
  chatA.listenForWhisper('typing', (data) => heardByA.push(data));
  chatB.listenForWhisper('typing', (data) => heardByB.push(data));
  chatB.whisper('typing', { name: 'bob' });
  await until(() => heardByA.length === 1, { what: 'whisper on alice' });
  assert.deepEqual(heardByA, [{ name: 'bob' }]);
  await sleep(150);
  assert.deepEqual(heardByB, []);
  s.check('whisper');

  // join(): here / joining / leaving.
  const hereA = [];
  const joiningA = [];
  const leavingA = [];
  const roomA = alice
    .join('room')
    .here((users) => hereA.push(users))
    .joining((user) => joiningA.push(user))
    .leaving((user) => leavingA.push(user));
  await until(() => hereA.length === 1, { what: 'here() for alice' });
  assert.deepEqual(hereA[0], [{ name: 'User alice' }]);
  const hereB = [];
  bob.join('room').here((users) => hereB.push(users));
  await until(() => hereB.length === 1 && joiningA.length === 1, { what: 'bob joining' });
  assert.deepEqual(joiningA, [{ name: 'User bob' }]);
  assert.deepEqual(hereB[0].map((u) => u.name).sort(), ['User alice', 'User bob']);
  bob.leave('room');
  await until(() => leavingA.length === 1, { what: 'bob leaving' });
  assert.deepEqual(leavingA, [{ name: 'User bob' }]);
  assert.ok(roomA);
  s.check('presence');

  // .error(): the backend refuses the channel (403).
  const errors = [];
  alice.private('refused-orders').error((error) => errors.push(error));
  await until(() => errors.length === 1, { what: 'Echo .error()' });
  assert.equal(errors[0].type, 'AuthError');
  assert.equal(errors[0].status, 403);
  s.check('error');

  // toOthers: alice's request carries X-Socket-ID (Echo's axios interceptor); the backend publishes with
  // pusher-http-node passing it as socket_id; bob receives the event, alice does not.
  const updatesA = [];
  const updatesB = [];
  const feedA = alice.channel('feed').listen('.updated', (data) => updatesA.push(data));
  const feedB = bob.channel('feed').listen('.updated', (data) => updatesB.push(data));
  await Promise.all([subscribed(feedA), subscribed(feedB)]);
  const response = await axios.post(`${auth.base}/publish`, { channel: 'feed', event: 'updated', data: { v: 1 } });
  assert.equal(response.status, 200);
  const publish = auth.requests.find((r) => r.path === '/publish');
  assert.equal(publish.headers['x-socket-id'], alice.socketId());
  await until(() => updatesB.length === 1, { what: 'toOthers delivery to bob' });
  assert.deepEqual(updatesB, [{ v: 1 }]);
  await sleep(150);
  assert.deepEqual(updatesA, []);
  // The same publish without a socket id reaches both.
  await api.trigger('feed', 'updated', { v: 2 });
  await until(() => updatesA.length === 1 && updatesB.length === 2, { what: 'delivery to both' });
  s.check('to-others');
});
