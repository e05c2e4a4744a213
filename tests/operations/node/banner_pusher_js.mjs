// pusher-js built by the exact `new Pusher(…)` expression `relay emulator` prints in its startup banner
// (RELAY_PUSHER_SNIPPET, evaluated as printed): it must connect and receive an event the driver publishes (step
// "publish"). The states it went through are in the summary: options that leave pusher-js no transport for the
// connection show as "failed" at once, instead of as a timeout.
import { PusherJS, Scenario, assert, once, step } from '../../node/lib.mjs';

new Scenario('banner-pusher-js').run(async (s) => {
  const snippet = process.env.RELAY_PUSHER_SNIPPET || '';
  assert.match(snippet, /^new Pusher\(.*\)$/);
  const client = new Function('Pusher', `return ${snippet};`)(PusherJS);
  s.onCleanup(() => client.disconnect());
  // pusher-js starts connecting in its constructor, and fails there when no transport is enabled.
  const states = [client.connection.state];
  s.extra.states = states;
  const settled = new Promise((resolve) => {
    const settle = (state) => ['connected', 'failed', 'unavailable'].includes(state) && resolve(state);
    settle(client.connection.state);
    client.connection.bind('state_change', ({ current }) => {
      states.push(current);
      settle(current);
    });
  });
  const timeout = new Promise((resolve) => setTimeout(() => resolve('still connecting after 8 s'), 8000));
  assert.equal(await Promise.race([settled, timeout]), 'connected', `states: ${states.join(' -> ')}`);
  s.extra.states = states.slice(); // not the disconnect at the end, which is the script's own
  s.extra.tls = client.connection.isUsingTLS();
  const news = client.subscribe('news');
  await once(news, 'pusher:subscription_succeeded', { what: 'the news subscription' });
  const received = once(news, 'headline', { what: 'the published event' });
  await step('publish', { channel: 'news', event: 'headline' });
  s.extra.received = await received;
  s.check('connected, subscribed and received');
});
