// pusher-js 8 user features: signin through the user-auth endpoint, server-to-user events (sendToUser →
// pusher.user.bind), watchlist online/offline events, and terminateUserConnections closing with 4009.
import { Scenario, assert, collect, connect, once, serverClient, sleep, startAuthServer, until } from './lib.mjs';

async function signIn(client) {
  client.signin();
  await client.user.signinDonePromise;
  assert.ok(client.user.user_data, 'signin succeeded');
  // After signin_success pusher-js subscribes to #server-to-user-{id} with an empty auth.
  await until(() => client.user.serverToUserChannel && client.user.serverToUserChannel.subscribed, {
    what: 'the server-to-user channel',
  });
}

new Scenario('pusher-js-user').run(async (s) => {
  const auth = await startAuthServer(s, { watchlists: { alice: ['bob', 'carol'] } });
  const api = serverClient();

  // carol is online before alice signs in; bob is not.
  const carol = await connect(s, auth, 'carol');
  await signIn(carol);
  assert.deepEqual(carol.user.user_data, { id: 'carol', user_info: { name: 'User carol' } });
  const userAuth = auth.requests.find((r) => r.path === '/pusher/user-auth');
  assert.match(userAuth.contentType, /^application\/x-www-form-urlencoded/);
  assert.equal(userAuth.form.socket_id, carol.connection.socket_id);
  s.check('signin');

  // Watchlist: the initial state arrives right after signin.
  const alice = await connect(s, auth, 'alice');
  const online = collect(alice.user.watchlist, 'online');
  const offline = collect(alice.user.watchlist, 'offline');
  await signIn(alice);
  await until(() => online.length === 1 && offline.length === 1, { what: 'initial watchlist events' });
  assert.deepEqual(online[0], { name: 'online', user_ids: ['carol'] });
  assert.deepEqual(offline[0], { name: 'offline', user_ids: ['bob'] });

  // bob's first signin → online; his last disconnect → offline.
  const bob = await connect(s, auth, 'bob');
  await signIn(bob);
  await until(() => online.length === 2, { what: 'watchlist online for bob' });
  assert.deepEqual(online[1], { name: 'online', user_ids: ['bob'] });
  s.check('watchlist-online');

  // Server-to-user: sendToUser reaches every connection signed in as alice, and nobody else.
  const alice2 = await connect(s, auth, 'alice');
  await signIn(alice2);
  const toAlice = once(alice.user, 'notice', { what: 'sendToUser on alice' });
  const toAlice2 = once(alice2.user, 'notice', { what: 'sendToUser on alice2' });
  const toBob = collect(bob.user, 'notice');
  const response = await api.sendToUser('alice', 'notice', { text: 'for alice only' });
  assert.equal(response.status, 200);
  assert.deepEqual(await toAlice, { text: 'for alice only' });
  assert.deepEqual(await toAlice2, { text: 'for alice only' });
  await sleep(100);
  assert.deepEqual(toBob, []);
  s.check('send-to-user');

  bob.disconnect();
  await until(() => offline.length === 2, { what: 'watchlist offline for bob' });
  assert.deepEqual(offline[1], { name: 'offline', user_ids: ['bob'] });
  s.check('watchlist-offline');

  // terminateUserConnections: both of alice's connections get pusher:error 4009 and pusher-js stops (refused);
  // carol's connection is untouched.
  const errors = [collect(alice.connection, 'error'), collect(alice2.connection, 'error')];
  const pusherErrors = collect(alice, 'pusher:error');
  const disconnected = [
    once(alice.connection, 'disconnected', { what: 'alice disconnected' }),
    once(alice2.connection, 'disconnected', { what: 'alice2 disconnected' }),
  ];
  const terminated = await api.terminateUserConnections('alice');
  assert.equal(terminated.status, 200);
  assert.deepEqual(await terminated.json(), {});
  await Promise.all(disconnected);
  for (const seen of errors) {
    const pusherError = seen.find((e) => e.type === 'PusherError');
    assert.ok(pusherError, `a PusherError was emitted: ${JSON.stringify(seen)}`);
    assert.equal(pusherError.data.code, 4009);
  }
  assert.equal(pusherErrors[0].code, 4009);
  await sleep(300);
  assert.equal(alice.connection.state, 'disconnected', '4009 is "refused": pusher-js does not reconnect');
  assert.equal(carol.connection.state, 'connected');
  s.check('terminate-user-connections');
  s.extra.terminatedMessage = pusherErrors[0].message;
});
