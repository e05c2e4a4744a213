// ably-js 2.x with short-lived tokens (an authCallback signing TokenRequests of TOKEN_TTL_MS): before each token
// expires the server asks for the next one (AUTH), and ably-js renews on the same connection. Over several renewals
// the connection keeps its id, a presence member stays (a watcher sees no leave), and every message published
// meanwhile (Pusher HTTP API, pusher-http-node) arrives once, in order.
import { Scenario, assert, serverClient, sleep, until } from '../../node/lib.mjs';
import { Ably, ablyOptions, realtime } from './ablylib.mjs';

// Tokens are asked for again halfway through their life: 3 s of the 6 s left on a loaded machine for the
// authCallback and the AUTH.
const TOKEN_TTL_MS = 6000;
const RUN_MS = 12000;

new Scenario('ably-js-token-renewal').run(async (s) => {
  const signer = new Ably.Rest(ablyOptions());
  let tokensSigned = 0;
  const renewing = await realtime(s, {
    key: undefined,
    clientId: 'renewing',
    authCallback: (params, callback) => {
      tokensSigned += 1;
      signer.auth
        .createTokenRequest({ clientId: 'renewing', ttl: TOKEN_TTL_MS })
        .then((request) => callback(null, request), (error) => callback(error, null));
    },
  });
  const states = [];
  renewing.connection.on((change) => states.push(change.current));
  const connectionId = renewing.connection.id;
  const channel = renewing.channels.get('presence-renewal');
  await channel.attach();
  await channel.presence.enter({ here: true });
  const received = [];
  channel.subscribe('tick', (message) => received.push(Number(message.data)));

  const watcher = await realtime(s, { clientId: 'watcher' });
  const watched = watcher.channels.get('presence-renewal');
  const leaves = [];
  await watched.presence.subscribe('leave', (member) => leaves.push(member.clientId));

  const publisher = serverClient();
  let sent = 0;
  const started = Date.now();
  while (Date.now() - started < RUN_MS) {
    await publisher.trigger('presence-renewal', 'tick', String(sent));
    sent += 1;
    await sleep(50);
  }
  await until(() => received.length >= sent, { timeoutMs: 30000, what: `all ${sent} ticks` });
  await sleep(200); // a tick delivered twice would come meanwhile

  assert.ok(tokensSigned >= 3, `only ${tokensSigned} tokens signed in ${RUN_MS} ms of ${TOKEN_TTL_MS} ms tokens`);
  assert.equal(renewing.connection.id, connectionId);
  assert.ok(!states.includes('disconnected'), `connection states: ${states.join(' ')}`);
  s.check('renewed-in-place');

  assert.deepEqual(received, Array.from({ length: sent }, (_, index) => index));
  s.check('no-message-lost');

  assert.deepEqual(leaves, []);
  assert.deepEqual((await watched.presence.get()).map((member) => member.clientId), ['renewing']);
  s.check('presence-kept');
});
