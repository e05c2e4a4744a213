"""What reading a channel name against a rule's pattern costs, and that it binds what the regex of
``compile_pattern`` binds. The regex backtracked: with placeholders separated by ``-`` (which a value holds), a
hostile name of 199 characters took seconds of the gateway's event loop to refuse. relay.rules now reads names with a
search that tries each end of the name once per placeholder; these tests hold it to the regex's readings on many
generated patterns and names, and to a cost linear in the name's length."""

from __future__ import annotations

import random
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import Any

import pytest

import relay.rules
from relay.errors import InvalidChannelName, PermissionDenied
from relay.models import User
from relay.rules import ChannelRules, pattern_admits, placeholders_refusing

ALICE = User("alice", {})
# The regex relay.rules compiled before the search, written out again: the semantics the search must keep.
VALUE = r"[A-Za-z0-9_\-=@,;]+"
REST = r"[A-Za-z0-9_\-=@,.;]*"
# Rules with several readings of a name, and the hostile names that made their regexes backtrack for seconds.
HOSTILE_PATTERNS = ("private-{a}-{b}-{c}-{d}-{e}.x", "private-{a}.{b}.{c}.{d}.{e}-x", "private-*-*-*-*-*.x")
HOSTILE_NAMES = ("private-" + "a-" * 95 + "a", "private-" + "a." * 95 + "a", "private-" + "a" * 191)


@dataclass(frozen=True)
class Part:
    """A piece of a generated pattern: literal ``text``, a placeholder (``name``) or ``*`` (neither)."""

    text: str = ""
    name: str | None = None
    star: bool = False

    def written(self) -> str:
        return "*" if self.star else f"{{{self.name}}}" if self.name is not None else self.text


def reference(parts: list[Part], placeholder: Callable[[str], str]) -> re.Pattern[str]:
    """The regex of the pattern ``parts`` make, as relay.rules built it: ``placeholder(name)`` for a placeholder."""
    return re.compile(
        "".join(
            REST if part.star else placeholder(part.name) if part.name is not None else re.escape(part.text)
            for part in parts
        )
    )


def reference_reading(parts: list[Part], channel: str) -> dict[str, str] | None:
    found = reference(parts, lambda name: f"(?P<{name}>{VALUE})").fullmatch(channel)
    return None if found is None else found.groupdict()


def reference_admits(parts: list[Part], channel: str, values: Mapping[str, str]) -> bool:
    names = [part.name for part in parts if part.name is not None]
    if not all(re.fullmatch(VALUE, values.get(name, "")) for name in names):
        return False
    return reference(parts, lambda name: re.escape(values[name])).fullmatch(channel) is not None


def reference_refusing(parts: list[Part], channel: str, values: Mapping[str, str]) -> tuple[str, ...]:
    refusing = []
    for name in [part.name for part in parts if part.name is not None]:
        value = values.get(name, "")
        only = reference(parts, partial(only_known, name, value))
        if not re.fullmatch(VALUE, value) or only.fullmatch(channel) is None:
            refusing.append(name)
    return tuple(refusing)


def only_known(name: str, value: str, placeholder: str) -> str:
    """A placeholder's regex when only ``name``'s value is known: exactly ``value`` for it, any value else."""
    return re.escape(value) if placeholder == name else VALUE


def generated_pattern(generator: random.Random) -> list[Part]:
    """``private-`` and up to four literals, placeholders and stars, often adjacent and often separated by what a
    value holds (``-``, ``=``), so that names have several readings."""
    parts = [Part("private-")]
    placeholders = 0
    for _ in range(generator.randint(1, 4)):
        kind = generator.choice(("literal", "placeholder", "placeholder", "star"))
        if kind == "literal":
            parts.append(Part(generator.choice(("-", "-", ".", "=", "a", "-b", ".a", "a-"))))
        elif kind == "placeholder":
            parts.append(Part(name=f"p{placeholders}"))
            placeholders += 1
        else:
            parts.append(Part(star=True))
    return parts


def generated_name(generator: random.Random, parts: list[Part]) -> tuple[str, dict[str, str]]:
    """A name that fits ``parts`` with the values returned (then, one time in three, a character changed after the
    prefix, so that many names fit no reading)."""
    values = {part.name: "".join(generator.choices("ab-=", k=generator.randint(1, 3))) for part in parts if part.name}
    pieces = [
        "".join(generator.choices("ab-.", k=generator.randint(0, 3)))
        if part.star
        else values[part.name]
        if part.name is not None
        else part.text
        for part in parts
    ]
    name = "".join(pieces)
    if generator.random() < 1 / 3:
        position = generator.randint(len("private-"), len(name))
        name = name[:position] + generator.choice("ab-.=") + name[position + 1 :]
    return name, values


