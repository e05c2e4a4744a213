// Staff sign-in (a demo: a name and a role in a signed cookie; use your own login), and the staff pages' buttons.
import { api, showActionError } from '/static/realtime.js';

export async function signIn(role) {
  const me = await api('/api/me');
  if (me?.role === role) return me;
  const form = document.getElementById('signin');
  form.hidden = false;
  return new Promise((resolve) => {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const user = await api('/api/session', { method: 'POST', body: { role, name: form.elements.name.value } });
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
