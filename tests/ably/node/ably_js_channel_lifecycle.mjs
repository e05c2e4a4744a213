// ably-js 2.x and the emulator's [meta]channel.lifecycle (docs/ably.md#channel-lifecycle-metachannel): a server
// watching channel activity subscribes to the metachannel with a key whose capability names [meta]; another client's
// first attachment opens a channel (channel.region.active, then channel.opened, each with a ChannelDetails), a pusher-js
// subscriber keeps it open, and the last one leaving closes it after the app's webhook delay. Publishing there is
// refused (40160), and a token whose capability is "*" cannot attach it (40160: "*" does not cover [meta] names).
import { Scenario, assert, connect, rejection, subscribe, until } from '../../node/lib.mjs';
import { Ably, ablyOptions, realtime } from './ablylib.mjs';

function lifecycle(channel) {
  const seen = [];
  channel.subscribe((message) => seen.push({ name: message.name, data: message.data }));
  return {
    seen,
    async next(count) {
      await until(() => seen.length >= count, { what: `${count} lifecycle events, got ${JSON.stringify(seen)}` });
      return seen.slice(count - 2, count);
    },
  };
}

new Scenario('ably-js-channel-lifecycle').run(async (s) => {
  const monitor = await realtime(s);
  const meta = monitor.channels.get('[meta]channel.lifecycle');
  const events = lifecycle(meta);
  await meta.attach();
  assert.deepEqual(meta.modes, ['subscribe']);
  s.check('attached');

  const viewer = await realtime(s);
  const orders = viewer.channels.get('orders-42');
  await orders.attach();
  const [regional, opened] = await events.next(2);
  assert.equal(regional.name, 'channel.region.active');
  assert.deepEqual(
    { channelId: regional.data.channelId, region: regional.data.region, master: regional.data.isGlobalMaster },
    { channelId: 'orders-42', region: 'local', master: true },
  );
  assert.equal(opened.name, 'channel.opened');
  assert.equal(opened.data.channelId, 'orders-42');
  assert.equal(opened.data.name, 'orders-42');
  assert.equal(opened.data.region, undefined);
  assert.equal(opened.data.status.isActive, true);
  const metrics = opened.data.status.occupancy.metrics;
  assert.deepEqual([metrics.connections, metrics.subscribers, metrics.publishers], [1, 1, 1]);
  s.check('opened');

  // A pusher-js subscriber of the same channel keeps it open when the Ably viewer leaves.
  const pusher = await connect(s, null, 'pat');
  await subscribe(pusher, 'orders-42');
  await orders.detach();
  await new Promise((resolve) => setTimeout(resolve, 600)); // past the app's webhook delay (0.2 s)
  assert.equal(events.seen.length, 2, JSON.stringify(events.seen));
  pusher.unsubscribe('orders-42');
  const [inactive, closed] = await events.next(4);
  assert.equal(inactive.name, 'channel.region.inactive');
  assert.equal(closed.name, 'channel.closed');
  assert.equal(closed.data.channelId, 'orders-42');
  assert.equal(closed.data.status.isActive, false);
  assert.equal(closed.data.status.occupancy.metrics.connections, 0);
  s.check('closed');

  const refused = await rejection(meta.publish('forged', { channelId: 'x' }));
  assert.equal(refused.code, 40160);
  assert.equal(refused.statusCode, 401);
  assert.equal(meta.state, 'attached');
  s.check('publish-refused');

  const rest = new Ably.Rest(ablyOptions());
  const token = await rest.auth.requestToken({ capability: { '*': ['*'] } });
  const plain = await realtime(s, { key: undefined, token: token.token });
  const denied = await rejection(plain.channels.get('[meta]channel.lifecycle').attach());
  assert.equal(denied.code, 40160);
  assert.match(denied.message, /Channel denied access based on given capability/);
  s.check('capability-refused');
  assert.deepEqual(
    events.seen.map((event) => event.data.channelId),
    ['orders-42', 'orders-42', 'orders-42', 'orders-42'],
  );
});
