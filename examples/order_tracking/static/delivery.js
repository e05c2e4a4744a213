// The delivery staff's page: orders appear when the kitchen marks them ready (status-changed on private-delivery).
import { api, connect, escapeHtml } from '/static/realtime.js';
import { onStatusButtons, signIn } from '/static/staff.js';

const ACTIONS = { ready: ['picked_up', 'Picked up'], picked_up: ['delivered', 'Delivered'] };
const orders = new Map();

function render() {
  const notice = document.getElementById('notice');
  if (orders.get(Number(notice.dataset.order))?.status !== 'ready') notice.hidden = true;
  const active = [...orders.values()].filter((order) => order.status in ACTIONS);
  document.getElementById('empty').hidden = active.length > 0;
  document.getElementById('pickups').innerHTML = active
    .map((order) => {
      const [next, label] = ACTIONS[order.status];
      const what = order.status === 'ready' ? 'Ready for pickup' : 'Out for delivery';
      return `<article class="card" data-order-id="${order.id}">
        <h3>#${order.id} · ${escapeHtml(order.customer_name)}</h3>
        <p>${order.items.map((item) => escapeHtml(item.name)).join(', ')}</p>
        <p><span class="status" data-status="${order.status}">${what}</span>
           <button data-order="${order.id}" data-next="${next}">${label}</button></p>
      </article>`;
    })
    .join('');
}

// Orders from events that arrived while a re-read was in flight (null when none is): applied again over its answer.
let arrivedDuringReread = null;

function update(order, { live = false } = {}) {
  arrivedDuringReread?.push(order);
  // A re-read that was in flight while an event arrived may be older than what the page has.
  if ((orders.get(order.id)?.history.length ?? 0) > order.history.length) return;
  const before = orders.get(order.id)?.status;
  orders.set(order.id, order);
  if (live && order.status === 'ready' && before !== 'ready') {
    const notice = document.getElementById('notice');
    notice.textContent = `Order #${order.id} is ready for pickup`;
    notice.dataset.order = order.id;
    notice.hidden = false;
  }
  render();
}

onStatusButtons(document.getElementById('pickups'), update);

/** After every (re)subscription: the backend's list replaces the page's, as it may have restarted and lost orders. */
async function reread() {
  arrivedDuringReread = [];
  let current, arrived;
  try {
    current = await api('/api/orders');
  } finally {
    // A failed re-read keeps what the page has, and stops collecting.
    [arrived, arrivedDuringReread] = [arrivedDuringReread, null];
  }
  orders.clear();
  for (const order of current) orders.set(order.id, order);
  for (const order of arrived) update(order);
  render();
}

async function main() {
  await signIn('delivery');
  document.getElementById('board').hidden = false;
  const realtime = await connect();
  realtime.subscribe('private-delivery', {
    onReady: reread,
    'status-changed': (order) => update(order, { live: true }),
  });
}

main();
