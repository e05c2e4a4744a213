// file: components/OrderUpdates.tsx
'use client';

import { useEffect, useRef, useState } from 'react';
import { createRealtime, type ConnectionStatus, type Realtime } from '@/lib/realtime';

const LABELS: Record<ConnectionStatus, string> = {
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};

/** What a refused subscription means to the user, by HTTP status: pusher-js gives no reason (see onError). */
function refusal(status: number | null): string {
  if (status === 401) return 'Please sign in again.';
  if (status === 403) return 'These orders are not yours to follow.';
  if (status === 0) return 'Cannot reach the realtime service: reload the page to try again.';
  return `Live updates are unavailable (HTTP ${status ?? 'error'}).`;
}

export function OrderUpdates({ userId, jwt }: { userId: string; jwt: string }) {
  const [status, setStatus] = useState<ConnectionStatus>('connecting');
  const [ready, setReady] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);
  // The newest JWT this component was given, read at each authorization: a renewed token reaches the connection
  // made with an older one, without reconnecting (so jwt is not a dependency of the effect below).
  const jwtRef = useRef(jwt);
  useEffect(() => {
    jwtRef.current = jwt;
  }, [jwt]);

  useEffect(() => {
    let realtime: Realtime | null = null;
    let cancelled = false;
    const gatewayUrl = process.env.NEXT_PUBLIC_RELAY_GATEWAY_URL!;
    createRealtime({ gatewayUrl, getJwt: () => jwtRef.current, onStatus: setStatus })
      .then((created) => {
        if (cancelled) return created.close();
        realtime = created;
        created.subscribe(`private-user-${userId}`, {
          onEvent: (event, data) => {
            if (event === 'order-ready') setReady((ids) => [...ids, (data as { orderId: string }).orderId]);
          },
          onReady: () => setError(null), // subscribed again after a reconnect: a past refusal no longer holds
          onError: (status) => setError(refusal(status)),
        });
      })
      .catch((reason) => setError(String(reason)));
    return () => {
      cancelled = true;
      realtime?.close();
    };
  }, [userId]);

  return (
    <section>
      <p role="status" data-status={status}>
        {LABELS[status]}
      </p>
      {error && <p role="alert">{error}</p>}
      <ul>
        {/* The same order can be ready twice; the list only grows, so a position is a stable key. */}
        {ready.map((orderId, index) => (
          <li key={`${index}-${orderId}`}>Order {orderId} is ready</li>
        ))}
      </ul>
    </section>
  );
}
