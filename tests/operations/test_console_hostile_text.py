"""What clients and backends send, as the console shows it to the operator: text they chose can carry Unicode's
right-to-left override (U+202E), which reverses everything after it on its line, so that a client's data showed the
console's own words beside it ("from" and the sender's socket id, the recipients) reversed, and a member's user id
the members listed after it; and a long name or data without a space, on one line, widened its column for every
row, pushing the others out of view."""

from __future__ import annotations

import json
from dataclasses import replace

from playwright.async_api import Browser, Page, expect

from relay.protocol.signing import channel_auth
from tests.conftest import StartEmulator
from tests.operations.support import APP, Client, publish, ws_client
from tests.operations.test_console import browser as browser  # the headless Chromium fixture

OVERRIDE = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: what follows it, to its paragraph's end, is laid out right to left

# Whether ``word``, in the text of the element ``selector`` finds, reads left to right on screen: its first
# character's box left of its last's (null when the element does not hold the word).
READS_LEFT_TO_RIGHT = """([selector, word]) => {
  const element = document.querySelector(selector);
  const texts = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let node = texts.nextNode(); node; node = texts.nextNode()) {
    const at = node.data.indexOf(word);
    if (at < 0) continue;
    const left = (offset) => {
      const range = document.createRange();
      range.setStart(node, offset);
      range.setEnd(node, offset + 1);
      return range.getBoundingClientRect().left;
    };
    return left(at) < left(at + word.length - 1);
  }
  return null;
}"""


async def reads_left_to_right(page: Page, selector: str, word: str) -> bool | None:
    result: bool | None = await page.evaluate(READS_LEFT_TO_RIGHT, [selector, word])
    return result


async def join(client: Client, channel: str, user_id: str) -> None:
    channel_data = json.dumps({"user_id": user_id})
    auth = channel_auth(APP.key, APP.secret, client.socket_id, channel, channel_data)
    await client.send("pusher:subscribe", {"channel": channel, "auth": auth, "channel_data": channel_data})
    await client.expect("pusher_internal:subscription_succeeded")


async def test_an_override_in_what_a_client_sent_leaves_the_console_s_own_words_in_order(
    start_emulator: StartEmulator, browser: Browser
) -> None:
    """A publish's and a client event's data and a member's user id, each holding U+202E: the recipients, "from"
    and the socket id after them, and the next member's id, still read left to right."""
    app = replace(APP, client_events=True)
    emulator = await start_emulator(app=app)
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{emulator.http_url}/console")
    await expect(page.locator("#status")).to_have_text("live")

    mallory = await ws_client(emulator.ws_url())
    alice = await ws_client(emulator.ws_url())
    await join(mallory, "presence-room", OVERRIDE + "mallory")
    await join(alice, "presence-room", "alice")
    await publish(emulator.http_url, app, "news", "price", OVERRIDE + "42")
    await mallory.send("client-typing", OVERRIDE + "hello", channel="presence-room")

    members = '#channels tr[data-channel="presence-room"] .members'
    await expect(page.locator(members)).to_have_text(f"{OVERRIDE}mallory, alice")
    publish_details = '#log tr[data-type="publish"] .details'
    client_event_details = '#log tr[data-type="client_event"] .details'
    for shown in (publish_details, client_event_details):
        await expect(page.locator(shown)).to_have_count(1)
    assert await reads_left_to_right(page, members, "alice") is True
    assert await reads_left_to_right(page, publish_details, "recipient(s)") is True
    assert await reads_left_to_right(page, client_event_details, f"from {mallory.socket_id}") is True
    assert errors == []
    for client in (mallory, alice):
        await client.close()


async def test_long_names_and_data_without_spaces_wrap_and_leave_every_column_in_view(
    start_emulator: StartEmulator, browser: Browser
) -> None:
    """A channel name of 200 characters (the emulator's limit), a user id of 128 (Pusher's) and a publish's event name
    of 200 and data of 2,000, none with a space: a channel's subscribers, a connection's age and an event's details
    stay on screen (they were thousands of pixels to the right, in every row)."""
    emulator = await start_emulator(app=APP)
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page.goto(f"{emulator.http_url}/console")
    await expect(page.locator("#status")).to_have_text("live")

    channel = "presence-" + "c" * 191
    member = await ws_client(emulator.ws_url())
    await join(member, channel, "u" * 128)
    await publish(emulator.http_url, APP, channel, "e" * 200, "d" * 2_000)

    await expect(page.locator('#log tr[data-type="publish"]')).to_have_count(1)
    await expect(page.locator("#channels .subscribers")).to_have_text("1")  # the connection is in the same state
    for cell in ("#channels .subscribers", "#connections td.seconds", '#log tr[data-type="publish"] .details'):
        box = await page.locator(cell).bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1400, cell
    await member.close()
