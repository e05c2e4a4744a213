"""A bug hunt of what a Laravel Echo front end does against `relay serve` and the emulator, in headless Chromium.

Held without a change: here/joining/leaving and whispers between two users, a refused join's ``.error`` (status
403, pusher-js's sentence: documented), Echo.leave, a reload's member leaving at once, two tabs of one user as one
member, an emulator restart (``here`` called again, members converged), an expired JWT (401, not asked again), and the
gateway's 400/401/403/413/500 with CORS's headers. Found: the section's ``here`` callback added the members it was
given to the page's list without emptying it, while Echo calls ``here`` again after every reconnect with who is
there now: a member who left while the page was disconnected got no ``leaving`` and stayed in the list for good.
"""

from __future__ import annotations

from typing import Any

from tests.gateway.test_gateway_browser import browser as browser
from tests.gateway.test_gateway_laravel_echo_docs import (
    SUBSCRIBE,
    LaravelSite,
    block,
    needs_chromium,
    open_page,
    records,
    user_jwt,
)
from tests.gateway.test_gateway_laravel_echo_docs import laravel as laravel


@needs_chromium
async def test_the_section_s_online_list_drops_a_member_who_left_while_the_page_was_disconnected(
    browser: Any, laravel: LaravelSite
) -> None:
    """Alice, Bob and Carol in room 7 through the section's app.js; Alice's connection goes down, Bob leaves meanwhile
    (Carol sees him go; no ``leaving`` can reach Alice), and Alice reconnects: Echo calls ``here`` again with Alice and
    Carol, and the list Alice's page renders is theirs, not theirs and a Bob who is gone."""
    subscribe = block("js", "// resources/js/app.js, in part\n")
    pages = {}
    for user_id, name in ((1, "Alice"), (2, "Bob"), (3, "Carol")):
        pages[name] = await open_page(browser, laravel, user_jwt(sub=str(user_id), id=user_id, name=name))
        await pages[name].evaluate(SUBSCRIBE, [subscribe, user_id, 7])
        await records(pages[name], "online", 1)
    alice, carol = pages["Alice"], pages["Carol"]
    assert (await records(alice, "online", 3))[2] == [[1, "Alice"], [2, "Bob"], [3, "Carol"]]

    await alice.evaluate("() => window.Echo.connector.pusher.disconnect()")
    await alice.wait_for_function("() => window.Echo.connectionStatus() === 'disconnected'")
    await pages["Bob"].close()
    assert (await records(carol, "online", 3))[2] == [[3, "Carol"]]  # Alice's leaving, then Bob's
    await alice.evaluate("() => window.Echo.connector.pusher.connect()")

    assert sorted((await records(alice, "online", 4))[3]) == [[1, "Alice"], [3, "Carol"]]
    assert await alice.evaluate("() => window.records.errors") == []