def rules_reading(pattern: str, channel: str) -> dict[str, str] | None:
    """The values ChannelRules gives the rule of ``pattern`` for ``channel``; None when the pattern does not match."""
    readings: list[dict[str, str]] = []

    def rule(user: User | None, **values: str) -> bool:
        readings.append(values)
        return True

    rules = ChannelRules()
    rules.add(pattern, rule)
    rules.add("*", lambda user: True)  # every name: the pattern's rule decides when its pattern matches
    if rules.authorize(ALICE, channel).pattern != pattern:
        return None
    (reading,) = readings
    return reading


def test_a_name_with_several_readings_binds_the_longest_value_from_the_left() -> None:
    """The readings docs/gateway.md and relay.rules describe: each placeholder and ``*``, from left to right, takes the
    longest value that lets the rest of the name match; pattern_admits accepts any reading."""
    assert rules_reading("private-{org}-{sub}", "private-acme-eu-u1") == {"org": "acme-eu", "sub": "u1"}
    assert pattern_admits("private-{org}-{sub}", "private-acme-eu-u1", {"org": "acme", "sub": "eu-u1"})
    assert not pattern_admits("private-{org}-{sub}", "private-acme-eu-u1", {"org": "acme", "sub": "eu"})
    assert rules_reading("private-*-{a}", "private-x-y.z-w") == {"a": "w"}  # * holds the dot and the first "-"s
    assert rules_reading("private-{a}*-{b}", "private-x-y-z") == {"a": "x-y", "b": "z"}  # {a} first, * empty
    assert rules_reading("private-*{a}", "private-x.yz") == {"a": "z"}  # * leaves one character, a value's least
    assert rules_reading("private-{a}{b}", "private-abc") == {"a": "ab", "b": "c"}
    assert rules_reading("private-{a}{b}.{c}", "private-ab.c") == {"a": "a", "b": "b", "c": "c"}
    assert rules_reading("private-{a}{b}", "private-a") is None
    assert rules_reading("private-{a}.*", "private-x.y.z") == {"a": "x"}
    assert pattern_admits("private-*-{a}", "private-x-y-z", {"a": "y-z"})
    assert placeholders_refusing("private-{a}-{b}", "private-x-y-z", {"a": "x-y-z", "b": "z"}) == ("a",)
    assert placeholders_refusing("private-{a}-{b}", "private-x-y-z", {"a": "x", "b": "z"}) == ()  # not together


def test_readings_admissions_and_refusals_are_the_regexes_on_generated_names() -> None:
    """A differential test with a fixed seed: random patterns of literals, placeholders and stars (adjacent, and
    separated by what a value holds) against names that fit them (and some that nearly do), each read by
    ChannelRules, pattern_admits and placeholders_refusing as the regexes relay.rules used to build read them."""
    generator = random.Random(20240607)
    several_readings = 0
    for _ in range(600):
        parts = generated_pattern(generator)
        pattern = "".join(part.written() for part in parts)
        for _ in range(4):
            channel, filled = generated_name(generator, parts)
            reading = reference_reading(parts, channel)
            ours = rules_reading(pattern, channel)
            assert (ours, list(ours or {})) == (reading, list(reading or {})), (pattern, channel)  # order too
            others = {name: "".join(generator.choices("ab-=", k=generator.randint(1, 3))) for name in filled}
            for values in (filled, reading or {}, others, {**filled, **dict(list(others.items())[:1])}):
                assert pattern_admits(pattern, channel, values) == reference_admits(parts, channel, values), (
                    pattern,
                    channel,
                    values,
                )
                assert placeholders_refusing(pattern, channel, values) == reference_refusing(parts, channel, values), (
                    pattern,
                    channel,
                    values,
                )
            several_readings += reading is not None and reading != filled
    assert several_readings > 800  # the names read otherwise than they were filled in: the ambiguity is exercised


