// ably-js 2.x publishing more than 1,000 messages at once, over REST and realtime: refused with Ably's 40034
// ("Too many messages in one publish", status 400), as an ErrorInfo the app can tell from a malformed request
// (40000); nothing of it is delivered, and the realtime connection publishes on.
import { Scenario, assert } from '../../node/lib.mjs';
import { Ably, ablyOptions, nextMessage, realtime } from './ablylib.mjs';

const TOO_MANY = Array.from({ length: 1001 }, (_, index) => ({ name: 'n', data: String(index) }));

function tooMany(error) {
  assert.equal(error.code, 40034, String(error));
  assert.equal(error.statusCode, 400, String(error));
  assert.equal(error.message, 'messages: Too many messages in one publish (1001; the maximum is 1000)');
  return true;
}

new Scenario('ably-js-message-count').run(async (s) => {
  const client = await realtime(s);
  const room = client.channels.get('room');
  await room.attach();
  const delivered = [];
  room.subscribe('n', (message) => delivered.push(message.data));

  await assert.rejects(new Ably.Rest(ablyOptions()).channels.get('room').publish(TOO_MANY), tooMany);
  s.check('rest-40034');

  await assert.rejects(room.publish(TOO_MANY), tooMany);
  const after = nextMessage(room, 'after');
  await room.publish('after', 'still');
  assert.equal((await after).data, 'still');
  assert.deepEqual(delivered, []);
  s.check('realtime-40034');
});
