// pusher-js 8: public, private, presence, private-encrypted channels, client events and subscription errors,
// with channel auth through pusher-js's real ajax transport against a local endpoint signing with pusher-http-node.
import {
  MASTER_KEY_BASE64,
  Scenario,
  assert,
  collect,
  connect,
  once,
  serverClient,
  sleep,
  startAuthServer,
  subscribe,
  subscribeRefused,
  until,
} from './lib.mjs';

new Scenario('pusher-js-channels').run(async (s) => {
  const auth = await startAuthServer(s);
  const publisher = serverClient({ encryptionMasterKeyBase64: MASTER_KEY_BASE64 });
  const alice = await connect(s, auth, 'alice');
  const bob = await connect(s, auth, 'bob');
  assert.notEqual(alice.connection.socket_id, bob.connection.socket_id);
  s.check('connect');

  // Public channel: HTTP-published data arrives verbatim and parsed by pusher-js.
  const { channel: pub } = await subscribe(alice, 'public-news');
  const gotPublic = once(pub, 'headline');
  let response = await publisher.trigger('public-news', 'headline', { title: 'hello', n: 1 });
  assert.equal(response.status, 200);
  assert.deepEqual(await gotPublic, { title: 'hello', n: 1 });
  s.check('public');

  // Private channel: the auth request is form-encoded socket_id + channel_name (+ our params).
  const { channel: privA } = await subscribe(alice, 'private-room');
  const authRequest = auth.requests.find((r) => r.form && r.form.channel_name === 'private-room');
  assert.ok(authRequest, 'pusher-js called the auth endpoint');
  assert.match(authRequest.contentType, /^application\/x-www-form-urlencoded/);
  assert.equal(authRequest.form.socket_id, alice.connection.socket_id);
  assert.equal(authRequest.form.user, 'alice');
  const { channel: privB } = await subscribe(bob, 'private-room');
  const gotPrivate = once(privA, 'secret');
  response = await publisher.trigger('private-room', 'secret', 'plain string data');
  assert.equal(response.status, 200);
  assert.equal(await gotPrivate, 'plain string data');
  s.check('private');

  // Client events: bob's trigger reaches alice, never echoes back to bob.
  const echoedToBob = collect(privB, 'client-typing');
  const gotWhisper = once(privA, 'client-typing');
  assert.equal(privB.trigger('client-typing', { typing: true }), true);
  assert.deepEqual(await gotWhisper, { typing: true });
  await sleep(150);
  assert.deepEqual(echoedToBob, []);
  s.check('client-events');

  // Presence: members.me, here / member_added / member_removed, and the count of unique users.
  const { channel: presA, data: membersA } = await subscribe(alice, 'presence-lobby');
  assert.equal(membersA.count, 1);
  assert.deepEqual(membersA.me, { id: 'alice', info: { name: 'User alice' } });
  const addedToA = once(presA, 'pusher:member_added', { what: 'member_added for bob' });
  const { channel: presB, data: membersB } = await subscribe(bob, 'presence-lobby');
  assert.deepEqual(await addedToA, { id: 'bob', info: { name: 'User bob' } });
  assert.equal(membersB.count, 2);
  assert.equal(membersB.me.id, 'bob');
  const here = [];
  membersB.each((member) => here.push(member.id));
  assert.deepEqual(here.sort(), ['alice', 'bob']);
  assert.equal(presA.members.count, 2);

  // A second connection of bob: nobody hears member_added, the count stays at 2 users.
  const bob2 = await connect(s, auth, 'bob');
  const extraAdds = collect(presA, 'pusher:member_added');
  const { data: membersB2 } = await subscribe(bob2, 'presence-lobby');
  assert.equal(membersB2.count, 2);
  assert.equal(membersB2.me.id, 'bob');
  await sleep(150);
  assert.deepEqual(extraAdds, []);
  assert.equal(presA.members.count, 2);

  // Closing one of bob's two connections removes nobody; closing the last one removes bob.
  const removals = collect(presA, 'pusher:member_removed');
  bob2.disconnect();
  await sleep(200);
  assert.deepEqual(removals, []);
  assert.equal(presB.name, 'presence-lobby');
  bob.unsubscribe('presence-lobby');
  await until(() => removals.length === 1, { what: 'member_removed for bob' });
  assert.deepEqual(removals[0], { id: 'bob', info: { name: 'User bob' } });
  assert.equal(presA.members.count, 1);
  s.check('presence');

  // Presence client events carry user_id in the metadata.
  const { channel: presB2 } = await subscribe(bob, 'presence-lobby');
  const whisperMeta = new Promise((resolve) => presA.bind('client-wave', (data, meta) => resolve({ data, meta })));
  presB2.trigger('client-wave', { hi: 1 });
  const whisper = await whisperMeta;
  assert.deepEqual(whisper.data, { hi: 1 });
  assert.equal(whisper.meta.user_id, 'bob');
  s.check('presence-client-events');

  // private-encrypted: pusher-http-node encrypts with the master key, pusher-js decrypts with the shared_secret
  // returned by the auth endpoint; the emulator forwards the ciphertext untouched.
  const { channel: enc } = await subscribe(alice, 'private-encrypted-vault');
  const encAuth = auth.requests.find((r) => r.form && r.form.channel_name === 'private-encrypted-vault');
  assert.ok(encAuth);
  const gotEncrypted = once(enc, 'treasure');
  response = await publisher.trigger('private-encrypted-vault', 'treasure', { gold: 42, note: 'ünïcødé' });
  assert.equal(response.status, 200);
  assert.deepEqual(await gotEncrypted, { gold: 42, note: 'ünïcødé' });
  s.check('private-encrypted');

  // Subscription errors: the auth endpoint answers 403 → pusher-js reports AuthError with status 403.
  const refused = await subscribeRefused(alice, 'private-refused-room');
  assert.equal(refused.type, 'AuthError');
  assert.equal(refused.status, 403);
  s.check('subscription-error-auth-endpoint');

  // A channel name the server forbids (illegal characters): the server answers pusher:subscription_error.
  const forbidden = await subscribeRefused(alice, 'bad:name!');
  assert.equal(forbidden.status, 400);
  assert.equal(forbidden.type, 'InvalidChannel');
  const tooLong = await subscribeRefused(alice, 'x'.repeat(201));
  assert.equal(tooLong.type, 'InvalidChannel');
  s.check('subscription-error-forbidden-channel');

  // A private subscription signed with the wrong secret (via pusher-js's customHandler auth hook): AuthError 401
  // from the server, and the socket stays open.
  const forger = serverClient({ secret: 'not-the-secret' });
  const mallory = await connect(s, null, 'mallory', {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        callback(null, forger.authorizeChannel(socketId, channelName));
      },
    },
  });
  const forged = await subscribeRefused(mallory, 'private-forged');
  assert.equal(forged.type, 'AuthError');
  assert.equal(forged.status, 401);
  await sleep(100);
  assert.equal(mallory.connection.state, 'connected');
  s.check('subscription-error-bad-signature');

  // The connection is still healthy after the refusals: a later publish still arrives.
  assert.equal(alice.connection.state, 'connected');
  const stillThere = once(pub, 'after-errors');
  await publisher.trigger('public-news', 'after-errors', { ok: true });
  assert.deepEqual(await stillThere, { ok: true });
  s.check('still-serving');
});
