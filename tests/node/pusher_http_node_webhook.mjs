// pusher-http-node webhook().isValid() on webhooks the emulator really sent. pusher-js clients cause
// channel_occupied, member_added, client_event, member_removed and channel_vacated; the Python driver records the
// raw requests at its receiver and hands them back (step "collect-webhooks"); each must validate, and tampered
// copies must not.
import { Scenario, assert, connect, serverClient, sleep, startAuthServer, step, subscribe } from './lib.mjs';

const EXPECTED = ['channel_occupied', 'member_added', 'client_event', 'member_removed', 'channel_vacated'];

new Scenario('pusher-http-node-webhook').run(async (s) => {
  const auth = await startAuthServer(s);
  const api = serverClient();
  const alice = await connect(s, auth, 'alice');
  const bob = await connect(s, auth, 'bob');
  await subscribe(alice, 'presence-hooks');
  const { channel: bobPresence } = await subscribe(bob, 'presence-hooks');
  bobPresence.trigger('client-hello', { from: 'bob' });
  await sleep(50);
  bob.disconnect();
  await sleep(50);
  alice.unsubscribe('presence-hooks');

  const answer = await step('collect-webhooks', { expect: EXPECTED });
  const requests = JSON.parse(answer);
  assert.ok(requests.length >= 1, 'the emulator sent webhooks');

  const events = [];
  for (const { headers, body } of requests) {
    assert.equal(headers['content-type'], 'application/json');
    assert.equal(headers['x-pusher-key'], api.config.token.key);
    const webhook = api.webhook({ headers, rawBody: body });
    assert.equal(webhook.isValid(), true, `webhook validates: ${body}`);
    const time = webhook.getTime();
    assert.ok(Math.abs(Date.now() - time.getTime()) < 60_000, 'time_ms is recent');
    for (const event of webhook.getEvents()) {
      events.push(event);
    }

    // Tampering with the body, the key or the content type breaks validation.
    const tampered = body.replace('presence-hooks', 'presence-hookz');
    assert.equal(api.webhook({ headers, rawBody: tampered }).isValid(), false);
    const wrongKey = { ...headers, 'x-pusher-key': 'someone-else' };
    assert.equal(api.webhook({ headers: wrongKey, rawBody: body }).isValid(), false);
    const otherSecret = serverClient({ secret: 'not-the-secret' });
    assert.equal(otherSecret.webhook({ headers, rawBody: body }).isValid(), false);
  }
  s.check('valid');

  const names = events.map((e) => e.name);
  for (const name of EXPECTED) {
    assert.ok(names.includes(name), `${name} in ${JSON.stringify(names)}`);
  }
  const occupied = events.filter((e) => e.name === 'channel_occupied');
  assert.deepEqual(occupied, [{ name: 'channel_occupied', channel: 'presence-hooks' }]);
  const added = events.filter((e) => e.name === 'member_added').map((e) => e.user_id);
  assert.deepEqual(added.sort(), ['alice', 'bob']);
  const clientEvent = events.find((e) => e.name === 'client_event');
  assert.equal(clientEvent.channel, 'presence-hooks');
  assert.equal(clientEvent.event, 'client-hello');
  assert.equal(clientEvent.user_id, 'bob');
  assert.match(clientEvent.socket_id, /^\d+\.\d+$/);
  assert.deepEqual(JSON.parse(clientEvent.data), { from: 'bob' });
  assert.deepEqual(
    events.filter((e) => e.name === 'channel_vacated'),
    [{ name: 'channel_vacated', channel: 'presence-hooks' }],
  );
  // Order within the stream: occupied first, vacated last.
  assert.equal(names[0], 'channel_occupied');
  assert.equal(names.at(-1), 'channel_vacated');
  s.check('events');
  s.extra.events = names;
});
