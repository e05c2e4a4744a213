"""The users of usage files merged (emulator/user_sketch.py, docs/emulator.md "Usage meter"): runs in turn or side by
side each see some of an app's users; the file counts every user once, not the largest run's count."""

from __future__ import annotations

import base64
import re
import zlib

import pytest

from relay.emulator import usage
from relay.emulator.usage import AppMeter, check_usage_document, merge_documents, usage_document
from relay.emulator.user_sketch import REGISTERS, UserSketch


def sketch_of(users: range, prefix: str = "user-") -> UserSketch:
    sketch = UserSketch()
    for number in users:
        sketch.add(f"{prefix}{number}")
    return sketch


@pytest.mark.parametrize("count", [0, 1, 2, 17])
def test_a_few_users_are_counted_exactly(count: int) -> None:
    assert sketch_of(range(count)).estimate() == count


@pytest.mark.parametrize("count", [250, 1_000])
def test_hundreds_of_users_are_counted_within_one_percent(count: int) -> None:
    assert sketch_of(range(count)).estimate() == pytest.approx(count, rel=0.01)


def test_the_same_user_twice_is_one() -> None:
    sketch = sketch_of(range(40))
    before = bytes(sketch.registers)
    sketch.add("user-7")
    assert bytes(sketch.registers) == before and sketch.estimate() == 40


@pytest.mark.parametrize("count", [5_000, 60_000, 200_000])
def test_many_users_are_counted_within_two_percent(count: int) -> None:
    assert sketch_of(range(count)).estimate() == pytest.approx(count, rel=0.02)


def test_merged_sketches_count_the_union() -> None:
    mornings, evenings = sketch_of(range(0, 30_000)), sketch_of(range(20_000, 50_000))
    assert mornings.merged(evenings).estimate() == pytest.approx(50_000, rel=0.02)
    assert mornings.merged(mornings).registers == mornings.registers
    assert mornings.merged(evenings).registers == evenings.merged(mornings).registers
    assert sketch_of(range(3)).merged(sketch_of(range(2, 9))).estimate() == 9


def test_user_ids_beyond_ascii_and_half_a_surrogate_pair_are_counted() -> None:
    sketch = UserSketch()
    for user_id in ("zoë", "用户", "\ud800", "a\udfffb", ""):
        sketch.add(user_id)
    assert sketch.estimate() == 5


def test_a_sketch_is_written_small_and_read_back() -> None:
    sketch = sketch_of(range(100))
    text = sketch.encode()
    assert len(text) < 600  # compressed: mostly empty registers
    assert UserSketch.decode(text).registers == sketch.registers


def compressed(registers: bytes) -> str:
    return base64.b64encode(zlib.compress(registers)).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "is not a string (base64 of the compressed registers) but NoneType"),
        (12, "is not a string (base64 of the compressed registers) but int"),
        ("not base64!", "is not base64 of zlib-compressed registers"),
        ("sketché", "is not base64 of zlib-compressed registers (string argument should contain only ASCII"),
        (base64.b64encode(b"plain bytes").decode(), "is not base64 of zlib-compressed registers"),
        (compressed(bytes(100)), f"does not hold {REGISTERS} registers"),
        (compressed(bytes(REGISTERS + 1)), f"does not hold {REGISTERS} registers"),
        (compressed(bytes(100 * REGISTERS)), f"does not hold {REGISTERS} registers"),  # not inflated whole
        (compressed(bytes(REGISTERS - 1) + b"\x34"), "has a register over 51"),
    ],
)
def test_what_is_not_a_sketch_is_refused_with_what_is_wrong(text: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        UserSketch.decode(text)


def run_with_users(*user_ids: str) -> dict[str, object]:
    meter = AppMeter("1", clock=lambda: 1_800_000_000.0)
    for user_id in user_ids:
        meter.user_seen(user_id)
    return usage_document([meter], "a run")


def test_runs_in_turn_count_their_users_once_in_the_file() -> None:
    """Monday's run saw ann and bo, Tuesday's (after a restart) bo, cy and di: the file has 4 users, not 3."""
    monday, tuesday = run_with_users("ann", "bo", "ann"), run_with_users("bo", "cy", "di")
    assert monday["apps"]["1"]["unique_users"] == 2  # type: ignore[index]
    merged = merge_documents(monday, tuesday)
    assert merged["apps"]["1"]["unique_users"] == 4
    again = merge_documents(merged, run_with_users("ann", "eve"))
    assert again["apps"]["1"]["unique_users"] == 5
    check_usage_document(again)


def test_a_file_without_a_sketch_keeps_the_larger_count_and_no_sketch() -> None:
    """A file written before sketches: its users are not known, so the count is a lower bound from then on."""
    old = run_with_users("ann", "bo", "cy")
    del old["apps"]["1"]["users_sketch"]  # type: ignore[attr-defined]
    merged = merge_documents(old, run_with_users("di", "eve"))
    assert merged["apps"]["1"]["unique_users"] == 3 and "users_sketch" not in merged["apps"]["1"]
    merged = merge_documents(merged, run_with_users("a", "b", "c", "d"))
    assert merged["apps"]["1"]["unique_users"] == 4 and "users_sketch" not in merged["apps"]["1"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users_sketch": "bm90IHpsaWI="}, "apps.1.users_sketch is not base64 of zlib-compressed registers"),
        ({"users_sketch": 7}, "apps.1.users_sketch is not a string (base64 of the compressed registers) but int"),
        ({"unique_users": None}, "apps.1 has users_sketch without unique_users"),
    ],
)
def test_a_file_with_a_broken_sketch_is_not_a_usage_file(change: dict[str, object], message: str) -> None:
    document = run_with_users("ann")
    entry = document["apps"]["1"]  # type: ignore[index]
    entry.update(change)
    if entry["unique_users"] is None:
        del entry["unique_users"]
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        merge_documents(document, run_with_users("bo"))


def test_past_the_users_kept_the_meter_estimates_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The meter keeps the ids of its first MAX_TRACKED_USERS users, for an exact count; the rest are counted by the
    sketch alone, so a crowd of users costs no more memory than that."""
    monkeypatch.setattr(usage, "MAX_TRACKED_USERS", 100)
    meter = AppMeter("1", clock=lambda: 1_800_000_000.0)
    for number in range(5_000):
        meter.user_seen(f"user-{number}")
    assert len(meter.users) == 100
    assert meter.unique_users == pytest.approx(5_000, rel=0.02)
