// A client flooding the emulator as any page could with the WebSocket API (the `ws` package here): tiny text
// messages (FLOOD_KIND=text) or pings (FLOOD_KIND=ping) in a loop for FLOOD_SECONDS, keeping 4 MiB queued, and on
// until it has sent FLOOD_AT_LEAST of them (if given; for at most 30 s more), so that a loaded machine's slower
// flood is as big. Prints {"sent": n, "close": code|null} when done.
import { createRequire } from 'node:module';

const require = createRequire(new URL('../node/package.json', import.meta.url));
const WebSocket = require('ws');
const seconds = Number(process.env.FLOOD_SECONDS);
const kind = process.env.FLOOD_KIND;
const atLeast = Number(process.env.FLOOD_AT_LEAST || 0);
const ws = new WebSocket(process.env.FLOOD_URL);
let sent = 0;
let closeCode = null;
ws.on('close', (code) => { closeCode = code; });
ws.on('error', () => {});
ws.on('open', () => {
  const end = Date.now() + seconds * 1000;
  const latest = end + 30 * 1000;
  const flooding = () => (Date.now() < end || sent < atLeast) && Date.now() < latest;
  const pump = () => {
    while (ws.readyState === WebSocket.OPEN && ws.bufferedAmount < 4 << 20 && flooding()) {
      if (kind === 'ping') ws.ping(); else ws.send('x');
      sent += 1;
    }
    if (ws.readyState === WebSocket.OPEN && flooding()) {
      setImmediate(pump);
    } else {
      console.log(JSON.stringify({ sent, close: closeCode }));
      ws.terminate();
      process.exit(0);
    }
  };
  pump();
});
