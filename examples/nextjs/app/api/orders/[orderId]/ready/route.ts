// file: app/api/orders/[orderId]/ready/route.ts
import { publish, RelayPublishError } from '@/lib/relay-server';
import { sessionUser } from '@/lib/session';

export async function POST(
  request: Request,
  { params }: { params: Promise<{ orderId: string }> },
): Promise<Response> {
  const { orderId } = await params;
  // The caller from the session, never a user id from the request: with the gateway's API token this route can
  // publish to any channel, so it decides who is told what.
  const user = sessionUser(request);
  if (!user) return Response.json({ error: 'sign in first (Authorization: Bearer <your JWT>)' }, { status: 401 });
  // In a real app, check that the caller may mark this order ready (kitchen staff) and read its customer from your
  // database; in this demo every order is its caller's own.
  const customerId = user.sub;
  try {
    await publish(`private-user-${customerId}`, 'order-ready', { orderId }, {
      socketId: request.headers.get('x-socket-id') ?? undefined,
    });
  } catch (error) {
    if (!(error instanceof RelayPublishError)) throw error;
    // These are the gateway refusing what this request sent (400: a malformed X-Socket-ID; 413: an event over the
    // provider's limit; 422: a field it refused; 429: rate-limited): the caller gets its status and reason. Any other
    // answer is this server's setup (401/403: RELAY_API_TOKEN, 404/405: RELAY_GATEWAY_URL) or the gateway's or the
    // provider's trouble (408, a 5xx, no answer): 502.
    const callers = [400, 413, 422, 429].includes(error.status);
    return Response.json({ error: `realtime: ${error.message}` }, { status: callers ? error.status : 502 });
  }
  return Response.json({ ok: true, orderId });
}
