// ably-js 2.x across a dropped network: the test cuts the TCP connections under it (as lost Wi-Fi would, no CLOSE)
// and refuses new ones until it mends the cable. The connection resumes with its id, the channel re-attaches
// RESUMED, every message published meanwhile (Ably REST and the Pusher HTTP API) arrives once and in order, and a
// watcher never sees the member leave. docs/ably.md#connection-resume shows the `attached` listener below.
import { Scenario, assert, serverClient, step, until } from '../../node/lib.mjs';
import { Ably, ablyOptions, realtime as createRealtime } from './ablylib.mjs';

new Scenario('ably-js-resume').run(async (s) => {
  const realtime = await createRealtime(s, {
    clientId: 'phone',
    port: Number(process.env.CABLE_PORT),
    disconnectedRetryTimeout: 300,
  });
  const connectionId = realtime.connection.id;
  const channel = realtime.channels.get('orders');
  const received = [];
  await channel.subscribe('tick', (message) => received.push(message.data));
  await channel.presence.enter({ here: true });
  const channelChanges = [];
  channel.on((change) => channelChanges.push(`${change.current}${change.resumed ? ' resumed' : ''}`));
  let refetches = 0;
  const refetchOrders = () => (refetches += 1);
  channel.on('attached', (change) => {
    if (!change.resumed) refetchOrders(); // the first load, or continuity lost
  });
  const states = [];
  realtime.connection.on((change) => states.push(change.current));

  const watcher = await createRealtime(s, { clientId: 'watcher' });
  const watched = watcher.channels.get('orders');
  const leaves = [];
  await watched.presence.subscribe('leave', (member) => leaves.push(member.clientId));
  const rest = new Ably.Rest(ablyOptions()).channels.get('orders');
  const backend = serverClient();

  await step('cut');
  await until(() => realtime.connection.state !== 'connected', { what: 'the client to notice the cut' });
  const sent = [];
  for (let index = 0; index < 6; index += 1) {
    const data = `t${index}`;
    if (index % 2 === 0) await rest.publish('tick', data);
    else await backend.trigger('orders', 'tick', data);
    sent.push(data);
  }
  await step('mend');
  await until(() => received.length >= sent.length, { timeoutMs: 10000, what: 'the missed ticks' });
  await rest.publish('tick', 'live');
  await until(() => received.length > sent.length, { what: 'a tick after the resume' });

  assert.equal(realtime.connection.id, connectionId);
  assert.ok(states.includes('disconnected') && states.at(-1) === 'connected', states.join(' '));
  assert.deepEqual(channelChanges, ['attaching', 'attached resumed']);
  assert.equal(refetches, 0);
  s.check('resumed');

  assert.deepEqual(received, [...sent, 'live']);
  s.check('no-message-lost');

  assert.deepEqual(leaves, []);
  assert.deepEqual((await watched.presence.get()).map((member) => member.clientId), ['phone']);
  s.check('presence-kept');
});
