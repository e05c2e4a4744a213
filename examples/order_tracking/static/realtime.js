// The pages' connection to the realtime provider. Nothing here names a provider's host or key: /api/config says
// which provider relay is configured with (RELAY_URL on the backend) and how to reach it, and channels are
// authorized by relay's auth endpoint with the backend's channel rules.

export const LABELS = {
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
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

/** JSON in and out of the backend; errors carry FastAPI's `detail`. */
export async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    ...options,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(body?.detail ?? `HTTP ${response.status}`);
  return body;
}

function statusReporter(onStatus) {
  let wasConnected = false;
  let last = null;
  return (state) => {
    if (state === 'connected') wasConnected = true;
    const status = connectionStatus(state, wasConnected);
    if (status !== last) {
      last = status;
      onStatus(status);
    }
  };
}

/**
 * Connect with the backend's settings. Returns
 *   subscribe(channel, { onReady, [event]: handler }): onReady runs after every (re)subscription, so a page re-reads
 *     its state there and misses nothing that happened while it was offline;
 *   presence(channel, onMembers): the members' names, on join and on every change.
 */
export async function connect({ onStatus = showStatus } = {}) {
  const config = await api('/api/config');
  if (config.provider === 'ably') return connectAbly(config, onStatus);
  const pusher = new Pusher(config.key, {
    cluster: config.cluster,
    forceTLS: config.forceTLS,
    // Only for the emulator or another self-hosted server; hosted Pusher needs just the cluster.
    ...(config.wsHost
      ? { wsHost: config.wsHost, wsPort: config.wsPort, wssPort: config.wsPort, enabledTransports: config.enabledTransports }
      : {}),
    channelAuthorization: { endpoint: config.channelAuthEndpoint, transport: 'ajax' },
  });
  const report = statusReporter(onStatus);
  pusher.connection.bind('state_change', ({ current }) => report(current));
  report(pusher.connection.state);
  window.relayConnection = pusher; // for the console and the end-to-end test

  return {
    subscribe(name, { onReady, onError, ...events }) {
      const channel = pusher.subscribe(name);
      if (onReady) channel.bind('pusher:subscription_succeeded', onReady);
      channel.bind('pusher:subscription_error', (error) => (onError ?? console.error)(error));
      for (const [event, handler] of Object.entries(events)) channel.bind(event, handler);
    },
    presence(name, onMembers) {
      const channel = pusher.subscribe(name);
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

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
}

// Ably: relay's /ably/token signs a TokenRequest whose capability covers one channel, with the user as clientId,
// so each channel gets its own ably-js connection; the page shows the worst of their states.
async function connectAbly(config, onStatus) {
  if (!window.Ably) await loadScript(config.library);
  const states = new Map();
  const report = statusReporter(onStatus);
  const rank = { connected: 0, connecting: 1, initialized: 1, disconnected: 2, suspended: 2, closed: 3, failed: 3 };
  const open = (name) => {
    const client = new Ably.Realtime({
      // Only for the emulator or another self-hosted endpoint; Ably's cloud needs no host.
      ...config.clientOptions,
      authUrl: config.authUrl,
      authMethod: config.authMethod,
      authParams: { channel: name },
    });
    client.connection.on(({ current }) => {
      states.set(name, current);
      const worst = [...states.values()].sort((a, b) => rank[b] - rank[a])[0];
      // ably-js says "disconnected" while it retries: that is reconnecting here, not offline.
      report(worst === 'disconnected' || worst === 'suspended' ? 'connecting' : worst);
    });
    return client.channels.get(name);
  };
  return {
    subscribe(name, { onReady, onError, ...events }) {
      const channel = open(name);
      channel.on('attached', () => onReady?.());
      channel.on('failed', (change) => (onError ?? console.error)(change.reason));
      for (const [event, handler] of Object.entries(events)) channel.subscribe(event, (message) => handler(message.data));
    },
    presence(name, onMembers) {
      const channel = open(name);
      const update = async () => {
        const members = await channel.presence.get();
        onMembers(members.map((member) => member.data?.name ?? member.clientId).sort());
      };
      channel.presence.subscribe(update);
      channel.on('attached', async () => {
        const me = await api('/api/me');
        await channel.presence.enter({ name: me.name });
        await update();
      });
    },
  };
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
