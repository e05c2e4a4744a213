// ably-js 2.x realtime against the emulator: key, TokenRequest (authCallback) and JWT auth, attach/subscribe,
// publish with ACK serials, connection.ping, presence enter/update/get (SYNC)/leave, detach, and Ably errors.
import { Scenario, assert } from '../../node/lib.mjs';
import { Ably, ablyOptions, keyName, nextMessage, nextPresence, realtime } from './ablylib.mjs';

new Scenario('ably-js-realtime').run(async (s) => {
  const alice = await realtime(s, { clientId: 'alice' });
  const bob = await realtime(s, { clientId: 'bob' });
  assert.equal(alice.auth.clientId, 'alice');
  s.check('connect-key');

  const roomA = alice.channels.get('room');
  const roomB = bob.channels.get('room');
  await roomB.attach();
  const greeting = nextMessage(roomB, 'greet');
  const result = await roomA.publish('greet', { hello: 'world' });
  assert.equal(result.serials.length, 1);
  const message = await greeting;
  assert.deepEqual(message.data, { hello: 'world' });
  assert.equal(message.clientId, 'alice');
  assert.equal(message.connectionId, alice.connection.id);
  await roomA.attach();
  const twoArrives = nextMessage(roomA, 'two');
  await roomB.publish([{ name: 'one', data: 'x' }, { name: 'two', data: new Uint8Array([0, 255]) }]);
  const two = await twoArrives;
  assert.deepEqual(Array.from(two.data), [0, 255]);
  s.check('publish-subscribe');

  assert.ok((await alice.connection.ping()) >= 0);
  s.check('ping');

  const entered = nextPresence(roomB, 'enter');
  await roomA.presence.enter({ status: 'here' });
  assert.equal((await entered).clientId, 'alice');
  await roomA.presence.update({ status: 'busy' });
  const carol = await realtime(s, { clientId: 'carol' });
  const members = await carol.channels.get('room').presence.get();
  assert.deepEqual(members.map((m) => [m.clientId, m.data]), [['alice', { status: 'busy' }]]);
  const left = nextPresence(roomB, 'leave');
  await roomA.presence.leave();
  assert.equal((await left).clientId, 'alice');
  assert.deepEqual(await roomB.presence.get(), []);
  s.check('presence');

  await roomB.detach();
  assert.equal(roomB.state, 'detached');
  s.check('detach');

  const signer = new Ably.Rest(ablyOptions());
  const tokenClient = await realtime(s, {
    key: undefined,
    authCallback: (params, callback) => {
      signer.auth
        .createTokenRequest({ clientId: 'tok', capability: { allowed: ['publish', 'subscribe'] } })
        .then((request) => callback(null, request), (error) => callback(error, null));
    },
  });
  assert.equal(tokenClient.auth.clientId, 'tok');
  await tokenClient.channels.get('allowed').publish('n', 'd');
  await assert.rejects(tokenClient.channels.get('forbidden').attach(), (error) => error.code === 40160);
  assert.equal(tokenClient.connection.state, 'connected');
  s.check('token-request');

  const jwtClient = await realtime(s, { key: undefined, token: process.env.ABLY_JWT });
  assert.equal(jwtClient.auth.clientId, 'jwt-user');
  s.check('jwt');

  const bad = new Ably.Realtime(ablyOptions({ key: `${keyName}:wrong-secret` }));
  s.onCleanup(() => bad.close());
  await bad.connection.whenState('failed');
  assert.equal(bad.connection.errorReason.code, 40101);
  s.check('bad-key');
});
