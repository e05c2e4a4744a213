// ably-js 2.x REST against the emulator (Basic auth over http: ably-js does not refuse it, reference §A.2):
// time, publish (single, array, idempotent ids), batchPublish, status, presence.get, channel enumeration,
// requestToken, and errors with Ably's codes.
import { Scenario, assert } from '../../node/lib.mjs';
import { Ably, ablyKey, ablyOptions, nextMessage, realtime } from './ablylib.mjs';

new Scenario('ably-js-rest').run(async (s) => {
  const rest = new Ably.Rest(ablyOptions());
  assert.ok(Math.abs((await rest.time()) - Date.now()) < 5000);
  s.check('time');

  const listener = await realtime(s, { clientId: 'lis' });
  const orders = listener.channels.get('orders');
  await orders.attach();
  const created = nextMessage(orders, 'created');
  const published = await rest.channels.get('orders').publish('created', { id: 1 });
  assert.equal(published.serials.length, 1);
  assert.deepEqual((await created).data, { id: 1 });
  const second = nextMessage(orders, 'b');
  await rest.channels.get('orders').publish([{ name: 'a', data: '1' }, { name: 'b', data: '2' }]);
  assert.equal((await second).data, '2');
  s.check('publish');

  const seen = [];
  orders.subscribe('dup', (message) => seen.push(message.data));
  const dup = [{ name: 'dup', data: 'once', id: `fixed-${Date.now()}:0` }];
  await rest.channels.get('orders').publish(dup);
  await rest.channels.get('orders').publish(dup);
  const marker = nextMessage(orders, 'marker');
  await rest.channels.get('orders').publish('marker', 'm');
  await marker;
  assert.deepEqual(seen, ['once']);
  s.check('idempotent');

  const batch = await rest.batchPublish([{ channels: ['orders', 'audit'], messages: { name: 'batched', data: 'x' } }]);
  assert.equal(batch[0].successCount, 2);
  assert.equal(batch[0].failureCount, 0);
  s.check('batch');

  // Ably's 100-channel limit of a BatchSpec and of a batch presence request: 90010, status 400 (not 40000; the
  // emulator served any number of channels to batchPresence)
  const many = Array.from({ length: 101 }, (_, i) => `many-${i}`);
  const tooMany = (e) => e.code === 90010 && e.statusCode === 400 && /Max number of channels/.test(e.message);
  await assert.rejects(rest.batchPublish([{ channels: many, messages: { name: 'n' } }]), tooMany);
  await assert.rejects(rest.batchPresence(many), tooMany);
  assert.equal((await rest.batchPresence(many.slice(0, 100))).successCount, 100);
  s.check('batch-limits');

  await orders.presence.enter('listening');
  const status = await rest.channels.get('orders').status();
  assert.equal(status.status.isActive, true);
  assert.equal(status.status.occupancy.metrics.connections, 1);
  assert.equal(status.status.occupancy.metrics.presenceMembers, 1);
  const members = await rest.channels.get('orders').presence.get();
  assert.deepEqual(members.items.map((m) => [m.clientId, m.data]), [['lis', 'listening']]);
  s.check('status-presence');

  const listed = await rest.request('get', '/channels', 6, { prefix: 'ord' }, null, {});
  assert.deepEqual(listed.items, ['orders']);
  s.check('channels');

  const token = await rest.auth.requestToken({ clientId: 'rest-user', capability: { orders: ['subscribe'] } });
  assert.equal(token.clientId, 'rest-user');
  const limited = new Ably.Rest(ablyOptions({ key: undefined, token: token.token }));
  await assert.rejects(limited.channels.get('orders').publish('n', 'd'), (e) => e.code === 40160 && e.statusCode === 401);
  const wrong = new Ably.Rest(ablyOptions({ key: `${ablyKey}x` }));
  await assert.rejects(wrong.channels.get('orders').publish('n', 'd'), (e) => e.code === 40101);
  assert.equal((await rest.channels.get('orders').publish('still', 'ok')).serials.length, 1);
  s.check('errors');
});
