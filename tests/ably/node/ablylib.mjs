// Helpers for the ably-js scenarios: ably-js 2.x from tests/node/node_modules, pointed at the emulator on
// 127.0.0.1 only (endpoint + port + tls: false, WebSocket transport, no fallback hosts; reference §C.1).
// The scenario protocol (JSON lines, steps, summary) is tests/node/lib.mjs's, driven by tests/ably/ablysupport.py.
import { createRequire } from 'node:module';
import { env, once } from '../../node/lib.mjs';

const require = createRequire(new URL('../../node/package.json', import.meta.url));
export const Ably = require('ably');

export const ablyKey = process.env.ABLY_KEY;
export const keyName = ablyKey.split(':')[0];
// ABLY_FORMAT=json forces JSON; otherwise ably-js uses msgpack, its Node default (reference §0.6).
export const binary = process.env.ABLY_FORMAT !== 'json';

export function ablyOptions(extra = {}) {
  return {
    key: ablyKey,
    endpoint: env.host,
    port: env.port,
    tls: false,
    fallbackHosts: [],
    transports: ['web_socket'],
    useBinaryProtocol: binary,
    logLevel: Number(process.env.ABLY_LOG_LEVEL || 1),
    logHandler: (message) => process.stderr.write(`[ably-js] ${message}\n`),
    ...extra,
  };
}

/** A connected ably-js Realtime client, closed when the scenario ends. */
export async function realtime(scenario, extra = {}) {
  const client = new Ably.Realtime(ablyOptions(extra));
  scenario.onCleanup(() => client.close());
  await client.connection.whenState('connected');
  return client;
}

/** The next message named `name` on an attached ably-js channel. */
export function nextMessage(channel, name, { timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${name} on ${channel.name}`)), timeoutMs);
    const listener = (message) => {
      clearTimeout(timer);
      channel.unsubscribe(name, listener);
      resolve(message);
    };
    channel.subscribe(name, listener);
  });
}

/** The next presence `action` (enter, update, leave) on an ably-js channel. */
export function nextPresence(channel, action, { timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for presence ${action}`)), timeoutMs);
    const listener = (message) => {
      clearTimeout(timer);
      channel.presence.unsubscribe(action, listener);
      resolve(message);
    };
    channel.presence.subscribe(action, listener);
  });
}

export { once };
