// ably-js 2.x's `recover` option, as a page reloaded after its network died: the first client's connection is cut
// for good (the test refuses its reconnections), and a new client built with the first's recovery key continues the
// same connection: the same id, its channel attached again RESUMED with the messages published meanwhile (Ably
// REST and the Pusher HTTP API), and its member never left.
import { Scenario, assert, serverClient, step, until } from '../../node/lib.mjs';
import { Ably, ablyOptions, realtime } from './ablylib.mjs';

new Scenario('ably-js-recover').run(async (s) => {
  const before = await realtime(s, { clientId: 'page', port: Number(process.env.CABLE_PORT) });
  const rest = new Ably.Rest(ablyOptions()).channels.get('orders');
  const seen = [];
  const first = before.channels.get('orders');
  await first.subscribe('status', (message) => seen.push(message.data));
  await first.presence.enter({ tab: 1 });
  await rest.publish('status', 'placed');
  await until(() => seen.length === 1, { what: 'the first status' });
  const recoveryKey = before.connection.createRecoveryKey();

  const watcher = await realtime(s, { clientId: 'watcher' });
  const leaves = [];
  await watcher.channels.get('orders').presence.subscribe('leave', (member) => leaves.push(member.clientId));

  await step('cut');
  await until(() => before.connection.state !== 'connected', { what: 'the first client to lose its connection' });
  await rest.publish('status', 'packed');
  await serverClient().trigger('orders', 'status', 'shipped');

  const after = await realtime(s, { clientId: 'page', recover: recoveryKey });
  assert.equal(after.connection.id, before.connection.id);
  const channel = after.channels.get('orders');
  const changes = [];
  channel.on('attached', (change) => changes.push(change.resumed));
  const statuses = [];
  await channel.subscribe('status', (message) => statuses.push(message.data));
  await until(() => statuses.length === 2, { what: 'the statuses published while the page was away' });
  assert.deepEqual(statuses, ['packed', 'shipped']);
  assert.deepEqual(changes, [true]);
  s.check('recovered');

  assert.deepEqual(leaves, []);
  const members = await watcher.channels.get('orders').presence.get();
  assert.deepEqual(members.map((member) => member.clientId), ['page']);
  s.check('presence-kept');
});
