// The customer's page: order from the menu, then follow the order's status on its private channel.
import { api, connect, escapeHtml } from '/static/realtime.js';

const STATUS_TEXT = {
  placed: 'Order placed',
  preparing: 'Preparing',
  ready: 'Ready for pickup',
  picked_up: 'Out for delivery',
  delivered: 'Delivered',
};
const form = document.getElementById('order-form');
let realtime = null;
let shown = null;
// The order the page follows: after a reconnect every channel subscribed before re-reads its order, and an earlier,
// delivered one answering last must not take the page back to it.
let following = null;

/** Newer than what the page shows? A re-read that was in flight while an event arrived may be older. */
function isNewer(order, than) {
  return !than || than.id !== order.id || order.history.length >= than.history.length;
}

function show(order) {
  if (order.id !== following || !isNewer(order, shown)) return;
  shown = order;
  document.getElementById('order').hidden = false;
  document.getElementById('order-id').textContent = `#${order.id}`;
  document.getElementById('order-items').textContent = `${order.items.map((i) => i.name).join(', ')} · ₹${order.total}`;
  const status = document.getElementById('order-status');
  status.dataset.status = order.status;
  status.textContent = STATUS_TEXT[order.status];
  document.getElementById('timeline').innerHTML = order.history
    .map((step) => `<li>${new Date(step.at * 1000).toLocaleTimeString()}: ${escapeHtml(STATUS_TEXT[step.status])}</li>`)
    .join('');
  form.hidden = order.status !== 'delivered';
}

function follow(order) {
  following = order.id;
  show(order);
  realtime.subscribe(order.channel, {
    // After every (re)subscription: re-read the order, so nothing is lost while the connection was down.
    onReady: async () => show(await api(`/api/orders/${order.id}`)),
    'status-changed': show,
  });
}

async function main() {
  const menu = await api('/api/menu');
  document.getElementById('menu').innerHTML = menu
    .map((item) => `<li><label><input type="checkbox" name="items" value="${item.id}"> ${escapeHtml(item.name)}
                    <span class="muted">₹${item.price}</span></label></li>`)
    .join('');
  realtime = await connect();
  const me = await api('/api/me');
  if (me?.role === 'customer') {
    form.elements.name.value = me.name;
    const active = (await api('/api/orders')).filter((order) => order.status !== 'delivered').at(-1);
    if (active) follow(active);
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const items = [...form.querySelectorAll('input[name=items]:checked')].map((box) => box.value);
    try {
      const order = await api('/api/orders', { method: 'POST', body: { name: form.elements.name.value, items } });
      document.getElementById('order-error').textContent = '';
      for (const box of form.querySelectorAll('input[name=items]')) box.checked = false;
      follow(order);
    } catch (error) {
      document.getElementById('order-error').textContent = error.message;
    }
  });
  // Until now a click would have submitted the form the browser's way, reloading the page and losing the order.
  form.querySelector('button[type=submit]').disabled = false;
}

main();
