// The pages' connection to the realtime provider. Nothing here names a provider's host or key: /api/config says
// which provider relay is configured with (RELAY_URL on the backend) and how to reach it, and channels are
// authorized by relay's auth endpoint with the backend's channel rules.

export const LABELS = {
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  idle: 'Idle', // Ably before the page's first channel: ably-js connects per channel, with that channel's token
  error: 'Not live', // a channel was refused, or the provider's library did not load: #realtime-problems says why
};

/** A provider's connection state → what the page shows; "reconnecting" once the connection has been up before. */
export function connectionStatus(state, wasConnected) {
  if (state === 'connected') return 'connected';
  if (state === 'disconnected' || state === 'failed' || state === 'closed') return 'offline';
  return wasConnected ? 'reconnecting' : 'connecting'; // initialized, connecting, unavailable, suspended
}

export function showStatus(status) {
  const badge = document.getElementById('connection');
  badge.dataset.status = status;
  badge.textContent = LABELS[status];
}

/** What keeps the page from being live, above its content; none: nothing shown. */
export function showProblems(messages) {
  let box = document.getElementById('realtime-problems');
  if (messages.length === 0) {
    box?.remove();
    return;
  }
  if (!box) {
    box = document.createElement('div');
    box.id = 'realtime-problems';
    box.className = 'card problems';
    box.setAttribute('role', 'alert');
    document.querySelector('main').prepend(box);
  }
  const paragraph = (text) => Object.assign(document.createElement('p'), { textContent: text });
  box.replaceChildren(...messages.map(paragraph));
}

/** An action the backend refused (or could not be asked), above the page's content until the next one succeeds. */
export function showActionError(error) {
  let box = document.getElementById('action-problem');
  if (!error) {
    box?.remove();
    return;
  }
  if (!box) {
    box = Object.assign(document.createElement('div'), { id: 'action-problem', className: 'card problems' });
    box.setAttribute('role', 'alert');
    document.querySelector('main').prepend(box);
  }
  box.textContent = `That did not go through: ${error.message}`;
}

// What a page says once its provider's library gives up its first attempts (pusher-js: "unavailable" after 10 s;
// ably-js: "suspended"); both keep trying, and the message goes at the next connection.
const UNREACHABLE =
  'The realtime server cannot be reached, so this page is not live: is it running? (RELAY_URL on the backend names ' +
  'it.) The page keeps trying.';
// pusher-js's attempts are started over this long after it reports "unavailable" (see connect)
const RESTART_AFTER_UNAVAILABLE_MS = 5000;

/** FastAPI's `detail` as a sentence: a refusal's text, or each refused field and why (a 422's list of errors). */
function reason(detail) {
  if (!Array.isArray(detail)) return detail;
  return detail.map(({ loc, msg }) => `${loc.at(-1)}: ${msg}`).join('; ');
}

/** JSON in and out of the backend; errors carry FastAPI's `detail`. */
export async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    ...options,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(reason(body?.detail) ?? `HTTP ${response.status}`);
  return body;
}

/**
 * The badge and the problems shown: the connection's status, unless something keeps the page from being live (a
 * refused channel, a library that did not load), which the page then says instead of "Live".
 */
function indicator(onStatus, onProblems) {
  let wasConnected = false;
  let connection = 'connecting';
  const problems = new Map(); // a channel (or 'library') → why it is not live
  let shownStatus = null;
  let shownProblems = '';
  const render = () => {
    const status = problems.size > 0 ? 'error' : connection;
    if (status !== shownStatus) {
      shownStatus = status;
      onStatus(status);
    }
    const messages = [...problems.values()];
    if (messages.join('\n') !== shownProblems) {
      shownProblems = messages.join('\n');
      onProblems(messages);
    }
  };
  return {
    /** A provider's connection state, or 'idle' (no connection needed yet). */
    state(state) {
      if (state === 'connected') wasConnected = true;
      connection = state === 'idle' ? 'idle' : connectionStatus(state, wasConnected);
      render();
    },
    /** Why `what` is not live; without a reason, it is live again. */
    problem(what, why = null) {
      if (why) problems.set(what, why);
      else problems.delete(what);
      render();
    },
  };
}

