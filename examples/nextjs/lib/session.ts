// Server-only: a stand-in for your auth library. It signs the HS256 JWT that the browser presents to the gateway's
// /v1/auth/channel; the gateway verifies it with the same RELAY_JWT_SECRET. Use the token your auth library issues.
import { createHmac } from 'node:crypto';

function base64url(value: string | Buffer): string {
  return Buffer.from(value).toString('base64url');
}

/** An HS256 JWT for `sub` with a `name` claim, valid for `ttlSeconds`. */
export function demoJwt(sub: string, name: string, ttlSeconds = 3600): string {
  const secret = process.env.RELAY_JWT_SECRET;
  if (!secret) throw new Error('set RELAY_JWT_SECRET (the gateway verifies user JWTs with it)');
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = base64url(JSON.stringify({ sub, name, exp: Math.floor(Date.now() / 1000) + ttlSeconds }));
  const signature = createHmac('sha256', secret).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}
