import { MarkReady } from '@/components/MarkReady';
import { OrderUpdates } from '@/components/OrderUpdates';
import { RenewSession } from '@/components/RenewSession';
import { demoJwt } from '@/lib/session';

// Rendered per request: the JWT is minted for the visitor (here from ?user=, in your app from the session).
export const dynamic = 'force-dynamic';

type Search = { user?: string; ttl?: string };

export default async function Home({ searchParams }: { searchParams: Promise<Search> }) {
  const { user = 'alice', ttl } = await searchParams;
  const userId = user.replace(/[^A-Za-z0-9_-]/g, '') || 'alice';
  const name = userId.charAt(0).toUpperCase() + userId.slice(1);
  // The demo JWT lives an hour; ?ttl=SECONDS shortens it, to watch the page renew it.
  const ttlSeconds = Math.max(2, Number(ttl) || 3600);
  const jwt = demoJwt(userId, name, ttlSeconds);
  return (
    <main>
      <h1>Orders of {name}</h1>
      <OrderUpdates userId={userId} jwt={jwt} />
      {/* A fresh JWT at half its lifetime: this page mints one at each render. */}
      <RenewSession everySeconds={ttlSeconds / 2} />
      <MarkReady jwt={jwt} />
    </main>
  );
}
