// Graceful shutdown seen from pusher-js: CLIENTS connections subscribe to a public and a presence channel; the
// Python driver sends SIGTERM to the emulator. Each client must get pusher:error 4200 (the driver checks the times
// are spread out), reconnect to the emulator that replaced it on the same port, resubscribe, and receive a publish.
// Prints {"step": "ready"} and {"step": "reconnected"} lines for the driver, then the summary line.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../node/package.json', import.meta.url));
const PusherJS = require('pusher-js');
const PusherServer = require('pusher');

const env = {
  host: process.env.RELAY_HOST,
  port: Number(process.env.RELAY_PORT),
  appId: process.env.RELAY_APP_ID,
  key: process.env.RELAY_KEY,
  secret: process.env.RELAY_SECRET,
  clients: Number(process.env.CLIENTS || '8'),
};
const clients = [];
const watchdog = setTimeout(() => finish(new Error('watchdog: still running after 40 s')), 40000);

function finish(error, extra = {}) {
  clearTimeout(watchdog);
  for (const { pusher } of clients) pusher.disconnect();
  const summary = { ok: !error, ...extra };
  if (error) summary.error = String(error.stack || error);
  process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(error ? 1 : 0));
}

function say(step, fields = {}) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + '\n');
}

async function until(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

try {
  const signer = new PusherServer({ appId: env.appId, key: env.key, secret: env.secret });
  for (let i = 0; i < env.clients; i += 1) {
    const user = `user-${i}`;
    const pusher = new PusherJS(env.key, {
      cluster: 'mt1',
      wsHost: env.host,
      wsPort: env.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      enableStats: false,
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) =>
          callback(null, signer.authorizeChannel(socketId, channelName, { user_id: user, user_info: { i } })),
      },
    });
    const record = { pusher, user, ids: [], closedAt: null, closeCode: null, subscribed: 0, after: null };
    pusher.connection.bind('connected', () => record.ids.push(pusher.connection.socket_id));
    pusher.connection.bind('error', (error) => {
      if (error && error.type === 'PusherError' && record.closedAt === null) {
        record.closedAt = Date.now();
        record.closeCode = error.data.code;
      }
    });
    for (const name of ['news', 'presence-lobby']) {
      const channel = pusher.subscribe(name);
      channel.bind('pusher:subscription_succeeded', () => {
        record.subscribed += 1;
      });
      if (name === 'news') channel.bind('after', (data) => {
        record.after = data;
      });
    }
    clients.push(record);
  }
  await until(() => clients.every((c) => c.subscribed === 2), 'every client to subscribe');
  say('ready', { socketIds: clients.map((c) => c.ids[0]) });

  await until(
    () => clients.every((c) => c.ids.length === 2 && c.subscribed === 4 && c.pusher.connection.state === 'connected'),
    'every client to reconnect and resubscribe',
  );
  const lobby = clients[0].pusher.channel('presence-lobby');
  await until(() => lobby.members.count === env.clients, 'the presence channel to fill up again');
  say('reconnected', { socketIds: clients.map((c) => c.ids[1]) });
  await until(() => clients.every((c) => c.after !== null), 'the publish after the restart');
  for (const c of clients) assert.deepEqual(c.after, { n: 2 });
  finish(null, {
    closedAt: clients.map((c) => c.closedAt),
    closeCodes: clients.map((c) => c.closeCode),
    firstIds: clients.map((c) => c.ids[0]),
    secondIds: clients.map((c) => c.ids[1]),
    members: lobby.members.count,
  });
} catch (error) {
  finish(error);
}
