// pusher-js 8 connected with exactly the settings relay.gateway.frontend_config gives a page (RELAY_FRONTEND_CONFIG,
// JSON), as the gateway's /v1/client-config serves them: for an emulator behind a proxy path they carry wsPath.
// Subscribes to a public channel, has the driver publish with the library, and receives the event.
import { PusherJS, Scenario, assert, once, step, subscribe } from './lib.mjs';

new Scenario('pusher-js-frontend-config').run(async (s) => {
  const { key, provider, channelAuthEndpoint, userAuthEndpoint, ...options } = JSON.parse(
    process.env.RELAY_FRONTEND_CONFIG,
  );
  assert.equal(provider, 'emulator');
  const client = new PusherJS(key, options);
  s.onCleanup(() => client.disconnect());
  await once(client.connection, 'connected', { what: 'the connection' });
  s.check('connected');
  const { channel } = await subscribe(client, 'orders');
  const arrived = once(channel, 'order-ready', { what: 'the published event' });
  await step('publish');
  assert.deepEqual(await arrived, { id: 7 });
  s.check('received');
});
