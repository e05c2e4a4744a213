// ably-js 2.x REST against an app whose api_rate_limit is 0.2 (one request every five seconds, bursts of one), a
// budget shared with the Pusher HTTP API: past it, publish and requestToken are refused with Ably's 42910 (429),
// the realtime connection keeps publishing and receiving, a realtime client whose token exchange is refused goes
// DISCONNECTED (ably-js's 80019, caused by the 42910) and connects once the budget refills, and so does REST.
import { Scenario, assert, serverClient, sleep } from '../../node/lib.mjs';
import { Ably, ablyOptions, nextMessage, realtime } from './ablylib.mjs';

const appId = process.env.RELAY_APP_ID;
const REFUSAL = new RegExp(
  `^Rate limit exceeded; request rejected \\(nonfatal\\); metric = api_rate_limit: app '${appId}' allows 0.2 HTTP ` +
    'API requests a second, Pusher and Ably REST together; retry in [1-5] s$',
);

function rateLimited(error) {
  assert.equal(error.code, 42910, String(error));
  assert.equal(error.statusCode, 429, String(error));
  assert.match(error.message, REFUSAL);
  return true;
}

new Scenario('ably-js-rate-limit', { timeoutMs: 35000 }).run(async (s) => {
  const listener = await realtime(s); // key auth: no REST request
  const room = listener.channels.get('room');
  await room.attach();

  const rest = new Ably.Rest(ablyOptions());
  const outcomes = await Promise.allSettled(
    Array.from({ length: 10 }, (_, i) => rest.channels.get('room').publish('n', String(i))),
  );
  const refused = outcomes.filter((outcome) => outcome.status === 'rejected');
  assert.equal(outcomes.length - refused.length, 1, JSON.stringify(outcomes.map((o) => o.status)));
  refused.forEach((outcome) => rateLimited(outcome.reason));
  await assert.rejects(rest.auth.requestToken(), rateLimited);
  // Pusher's HTTP API of the same app is out of budget too: one budget per app.
  await assert.rejects(serverClient().trigger('room', 'pusher', 'p'), (error) => error.status === 429);
  s.check('rest-refused-42910');

  // The realtime connection is no HTTP API request: it keeps publishing and receiving.
  const echoed = nextMessage(room, 'realtime');
  await room.publish('realtime', 'still');
  assert.equal((await echoed).data, 'still');
  s.check('realtime-unaffected');

  // A client exchanging a TokenRequest (authCallback) while the budget is spent: the exchange is refused, ably-js
  // goes DISCONNECTED and retries, and connects once the budget has refilled.
  const signer = new Ably.Rest(ablyOptions());
  const tokenClient = new Ably.Realtime(
    ablyOptions({
      key: undefined,
      authCallback: (params, callback) =>
        signer.auth.createTokenRequest({ clientId: 'late' }).then((request) => callback(null, request), callback),
      disconnectedRetryTimeout: 700,
    }),
  );
  s.onCleanup(() => tokenClient.close());
  const changes = [];
  tokenClient.connection.on((change) => changes.push(change));
  await tokenClient.connection.whenState('connected');
  const disconnected = changes.find((change) => change.current === 'disconnected');
  assert.ok(disconnected, JSON.stringify(changes.map((change) => change.current)));
  assert.equal(disconnected.reason.code, 80019, String(disconnected.reason));
  rateLimited(disconnected.reason.cause);
  assert.equal(tokenClient.auth.clientId, 'late');
  s.check('token-exchange-retried');

  await sleep(5100); // the token exchange spent the budget: five seconds more and there is one request again
  const published = nextMessage(room, 'later');
  assert.equal((await rest.channels.get('room').publish('later', 'ok')).serials.length, 1);
  assert.equal((await published).data, 'ok');
  s.check('refilled');
});