/** Why a channel is not live. 401/403 is the app refusing this page's sign-in, as after the app restarts (a new
 * session secret unless ORDER_TRACKING_SECRET is set; the orders, kept in memory, are gone). */
function refusal(channel, status, detail) {
  if (status === 401 || status === 403) {
    const advice = 'reload the page, and sign in again if the app has restarted';
    return `Live updates on ${channel} were refused (HTTP ${status}): ${advice}.`;
  }
  return `Live updates on ${channel} failed${status ? ` (HTTP ${status})` : ''}: ${detail ?? 'no reason given'}`;
}

const LIBRARIES = {
  Pusher: { name: 'pusher-js', setting: 'PUSHER_JS_PATH', file: 'pusher.min.js', npm: 'examples/nextjs' },
  Ably: { name: 'ably-js', setting: 'ABLY_JS_PATH', file: 'ably.min.js', npm: 'tests/node' },
};

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
}

/** The provider's browser library (window.Pusher or window.Ably); false, and the page says why, if it did not load. */
async function loadLibrary(global, config, show) {
  if (!window[global]) await loadScript(config.library).catch(() => {});
  if (window[global]) return true;
  const { name, setting, file, npm } = LIBRARIES[global];
  show.problem(
    'library',
    config.libraryCdn
      ? `${name} did not load from its CDN (${config.libraryCdn}): is this computer offline? Give the app a local ` +
          `copy (${setting}=/path/to/${file}, or run "npm ci --prefix ${npm}" in the repository) and restart it.`
      : `${name} did not load from the app's local copy (${config.library}): check ${setting}.`,
  );
  return false;
}

/**
 * A page's onReady, which re-reads its state from the backend: while the backend cannot be reached (it restarts with
 * the realtime server, or is not up yet) it is tried again every 2 s, instead of failing with an unhandled rejection;
 * an error answer is logged once.
 */
function rereading(onReady) {
  const attempt = () =>
    Promise.resolve()
      .then(onReady)
      .catch((error) => {
        if (!(error instanceof TypeError)) return console.error(`could not re-read the page's state: ${error.message}`);
        console.warn(`the backend cannot be reached (${error.message}); re-reading the page's state in 2 s`);
        setTimeout(attempt, 2000);
      });
  return onReady ? attempt : () => {};
}

// Without its library the page still works, without live updates: each page reads its state once.
const NOT_LIVE = {
  subscribe(name, { onReady }) {
    rereading(onReady)();
  },
  presence() {},
};

/**
 * Connect with the backend's settings. Returns
 *   subscribe(channel, { onReady, onError, [event]: handler }): onReady runs after every (re)subscription, so a page
 *     re-reads its state there and misses nothing that happened while it was offline; a refused subscription is
 *     shown on the page (and passed to onError);
 *   presence(channel, onMembers): the members' names, on join and on every change.
 */
