// pusher-js 8 on two cluster nodes (RELAY_PORT and RELAY_PORT_2) sharing a presence channel whose member limit is
// RELAY_LIMIT: eight users subscribe at once, four on each node. The admitted ones see subscription_succeeded, the
// others only subscription_error, with `channel.subscribed === false` and no member list; after a member disconnects
// (the driver's step "left" waits until every node knows), a refused client subscribes again and gets in. The driver
// runs it on a single node too (both ports the same), which must answer the same way.
import {
  PusherJS,
  Scenario,
  assert,
  env,
  once,
  pusherOptions,
  serverClient,
  signedAuthorization,
  sleep,
  step,
  until,
} from './lib.mjs';

const ROOM = 'presence-admission';
const limit = Number(process.env.RELAY_LIMIT);
const ports = [env.port, Number(process.env.RELAY_PORT_2)];

new Scenario('pusher-js-presence-admission', { timeoutMs: 25000 }).run(async (s) => {
  const signer = serverClient();
  const users = [];
  for (let index = 0; index < 8; index += 1) {
    const user = `user-${index}`;
    const port = ports[index % 2];
    const authorization = signedAuthorization(signer, { user_id: user, user_info: { name: user } });
    const client = new PusherJS(
      env.key,
      pusherOptions(null, user, { wsPort: port, wssPort: port, channelAuthorization: authorization }),
    );
    s.onCleanup(() => client.disconnect());
    if (client.connection.state !== 'connected') {
      await once(client.connection, 'connected', { what: `${user} to connect` });
    }
    users.push({ user, client, outcomes: [] });
  }
  for (const entry of users) {
    entry.channel = entry.client.subscribe(ROOM);
    entry.channel.bind('pusher:subscription_succeeded', () => entry.outcomes.push('succeeded'));
    entry.channel.bind('pusher:subscription_error', (error) => entry.outcomes.push(error));
  }
  await until(() => users.every((entry) => entry.outcomes.length > 0), { timeoutMs: 10000, what: 'every answer' });
  await sleep(500); // nothing more comes: no late refusal after a subscription_succeeded
  const admitted = users.filter((entry) => entry.outcomes[0] === 'succeeded');
  const refused = users.filter((entry) => entry.outcomes[0] !== 'succeeded');
  s.extra.admitted = admitted.map((entry) => entry.user);
  s.extra.outcomes = Object.fromEntries(users.map((entry) => [entry.user, entry.outcomes]));
  assert.equal(admitted.length, limit);
  for (const entry of admitted) {
    assert.deepEqual(entry.outcomes, ['succeeded']);
    assert.equal(entry.channel.subscribed, true);
    await until(() => entry.channel.members.count === limit, { what: `${entry.user}'s members` });
  }
  for (const entry of refused) {
    assert.equal(entry.outcomes.length, 1);
    assert.deepEqual(entry.outcomes[0], {
      type: 'LimitReached',
      error: `presence limit of ${limit} reached`,
      status: 4100,
    });
    assert.equal(entry.channel.subscribed, false);
    assert.equal(entry.channel.members.count, 0);
  }
  s.check('limit-held');

  const leaving = admitted[0];
  leaving.client.disconnect();
  await step('left', { user: leaving.user });
  const comer = refused[0];
  // What the brief of a pusher-js app would try first: pusher-js 8 keeps `subscriptionPending` after a server's
  // subscription_error, so unsubscribe only marks the channel cancelled and subscribe reinstates it: nothing is sent
  // (the same on a single node and on hosted Pusher). Recorded, then the channel's own subscribe() sends it again.
  comer.client.unsubscribe(ROOM);
  const again = comer.client.subscribe(ROOM);
  assert.equal(again, comer.channel);
  const before = comer.outcomes.length;
  await sleep(1500);
  s.extra.unsubscribeSubscribeGotIn = comer.outcomes.length > before;
  if (!s.extra.unsubscribeSubscribeGotIn) {
    again.subscribe();
  }
  await until(() => comer.outcomes.length > before, { what: `${comer.user} to get in` });
  assert.deepEqual(comer.outcomes.slice(before), ['succeeded']);
  assert.equal(again.subscribed, true);
  assert.equal(again.members.count, limit);
  assert.ok(again.members.get(comer.user));
  assert.ok(!again.members.get(leaving.user));
  s.extra.joinedLater = comer.user;
  s.check('rejoined');
});
