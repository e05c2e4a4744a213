// file: lib/relay-server.ts
// Server-only: imports of this module from a client component would leak RELAY_API_TOKEN.

export interface PublishResult {
  channels: string[];
  message_ids: string[];
}

export class RelayPublishError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Publish one event to one or more channels through the gateway's POST /v1/publish. */
export async function publish(
  channel: string | string[],
  event: string,
  data: unknown,
  options: { socketId?: string; idempotencyKey?: string } = {},
): Promise<PublishResult> {
  const target = Array.isArray(channel) ? { channels: channel } : { channel };
  const response = await fetchGateway('/v1/publish', {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${process.env.RELAY_API_TOKEN}`,
      'Content-Type': 'application/json',
      // One key per event (crypto.randomUUID()), the same on each retry of it: the gateway does not deliver a
      // retry twice, and answers it as the first, within 2 minutes
      ...(options.idempotencyKey ? { 'Idempotency-Key': options.idempotencyKey } : {}),
    },
    // socket_id (pusher-js's connection.socket_id, sent by the browser) keeps the event from echoing back to it.
    body: JSON.stringify({ ...target, event, data, socket_id: options.socketId }),
  });
  // A refusal is thrown: 401, a wrong RELAY_API_TOKEN; 400/413/422, the event (the error names the field). A 502
  // with outcome_unknown may have been delivered: send it again only with the same idempotencyKey (on Ably and the
  // Relay emulator it is then not delivered twice; hosted Pusher has no idempotency, and may deliver it twice).
  return (await answerOf(response)) as PublishResult;
}

/** Who is in a presence channel (GET /v1/channels/{channel}/users): for a server component's "online now" list. */
export async function presenceUserIds(channel: string): Promise<string[]> {
  const response = await fetchGateway(`/v1/channels/${encodeURIComponent(channel)}/users`, {
    headers: { Authorization: `Bearer ${process.env.RELAY_API_TOKEN}` },
    cache: 'no-store',
  });
  const body = (await answerOf(response)) as { users: { id: string }[] };
  return body.users.map((user) => user.id);
}

/** fetch from the gateway. It rejects with "fetch failed" alone when the gateway is down or RELAY_GATEWAY_URL is
 * wrong; the RelayPublishError names the URL and fetch's cause (ECONNREFUSED, ENOTFOUND, a TLS error). */
async function fetchGateway(path: string, init: RequestInit): Promise<Response> {
  const url = `${gatewayUrl()}${path}`;
  try {
    return await fetch(url, init);
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message;
    let reason = why ? `${(error as Error).message} (${why})` : (error as Error).message;
    if (cause?.code === 'ERR_SSL_WRONG_VERSION_NUMBER') {
      // relay serve speaks plain HTTP unless a proxy in front of it terminates TLS
      reason += ': the gateway answers plain HTTP there, so RELAY_GATEWAY_URL should start with http://';
    }
    throw new RelayPublishError(502, `could not reach the gateway at ${url}: ${reason}`);
  }
}

/** RELAY_GATEWAY_URL, the URL of relay serve (a path prefix kept, a final '/' dropped). */
function gatewayUrl(): string {
  const gateway = process.env.RELAY_GATEWAY_URL;
  if (!gateway) throw new RelayPublishError(500, 'RELAY_GATEWAY_URL is not set: the URL of relay serve');
  return gateway.replace(/\/+$/, '');
}

/** The gateway's JSON answer, or a RelayPublishError: its refusal ({"error"}, or a 422's {"detail"}), or an answer
 * that is not JSON (a proxy in front of the gateway answers a 502 with an HTML page; a wrong URL, another site). */
async function answerOf(response: Response): Promise<unknown> {
  const text = await response.text();
  let body: { error?: string; detail?: unknown };
  try {
    body = JSON.parse(text);
  } catch {
    const shown = text.slice(0, 200);
    throw new RelayPublishError(response.status, `the gateway answered HTTP ${response.status}, not JSON: ${shown}`);
  }
  if (!response.ok) throw new RelayPublishError(response.status, body.error ?? JSON.stringify(body.detail));
  return body;
}
