// file: app/api/orders/[orderId]/ready/route.ts
import { publish, RelayPublishError } from '@/lib/relay-server';

export async function POST(
  request: Request,
  { params }: { params: Promise<{ orderId: string }> },
): Promise<Response> {
  const { orderId } = await params;
  // In a real app the customer comes from your database (and the caller from your session).
  const { customerId } = (await request.json()) as { customerId: string };
  try {
    await publish(`private-user-${customerId}`, 'order-ready', { orderId }, {
      socketId: request.headers.get('x-socket-id') ?? undefined,
    });
  } catch (error) {
    if (error instanceof RelayPublishError) {
      return Response.json({ error: `realtime: ${error.message}` }, { status: 502 });
    }
    throw error;
  }
  return Response.json({ ok: true, orderId });
}
