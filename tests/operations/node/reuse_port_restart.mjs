// pusher-js through a restart with --reuse-port (docs/emulator.md "Restarting on one host"): CLIENTS clients
// connect to the old process and subscribe to a private channel; the script asks the driver to restart
// ({"step": "restart"}: it starts the new process on the same port, waits for its banner, sends SIGTERM to the old
// one and answers at once). Every client must be closed with 4200, then connected and subscribed again within
// RECONNECT_WITHIN_MS of the answer (the new process was already listening: no refused reconnection, so no back-off).
// Then {"step": "publish"}: the driver publishes once the old process has exited, and every client must receive it.
// The summary gives how long after the answer the last client was back, and the codes the clients were closed with.
import {
  PusherJS,
  PusherServer,
  Scenario,
  env,
  pusherOptions,
  signedAuthorization,
  sleep,
  step,
  until,
} from '../../node/lib.mjs';

const CLIENTS = Number(process.env.CLIENTS);
const RECONNECT_WITHIN_MS = Number(process.env.RECONNECT_WITHIN_MS);

const scenario = new Scenario('reuse_port_restart', { timeoutMs: 40000 });
await scenario.run(async () => {
  const signer = new PusherServer({ appId: env.appId, key: env.key, secret: env.secret });
  const clients = [];
  for (let i = 0; i < CLIENTS; i += 1) {
    const pusher = new PusherJS(env.key, pusherOptions(null, null, { channelAuthorization: signedAuthorization(signer) }));
    scenario.onCleanup(() => pusher.disconnect());
    const client = { pusher, socketIds: [], subscribedOn: null, closeCode: null, received: [] };
    pusher.connection.bind('connected', () => client.socketIds.push(pusher.connection.socket_id));
    pusher.connection.bind('error', (error) => {
      if (error && error.type === 'PusherError' && client.closeCode === null) client.closeCode = error.data.code;
    });
    const channel = pusher.subscribe('private-orders');
    channel.bind('pusher:subscription_succeeded', () => {
      client.subscribedOn = pusher.connection.socket_id;
    });
    channel.bind('after-restart', (data) => client.received.push(data));
    clients.push(client);
  }
  const back = (connections) =>
    clients.filter(
      ({ pusher, socketIds, subscribedOn }) =>
        socketIds.length === connections &&
        pusher.connection.state === 'connected' &&
        subscribedOn === pusher.connection.socket_id,
    ).length;
  await until(() => back(1) === CLIENTS, { timeoutMs: 10000, what: 'every client to subscribe' });
  scenario.check('every client subscribed to the old process');

  await step('restart');
  const stoppedAt = Date.now();
  const deadline = stoppedAt + RECONNECT_WITHIN_MS;
  while (back(2) < CLIENTS) {
    if (Date.now() > deadline) {
      const states = clients.map(({ pusher, socketIds }) => `${pusher.connection.state}/${socketIds.length}`);
      throw new Error(
        `${CLIENTS - back(2)}/${CLIENTS} clients not reconnected and subscribed ${RECONNECT_WITHIN_MS} ms after ` +
          `the old process was stopped (state/connections: ${states.join(', ')})`,
      );
    }
    await sleep(10);
  }
  scenario.extra.backAfterMs = Date.now() - stoppedAt;
  scenario.extra.closeCodes = clients.map(({ closeCode }) => closeCode);
  scenario.check('every client reconnected and subscribed to the new process');

  await step('publish');
  await until(() => clients.every(({ received }) => received.length === 1), {
    timeoutMs: 5000,
    what: 'every client to receive the publish made to the new process',
  });
  scenario.extra.received = clients.map(({ received }) => received[0]);
  scenario.check('every client received the publish made to the new process');
});
