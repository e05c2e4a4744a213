// ably-js 2.x getting its tokens from a relay gateway (RELAY_GATEWAY_URL, /v1/auth/channel) in front of the
// emulator's Ably side: a token the channel rules refuse (alice asking for bob's channel) fails the connection for
// good with the gateway's 403 and its reason (RSA4d), rather than being asked for again and again; the allowed
// channel connects and receives a publish. A token request no retry can mend (a channel name relay refuses) fails the
// connection for good the same way.
import { Scenario, assert, serverClient, sleep } from '../../node/lib.mjs';
import { Ably, ablyOptions } from './ablylib.mjs';

const gateway = process.env.RELAY_GATEWAY_URL;
const alice = process.env.RELAY_JWT_ALICE;

function tokenClient(s, channel) {
  const client = new Ably.Realtime(
    ablyOptions({
      key: undefined,
      authUrl: `${gateway}/v1/auth/channel`,
      authMethod: 'POST',
      authParams: { channel },
      authHeaders: { Authorization: `Bearer ${alice}` },
      disconnectedRetryTimeout: 500,
    }),
  );
  s.onCleanup(() => client.close());
  return client;
}

// The reason a client's connection failed for good with, after checking that it did within 4 s and that ably-js did
// not ask for the token again (a retried token request would show as more connecting states).
async function failedForGood(client) {
  const states = [];
  client.connection.on((change) => states.push(change.current));
  const failure = await Promise.race([client.connection.whenState('failed'), sleep(4000).then(() => null)]);
  assert.ok(failure, `not failed after 4 s; states ${JSON.stringify(states)}`);
  const reason = client.connection.errorReason;
  assert.equal(reason.statusCode, 403, String(reason));
  // ably-js's own 80019 says the auth URL refused; the gateway's reason is its cause.
  assert.equal(reason.code, 80019, String(reason));
  assert.equal(reason.cause.code, 40300, String(reason));
  await sleep(1500);
  assert.deepEqual(states.filter((state) => state === 'connecting').length, 1, JSON.stringify(states));
  return reason;
}

new Scenario('gateway-token-refusal').run(async (s) => {
  const reason = await failedForGood(tokenClient(s, 'private-user-bob'));
  assert.match(String(reason.cause.message), /denied by rule 'private-user-\{sub\}'/, String(reason));
  s.extra.refusal = { statusCode: reason.statusCode, code: reason.code, cause: String(reason.cause.message) };
  s.check('refused-fails-for-good');

  // A channel name relay refuses (':' is not in the names every provider takes) was a 400, which ably-js asked for
  // again every few seconds for ever: no retry mends it, so it fails the connection too, with the reason.
  const why = await failedForGood(tokenClient(s, 'chat:1'));
  assert.match(String(why.cause.message), /channel name 'chat:1' has characters outside/, String(why));
  s.check('malformed-fails-for-good');

  const allowed = tokenClient(s, 'private-user-alice');
  await allowed.connection.whenState('connected');
  const channel = allowed.channels.get('private-user-alice');
  await channel.attach();
  const arrived = new Promise((resolve) => channel.subscribe('order', (message) => resolve(message.data)));
  await serverClient().trigger('private-user-alice', 'order', { id: 7 });
  assert.deepEqual(await arrived, { id: 7 });
  s.check('allowed-receives');
});
