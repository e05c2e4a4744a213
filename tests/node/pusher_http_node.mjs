// pusher-http-node 5 against the emulator's HTTP API, observed through pusher-js subscribers: trigger to several
// channels, socket_id exclusion, info (user_count, subscription_count), triggerBatch, the channel queries, error
// statuses, and the published auth / webhook signature vectors.
import {
  PusherServer,
  Scenario,
  assert,
  collect,
  rejection,
  connect,
  serverClient,
  sleep,
  startAuthServer,
  subscribe,
  until,
} from './lib.mjs';

function vectors(s) {
  const pusher = new PusherServer({
    appId: '1',
    key: '278d425bdf160c739803',
    secret: '7ad3773142a6692b25b8',
    encryptionMasterKeyBase64: Buffer.alloc(32).toString('base64'),
  });
  assert.deepEqual(pusher.authorizeChannel('1234.1234', 'private-foobar'), {
    auth: '278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4',
  });
  const presence = pusher.authorizeChannel('1234.1234', 'presence-foobar', {
    user_id: 10,
    user_info: { name: 'Mr. Channels' },
  });
  assert.equal(presence.auth, '278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80');
  assert.equal(presence.channel_data, '{"user_id":10,"user_info":{"name":"Mr. Channels"}}');
  assert.deepEqual(pusher.authenticateUser('1234.1234', { id: '12345' }), {
    auth: '278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba',
    user_data: '{"id":"12345"}',
  });
  const encrypted = pusher.authorizeChannel('1234.1234', 'private-encrypted-foo');
  assert.equal(encrypted.shared_secret, 'Vj09QBnxvq5Edw6uFvYE4Yi4ZdcpUYC8mx/fcgpzQro=');
  const rawBody = '{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"}]}';
  const headers = {
    'content-type': 'application/json',
    'x-pusher-key': '278d425bdf160c739803',
    'x-pusher-signature': 'c19001ae3963ccb13bf618e5b16ba9848e7e74df0993aa0689168e341c6833cf',
  };
  assert.equal(pusher.webhook({ headers, rawBody }).isValid(), true);
  s.check('vectors');
}

