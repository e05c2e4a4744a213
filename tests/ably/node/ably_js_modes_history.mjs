// ably-js 2.x and channel modes: a publish or a presence enter outside the modes the ATTACH requested is NACKed
// with 40165 ("Channel mode not requested when attaching"), one the capability does not allow with 40160; the
// connection and the channel stay, and attaching again with the mode fixes it. history({untilAttach: true}), Ably's
// recovery after a lost continuity, gives the messages published before the attach only: ATTACHED carries a
// channelSerial, without which ably-js failed with a 40000 of its own. A token renewal that narrows the capability
// changes channel.modes at once. A TokenRequest with clientId "" (from a backend, ABLY_EMPTY_CLIENT_ID_REQUEST) is
// refused with 40012.
import { Scenario, assert } from '../../node/lib.mjs';
import { Ably, ablyOptions, nextMessage, nextPresence, realtime } from './ablylib.mjs';

function refused(code, message) {
  return (error) => {
    assert.equal(error.code, code, String(error));
    assert.equal(error.statusCode, code === 40012 ? 400 : 401, String(error));
    assert.equal(error.message, message);
    return true;
  };
}

new Scenario('ably-js-modes-history').run(async (s) => {
  const client = await realtime(s, { clientId: 'sam' });
  const watcher = await realtime(s, { clientId: 'wat' });
  const watched = watcher.channels.get('modes');
  await watched.attach();

  const reader = client.channels.get('modes', { modes: ['SUBSCRIBE', 'PRESENCE_SUBSCRIBE'] });
  await reader.attach();
  assert.deepEqual(reader.modes, ['subscribe', 'presence_subscribe']);
  await assert.rejects(
    reader.publish('n', 'd'),
    refused(40165, "Unable to publish to 'modes': the client did not request the PUBLISH mode when attaching"),
  );
  await assert.rejects(
    reader.presence.enter('here'),
    refused(40165, "Unable to use presence on 'modes': the client did not request the PRESENCE mode when attaching"),
  );
  assert.equal(reader.state, 'attached');
  assert.equal(client.connection.state, 'connected');
  s.check('mode-not-requested-40165');

  await reader.setOptions({ modes: ['SUBSCRIBE', 'PUBLISH', 'PRESENCE'] }); // attaches again with the modes
  const arrived = nextMessage(watched, 'fixed');
  await reader.publish('fixed', 'now');
  assert.equal((await arrived).data, 'now');
  const entered = nextPresence(watched, 'enter');
  await reader.presence.enter('here');
  assert.equal((await entered).clientId, 'sam');
  s.check('attach-with-the-mode');

  const rest = new Ably.Rest(ablyOptions());
  const token = await rest.auth.requestToken({ clientId: 'ro', capability: { modes: ['subscribe'] } });
  const readOnly = await realtime(s, { key: undefined, token: token.token });
  const denied = readOnly.channels.get('modes', { modes: ['SUBSCRIBE'] }); // PUBLISH neither allowed nor requested
  await denied.attach();
  await assert.rejects(
    denied.publish('n', 'd'),
    refused(40160, "Unable to publish to 'modes': not permitted by the capability (it needs 'publish' on the channel)"),
  );
  assert.equal(readOnly.connection.state, 'connected');
  s.check('capability-40160');

  // A renewal with a narrower capability: ably-js shows the new modes at once (an ATTACHED flagged RESUMED) and
  // keeps the channel's presence set and attach serial.
  const capabilities = [{ narrow: ['subscribe', 'publish', 'presence'] }, { narrow: ['subscribe', 'presence'] }];
  const renewing = await realtime(s, {
    key: undefined,
    clientId: 'nan',
    authCallback: (params, callback) => {
      rest.auth.requestToken({ clientId: 'nan', capability: capabilities.shift() }).then(
        (details) => callback(null, details),
        (error) => callback(error, null),
      );
    },
  });
  const narrowing = renewing.channels.get('narrow');
  await narrowing.attach();
  await narrowing.presence.enter('here');
  assert.deepEqual([...narrowing.modes].sort(), ['presence', 'presence_subscribe', 'publish', 'subscribe']);
  const serialBefore = narrowing.properties.attachSerial;
  await renewing.auth.authorize();
  const deadline = Date.now() + 3000;
  while (narrowing.modes.includes('publish') && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.deepEqual([...narrowing.modes].sort(), ['presence', 'presence_subscribe', 'subscribe']);
  assert.equal(narrowing.state, 'attached');
  assert.equal(narrowing.properties.attachSerial, serialBefore);
  assert.deepEqual((await narrowing.presence.get()).map((member) => member.clientId), ['nan']);
  await assert.rejects(
    narrowing.publish('n', 'd'),
    refused(40160, "Unable to publish to 'narrow': not permitted by the capability (it needs 'publish' on the channel)"),
  );
  s.check('narrowed-modes-shown');

  await rest.channels.get('history').publish('before', 'b');
  const history = client.channels.get('history');
  await history.attach();
  assert.ok(history.properties.attachSerial, 'ATTACHED carried no channelSerial');
  const after = nextMessage(history, 'after');
  await rest.channels.get('history').publish('after', 'a');
  await after;
  const untilAttach = await history.history({ untilAttach: true });
  assert.deepEqual(untilAttach.items.map((message) => message.name), ['before']);
  assert.deepEqual((await history.history()).items.map((message) => message.name), ['after', 'before']);
  s.check('until-attach');

  const backendRequest = JSON.parse(process.env.ABLY_EMPTY_CLIENT_ID_REQUEST);
  const anonymous = new Ably.Rest(
    ablyOptions({ key: undefined, authCallback: (params, callback) => callback(null, backendRequest) }),
  );
  await assert.rejects(
    anonymous.auth.authorize(),
    refused(40012, "Invalid clientId: it can't be an empty string; omit it for an anonymous token"),
  );
  assert.equal((await anonymous.time()) > 0, true); // the emulator still answers this client
  s.check('empty-client-id-40012');
});