export async function connect({ onStatus = showStatus, onProblems = showProblems } = {}) {
  const config = await api('/api/config');
  const show = indicator(onStatus, onProblems);
  if (config.provider === 'ably') return connectAbly(config, show);
  if (!(await loadLibrary('Pusher', config, show))) return NOT_LIVE;
  const pusher = new Pusher(config.key, {
    cluster: config.cluster,
    forceTLS: config.forceTLS,
    // Only for the emulator or another self-hosted server; hosted Pusher needs just the cluster.
    ...(config.wsHost
      ? {
          wsHost: config.wsHost,
          wsPort: config.wsPort,
          wssPort: config.wssPort,
          wsPath: config.wsPath ?? '', // an emulator behind a path prefix
          enabledTransports: config.enabledTransports,
        }
      : {}),
    channelAuthorization: { endpoint: config.channelAuthEndpoint, transport: 'ajax' },
  });
  pusher.connection.bind('state_change', ({ current }) => {
    show.state(current);
    if (current === 'unavailable') show.problem('connection', UNREACHABLE);
    else if (current === 'connected') show.problem('connection');
  });
  // Once "unavailable", pusher-js waits ever longer between its attempts, up to a minute: a realtime server back after
  // an outage went unnoticed that long. Its attempts start over instead (one at once), 5 s after each time it says so:
  // an attempt still under way (a slow network) has the 15 s pusher-js gives its first one, rather than being cut.
  pusher.connection.bind('unavailable', () =>
    setTimeout(() => {
      if (pusher.connection.state !== 'unavailable') return;
      pusher.disconnect();
      pusher.connect();
    }, RESTART_AFTER_UNAVAILABLE_MS),
  );
  show.state(pusher.connection.state);
  window.relayConnection = pusher; // for the console and the end-to-end test

  // pusher-js subscribes again on every reconnection: a refusal is shown until a subscription succeeds.
  const open = (name, onError) => {
    const channel = pusher.subscribe(name);
    channel.bind('pusher:subscription_succeeded', () => show.problem(name));
    channel.bind('pusher:subscription_error', (error) => {
      show.problem(name, refusal(name, error?.status, error?.error));
      (onError ?? console.error)(error);
    });
    return channel;
  };
  return {
    subscribe(name, { onReady, onError, ...events }) {
      const channel = open(name, onError);
      channel.bind('pusher:subscription_succeeded', rereading(onReady));
      for (const [event, handler] of Object.entries(events)) channel.bind(event, handler);
    },
    presence(name, onMembers) {
      const channel = open(name);
      const update = () => {
        const names = [];
        channel.members.each((member) => names.push(member.info.name));
        onMembers(names.sort());
      };
      for (const event of ['pusher:subscription_succeeded', 'pusher:member_added', 'pusher:member_removed']) {
        channel.bind(event, update);
      }
    },
  };
}

// Ably: relay's /ably/token signs a TokenRequest whose capability covers one channel, with the user as clientId,
// so each channel gets its own ably-js connection; the page shows the worst of their states.
async function connectAbly(config, show) {
  if (!(await loadLibrary('Ably', config, show))) return NOT_LIVE;
  show.state('idle'); // no channel, no connection yet
  const states = new Map();
  const rank = { connected: 0, connecting: 1, initialized: 1, disconnected: 2, suspended: 2, closed: 3, failed: 3 };
  const open = (name, onError) => {
    const client = new Ably.Realtime({
      // Only for the emulator or another self-hosted endpoint; Ably's cloud needs no host.
      ...config.clientOptions,
      authUrl: config.authUrl,
      authMethod: config.authMethod,
      authParams: { channel: name },
    });
    client.connection.on(({ current, reason }) => {
      states.set(name, current);
      const worst = [...states.values()].sort((a, b) => rank[b] - rank[a])[0];
      // ably-js says "disconnected" while it retries: that is reconnecting here, not offline.
      show.state(worst === 'disconnected' || worst === 'suspended' ? 'connecting' : worst);
      if (current === 'suspended') show.problem('connection', UNREACHABLE);
      else if (current === 'connected') show.problem('connection');
      // A token refused by relay (403) fails the connection for good: the channel will not attach.
      if (current === 'failed') show.problem(name, refusal(name, reason?.statusCode, reason?.message));
    });
    const channel = client.channels.get(name);
    channel.on('attached', () => show.problem(name));
    channel.on('failed', ({ reason }) => {
      show.problem(name, refusal(name, reason?.statusCode, reason?.message));
      (onError ?? console.error)(reason);
    });
    return channel;
  };
  return {
    subscribe(name, { onReady, onError, ...events }) {
      const channel = open(name, onError);
      channel.on('attached', rereading(onReady));
      // subscribe() attaches; its failure is the channel's 'failed' above, shown on the page.
      for (const [event, handler] of Object.entries(events)) {
        channel.subscribe(event, (message) => handler(message.data)).catch(() => {});
      }
    },
    presence(name, onMembers) {
      const channel = open(name);
      const update = async () => {
        // Ably has a member per connection: a cook with two tabs open is one cook, as on Pusher.
        const byUser = new Map((await channel.presence.get()).map((m) => [m.clientId, m.data?.name ?? m.clientId]));
        onMembers([...byUser.values()].sort());
      };
      channel.presence.subscribe(update).catch(() => {});
      channel.on('attached', async () => {
        try {
          const me = await api('/api/me');
          await channel.presence.enter({ name: me.name });
          await update();
        } catch (error) {
          show.problem(name, refusal(name, error.statusCode, error.message));
        }
      });
    },
  };
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
