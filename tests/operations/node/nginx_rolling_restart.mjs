// pusher-js through docs/nginx.conf in front of two emulator nodes during a rolling restart (docs/deploy.md): CLIENTS
// clients connect over wss:// and subscribe; then, twice, the script asks the driver to restart a node
// ({"step": "restart", "node": 0, then 1}), and the driver answers once the node's replacement answers /ready. After
// each answer every client must be connected and subscribed again within RECONNECT_WITHIN_MS (the clients of the node
// restarted went through nginx to the other node). The summary gives, per restart, how many clients reconnected and
// how long after the answer the last of them was back.
import { PusherJS, PusherServer, Scenario, env, pusherOptions, signedAuthorization, sleep, step } from '../../node/lib.mjs';

const CLIENTS = Number(process.env.CLIENTS);
const RECONNECT_WITHIN_MS = Number(process.env.RECONNECT_WITHIN_MS);

/** Wait until every client is connected and subscribed on its current connection, or fail naming the others. */
async function allConnected(clients, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const behind = clients.filter(
      ({ pusher, subscribedOn }) =>
        pusher.connection.state !== 'connected' || subscribedOn !== pusher.connection.socket_id,
    );
    if (behind.length === 0) return;
    if (Date.now() > deadline) {
      const states = behind.map(({ pusher }) => pusher.connection.state);
      throw new Error(`${behind.length}/${clients.length} clients not back ${what} (states: ${states.join(', ')})`);
    }
    await sleep(10);
  }
}

const scenario = new Scenario('nginx_rolling_restart', { timeoutMs: 60000 });
await scenario.run(async () => {
  const signer = new PusherServer({ appId: env.appId, key: env.key, secret: env.secret });
  const clients = [];
  for (let i = 0; i < CLIENTS; i += 1) {
    const pusher = new PusherJS(
      env.key,
      pusherOptions(null, null, {
        forceTLS: true,
        enabledTransports: ['ws', 'wss'],
        channelAuthorization: signedAuthorization(signer),
      }),
    );
    scenario.onCleanup(() => pusher.disconnect());
    const client = { pusher, socketIds: [], subscribedOn: null };
    pusher.connection.bind('connected', () => client.socketIds.push(pusher.connection.socket_id));
    pusher.subscribe('private-orders').bind('pusher:subscription_succeeded', () => {
      client.subscribedOn = pusher.connection.socket_id;
    });
    clients.push(client);
  }
  await allConnected(clients, 10000, 'at the start');
  scenario.extra.reconnected = [];
  scenario.extra.backAfterMs = [];
  for (const node of [0, 1]) {
    const before = clients.map(({ socketIds }) => socketIds.length);
    await step('restart', { node });
    const answeredAt = Date.now();
    const what = `${RECONNECT_WITHIN_MS} ms after node ${node}'s replacement was ready`;
    await allConnected(clients, RECONNECT_WITHIN_MS, what);
    scenario.extra.backAfterMs.push(Date.now() - answeredAt);
    scenario.extra.reconnected.push(clients.filter(({ socketIds }, i) => socketIds.length > before[i]).length);
    scenario.check(`every client back after restarting node ${node}`);
  }
});
