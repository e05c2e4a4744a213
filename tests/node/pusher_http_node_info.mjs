// pusher-http-node 5 asking a publish for info=cache, which only GET /channels/{name} answers: trigger and
// triggerBatch get a 400 that says where to ask, nothing is published (the cache channel stays empty), and the same
// calls with an attribute a publish has are answered.
import { Scenario, assert, rejection, serverClient } from './lib.mjs';

const ONE_CHANNEL_ONLY =
  "info=cache is answered for one channel only: ask GET /apps/1/channels/{name}?info=cache";

async function cacheOf(api, channel) {
  const response = await api.get({ path: `/channels/${channel}`, params: { info: 'cache' } });
  return (await response.json()).cache;
}

new Scenario('pusher-http-node-info').run(async (s) => {
  const api = serverClient();

  let error = await rejection(api.trigger('cache-prices', 'price', { p: 1 }, { info: 'cache' }));
  assert.equal(error.status, 400);
  assert.deepEqual(JSON.parse(error.body), { error: ONE_CHANNEL_ONLY });
  error = await rejection(
    api.triggerBatch([
      { channel: 'cache-prices', name: 'price', data: { p: 2 } },
      { channel: 'cache-prices', name: 'price', data: { p: 3 }, info: 'user_count,cache' },
    ]),
  );
  assert.equal(error.status, 400);
  assert.deepEqual(JSON.parse(error.body), { error: `batch[1]: ${ONE_CHANNEL_ONLY}` });
  assert.equal(await cacheOf(api, 'cache-prices'), undefined);
  s.check('refused-unpublished');

  let response = await api.trigger('cache-prices', 'price', { p: 4 }, { info: 'user_count' });
  assert.deepEqual(await response.json(), { channels: { 'cache-prices': {} } });
  response = await api.triggerBatch([{ channel: 'cache-prices', name: 'price', data: { p: 5 }, info: 'user_count' }]);
  assert.deepEqual(await response.json(), { batch: [{}] });
  const cached = await cacheOf(api, 'cache-prices');
  assert.deepEqual([cached.event, cached.data], ['price', '{"p":5}']);
  s.check('still-serving');
});
