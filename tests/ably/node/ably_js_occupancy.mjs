// ably-js 2.x and the emulator's inband occupancy (docs/ably.md#occupancy-events): a page showing how many are
// watching a channel subscribes to [meta]occupancy with the occupancy channel param, gets the count at once, and
// again as other viewers attach and leave; channel.params shows the param.
import { Scenario, assert } from '../../node/lib.mjs';
import { realtime } from './ablylib.mjs';

function counts(channel) {
  const seen = [];
  const waiting = [];
  channel.subscribe('[meta]occupancy', (message) => {
    seen.push(message.data.metrics.connections);
    waiting.splice(0).forEach((wake) => wake());
  });
  return {
    async next(expected) {
      const deadline = Date.now() + 5000;
      while (seen[seen.length - 1] !== expected) {
        assert.ok(Date.now() < deadline, `viewer counts ${JSON.stringify(seen)}, waiting for ${expected}`);
        await new Promise((resolve) => {
          waiting.push(resolve);
          setTimeout(resolve, 200);
        });
      }
      return seen;
    },
  };
}

new Scenario('ably-js-occupancy').run(async (s) => {
  const page = await realtime(s);
  const channel = page.channels.get('match-7', { params: { occupancy: 'metrics.connections' } });
  const viewers = counts(channel);
  await channel.whenState('attached');
  assert.deepEqual(channel.params, { occupancy: 'metrics.connections' });
  assert.deepEqual(await viewers.next(1), [1]);
  s.check('first-count');

  const other = await realtime(s);
  await other.channels.get('match-7').attach();
  await viewers.next(2);
  s.check('viewer-joined');

  await other.channels.get('match-7').detach();
  const seen = await viewers.next(1);
  assert.deepEqual(seen, [1, 2, 1]);
  s.check('viewer-left');
});
