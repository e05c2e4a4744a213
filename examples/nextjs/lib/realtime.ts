// file: lib/realtime.ts
import Pusher, { type PresenceChannel } from 'pusher-js';

export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting' | 'offline';

export interface ClientConfig {
  key: string;
  cluster: string;
  forceTLS: boolean;
  wsHost?: string;
  wsPort?: number;
  channelAuthEndpoint: string;
  userAuthEndpoint: string;
}

export interface ChannelHandlers {
  onEvent: (event: string, data: unknown) => void;
  onReady?: () => void;
  /** 401: the JWT was refused (expired?), 403: the rules deny this channel. */
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
  close(): void;
}

/** pusher-js state → what the UI shows; "reconnecting" once the connection has been up before. */
export function connectionStatus(state: string, wasConnected: boolean): ConnectionStatus {
  if (state === 'connected') return 'connected';
  if (state === 'disconnected' || state === 'failed') return 'offline';
  return wasConnected ? 'reconnecting' : 'connecting'; // initialized, connecting, unavailable
}

export async function fetchClientConfig(gatewayUrl: string): Promise<ClientConfig> {
  const response = await fetch(new URL('/v1/client-config', gatewayUrl));
  if (!response.ok) throw new Error(`client-config: HTTP ${response.status}`);
  return (await response.json()) as ClientConfig;
}

export async function createRealtime(options: {
  gatewayUrl: string;
  jwt: string;
  onStatus: (status: ConnectionStatus) => void;
}): Promise<Realtime> {
  const { gatewayUrl, jwt, onStatus } = options;
  const config = await fetchClientConfig(gatewayUrl);
  const headers = { Authorization: `Bearer ${jwt}` };
  const pusher = new Pusher(config.key, {
    cluster: config.cluster,
    forceTLS: config.forceTLS,
    // Only for the emulator or a self-hosted server; hosted Pusher needs just the cluster.
    ...(config.wsHost
      ? { wsHost: config.wsHost, wsPort: config.wsPort, wssPort: config.wsPort, enabledTransports: ['ws', 'wss'] }
      : {}),
    channelAuthorization: {
      endpoint: new URL(config.channelAuthEndpoint, gatewayUrl).href,
      transport: 'ajax',
      headers,
    },
    userAuthentication: { endpoint: new URL(config.userAuthEndpoint, gatewayUrl).href, transport: 'ajax', headers },
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
    close() {
      pusher.disconnect();
      pusher.connection.unbind('state_change', onStateChange);
    },
  };
}
