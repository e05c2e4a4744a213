// ably-js 2.x REST against the emulator: presence pages followed to the last member (Link: rel="next"), and the
// endpoints the emulator does not serve (stats, push admin) refused with Ably's error, not another API's 404.
import { Scenario, assert } from '../../node/lib.mjs';
import { Ably, ablyOptions, realtime } from './ablylib.mjs';

new Scenario('ably-js-rest-paging').run(async (s) => {
  const rest = new Ably.Rest(ablyOptions());
  const members = await realtime(s);
  const room = members.channels.get('room');
  await room.attach();
  const entered = ['m1', 'm2', 'm3', 'm4', 'm5'];
  for (const clientId of entered) {
    await room.presence.enterClient(clientId, `data-${clientId}`);
  }

  let page = await rest.channels.get('room').presence.get({ limit: 2 });
  const pages = [page.items.map((m) => m.clientId)];
  while (page.hasNext()) {
    page = await page.next();
    pages.push(page.items.map((m) => m.clientId));
  }
  s.extra.pages = pages;
  assert.deepEqual(pages.map((items) => items.length), [2, 2, 1]);
  assert.deepEqual(pages.flat().sort(), entered);
  assert.equal(page.isLast(), true);
  s.check('presence-pages');

  const one = await rest.channels.get('room').presence.get({ limit: 1, clientId: 'm4' });
  assert.deepEqual(one.items.map((m) => [m.clientId, m.data]), [['m4', 'data-m4']]);
  assert.equal(one.hasNext(), false);
  s.check('presence-filter');

  const notEmulated = (e) => e.code === 40400 && e.statusCode === 404 && /not emulated/.test(e.message);
  await assert.rejects(rest.stats(), notEmulated);
  s.check('stats');
  await assert.rejects(rest.push.admin.channelSubscriptions.list({ channel: 'room' }), notEmulated);
  await assert.rejects(rest.push.admin.deviceRegistrations.list({}), notEmulated);
  s.check('push');
});
