// One channel space: pusher-js, pusher-http-node and ably-js on the same channels. Ably REST → pusher-js;
// Pusher HTTP API → ably-js; ably-js realtime → pusher-js; pusher-js client events → ably-js; presence both ways.
import { Scenario, assert, connect, once, serverClient, sleep, startAuthServer, subscribe } from '../../node/lib.mjs';
import { Ably, ablyOptions, nextMessage, nextPresence, realtime } from './ablylib.mjs';

new Scenario('cross-protocol').run(async (s) => {
  const auth = await startAuthServer(s);
  const pusher = await connect(s, auth, 'pat');
  const ably = await realtime(s, { clientId: 'ann' });
  const rest = new Ably.Rest(ablyOptions());
  const server = serverClient();

  const { channel: orders } = await subscribe(pusher, 'orders');
  const fromRest = once(orders, 'created');
  await rest.channels.get('orders').publish('created', { id: 1 });
  assert.deepEqual(await fromRest, { id: 1 });
  s.check('ably-rest-to-pusher-js');

  const ablyOrders = ably.channels.get('orders');
  await ablyOrders.attach();
  const shipped = nextMessage(ablyOrders, 'shipped');
  await server.trigger('orders', 'shipped', { id: 2 });
  const message = await shipped;
  assert.deepEqual(message.data, { id: 2 });
  const text = nextMessage(ablyOrders, 'note');
  await server.trigger('orders', 'note', 'plain words');
  assert.equal((await text).data, 'plain words');
  s.check('pusher-http-to-ably-js');

  const fromAbly = once(orders, 'from-ably');
  await ablyOrders.publish('from-ably', 'hello pusher');
  assert.equal(await fromAbly, 'hello pusher');
  s.check('ably-js-to-pusher-js');

  const { channel: chat } = await subscribe(pusher, 'private-chat');
  const ablyChat = ably.channels.get('private-chat');
  await ablyChat.attach();
  const typing = nextMessage(ablyChat, 'client-typing');
  chat.trigger('client-typing', { on: true });
  assert.deepEqual((await typing).data, { on: true });
  s.check('pusher-client-event-to-ably-js');

  const room = ably.channels.get('presence-room');
  await room.presence.enter({ name: 'Ann' });
  const { channel: pusherRoom } = await subscribe(pusher, 'presence-room');
  assert.deepEqual(pusherRoom.members.get('ann').info, { name: 'Ann' });
  assert.equal(pusherRoom.members.count, 2);
  const users = await (await server.get({ path: '/channels/presence-room/users' })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['ann', 'pat']);
  let members = [];
  for (let tries = 0; members.length < 2 && tries < 100; tries += 1) {
    members = await room.presence.get(); // pat's enter travels on ably-js's own socket
    await sleep(10);
  }
  assert.deepEqual(
    members.map((m) => [m.clientId, m.data]).sort(),
    [['ann', { name: 'Ann' }], ['pat', { name: 'User pat' }]],
  );
  s.check('presence-ably-then-pusher');

  const removed = once(pusherRoom, 'pusher:member_removed');
  await room.presence.leave();
  assert.equal((await removed).id, 'ann');
  const patLeft = nextPresence(room, 'leave');
  pusher.unsubscribe('presence-room');
  assert.equal((await patLeft).clientId, 'pat');
  s.check('presence-leaves');

  const { channel: again } = await subscribe(pusher, 'presence-room');
  const annBack = once(again, 'pusher:member_added');
  const otherAbly = await realtime(s, { clientId: 'zed' });
  await otherAbly.channels.get('presence-room').presence.enter();
  assert.equal((await annBack).id, 'zed');
  s.check('presence-pusher-sees-ably-enter');
});
