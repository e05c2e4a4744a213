// Shared helpers for the conformance scenarios: configuration from the environment, the real clients
// (pusher-js, laravel-echo, pusher-http-node) pointed at the emulator on 127.0.0.1 only, a local auth endpoint
// that signs with pusher-http-node, small promise helpers, a watchdog and the JSON summary line.
//
// Protocol with the Python driver (tests/conformance/test_node_clients.py):
// - every line the script prints to stdout is JSON;
// - {"step": "<name>", ...} asks the driver to do something in-process; the driver answers with one line on
//   stdin (usually "ok", or a JSON document), read with `step()`;
// - the last line is the summary: {"scenario": "<name>", "ok": true|false, "checks": [...], ...}.
import assert from 'node:assert/strict';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export const PusherJS = require('pusher-js');
export const PusherServer = require('pusher');

// RELAY_DEBUG=1 sends pusher-js's own log to stderr (stdout carries only JSON lines for the driver).
if (process.env.RELAY_DEBUG) {
  PusherJS.log = (message) => process.stderr.write(`[pusher-js] ${message}\n`);
}

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`environment variable ${name} is required`);
  }
  return value;
}

export const env = {
  host: process.env.RELAY_HOST || '127.0.0.1',
  port: Number(required('RELAY_PORT')),
  appId: required('RELAY_APP_ID'),
  key: required('RELAY_KEY'),
  secret: required('RELAY_SECRET'),
};

// 32 bytes, base64: the end-to-end encryption master key the publisher and the auth endpoint share.
export const MASTER_KEY_BASE64 = Buffer.alloc(32, 7).toString('base64');

/** A scenario: collects named checks, prints the summary and exits; a watchdog ends it if it hangs. */
export class Scenario {
  constructor(name, { timeoutMs = 15000 } = {}) {
    this.name = name;
    this.checks = [];
    this.extra = {};
    this.cleanups = [];
    this.watchdog = setTimeout(() => {
      this.finish(new Error(`watchdog: scenario ${name} still running after ${timeoutMs} ms`));
    }, timeoutMs);
  }

  check(label) {
    this.checks.push(label);
  }

  onCleanup(fn) {
    this.cleanups.push(fn);
  }

  finish(error) {
    clearTimeout(this.watchdog);
    for (const fn of this.cleanups.reverse()) {
      try {
        fn();
      } catch {
        // best effort: we are leaving anyway
      }
    }
    const summary = { scenario: this.name, ok: !error, checks: this.checks, ...this.extra };
    if (error) {
      summary.error = String(error && error.stack ? error.stack : error);
      // pusher-http-node's RequestError keeps the interesting part in status/body.
      for (const field of ['message', 'status', 'body', 'url']) {
        if (error && error[field] !== undefined) {
          summary[`error_${field}`] = error[field];
        }
      }
    }
    process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(error ? 1 : 0));
  }

  async run(body) {
    try {
      await body(this);
      this.finish(null);
    } catch (error) {
      this.finish(error);
    }
  }
}

let stdinLines = null;

/** Ask the Python driver to act (e.g. close every connection with 4200) and wait for its one-line answer. */
export async function step(name, fields = {}) {
  if (stdinLines === null) {
    stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  }
  process.stdout.write(JSON.stringify({ step: name, ...fields }) + '\n');
  const { value, done } = await stdinLines.next();
  if (done) {
    throw new Error(`driver closed stdin instead of answering step ${name}`);
  }
  return value;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolve with the next `event` on a pusher-js dispatcher (channel, connection, user, watchlist). */
export function once(emitter, event, { timeoutMs = 5000, what = event } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.unbind(event, handler);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const handler = (data, metadata) => {
      clearTimeout(timer);
      emitter.unbind(event, handler);
      resolve(data === undefined ? metadata : data);
    };
    emitter.bind(event, handler);
  });
}

/** Poll until `predicate()` is truthy. */
export async function until(predicate, { timeoutMs = 5000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = predicate();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(10);
  }
}

/** Collect every `event` on `emitter` into an array (for "was NOT received" assertions). */
export function collect(emitter, event) {
  const seen = [];
  emitter.bind(event, (data) => seen.push(data));
  return seen;
}

/** pusher-http-node, talking plain HTTP to the emulator. */
export function serverClient(options = {}) {
  return new PusherServer({
    appId: env.appId,
    key: env.key,
    secret: env.secret,
    host: env.host,
    port: String(env.port),
    useTLS: false,
    timeout: 5000,
    ...options,
  });
}

/**
 * A local auth endpoint (node:http on 127.0.0.1, port 0), the way an app backend serves pusher-js:
 * - POST /pusher/auth        form-encoded socket_id, channel_name (+ params, here `user`) → authorizeChannel
 * - POST /pusher/user-auth   form-encoded socket_id (+ `user`) → authenticateUser
 *   (the user is the `user` form param, else the bearer token of an Authorization header)
 * - POST /publish            JSON {channel, event, data}; X-Socket-ID header → trigger with socket_id (toOthers)
 * Channels whose name contains "refused" get 403. Every request is recorded in `requests`.
 */
