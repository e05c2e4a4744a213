// ably-js 2.x and the `modes` channel param (ably-js's channel.test.js attachWithChannelParamsBasicChannelsGet and
// attachWithChannelParamsModesAndChannelModes): params { modes: 'subscribe' } attaches with the SUBSCRIBE mode only,
// shown in channel.modes and channel.params, so a publish and a presence enter are refused (40165: the key allows
// them, the ATTACH did not request them); params.modes wins over the modes option.
import { Scenario, assert } from '../../node/lib.mjs';
import { realtime } from './ablylib.mjs';

new Scenario('ably-js-params-modes').run(async (s) => {
  const client = await realtime(s, { clientId: 'pm' });
  const params = { modes: 'subscribe' };
  const channel = client.channels.get('params-modes', { params });
  await channel.attach();
  assert.deepEqual(channel.modes, ['subscribe']);
  assert.deepEqual(channel.params, params);
  await assert.rejects(channel.publish('n', 'd'), (error) => error.code === 40165);
  await assert.rejects(channel.presence.enter('here'), (error) => error.code === 40165);
  assert.equal(channel.state, 'attached');
  assert.equal(client.connection.state, 'connected');
  s.check('params-modes-applied');

  const both = client.channels.get('params-modes-2', {
    params: { modes: 'presence,subscribe' },
    modes: ['publish', 'presence_subscribe'],
  });
  await both.attach();
  assert.deepEqual(both.modes, ['presence', 'subscribe']);
  await both.presence.enter('here');
  await assert.rejects(both.publish('n', 'd'), (error) => error.code === 40165);
  s.check('params-modes-win-over-modes');
});
