// ably-js 2.x with its default authMethod (GET) pointed at a relay gateway's /v1/auth/channel (RELAY_GATEWAY_URL)
// in front of the emulator's Ably side: its authParams go in the query string, the gateway reads them there (it
// answered 405), and the token it signs connects and receives a publish. A refused channel asked the same way fails
// the connection with the gateway's 403 and reason, as with POST.
import { Scenario, assert, serverClient } from '../../node/lib.mjs';
import { Ably, ablyOptions, nextMessage } from './ablylib.mjs';

const gateway = process.env.RELAY_GATEWAY_URL;
const alice = process.env.RELAY_JWT_ALICE;

function tokenClient(s, authParams) {
  // no authMethod: ably-js's default, GET
  const client = new Ably.Realtime(
    ablyOptions({
      key: undefined,
      authUrl: `${gateway}/v1/auth/channel`,
      authParams,
      authHeaders: { Authorization: `Bearer ${alice}` },
    }),
  );
  s.onCleanup(() => client.close());
  return client;
}

new Scenario('gateway-auth-get').run(async (s) => {
  const client = tokenClient(s, { channel: 'private-user-alice' });
  await client.connection.whenState('connected');
  const channel = client.channels.get('private-user-alice');
  await channel.attach();
  const order = nextMessage(channel, 'order');
  await serverClient().trigger('private-user-alice', 'order', { id: 7 });
  assert.deepEqual((await order).data, { id: 7 });
  s.check('get-token-receives');

  const several = tokenClient(s, { channels: JSON.stringify(['private-user-alice', 'presence-lobby']) });
  await several.connection.whenState('connected');
  await several.channels.get('presence-lobby').presence.enter({ mood: 'fine' });
  assert.equal(several.auth.clientId, 'alice', 'the presence member is the token clientId');
  s.check('get-channels-token');

  const refused = tokenClient(s, { channel: 'private-user-bob' });
  await refused.connection.whenState('failed');
  const reason = refused.connection.errorReason;
  assert.equal(reason.statusCode, 403, String(reason));
  assert.match(String(reason.cause.message), /denied by rule 'private-user-\{sub\}'/, String(reason));
  s.extra.refusal = { statusCode: reason.statusCode, cause: String(reason.cause.message) };
  s.check('get-refusal-fails-for-good');
});
