// file: components/OrderUpdates.tsx
'use client';

import { useEffect, useState } from 'react';
import { createRealtime, type ConnectionStatus, type Realtime } from '@/lib/realtime';

const LABELS: Record<ConnectionStatus, string> = {
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};

export function OrderUpdates({ userId, jwt }: { userId: string; jwt: string }) {
  const [status, setStatus] = useState<ConnectionStatus>('connecting');
  const [ready, setReady] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let realtime: Realtime | null = null;
    let cancelled = false;
    createRealtime({ gatewayUrl: process.env.NEXT_PUBLIC_RELAY_GATEWAY_URL!, jwt, onStatus: setStatus })
      .then((created) => {
        if (cancelled) return created.close();
        realtime = created;
        created.subscribe(`private-user-${userId}`, {
          onEvent: (event, data) => {
            if (event === 'order-ready') setReady((ids) => [...ids, (data as { orderId: string }).orderId]);
          },
          onError: (status, message) => setError(status === 401 ? 'Please sign in again.' : message),
        });
      })
      .catch((reason) => setError(String(reason)));
    return () => {
      cancelled = true;
      realtime?.close();
    };
  }, [userId, jwt]);

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