def test_a_hostile_name_is_refused_at_once() -> None:
    """The hostile names of the report, against the rules whose regexes backtracked (about 2 s of CPU each for the
    first, 1.3 s for the stars, on the gateway's event loop): now well under a second all together."""
    rules = ChannelRules()
    for pattern in HOSTILE_PATTERNS:
        rules.add(pattern, lambda user, **values: True)
    started = time.perf_counter()
    for channel in HOSTILE_NAMES:
        with pytest.raises(PermissionDenied, match="no rule allows"):
            rules.authorize(ALICE, channel)
        for pattern in HOSTILE_PATTERNS:
            values = dict.fromkeys(("a", "b", "c", "d", "e"), "a")
            assert not pattern_admits(pattern, channel, values)
            placeholders_refusing(pattern, channel, values)
    assert time.perf_counter() - started < 1


def calls_in_relay_rules(decide: Callable[[], Any]) -> int:
    """How many Python calls into relay/rules.py ``decide`` makes: the search's steps, counted without a clock."""
    calls = 0

    def count(frame: FrameType, event: str, argument: object) -> None:
        nonlocal calls
        if event == "call" and frame.f_code.co_filename == relay.rules.__file__:
            calls += 1

    sys.setprofile(count)
    try:
        decide()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("pattern", [*HOSTILE_PATTERNS, "private-{a}{b}{c}{d}{e}.x", "private-*{a}*{b}*.x"])
@pytest.mark.parametrize("channel", HOSTILE_NAMES)
def test_reading_a_name_costs_steps_linear_in_its_length(pattern: str, channel: str) -> None:
    """Each placeholder or star tries each end of the name at most once: a few steps per span and character, where
    a search trying every end for every start would take hundreds per character here."""
    bound = steps_bound(pattern, channel)
    rules = ChannelRules()
    rules.add(pattern, lambda user, **values: True)

    def refuse() -> None:
        with pytest.raises(PermissionDenied, match="no rule allows"):
            rules.authorize(ALICE, channel)

    assert calls_in_relay_rules(refuse) <= bound
    values = dict.fromkeys(("a", "b", "c", "d", "e"), "a")
    assert calls_in_relay_rules(lambda: pattern_admits(pattern, channel, values)) <= bound
    assert calls_in_relay_rules(lambda: placeholders_refusing(pattern, channel, values)) <= 5 * bound


def test_a_near_miss_is_searched_for_in_steps_linear_in_the_name_s_length() -> None:
    """A name refused for a character outside channel names is compared with the rules filled in with the user's
    claims, stars left free: a search too, as linear."""
    pattern, user = "private-{a}-*-*-*-*.x", User("mallory", {"a": "x|"})
    rules = ChannelRules()
    rules.add(pattern, lambda user, **values: True)
    for channel in ("private-x|-" + "a-" * 93 + "a", "private-x|-" + "a-" * 93 + "a.x"):  # 198 and 200 characters
        started = time.perf_counter()
        calls = calls_in_relay_rules(partial(refuse_invalid, rules, user, channel, channel.endswith(".x")))
        assert calls <= steps_bound(pattern, channel)
        assert time.perf_counter() - started < 1


def refuse_invalid(rules: ChannelRules, user: User, channel: str, near_miss: bool) -> None:
    with pytest.raises(InvalidChannelName) as refusal:
        rules.authorize(user, channel)
    assert ("filled in with the user's a claim" in refusal.value.message) is near_miss


def steps_bound(pattern: str, channel: str) -> int:
    """A few steps per span (placeholder or star) and character of the name, and a few more for the rules."""
    spans = pattern.count("{") + pattern.count("*")
    return 3 * spans * (len(channel) + 1) + 20


def test_a_name_over_the_length_limit_is_refused_for_its_length_alone() -> None:
    """A name over 200 characters (the auth body takes up to 75 KiB of one) is not compared with the rules filled in
    with the user's claims: with stars free, that search costs the square of the name's length (0.7 s for 16 KB)."""
    user = User("mallory", {"sub": "auth0|1"})
    rules = ChannelRules()
    rules.add("private-{sub}.*-*", lambda user, **values: True)
    channel = "private-auth0|1." + "a-" * 8000 + "!"
    refusals: list[InvalidChannelName] = []

    def refuse() -> None:
        with pytest.raises(InvalidChannelName) as refusal:
            rules.authorize(user, channel)
        refusals.append(refusal.value)

    assert calls_in_relay_rules(refuse) < 20
    assert [error.message for error in refusals] == [
        f"channel name is {len(channel)} characters long; the limit is 200"
    ]
