'use client';

import { useRouter } from 'next/navigation';
import { useEffect } from 'react';

/**
 * Re-renders the page's server components every `everySeconds`, so the JWT they mint for OrderUpdates is renewed
 * before it expires: the stand-in for your auth library's session refresh. OrderUpdates keeps its connection and
 * sends the renewed JWT at the next authorization (after a reconnect, say).
 */
export function RenewSession({ everySeconds }: { everySeconds: number }) {
  const router = useRouter();
  useEffect(() => {
    const timer = setInterval(() => router.refresh(), everySeconds * 1000);
    return () => clearInterval(timer);
  }, [router, everySeconds]);
  return null;
}
