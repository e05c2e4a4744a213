"""Ably capability intersection (reference §A.10–A.12): what a token gets when a capability is requested of a key or
token. Resources keep the operations the granted resources covering them allow; wildcards only narrow."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.protocol.ably import allows, intersect_capability

FULL = {"*": ["*"]}


@pytest.mark.parametrize(
    ("requested", "granted", "expected"),
    [
        ({"room": ["subscribe"]}, FULL, {"room": ["subscribe"]}),
        ({"room": ["*"]}, {"room": ["publish", "subscribe"]}, {"room": ["publish", "subscribe"]}),
        ({"room": ["publish", "presence"]}, {"*": ["publish"]}, {"room": ["publish"]}),
        ({"chat:*": ["subscribe"]}, {"*": ["subscribe"]}, {"chat:*": ["subscribe"]}),
        ({"chat:a:*": ["subscribe"]}, {"chat:*": ["subscribe"]}, {"chat:a:*": ["subscribe"]}),
        ({"*": ["subscribe"]}, {"chat:*": ["subscribe"]}, {}),
        ({"chat:*": ["subscribe"]}, {"chat:a": ["subscribe"]}, {}),
        ({"[meta]log": ["subscribe"]}, FULL, {}),
        ({"[meta]log": ["subscribe"]}, {"[*]*": ["*"]}, {"[meta]log": ["subscribe"]}),
        ({"room": ["publish"], "other": ["subscribe"]}, {"room": ["*"]}, {"room": ["publish"]}),
        ({"room": ["publish"]}, {"room": ["subscribe"]}, {}),
    ],
    ids=[
        "full-key",
        "star-ops-narrowed",
        "ops-intersected",
        "wildcard-under-star",
        "deeper-wildcard",
        "wider-wildcard-refused",
        "wildcard-under-literal-refused",
        "meta-not-under-star",
        "meta-under-everything",
        "resources-dropped",
        "disjoint",
    ],
)
def test_intersection_table(
    requested: dict[str, list[str]], granted: dict[str, list[str]], expected: dict[str, list[str]]
) -> None:
    assert intersect_capability(requested, granted) == expected


channels = st.sampled_from(["room", "chat:a", "chat:a:b", "other", "[meta]log"])
resources = st.sampled_from(["*", "room", "chat:*", "chat:a", "chat:a:*", "[*]*", "[meta]*"])
operations = st.lists(st.sampled_from(["publish", "subscribe", "presence", "*"]), min_size=1, max_size=3)
capabilities = st.dictionaries(resources, operations, min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    requested=capabilities,
    granted=capabilities,
    channel=channels,
    operation=st.sampled_from(["publish", "subscribe", "presence"]),
)
def test_intersection_never_widens(
    requested: dict[str, list[str]], granted: dict[str, list[str]], channel: str, operation: str
) -> None:
    """Whatever the token may do, both the request and the grant allow."""
    result = intersect_capability(requested, granted)
    if allows(result, channel, operation):
        assert allows(requested, channel, operation) and allows(granted, channel, operation)
