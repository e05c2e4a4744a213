// file: lib/session.ts
// Server-only: a stand-in for your auth library. It signs the HS256 JWT that the browser presents to the gateway's
// /v1/auth/channel (the gateway verifies it with the same RELAY_JWT_SECRET), and reads it back from a request to
// your own routes. Use your auth library's token and session check instead.
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface SessionUser {
  sub: string;
  name: string;
}

function secret(): string {
  const value = process.env.RELAY_JWT_SECRET;
  if (!value) throw new Error('set RELAY_JWT_SECRET (the gateway verifies user JWTs with it)');
  return value;
}

function sign(headerAndClaims: string): string {
  return createHmac('sha256', secret()).update(headerAndClaims).digest('base64url');
}

/** An HS256 JWT for `sub` with a `name` claim, valid for `ttlSeconds`. */
export function demoJwt(sub: string, name: string, ttlSeconds = 3600): string {
  const header = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
  const claims = Buffer.from(JSON.stringify({ sub, name, exp: Math.floor(Date.now() / 1000) + ttlSeconds }));
  const unsigned = `${header}.${claims.toString('base64url')}`;
  return `${unsigned}.${sign(unsigned)}`;
}

/** The user of a request's `Authorization: Bearer <JWT>` (one demoJwt signed and not expired), else null. */
export function sessionUser(request: Request): SessionUser | null {
  const token = request.headers.get('authorization')?.match(/^Bearer (\S+)$/)?.[1] ?? '';
  const [header, claims, signature = ''] = token.split('.');
  const expected = Buffer.from(sign(`${header}.${claims}`));
  const given = Buffer.from(signature);
  if (!claims || given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const { sub, name, exp } = JSON.parse(Buffer.from(claims, 'base64url').toString()) as SessionUser & { exp: number };
  return exp > Date.now() / 1000 ? { sub, name } : null;
}
