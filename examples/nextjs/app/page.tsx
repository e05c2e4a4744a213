import { MarkReady } from '@/components/MarkReady';
import { OrderUpdates } from '@/components/OrderUpdates';
import { demoJwt } from '@/lib/session';

// Rendered per request: the JWT is minted for the visitor (here from ?user=, in your app from the session).
export const dynamic = 'force-dynamic';

export default async function Home({ searchParams }: { searchParams: Promise<{ user?: string }> }) {
  const { user = 'alice' } = await searchParams;
  const userId = user.replace(/[^A-Za-z0-9_-]/g, '') || 'alice';
  const name = userId.charAt(0).toUpperCase() + userId.slice(1);
  return (
    <main>
      <h1>Orders of {name}</h1>
      <OrderUpdates userId={userId} jwt={demoJwt(userId, name)} />
      <MarkReady customerId={userId} />
    </main>
  );
}
