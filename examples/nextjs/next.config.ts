import type { NextConfig } from 'next';

const config: NextConfig = {
  reactStrictMode: true,
  // The example never sends anything anywhere but the gateway: no telemetry (set NEXT_TELEMETRY_DISABLED=1 too).
  poweredByHeader: false,
};

export default config;