export async function startAuthServer(scenario, { watchlists = {} } = {}) {
  const signer = serverClient({ encryptionMasterKeyBase64: MASTER_KEY_BASE64 });
  const requests = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', async () => {
      const record = { path: req.url, contentType: req.headers['content-type'], headers: req.headers, body };
      requests.push(record);
      try {
        const reply = await handle(req, body, record);
        res.writeHead(reply.status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(reply.body));
      } catch (error) {
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: String(error) }));
      }
    });
  });

  async function handle(req, body, record) {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/publish') {
      const { channel, event, data } = JSON.parse(body);
      const socketId = req.headers['x-socket-id'];
      const response = await signer.trigger(channel, event, data, socketId ? { socket_id: socketId } : {});
      return { status: response.status, body: await response.json() };
    }
    const form = new URLSearchParams(body);
    record.form = Object.fromEntries(form);
    const socketId = form.get('socket_id');
    // The user comes from a form param (pusher-js `params`) or a bearer token (laravel-echo `bearerToken`).
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization || '');
    const user = form.get('user') || (bearer && bearer[1]) || 'anonymous';
    if (url.pathname === '/pusher/user-auth') {
      const userData = { id: user, user_info: { name: `User ${user}` } };
      if (watchlists[user]) {
        userData.watchlist = watchlists[user];
      }
      return { status: 200, body: signer.authenticateUser(socketId, userData) };
    }
    if (url.pathname === '/pusher/auth') {
      const channel = form.get('channel_name');
      if (channel.includes('refused')) {
        return { status: 403, body: { error: 'refused by the app' } };
      }
      if (channel.startsWith('presence-')) {
        const presence = { user_id: user, user_info: { name: `User ${user}` } };
        return { status: 200, body: signer.authorizeChannel(socketId, channel, presence) };
      }
      return { status: 200, body: signer.authorizeChannel(socketId, channel) };
    }
    return { status: 404, body: { error: 'not found' } };
  }

  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  scenario.onCleanup(() => {
    server.closeAllConnections();
    server.close();
  });
  return { base, requests, server };
}

/** Options that keep pusher-js on the emulator: plain ws to 127.0.0.1 only, no stats, no fallbacks. */
export function pusherOptions(auth, user, extra = {}) {
  const options = {
    cluster: 'mt1',
    wsHost: env.host,
    wsPort: env.port,
    wssPort: env.port,
    httpHost: env.host,
    httpPort: env.port,
    statsHost: env.host,
    forceTLS: false,
    enabledTransports: ['ws'],
    enableStats: false,
    ...extra,
  };
  if (auth) {
    options.channelAuthorization = {
      endpoint: `${auth.base}/pusher/auth`,
      transport: 'ajax',
      params: { user },
    };
    options.userAuthentication = {
      endpoint: `${auth.base}/pusher/user-auth`,
      transport: 'ajax',
      params: { user },
    };
  }
  return options;
}

/** pusher-js channel authorization signed in this process by pusher-http-node's `signer`, with no auth endpoint;
 *  `data`: a presence member's channel_data. */
export function signedAuthorization(signer, data) {
  return {
    customHandler: ({ socketId, channelName }, callback) =>
      callback(null, signer.authorizeChannel(socketId, channelName, data)),
  };
}

/** A connected pusher-js client. */
export async function connect(scenario, auth, user, extra = {}) {
  const client = new PusherJS(env.key, pusherOptions(auth, user, extra));
  scenario.onCleanup(() => client.disconnect());
  if (client.connection.state !== 'connected') {
    await once(client.connection, 'connected', { what: `${user} to connect` });
  }
  assert.match(client.connection.socket_id, /^\d+\.\d+$/);
  return client;
}

/** Subscribe and wait for pusher:subscription_succeeded (rejects on pusher:subscription_error). */
export function subscribe(client, name, { timeoutMs = 5000 } = {}) {
  const channel = client.subscribe(name);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out subscribing to ${name}`)), timeoutMs);
    channel.bind('pusher:subscription_succeeded', (data) => {
      clearTimeout(timer);
      resolve({ channel, data });
    });
    channel.bind('pusher:subscription_error', (error) => {
      clearTimeout(timer);
      reject(new Error(`subscription to ${name} failed: ${JSON.stringify(error)}`));
    });
  });
}

/** Subscribe expecting pusher:subscription_error; resolves with its payload. */
export function subscribeRefused(client, name, { timeoutMs = 5000 } = {}) {
  const channel = client.subscribe(name);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no subscription_error for ${name}`)), timeoutMs);
    channel.bind('pusher:subscription_succeeded', () => {
      clearTimeout(timer);
      reject(new Error(`subscription to ${name} unexpectedly succeeded`));
    });
    channel.bind('pusher:subscription_error', (error) => {
      clearTimeout(timer);
      resolve(error);
    });
  });
}

/** The error `promise` is rejected with; an error of its own if it is fulfilled instead. */
export async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('the request unexpectedly succeeded');
}

export { assert };
