// Staff sign-in (a demo: a name and a role in a signed cookie; use your own login), the staff pages' buttons, and
// their boards' re-reads.
import { api, showActionError } from '/static/realtime.js';

export async function signIn(role) {
  const me = await api('/api/me');
  if (me?.role === role) return me;
  const form = document.getElementById('signin');
  form.hidden = false;
  return new Promise((resolve) => {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      let user;
      try {
        user = await api('/api/session', { method: 'POST', body: { role, name: form.elements.name.value } });
      } catch (error) {
        showActionError(error); // a refused name: said above the form, which stays for another try
        return;
      }
      showActionError(null);
      form.hidden = true;
      resolve(user);
    });
  });
}

/** The status buttons in `list`: each moves its order on; a refusal is said above the page and frees the button. */
export function onStatusButtons(list, update) {
  list.addEventListener('click', async (event) => {
    const button = event.target.closest('button[data-order]');
    if (!button) return;
    button.disabled = true;
    const { order, next } = button.dataset;
    try {
      update(await api(`/api/orders/${order}/status`, { method: 'POST', body: { status: next } }));
      showActionError(null);
    } catch (error) {
      button.disabled = false;
      showActionError(error);
    }
  });
}

/**
 * A staff board's re-read, for after every (re)subscription: the backend's list replaces the page's `orders` (id →
 * order), as the app may have restarted and lost orders. The events `noted` while the re-read is in flight are applied
 * again over its answer with `apply`, then the board is drawn with `render`; a failed re-read keeps what the page has.
 */
export function boardRereader(orders, apply, render) {
  let arrivedDuringReread = null; // null when no re-read is in flight
  return {
    noted(order) {
      arrivedDuringReread?.push(order);
    },
    async reread() {
      arrivedDuringReread = [];
      let current, arrived;
      try {
        current = await api('/api/orders');
      } finally {
        [arrived, arrivedDuringReread] = [arrivedDuringReread, null];
      }
      orders.clear();
      for (const order of current) orders.set(order.id, order);
      for (const order of arrived) apply(order);
      render();
    },
  };
}
