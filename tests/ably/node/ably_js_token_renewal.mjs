// ably-js 2.x with short-lived tokens (an authCallback signing TokenRequests of TOKEN_TTL_MS): 30 s before each
// token expires the server asks for the next one (AUTH), and ably-js renews on the same connection. Over several
// renewals the connection keeps its id, a presence member stays (a watcher sees no leave), and every message
// published meanwhile (Pusher HTTP API, pusher-http-node) arrives once, in order. A token of 5 s is not asked for,
// as on Ably: it expires into DISCONNECTED 40142 and ably-js resumes the connection with a new one.
import { Scenario, assert, serverClient, sleep, until } from '../../node/lib.mjs';
import { Ably, ablyOptions, realtime } from './ablylib.mjs';

// ably-js's sandbox tests renew tokens of 35 s: each is asked for again 5 s into its life.
const TOKEN_TTL_MS = 35000;
const RUN_MS = 14000;
const SHORT_TTL_MS = 5000;

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
  const expiring = await realtime(s, {
    key: undefined,
    authCallback: (params, callback) => {
      signer.auth
        .createTokenRequest({ ttl: SHORT_TTL_MS })
        .then((request) => callback(null, request), (error) => callback(error, null));
    },
  });
  const expiringId = expiring.connection.id;
  const expired = new Promise((resolve) => {
    expiring.connection.once('disconnected', (change) => resolve(change.reason && change.reason.code));
  });
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

  assert.equal(await expired, 40142);
  await expiring.connection.whenState('connected');
  assert.equal(expiring.connection.id, expiringId);
  s.check('short-token-expires-and-resumes');
});
