// pusher-js 8 reconnect: the server closes every connection with pusher:error 4200 (the driver calls shutdown()
// on each emulator connection); pusher-js must reconnect at once with a new socket id, re-authorize and resubscribe
// its channels, and receive a later publish.
import { Scenario, assert, collect, connect, once, serverClient, startAuthServer, step, subscribe, until } from './lib.mjs';

new Scenario('pusher-js-reconnect').run(async (s) => {
  const auth = await startAuthServer(s);
  const api = serverClient();
  const client = await connect(s, auth, 'alice');
  const firstSocketId = client.connection.socket_id;
  const { channel: pub } = await subscribe(client, 'live');
  const { channel: priv } = await subscribe(client, 'private-live');
  const { channel: pres } = await subscribe(client, 'presence-live');
  const resubscribed = [pub, priv, pres].map((channel) => collect(channel, 'pusher:subscription_succeeded'));

  const errors = collect(client.connection, 'error');
  const states = [];
  client.connection.bind('state_change', ({ current }) => states.push(current));

  const answer = await step('close-all-4200');
  assert.equal(answer, 'ok');
  await until(() => states.at(-1) === 'connected' && client.connection.socket_id !== firstSocketId, {
    what: 'pusher-js to reconnect',
  });
  const pusherError = errors.find((e) => e.type === 'PusherError');
  assert.ok(pusherError, `pusher:error seen: ${JSON.stringify(errors)}`);
  assert.equal(pusherError.data.code, 4200);
  assert.deepEqual(states, ['connecting', 'connected']);
  assert.match(client.connection.socket_id, /^\d+\.\d+$/);
  s.check('reconnected');

  // Every channel is subscribed again; private and presence were re-authorized for the new socket id.
  await until(() => resubscribed.every((seen) => seen.length === 1), { what: 'resubscription' });
  for (const name of ['private-live', 'presence-live']) {
    const signed = auth.requests.filter((r) => r.form && r.form.channel_name === name).map((r) => r.form.socket_id);
    assert.deepEqual(signed, [firstSocketId, client.connection.socket_id]);
  }
  assert.equal(pres.members.count, 1);
  assert.equal(pres.members.me.id, 'alice');
  s.check('resubscribed');

  const gotPublic = once(pub, 'after');
  const gotPrivate = once(priv, 'after');
  const response = await api.trigger(['live', 'private-live'], 'after', { n: 2 });
  assert.equal(response.status, 200);
  assert.deepEqual(await gotPublic, { n: 2 });
  assert.deepEqual(await gotPrivate, { n: 2 });
  s.check('receives-after-reconnect');
  s.extra.socketIds = [firstSocketId, client.connection.socket_id];
});
