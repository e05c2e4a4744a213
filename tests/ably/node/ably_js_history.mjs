// ably-js 2.x and the emulator's history (docs/ably.md#history-and-rewind): history() pages through the REST API's Link header,
// the rewind channel param delivers the last messages right after the attach (channel.params shows it, the attached
// state change has hasBacklog), a rewind by time with rewindLimit, the [?rewind=1]name form, and a re-attach after a
// lost transport (which carries the channel's serial) is not rewound a second time.
import { Scenario, assert, sleep, until } from '../../node/lib.mjs';
import { Ably, ablyOptions, realtime } from './ablylib.mjs';

function collected(channel) {
  const names = [];
  channel.subscribe((message) => names.push(message.name));
  return names;
}

new Scenario('ably-js-history').run(async (s) => {
  const rest = new Ably.Rest(ablyOptions());
  const paged = rest.channels.get('paged');
  for (let number = 0; number < 5; number += 1) await paged.publish(`m${number}`, { number });
  let page = await paged.history({ limit: 2 });
  const pages = [page.items.map((message) => message.name)];
  while (page.hasNext()) {
    page = await page.next();
    pages.push(page.items.map((message) => message.name));
  }
  assert.deepEqual(pages, [['m4', 'm3'], ['m2', 'm1'], ['m0']]);
  assert.ok(page.isLast());
  const forwards = await paged.history({ direction: 'forwards', limit: 3 });
  assert.deepEqual(forwards.items.map((message) => message.name), ['m0', 'm1', 'm2']);
  assert.deepEqual(forwards.items[0].data, { number: 0 });
  s.check('pages');

  const order = rest.channels.get('order-7');
  for (const status of ['placed', 'packed', 'shipped']) await order.publish('status', status);
  const client = await realtime(s);
  const tracked = client.channels.get('order-7', { params: { rewind: '2' } });
  const attached = new Promise((resolve) => tracked.once('attached', resolve));
  const statuses = [];
  tracked.subscribe('status', (message) => statuses.push(message.data));
  const change = await attached;
  assert.equal(change.hasBacklog, true);
  assert.deepEqual(tracked.params, { rewind: '2' });
  await until(() => statuses.length === 2, { what: 'the two rewound messages' });
  await order.publish('status', 'delivered');
  await until(() => statuses.length === 3, { what: 'the live message' });
  assert.deepEqual(statuses, ['packed', 'shipped', 'delivered']);
  s.check('rewind-count');

  const timed = rest.channels.get('timed');
  for (let number = 0; number < 3; number += 1) await timed.publish(`t${number}`, 'x');
  const recent = client.channels.get('timed', { params: { rewind: '1m', rewindLimit: '2' } });
  const recentNames = collected(recent);
  await until(() => recentNames.length === 2, { what: 'the rewound messages' });
  assert.deepEqual(recentNames, ['t1', 't2']);
  s.check('rewind-time');

  // The qualified form, beside the plain channel object of the same name on the same connection.
  const latest = client.channels.get('[?rewind=1]order-7');
  const latestStatuses = [];
  await latest.subscribe('status', (message) => latestStatuses.push(message.data));
  await until(() => latestStatuses.length === 1, { what: 'the rewound message of [?rewind=1]order-7' });
  assert.deepEqual(latestStatuses, ['delivered']);
  assert.deepEqual(latest.params, { rewind: '1' });
  await latest.detach();
  s.check('rewind-qualifier');

  // More than the 100 Ably sends: the attach succeeds, its state change's reason tells of the cut.
  await rest.channels.get('long').publish(Array.from({ length: 101 }, (_, number) => ({ name: `l${number}`, data: 'x' })));
  const long = client.channels.get('long', { params: { rewind: '150' } });
  const longAttached = new Promise((resolve) => long.once('attached', resolve));
  const longNames = collected(long);
  const cut = await longAttached;
  assert.equal(long.state, 'attached');
  assert.equal(cut.reason.code, 90004);
  assert.equal(cut.reason.statusCode, 404);
  await until(() => longNames.length === 100, { what: 'the last 100 messages' });
  assert.equal(longNames[0], 'l1');
  assert.equal(longNames[99], 'l100');
  s.check('rewind-cut');

  // A lost transport: ably-js resumes and attaches again with the channelSerial, which is not rewound again.
  client.connection.connectionManager.activeProtocol.getTransport().disconnect();
  await client.connection.whenState('disconnected');
  await client.connection.whenState('connected');
  await tracked.whenState('attached');
  await order.publish('status', 'signed');
  await until(() => statuses.length === 4, { what: 'the message after the re-attach' });
  await sleep(200);
  assert.deepEqual(statuses, ['packed', 'shipped', 'delivered', 'signed']);
  s.check('no-rewind-on-reattach');
});
