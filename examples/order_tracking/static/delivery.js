// The delivery staff's page: orders appear when the kitchen marks them ready (status-changed on private-delivery).
import { connect, escapeHtml } from '/static/realtime.js';
import { boardRereader, onStatusButtons, signIn } from '/static/staff.js';

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

const board = boardRereader(orders, update, render);

function update(order, { live = false } = {}) {
  board.noted(order);
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

async function main() {
  await signIn('delivery');
  document.getElementById('board').hidden = false;
  const realtime = await connect();
  realtime.subscribe('private-delivery', {
    onReady: board.reread,
    'status-changed': (order) => update(order, { live: true }),
  });
}

main();
