"""Channel authorization rules: route-like patterns bound to functions that decide who may subscribe.

    rules = ChannelRules()

    @rules.channel("private-orders.{order_id}")
    def order_owner(user: User, order_id: str) -> bool:
        return orders.owner_of(order_id) == user.id

    @rules.channel("presence-kitchen")
    def kitchen_staff(user: User) -> dict[str, str] | None:
        return {"name": user.info["name"]} if user.info.get("role") == "kitchen" else None

A rule returns True (allow), False or None (deny), a mapping (allow; for presence, the member's user_info) or a
:class:`User` (allow, as that member). Private and presence channels without a matching rule are denied; public
channels are allowed (Ably still needs a token to subscribe to them). A name outside the Pusher channel-name
characters is refused before any rule sees it (:class:`~relay.errors.InvalidChannelName`, a 400), and so is a
user's own ``#server-to-user-{id}``, which the user's sign-in subscribes.

A rule gets one value per placeholder: one reading of the name, when a value can hold what separates two
placeholders. ``private-{org}-{sub}`` reads ``private-acme-eu-u1`` as org ``acme-eu`` and sub ``u1``, never as org
``acme`` and sub ``eu-u1`` (see :func:`compile_pattern`). Separate placeholders with a dot, which no value holds, or
register the rule with ``whole_name=True`` and compare the whole name with :func:`pattern_admits`, which accepts
any reading:

    @rules.channel("private-{org}-{sub}", whole_name=True)
    def org_member(user: User | None, channel: str) -> bool:
        values = {"org": user.info.get("org", ""), "sub": user.id} if user is not None else {}
        return pattern_admits("private-{org}-{sub}", channel, values)
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from itertools import islice
from typing import Any

from relay.errors import InvalidChannelName, PermissionDenied
from relay.models import User
from relay.protocol.channels import DEFAULT_LIMITS, ChannelKind, classify, validate_channel_name

RuleResult = bool | Mapping[str, Any] | User | None
Rule = Callable[..., RuleResult | Awaitable[RuleResult]]
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}|\*")
_PLACEHOLDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER_VALUE = r"[A-Za-z0-9_\-=@,;]+"
_VALUE = re.compile(_PLACEHOLDER_VALUE)
_VALUE_RUN = re.compile(r"[A-Za-z0-9_\-=@,;]*")
_REST = r"[A-Za-z0-9_\-=@,.;]*"
_REST_RUN = re.compile(_REST)
_VALUE_CHARACTER = re.compile(r"[A-Za-z0-9_\-=@,;]")
_NOTHING_KNOWN: Mapping[str, str] = {}  # never changed: what ChannelRules knows of a name's values before reading it
_VALUE_ADVICE = (
    "a placeholder's value holds only A-Z a-z 0-9 _ - = @ , ; (a channel name's characters but the dot), so such a "
    "user needs channels named after another claim, such as a custom claim that holds only these"
)


@dataclass(frozen=True, slots=True)
class Decision:
    """``member`` is who the channel is authorized for: a presence channel's member, an Ably token's clientId (the
    request's user, unless a rule named another); None only for a request without a user. ``pattern`` is the pattern
    of the rule that decided, None for a public channel no rule matched (allowed)."""

    channel: str
    member: User | None
    pattern: str | None = None


@dataclass(frozen=True, slots=True)
class _Span:
    """A placeholder ``{name}``, or ``*`` (``name`` None): a run of what ``run`` matches, at least ``shortest``
    characters long, whose end the search chooses; ``tail`` is the literal text after it, up to the next span or the
    pattern's end."""

    name: str | None
    run: re.Pattern[str]
    shortest: int
    tail: str


@dataclass(frozen=True, slots=True)
class _Pattern:
    """A channel pattern read into the literal text before its first span (all of it without spans) and its spans.
    ``regex`` is :func:`compile_pattern`'s when its backtracking is linear in a name's length, which it is when every
    span but the last has one possible end, the end of its run (``{a}`` in ``private-{a}.{b}``: a value holds no dot),
    and None else (``{a}`` in ``private-{a}-{b}``)."""

    head: str
    spans: tuple[_Span, ...]
    placeholders: tuple[str, ...]
    regex: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class _Entry:
    pattern: str
    parsed: _Pattern
    rule: Rule
    whole_name: bool


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``private-orders.{order_id}`` → a regex whose groups are the placeholders (which never span a dot);
    ``*`` matches any rest of a name, dots included, and binds nothing.

    A name that fits the pattern in several ways (``private-{org}-{sub}`` and ``private-acme-eu-u1``: a value may
    hold ``-``) binds one of them: from left to right, each placeholder and ``*`` takes the longest value that lets
    the rest of the name match (org ``acme-eu``, sub ``u1``). :func:`pattern_admits` asks about every reading.
    :class:`ChannelRules` binds the same reading with a search whose cost is linear in the name's length, where this
    regex backtracks, for seconds on a hostile name when placeholders are separated by ``-``: match untrusted names
    with the rules, not with the regex.

    Raises ValueError for a pattern that cannot mean what was written: an empty one, a brace or another character
    no channel name holds outside a ``{name}`` placeholder (``chat:*``: it would never match), a placeholder that is
    not an identifier, or the same placeholder twice (one name cannot bind two values)."""
    parsed = _parse(pattern)
    return re.compile(_regex(parsed.head, parsed.spans))


def pattern_admits(pattern: str, channel: str, values: Mapping[str, str]) -> bool:
    """Whether ``channel`` is ``pattern`` with each placeholder replaced by its value in ``values`` (``*`` matching
    any rest of the name): whether some reading of the name binds exactly these values, where
    :func:`compile_pattern` binds one. A placeholder whose value is missing, empty, holds a dot or a character no
    channel name has admits nothing, as the placeholder never matches one. Raises ValueError as
    :func:`compile_pattern` does."""
    parsed = _parse(pattern)
    if not all(_VALUE.fullmatch(values.get(name, "")) for name in parsed.placeholders):
        return False
    return _read(parsed, channel, values) is not None


def placeholders_refusing(pattern: str, channel: str, values: Mapping[str, str]) -> tuple[str, ...]:
    """The placeholders whose value in ``values`` no reading of ``channel`` binds, whatever the others bind: why
    :func:`pattern_admits` refused, one value at a time. Empty when each value fits some reading of the name but no
    reading fits them all together. Raises ValueError as :func:`compile_pattern` does."""
    parsed = _parse(pattern)
    refusing = []
    for name in parsed.placeholders:
        value = values.get(name, "")
        if not _VALUE.fullmatch(value) or _read(parsed, channel, {name: value}) is None:
            refusing.append(name)
    return tuple(refusing)


def _read(pattern: _Pattern, channel: str, known: Mapping[str, str]) -> dict[str, str] | None:
    """The placeholders' values in the reading of ``channel`` that :func:`compile_pattern` binds, among the readings
    that bind each placeholder named in ``known`` to exactly its value there (compared as it is, whatever its
    characters); None when no reading does.

    A search from left to right, each span trying its longest end first, as the regex's backtracking does; but an
    end a span has tried is never tried again. A search ends at its first success, so every end tried before failed:
    the rest of the pattern does not match from there. Each span tries each end of the name at most once: a name
    costs at most spans × (characters + 1) steps, where the regex's backtracking grows as the name's length to the
    power of the number of placeholders separated by a character their values hold."""
    if not known and pattern.regex is not None:  # faster than the search, for most patterns (private-user-{sub})
        found = pattern.regex.fullmatch(channel)
        return None if found is None else found.groupdict()
    head, spans = pattern.head, pattern.spans
    if not channel.startswith(head):
        return None
    if not spans:
        return {} if len(channel) == len(head) else None
    last = len(spans) - 1
    # Each placeholder's value in the reading being tried. The search reaches a span only after binding every
    # placeholder before it, so the values are in the pattern's order; a success ends the search, so they are those
    # of the reading found.
    bound: dict[str, str] = {}
    # Per span and run of the characters it may hold (keyed by the run's end): the lowest end tried, every end from
    # there to the run's end having failed.
    tried_down_to: dict[tuple[int, int], int] = {}

    def match(index: int, start: int) -> bool:
        """Whether ``spans[index:]`` (with their tails) match ``channel[start:]``."""
        span = spans[index]
        name, tail = span.name, span.tail
        if name is not None and name in known:
            value = bound[name] = known[name]
            end = start + len(value)
            return (
                channel.startswith(value, start)
                and channel.startswith(tail, end)
                and (end + len(tail) == len(channel) if index == last else match(index + 1, end + len(tail)))
            )
        if index == last:  # its only end is where its tail ends the name
            end = len(channel) - len(tail)
            if name is not None:
                bound[name] = channel[start:end]
            return (
                end - start >= span.shortest
                and bool(span.run.fullmatch(channel, start, end))
                and channel.endswith(tail)
            )
        run = span.run.match(channel, start)
        assert run is not None  # a run's class is starred: it matches, if only the empty string
        key = (index, run.end())
        lowest = start + span.shortest
        end = min(run.end(), tried_down_to.get(key, run.end() + 1) - 1)
        tried_down_to[key] = min(lowest, end + 1)
        while (end := _last_end(channel, tail, lowest, end)) >= lowest:
            if name is not None:
                bound[name] = channel[start:end]
            if match(index + 1, end + len(tail)):
                return True
            end -= 1
        return False

    return bound if match(0, len(head)) else None


def _last_end(channel: str, tail: str, lowest: int, highest: int) -> int:
    """The highest end from ``highest`` down to ``lowest`` that ``tail`` follows in ``channel``; -1 if none."""
    if not tail:
        return highest
    return channel.rfind(tail, lowest, highest + len(tail))


@lru_cache(maxsize=256)
def _parse(pattern: str) -> _Pattern:
    """``pattern`` read into its literal texts and spans: the gateway's rules read theirs on every request."""
    if not pattern:
        raise ValueError("a channel pattern must not be empty")
    literals: list[str] = []
    spans: list[tuple[str | None, re.Pattern[str], int]] = []
    names: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(pattern):
        literals.append(_literal(pattern, pattern[position : match.start()]))
        name = match.group(1)
        if name is None:
            spans.append((None, _REST_RUN, 0))
        elif not _PLACEHOLDER_NAME.fullmatch(name):
            raise ValueError(
                f"channel pattern {pattern!r}: placeholder {{{name}}} is not a name "
                "(letters, digits and _, not starting with a digit)"
            )
        elif name in names:
            raise ValueError(f"channel pattern {pattern!r}: placeholder {{{name}}} appears twice")
        else:
            names.append(name)
            spans.append((name, _VALUE_RUN, 1))
        position = match.end()
    literals.append(_literal(pattern, pattern[position:]))
    head, tails = literals[0], literals[1:]
    tailed = tuple(_Span(*span, tail) for span, tail in zip(spans, tails, strict=True))
    # A span whose tail starts with a character its run never holds ends where its run ends.
    linear = all(span.tail and not span.run.fullmatch(span.tail[0]) for span in tailed[:-1])
    return _Pattern(head, tailed, tuple(names), re.compile(_regex(head, tailed)) if linear else None)


def _literal(pattern: str, text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"channel pattern {pattern!r} has an unmatched brace: a placeholder is written {{name}}")
    if not _REST_RUN.fullmatch(text):  # names are checked for these characters before any rule sees them
        outside = ", ".join(repr(character) for character in sorted(set(text)) if not _REST_RUN.fullmatch(character))
        raise ValueError(
            f"channel pattern {pattern!r} has {outside}, which no channel name holds (A-Z a-z 0-9 _ - = @ , . ;), "
            "so it would never match"
        )
    return text


def pattern_covers(wider: str, narrower: str) -> bool:
    """Whether every channel name ``narrower`` matches, ``wider`` matches too: registered after ``wider``, a rule for
    ``narrower`` would never decide, as the first pattern that matches does. Raises ValueError as
    :func:`compile_pattern` does.

    Both patterns are read as automata over one representative of each set of characters they treat alike (each
    character their literal texts hold, the dot, and any other character a value holds), run together on every
    string of those until ``narrower`` accepts one that ``wider`` does not; a few patterns of a rules file, read once,
    reach few sets of positions. Most pairs of a rules file are told apart before that by their ends, which a name
    of the one has and a name of the other need not (the check of a file's every pair of 500 rules took 24 s)."""
    wide_pattern, narrow_pattern = _parse(wider), _parse(narrower)
    heads_differ = not narrow_pattern.head.startswith(wide_pattern.head)
    if heads_differ or not _last_literal(narrow_pattern).endswith(_last_literal(wide_pattern)):
        # Every name of wider starts with its head and ends with its last literal; narrower's names, past their own,
        # run through a span that can take another character than wider's next
        return False
    steps = {wider: _steps(wide_pattern), narrower: _steps(narrow_pattern)}
    literals = {takes for pattern_steps in steps.values() for _, takes in pattern_steps if isinstance(takes, str)}
    other_values = (c for c in map(chr, range(128)) if _VALUE_CHARACTER.fullmatch(c) and c not in literals)
    alphabet = literals | {"."} | set(islice(other_values, 1))
    start = (_closure(steps[narrower], {0}), _closure(steps[wider], {0}))
    pending, seen = [start], {start}
    while pending:
        narrow, wide = pending.pop()
        if len(steps[narrower]) in narrow and len(steps[wider]) not in wide:
            return False
        for character in alphabet:
            following = (_advance(steps[narrower], narrow, character), _advance(steps[wider], wide, character))
            if following[0] and following not in seen:
                seen.add(following)
                pending.append(following)
    return True


def _last_literal(pattern: _Pattern) -> str:
    """The literal text a pattern's names end with: after its last span, or all of it without spans."""
    return pattern.spans[-1].tail if pattern.spans else pattern.head


# A pattern as an automaton: per position, whether it repeats (takes any number of characters, else one) and the
# character it takes, a literal or one of a span's run. A placeholder is one value character then any number more.
_Step = tuple[bool, str | re.Pattern[str]]


def _steps(pattern: _Pattern) -> tuple[_Step, ...]:
    steps: list[_Step] = [(False, character) for character in pattern.head]
    for span in pattern.spans:
        steps.extend([(False, span.run)] * span.shortest)
        steps.append((True, span.run))
        steps.extend((False, character) for character in span.tail)
    return tuple(steps)


def _closure(steps: tuple[_Step, ...], positions: set[int]) -> frozenset[int]:
    """``positions`` and those a repeating step lets the automaton reach without a character."""
    reached = set(positions)
    for position in sorted(positions):
        while position < len(steps) and steps[position][0]:
            position += 1
            reached.add(position)
    return frozenset(reached)


def _advance(steps: tuple[_Step, ...], positions: frozenset[int], character: str) -> frozenset[int]:
    following = set()
    for position in positions:
        if position == len(steps):
            continue
        repeats, takes = steps[position]
        if takes == character if isinstance(takes, str) else takes.fullmatch(character):
            following.add(position if repeats else position + 1)
    return _closure(steps, following)


def _regex(head: str, spans: tuple[_Span, ...]) -> str:
    """The source of a pattern's regex: a named group per placeholder, ``*`` any rest of the name."""
    regexes = (
        (_REST if span.name is None else f"(?P<{span.name}>{_PLACEHOLDER_VALUE})") + re.escape(span.tail)
        for span in spans
    )
    return re.escape(head) + "".join(regexes)


class ChannelRules:
    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def channel(self, pattern: str, *, whole_name: bool = False) -> Callable[[Rule], Rule]:
        """Register the decorated function for channels matching ``pattern``; the first match wins. It is called
        as ``rule(user, **placeholders)``, with the one reading :func:`compile_pattern` binds, or with
        ``whole_name=True`` as ``rule(user, channel)``, for a rule that must accept any reading of the name."""
        parsed = _parse(pattern)

        def register(rule: Rule) -> Rule:
            self._entries.append(_Entry(pattern, parsed, rule, whole_name))
            return rule

        return register

    def add(self, pattern: str, rule: Rule, *, whole_name: bool = False) -> None:
        self.channel(pattern, whole_name=whole_name)(rule)

    def _decider(
        self, user: User | None, channel: str
    ) -> tuple[str, Callable[[], RuleResult | Awaitable[RuleResult]]] | None:
        """The pattern and the call of the rule that decides ``channel`` for ``user``, or None if no pattern matches
        it."""
        # Before any rule or default: on Ably the name becomes a capability key, where "*" or "chat:*" would grant
        # every channel (or a whole namespace) to whoever asked for that name.
        try:
            validate_channel_name(channel)
        except InvalidChannelName as error:
            near_miss = self._near_miss(user, channel)
            if near_miss is None:
                raise
            raise InvalidChannelName(f"{error.message}; {near_miss}") from None
        if classify(channel) is ChannelKind.SERVER_TO_USER:  # needs no auth by its kind: an Ably token to anyone
            raise InvalidChannelName(
                f"{channel!r} is a user's own channel: the user's sign-in subscribes it (user authentication), "
                "no channel authorization does"
            )
        for entry in self._entries:
            bound = _read(entry.parsed, channel, _NOTHING_KNOWN)
            if bound is not None:
                if entry.whole_name:
                    return entry.pattern, partial(entry.rule, user, channel)
                return entry.pattern, partial(entry.rule, user, **bound)
        return None

    def authorize(self, user: User | None, channel: str, *, no_user_reason: str | None = None) -> Decision:
        """Decide with synchronous rules; raises :class:`PermissionDenied` when the channel is refused.
        ``no_user_reason``, for a request without a user, says why it has none (no credential arrived, say): the
        refusal of a channel that needs a user ends with it."""
        decider = self._decider(user, channel)
        if decider is None:
            return self._unmatched(user, channel)
        pattern, call = decider
        result = call()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(f"the rule for {channel!r} is async: use authorize_async")
        return self._decide(user, channel, result, pattern, no_user_reason)

    async def authorize_async(self, user: User | None, channel: str, *, no_user_reason: str | None = None) -> Decision:
        decider = self._decider(user, channel)
        if decider is None:
            return self._unmatched(user, channel)
        pattern, call = decider
        result = call()
        if inspect.isawaitable(result):
            result = await result
        return self._decide(user, channel, result, pattern, no_user_reason)

    def _unmatched(self, user: User | None, channel: str) -> Decision:
        if not classify(channel).needs_auth:
            # Still the user's: an Ably token is its clientId, which a connection keeps (Ably refuses a token
            # widened on it with another, 40102), so every token of one user must carry it
            return Decision(channel, user)
        near_miss = self._near_miss(user, channel)
        raise PermissionDenied(f"no rule allows {channel!r}" + (f": {near_miss}" if near_miss else ""))

    def _near_miss(self, user: User | None, channel: str) -> str | None:
        """Why no rule matched ``channel`` although one would for this user: the name is a rule's pattern filled in
        with the user's claims (``user.info``, a JWT's claims in ``relay serve``), one of which holds a character a
        placeholder never matches (an email address's dot, Auth0's ``auth0|123``). None when no rule is."""
        # A name over the length limit (up to the auth body's 75 KiB) is refused for that alone: reading it against
        # the rules' `*`s would cost the event loop time in proportion to its square
        if user is None or len(channel) > DEFAULT_LIMITS.max_channel_name:
            return None
        for entry in self._entries:
            values = {name: claim_text(user.info.get(name)) or "" for name in entry.parsed.placeholders}
            unfit = {name: value for name, value in values.items() if value and not _VALUE.fullmatch(value)}
            if not unfit or not all(values.values()):
                continue
            if _read(entry.parsed, channel, values) is not None:
                claims = ", and ".join(
                    f"{name} claim, which holds {_characters_outside(value)}" for name, value in unfit.items()
                )
                return f"the name is rule {entry.pattern!r} filled in with the user's {claims}: {_VALUE_ADVICE}"
        return None

    @staticmethod
    def _decide(user: User | None, channel: str, result: object, pattern: str, no_user_reason: str | None) -> Decision:
        # Checked first: without a user a private channel is refused whatever the rule said, and "denied" would send
        # whoever reads it to the rules rather than to the missing sign-in (a header or cookie that never arrived).
        if user is None and classify(channel).needs_auth:
            because = f": {no_user_reason}" if no_user_reason else ""
            raise PermissionDenied(f"{channel!r} needs an authenticated user{because}")
        if result is None or result is False:
            raise PermissionDenied(f"access to {channel!r} denied")
        if isinstance(result, User):
            return Decision(channel, _within_sign_in(result, user), pattern)
        if isinstance(result, Mapping):
            if user is None:  # user info needs a user: a rule's mistake, refused rather than crashing
                raise PermissionDenied(f"access to {channel!r} denied: the rule gave user info, but there is no user")
            return Decision(channel, User(user.id, result, signed_in_until=user.signed_in_until), pattern)
        if result is True:
            return Decision(channel, user, pattern)
        raise TypeError(f"a channel rule returns bool, a mapping, a User or None, not {type(result).__name__}")


def _within_sign_in(member: User, user: User | None) -> User:
    """The member a rule named, authorized no longer than the signed-in user who asked (an Ably token's end)."""
    if user is None or user.signed_in_until is None:
        return member
    if member.signed_in_until is not None and member.signed_in_until <= user.signed_in_until:
        return member
    return replace(member, signed_in_until=user.signed_in_until)


def claim_text(value: object) -> str | None:
    """A claim as a placeholder compares it: a string as it is, an integer in decimal. Anything else (an absent or
    null claim, a boolean, a list) is None and matches no channel name: ``str()`` would have let "None" stand for a
    missing team."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _characters_outside(value: str) -> str:
    """The characters of ``value`` that no placeholder matches, quoted: ``'.'``, or ``' ', '|'``."""
    outside = {character for character in value if not _VALUE_CHARACTER.fullmatch(character)}
    return ", ".join(repr(character) for character in sorted(outside))
