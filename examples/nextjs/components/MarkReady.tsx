'use client';

import { useState } from 'react';

/**
 * The kitchen's button: POST /api/orders/{id}/ready, the route handler that publishes through the gateway. It sends
 * the user's JWT, as the route handler takes the caller from the session (your app's cookie would do the same).
 */
export function MarkReady({ jwt }: { jwt: string }) {
  const [orderId, setOrderId] = useState('42');
  const [result, setResult] = useState<string | null>(null);

  async function markReady() {
    const response = await fetch(`/api/orders/${encodeURIComponent(orderId)}/ready`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${jwt}` },
    });
    // Not JSON: no route answered (an empty order id is the path /api/orders//ready, Next's 404 page).
    const body = (await response.json().catch(() => ({ error: response.statusText }))) as { error?: string };
    setResult(response.ok ? `published: order ${orderId}` : `HTTP ${response.status}: ${body.error}`);
  }

  return (
    <section>
      <label>
        Order <input name="orderId" value={orderId} onChange={(event) => setOrderId(event.target.value)} />
      </label>{' '}
      <button type="button" onClick={markReady}>
        Mark ready
      </button>
      {result && <p data-testid="publish-result">{result}</p>}
    </section>
  );
}
