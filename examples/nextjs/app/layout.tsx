import type { Metadata } from 'next';
import type { ReactNode } from 'react';

// No icon: without one the browser asks for /favicon.ico, a 404 error in its console.
export const metadata: Metadata = { title: 'Relay + Next.js', icons: 'data:,' };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body style={{ fontFamily: 'system-ui, sans-serif', maxWidth: 640, margin: '2rem auto', padding: '0 1rem' }}>{children}</body>
    </html>
  );
}