new Scenario('pusher-http-node').run(async (s) => {
  vectors(s);

  const auth = await startAuthServer(s);
  const api = serverClient();
  const alice = await connect(s, auth, 'alice');
  const bob = await connect(s, auth, 'bob');
  const bob2 = await connect(s, auth, 'bob');
  const carol = await connect(s, auth, 'carol');
  const { channel: aliceNews1 } = await subscribe(alice, 'news-1');
  const { channel: aliceNews2 } = await subscribe(alice, 'news-2');
  const { channel: bobNews1 } = await subscribe(bob, 'news-1');
  await subscribe(bob, 'presence-stats');
  await subscribe(bob2, 'presence-stats');
  await subscribe(carol, 'presence-stats');

  // trigger to several channels at once.
  const seen = {
    aliceNews1: collect(aliceNews1, 'multi'),
    aliceNews2: collect(aliceNews2, 'multi'),
    bobNews1: collect(bobNews1, 'multi'),
  };
  let response = await api.trigger(['news-1', 'news-2'], 'multi', { n: 1 });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), {});
  await until(() => seen.aliceNews1.length && seen.aliceNews2.length && seen.bobNews1.length, {
    what: 'multi-channel delivery',
  });
  assert.deepEqual([seen.aliceNews1, seen.aliceNews2, seen.bobNews1], [[{ n: 1 }], [{ n: 1 }], [{ n: 1 }]]);
  s.check('trigger-multi');

  // socket_id excludes exactly that connection, on every channel of the trigger.
  const excluded = { a1: collect(aliceNews1, 'excl'), a2: collect(aliceNews2, 'excl'), b1: collect(bobNews1, 'excl') };
  await api.trigger(['news-1', 'news-2'], 'excl', 'text', { socket_id: alice.connection.socket_id });
  await until(() => excluded.b1.length === 1, { what: 'delivery to bob' });
  await sleep(150);
  assert.deepEqual(excluded, { a1: [], a2: [], b1: ['text'] });
  s.check('trigger-socket-id');

  // info: attributes per channel, each only where the channel type allows it.
  response = await api.trigger(['presence-stats', 'news-1'], 'counted', {}, { info: 'user_count,subscription_count' });
  assert.deepEqual(await response.json(), {
    channels: {
      'presence-stats': { user_count: 2, subscription_count: 3 },
      'news-1': { subscription_count: 2 },
    },
  });
  s.check('trigger-info');

  // triggerBatch: in order, with per-item socket_id, and index-aligned info.
  const batchA = [];
  aliceNews1.bind_global((event, data) => event.startsWith('b') && batchA.push([event, data]));
  aliceNews2.bind_global((event, data) => event.startsWith('b') && batchA.push([event, data]));
  const batchB = collect(bobNews1, 'b3');
  response = await api.triggerBatch([
    { channel: 'news-1', name: 'b1', data: { i: 1 } },
    { channel: 'news-2', name: 'b2', data: 'two' },
    { channel: 'news-1', name: 'b3', data: { i: 3 }, socket_id: alice.connection.socket_id },
  ]);
  assert.deepEqual(await response.json(), {});
  await until(() => batchA.length === 2 && batchB.length === 1, { what: 'batch delivery' });
  await sleep(100);
  assert.deepEqual(batchA, [
    ['b1', { i: 1 }],
    ['b2', 'two'],
  ]);
  assert.deepEqual(batchB, [{ i: 3 }]);
  response = await api.triggerBatch([
    { channel: 'news-1', name: 'bi', data: {}, info: 'subscription_count' },
    { channel: 'presence-stats', name: 'bi', data: {}, info: 'user_count' },
  ]);
  assert.deepEqual(await response.json(), { batch: [{ subscription_count: 2 }, { user_count: 2 }] });
  s.check('trigger-batch');

  // GET /channels: occupied channels only, filter_by_prefix, info=user_count for presence.
  response = await api.get({ path: '/channels' });
  assert.deepEqual(Object.keys((await response.json()).channels).sort(), ['news-1', 'news-2', 'presence-stats']);
  response = await api.get({ path: '/channels', params: { filter_by_prefix: 'news-' } });
  assert.deepEqual(await response.json(), { channels: { 'news-1': {}, 'news-2': {} } });
  response = await api.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } });
  assert.deepEqual(await response.json(), { channels: { 'presence-stats': { user_count: 2 } } });
  let error = await rejection(api.get({ path: '/channels', params: { info: 'user_count' } }));
  assert.equal(error.status, 400);
  assert.match(error.body, /presence/);
  s.check('get-channels');

  // GET /channels/{name}.
  response = await api.get({ path: '/channels/presence-stats', params: { info: 'user_count,subscription_count' } });
  assert.deepEqual(await response.json(), { occupied: true, user_count: 2, subscription_count: 3 });
  response = await api.get({ path: '/channels/news-2', params: { info: 'subscription_count' } });
  assert.deepEqual(await response.json(), { occupied: true, subscription_count: 1 });
  response = await api.get({ path: '/channels/nobody-here' });
  assert.deepEqual(await response.json(), { occupied: false });
  error = await rejection(api.get({ path: '/channels/news-1', params: { info: 'user_count' } }));
  assert.equal(error.status, 400);
  s.check('get-channel');

  // GET /channels/{presence}/users: unique users, not connections.
  response = await api.get({ path: '/channels/presence-stats/users' });
  const { users } = await response.json();
  assert.deepEqual(users.map((u) => u.id).sort(), ['bob', 'carol']);
  error = await rejection(api.get({ path: '/channels/news-1/users' }));
  assert.equal(error.status, 400);
  s.check('get-users');

  // Errors: a wrong secret is 401; oversized data is 413; the API keeps serving afterwards.
  error = await rejection(serverClient({ secret: 'wrong-secret' }).trigger('news-1', 'nope', {}));
  assert.equal(error.status, 401);
  error = await rejection(api.trigger('news-1', 'big', 'x'.repeat(11 * 1024)));
  assert.equal(error.status, 413);
  const after = collect(bobNews1, 'after-errors');
  await api.trigger('news-1', 'after-errors', { ok: true });
  await until(() => after.length === 1, { what: 'delivery after errors' });
  s.check('errors');
});
