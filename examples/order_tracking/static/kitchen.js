// The kitchen display: new orders arrive on private-kitchen, staff on shift are the members of presence-kitchen.
import { connect, escapeHtml } from '/static/realtime.js';
import { boardRereader, onStatusButtons, signIn } from '/static/staff.js';

const ACTIONS = { placed: ['preparing', 'Start preparing'], preparing: ['ready', 'Mark ready'] };
const LABELS = { placed: 'New', preparing: 'Preparing', ready: 'Ready' };
const orders = new Map();

function render() {
  const active = [...orders.values()].filter((order) => ['placed', 'preparing', 'ready'].includes(order.status));
  document.getElementById('empty').hidden = active.length > 0;
  document.getElementById('orders').innerHTML = active
    .map((order) => {
      const action = ACTIONS[order.status];
      const button = action
        ? `<button data-order="${order.id}" data-next="${action[0]}">${action[1]}</button>`
        : '<span class="muted">Waiting for pickup</span>';
      return `<article class="card" data-order-id="${order.id}">
        <h3>#${order.id} · ${escapeHtml(order.customer_name)}</h3>
        <p>${order.items.map((item) => escapeHtml(item.name)).join(', ')}</p>
        <p><span class="status" data-status="${order.status}">${LABELS[order.status]}</span> ${button}</p>
      </article>`;
    })
    .join('');
}

function remember(order) {
  // A re-read that was in flight while an event arrived may be older than what the page has.
  if ((orders.get(order.id)?.history.length ?? 0) <= order.history.length) orders.set(order.id, order);
}

const board = boardRereader(orders, remember, render);

function update(order) {
  board.noted(order);
  remember(order);
  render();
}

onStatusButtons(document.getElementById('orders'), update);

async function main() {
  await signIn('kitchen');
  document.getElementById('board').hidden = false;
  const realtime = await connect();
  realtime.subscribe('private-kitchen', {
    onReady: board.reread,
    'order-placed': update,
    'status-changed': update,
  });
  realtime.presence('presence-kitchen', (names) => {
    document.getElementById('staff').innerHTML = names.map((name) => `<b>${escapeHtml(name)}</b>`).join(', ');
  });
}

main();
