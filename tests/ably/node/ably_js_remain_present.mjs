// ably-js 2.x with `transportParams: { remainPresentFor: 1000 }`: the test cuts the TCP connection under the client
// (as lost Wi-Fi would, no CLOSE) and keeps it cut, and a watcher sees the member leave about a second later rather
// than after Ably's default 15 s. A client asking for a malformed remainPresentFor is refused with 40003 (its
// connection fails), and the server goes on serving others. docs/ably.md#connection-resume.
import { Scenario, assert, step } from '../../node/lib.mjs';
import { Ably, ablyOptions, nextPresence, realtime as createRealtime } from './ablylib.mjs';

new Scenario('ably-js-remain-present').run(async (s) => {
  const phone = await createRealtime(s, {
    clientId: 'phone',
    port: Number(process.env.CABLE_PORT),
    transportParams: { remainPresentFor: 1000 },
    disconnectedRetryTimeout: 300,
  });
  await phone.channels.get('room').presence.enter({ here: true });

  const watcher = await createRealtime(s, { clientId: 'watcher' });
  const watched = watcher.channels.get('room');
  await watched.attach();
  assert.deepEqual((await watched.presence.get()).map((member) => member.clientId), ['phone']);
  const left = nextPresence(watched, 'leave', { timeoutMs: 10000 });

  await step('cut'); // for good: the phone never comes back
  const cutAt = Date.now();
  const leave = await left;
  s.extra.leave_after_ms = Date.now() - cutAt;
  assert.equal(leave.clientId, 'phone');
  assert.deepEqual(await watched.presence.get(), []);
  assert.notEqual(phone.connection.state, 'connected');
  s.check('left-after-remain-present-for');

  const malformed = new Ably.Realtime(ablyOptions({ clientId: 'odd', transportParams: { remainPresentFor: '1.5s' } }));
  s.onCleanup(() => malformed.close());
  await malformed.connection.whenState('failed');
  assert.equal(malformed.connection.errorReason.code, 40003);
  assert.equal(malformed.connection.errorReason.statusCode, 400);
  assert.match(malformed.connection.errorReason.message, /remainPresentFor/);
  s.check('malformed-refused');

  const next = await createRealtime(s, { clientId: 'next', transportParams: { remainPresentFor: 5000 } });
  const entered = nextPresence(watched, 'enter');
  await next.channels.get('room').presence.enter();
  assert.equal((await entered).clientId, 'next');
  assert.deepEqual((await watched.presence.get()).map((member) => member.clientId), ['next']);
  s.check('others-served');
});
