"""Found by generated input: a publish whose body holds, where a string goes, a list nested as deeply as the JSON
parser reads was a 500 (``RecursionError`` in the log): the 422 echoes each refused value in ``detail``, a few levels
deeper than the parser had read it, and rendering it ran out of stack. The gateway in front of a real emulator
(tests/gateway/conftest.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gateway.conftest import TOKEN, RunningGateway

TOO_DEEP = "the JSON body is malformed: it nests arrays and objects too deeply"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("field", ["channel", "event", "socket_id"])
async def test_a_value_nested_as_deep_as_parsed_is_a_422_naming_the_field(gateway: RunningGateway, field: str) -> None:
    event = {"channel": "orders", "event": "created", "data": "{}"}
    others = {name: value for name, value in event.items() if name != field}  # a key given twice is a 400 of its own
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        for depth in range(1000, 800, -5):  # from past the parser's depth down to the deepest it reads
            body = json.dumps(others)[:-1] + f', "{field}": {nested(depth)}}}'
            answer = await client.post("/v1/publish", content=body, headers={"Content-Type": "application/json"})
            if answer.status_code != 400 or answer.json()["error"] != TOO_DEEP:
                break
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == f"{field}: Input should be a valid string"
        assert [problem["loc"] for problem in answer.json()["detail"]] == [["body", field]]
        # and the gateway goes on serving
        published = await client.post("/v1/publish", json=event)
        assert published.status_code == 200, published.text
