// pusher-js 8 with an app that has subscription_count on: pusher:subscription_count on public and private
// channels as the number of subscribers changes, channel.subscriptionCount, and never on presence channels.
import { Scenario, assert, collect, connect, sleep, startAuthServer, subscribe, until } from './lib.mjs';

function countsOn(channel) {
  const counts = [];
  channel.bind('pusher:subscription_count', (data) => counts.push(data.subscription_count));
  return counts;
}

new Scenario('pusher-js-subscription-count').run(async (s) => {
  const auth = await startAuthServer(s);
  const a = await connect(s, auth, 'a');
  const b = await connect(s, auth, 'b');

  // Bind before subscribing, so the first count is seen whichever order the server sends it in.
  const chanA = a.subscribe('counted');
  const countsA = countsOn(chanA);
  const order = [];
  chanA.bind('pusher:subscription_succeeded', () => order.push('succeeded'));
  chanA.bind('pusher:subscription_count', () => order.push('count'));
  await until(() => chanA.subscribed && countsA.length === 1, { what: 'first subscription_count' });
  assert.deepEqual(countsA, [1]);
  assert.equal(chanA.subscriptionCount, 1);
  s.extra.firstOrder = order.slice();

  const chanB = b.subscribe('counted');
  const countsB = countsOn(chanB);
  await until(() => countsA.length === 2 && countsB.length >= 1, { what: 'count 2 on both clients' });
  assert.deepEqual(countsA, [1, 2]);
  assert.equal(countsB.at(-1), 2);
  assert.equal(chanB.subscriptionCount, 2);

  b.unsubscribe('counted');
  await until(() => countsA.length === 3, { what: 'count back to 1' });
  assert.deepEqual(countsA, [1, 2, 1]);
  assert.equal(chanA.subscriptionCount, 1);
  s.check('public');

  // Private channels count too.
  const privA = a.subscribe('private-counted');
  const privCounts = countsOn(privA);
  await until(() => privA.subscribed && privCounts.length === 1, { what: 'private count 1' });
  await subscribe(b, 'private-counted');
  await until(() => privCounts.length === 2, { what: 'private count 2' });
  assert.deepEqual(privCounts, [1, 2]);
  s.check('private');

  // Never on presence channels.
  const presA = a.subscribe('presence-counted');
  const presenceCounts = collect(presA, 'pusher:subscription_count');
  await until(() => presA.subscribed, { what: 'presence subscription' });
  await subscribe(b, 'presence-counted');
  await sleep(200);
  assert.deepEqual(presenceCounts, []);
  s.check('not-on-presence');
});
