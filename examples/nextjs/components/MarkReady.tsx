'use client';

import { useState } from 'react';

/** The kitchen's button: POST /api/orders/{id}/ready, the route handler that publishes through the gateway. */
export function MarkReady({ customerId }: { customerId: string }) {
  const [orderId, setOrderId] = useState('42');
  const [result, setResult] = useState<string | null>(null);

  async function markReady() {
    const response = await fetch(`/api/orders/${encodeURIComponent(orderId)}/ready`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ customerId }),
    });
    const body = (await response.json()) as { ok?: boolean; error?: string };
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
