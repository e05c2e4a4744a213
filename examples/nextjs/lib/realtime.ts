// file: lib/realtime.ts
import Pusher, { type PresenceChannel } from 'pusher-js';

export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting' | 'offline';

export interface ClientConfig {
  provider: string;
  key: string;
  cluster: string;
  forceTLS: boolean;
  wsHost?: string;
  wsPort?: number;
  wssPort?: number;
  wsPath?: string; // an emulator behind a path prefix (emulator://…/pusher/apps/ID)
  channelAuthEndpoint: string;
  userAuthEndpoint: string;
}

export interface ChannelHandlers {
  onEvent: (event: string, data: unknown) => void;
  /** Subscribed: first, and again after every reconnect (pusher-js authorizes the channel anew each time). */
  onReady?: () => void;
  /**
   * The gateway refused the channel, or could not be asked. `status`: 401 the JWT (expired, or not sent as
   * `Bearer <JWT>`), 403 the rules deny the channel, 400 a malformed request, 413 the presence member info (the JWT
   * claims the rule names) is over 1 KB, 0 the gateway could not be reached or CORS hid its answer.
   * `message` is pusher-js's own ("Unable to retrieve auth string … received status: 403"), never the gateway's
   * reason: that is in the browser's network tab (the response body) and in the gateway's log. pusher-js does not
   * ask again until the connection reconnects or the channel is subscribed anew.
   */
  onError?: (status: number | null, message: string) => void;
}

export interface Member {
  id: string;
  name: string;
}

export interface Realtime {
  pusher: Pusher;
  subscribe(channel: string, handlers: ChannelHandlers): () => void;
  /** A presence channel's members, reported on join and on every change. */
  presence(channel: string, onMembers: (members: Member[], me: Member) => void): () => void;
  /**
   * `{ 'X-Socket-ID': id }` for a request to your backend whose event must not echo back to this tab; `{}` until
   * the connection has an id (a header "undefined" would make the gateway refuse the publish: 400).
   */
  socketIdHeader(): Record<string, string>;
  close(): void;
}

/** pusher-js state → what the UI shows; "reconnecting" once the connection has been up before. */
export function connectionStatus(state: string, wasConnected: boolean): ConnectionStatus {
  if (state === 'connected') return 'connected';
  if (state === 'disconnected' || state === 'failed') return 'offline';
  return wasConnected ? 'reconnecting' : 'connecting'; // initialized, connecting, unavailable
}

export async function fetchClientConfig(gatewayUrl: string): Promise<ClientConfig> {
  // Under the gateway's URL, a path prefix kept: https://example.com/relay/v1/client-config
  const url = `${gatewayUrl.replace(/\/+$/, '')}/v1/client-config`;
  let response: Response;
  try {
    response = await fetch(url);
  } catch {
    // The browser's reason is only "Failed to fetch", the same for a gateway that is down (or elsewhere) and for one
    // whose CORS refuses this page's origin; its console says which.
    throw new Error(
      `client-config: cannot reach the gateway at ${url}: is relay serve running there, and does its ` +
        "RELAY_CORS_ORIGINS list this page's origin?",
    );
  }
  if (!response.ok) throw new Error(`client-config: HTTP ${response.status}`);
  const config = (await response.json()) as ClientConfig;
  // pusher-js speaks Pusher's protocol (Pusher, the emulator): an Ably gateway's config has no key for it.
  if (config.provider === 'ably') throw new Error("client-config: the gateway's provider is Ably: connect with ably-js");
  return config;
}

export async function createRealtime(options: {
  gatewayUrl: string;
  /** The user's current JWT, from your auth library: asked for at every channel authorization and sign-in. */
  getJwt: () => string;
  onStatus: (status: ConnectionStatus) => void;
}): Promise<Realtime> {
  const { gatewayUrl, getJwt, onStatus } = options;
  const config = await fetchClientConfig(gatewayUrl);
  // A provider, not fixed headers: pusher-js authorizes every channel again after a reconnect, maybe hours later,
  // and a JWT fixed here would have expired by then (401, the channel lost while the status still says "Live").
  const headersProvider = () => ({ Authorization: `Bearer ${getJwt()}` });
  const pusher = new Pusher(config.key, {
    cluster: config.cluster,
    forceTLS: config.forceTLS,
    // Only for the emulator or a self-hosted server; hosted Pusher needs just the cluster.
    ...(config.wsHost
      ? {
          wsHost: config.wsHost,
          wsPort: config.wsPort,
          wssPort: config.wssPort,
          wsPath: config.wsPath ?? '',
          enabledTransports: ['ws', 'wss'],
        }
      : {}),
    channelAuthorization: {
      endpoint: new URL(config.channelAuthEndpoint, gatewayUrl).href,
      transport: 'ajax',
      headersProvider,
    },
    userAuthentication: {
      endpoint: new URL(config.userAuthEndpoint, gatewayUrl).href,
      transport: 'ajax',
      headersProvider,
    },
  });

  let wasConnected = false;
  let last: ConnectionStatus | null = null;
  const report = (state: string) => {
    if (state === 'connected') wasConnected = true;
    const status = connectionStatus(state, wasConnected);
    if (status !== last) {
      last = status;
      onStatus(status);
    }
  };
  const onStateChange = ({ current }: { current: string }) => report(current);
  pusher.connection.bind('state_change', onStateChange);
  report(pusher.connection.state);

  return {
    pusher,
    subscribe(name, handlers) {
      const channel = pusher.subscribe(name);
      channel.bind('pusher:subscription_succeeded', () => handlers.onReady?.());
      channel.bind('pusher:subscription_error', (error: { status?: number; error?: string }) =>
        handlers.onError?.(error.status ?? null, error.error ?? 'subscription failed'),
      );
      channel.bind_global((event: string, data: unknown) => {
        if (!event.startsWith('pusher:')) handlers.onEvent(event, data);
      });
      return () => pusher.unsubscribe(name);
    },
    presence(name, onMembers) {
      const channel = pusher.subscribe(name) as PresenceChannel;
      const update = () => {
        const members: Member[] = [];
        channel.members.each((member: { id: string; info: { name: string } }) => {
          members.push({ id: member.id, name: member.info.name });
        });
        members.sort((a, b) => a.id.localeCompare(b.id));
        const me = channel.members.me as { id: string; info: { name: string } };
        onMembers(members, { id: me.id, name: me.info.name });
      };
      for (const event of ['pusher:subscription_succeeded', 'pusher:member_added', 'pusher:member_removed']) {
        channel.bind(event, update);
      }
      return () => pusher.unsubscribe(name);
    },
    socketIdHeader(): Record<string, string> {
      // Typed string, but undefined until the first 'connected'.
      const socketId: string | undefined = pusher.connection.socket_id;
      return socketId ? { 'X-Socket-ID': socketId } : {};
    },
    close() {
      pusher.disconnect();
      pusher.connection.unbind('state_change', onStateChange);
    },
  };
}
