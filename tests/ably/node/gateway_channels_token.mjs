// One ably-js 2.x client for several channels, its token from a relay gateway (RELAY_GATEWAY_URL,
// /v1/auth/channel) asked for with authParams.channels, a JSON array: the channels the rules allow are in the
// token, one they refuse (bob's) is left out and fails alone (40160) while the connection and the other channels
// serve; auth.authorize() with a new list widens the token on the same connection, with no reconnect.
import { Scenario, assert, serverClient } from '../../node/lib.mjs';
import { Ably, ablyOptions, nextMessage } from './ablylib.mjs';

const gateway = process.env.RELAY_GATEWAY_URL;
const alice = process.env.RELAY_JWT_ALICE;

function authOptions(channels) {
  return {
    authUrl: `${gateway}/v1/auth/channel`,
    authMethod: 'POST',
    authParams: { channels: JSON.stringify(channels) },
    authHeaders: { Authorization: `Bearer ${alice}` },
  };
}

new Scenario('gateway-channels-token').run(async (s) => {
  const client = new Ably.Realtime(
    ablyOptions({ key: undefined, ...authOptions(['private-user-alice', 'presence-lobby', 'private-user-bob']) }),
  );
  s.onCleanup(() => client.close());
  await client.connection.whenState('connected');
  const connectionId = client.connection.id;
  assert.equal(client.auth.clientId, 'alice', 'the presence member is the token clientId');

  const own = client.channels.get('private-user-alice');
  await own.attach();
  const order = nextMessage(own, 'order');
  await serverClient().trigger('private-user-alice', 'order', { id: 7 });
  assert.deepEqual((await order).data, { id: 7 });
  s.check('allowed-channel-receives');

  const lobby = client.channels.get('presence-lobby');
  await lobby.presence.enter({ mood: 'fine' });
  const members = await lobby.presence.get();
  assert.deepEqual(
    members.map((member) => [member.clientId, member.data]),
    [['alice', { mood: 'fine' }]],
  );
  s.check('presence-on-the-same-token');

  const refused = client.channels.get('private-user-bob');
  const failure = await refused.attach().then(
    () => null,
    (error) => error,
  );
  assert.ok(failure, 'bob’s channel attached on alice’s token');
  assert.equal(failure.code, 40160, String(failure));
  assert.equal(refused.state, 'failed');
  assert.equal(client.connection.state, 'connected');
  assert.equal(own.state, 'attached');
  s.extra.refused = { code: failure.code, statusCode: failure.statusCode };
  s.check('refused-channel-fails-alone');

  await client.auth.authorize(undefined, authOptions(['private-user-alice', 'presence-lobby', 'news']));
  const news = client.channels.get('news');
  await news.attach();
  const headline = nextMessage(news, 'headline');
  await serverClient().trigger('news', 'headline', 'relay ships');
  assert.equal((await headline).data, 'relay ships');
  assert.equal(client.connection.id, connectionId, 'the token was widened on the same connection');
  assert.equal(own.state, 'attached');
  s.check('authorize-widens-in-place');
});
