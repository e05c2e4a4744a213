// pusher-js with forceTLS: true through nginx (TLS termination, docs/nginx.conf) to the emulator: connects over
// wss://, subscribes to a public and a private channel, and receives events that pusher-http-node publishes over
// https:// through the same nginx. The certificate is trusted through NODE_EXTRA_CA_CERTS (verification stays on).
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
};
const watchdog = setTimeout(() => finish(new Error('watchdog: still running after 15 s')), 15000);
let client = null;

function finish(error, extra = {}) {
  clearTimeout(watchdog);
  if (client) client.disconnect();
  const summary = { ok: !error, ...extra };
  if (error) summary.error = String(error.stack || error);
  process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(error ? 1 : 0));
}

function once(emitter, event, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 8000);
    emitter.bind(event, (data) => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

try {
  const api = new PusherServer({
    appId: env.appId, key: env.key, secret: env.secret, host: env.host, port: String(env.port), useTLS: true,
  });
  client = new PusherJS(env.key, {
    cluster: 'mt1',
    wsHost: env.host,
    wssPort: env.port,
    forceTLS: true,
    enabledTransports: ['ws', 'wss'],
    enableStats: false,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => callback(null, api.authorizeChannel(socketId, channelName)),
    },
  });
  const states = [];
  client.connection.bind('state_change', ({ current }) => states.push(current));
  await once(client.connection, 'connected', 'the wss connection through nginx');
  assert.match(client.connection.socket_id, /^\d+\.\d+$/);
  assert.equal(client.connection.isUsingTLS(), true);
  const news = client.subscribe('news');
  await once(news, 'pusher:subscription_succeeded', 'news');
  const orders = client.subscribe('private-orders');
  await once(orders, 'pusher:subscription_succeeded', 'private-orders');
  const gotNews = once(news, 'headline', 'the public event');
  const gotOrder = once(orders, 'created', 'the private event');
  const response = await api.trigger(['news', 'private-orders'], 'headline', { title: 'through nginx' });
  assert.equal(response.status, 200);
  await api.trigger('private-orders', 'created', { id: 7 });
  assert.deepEqual(await gotNews, { title: 'through nginx' });
  assert.deepEqual(await gotOrder, { id: 7 });
  const channels = await (await api.get({ path: '/channels' })).json();
  assert.deepEqual(Object.keys(channels.channels).sort(), ['news', 'private-orders']);
  finish(null, { socketId: client.connection.socket_id, transport: 'wss', states: [...states] });
} catch (error) {
  finish(error);
}
