"""The channel rules file (RELAY_RULES_FILE): its rules read and checked, and the ChannelRules made of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.errors import ConfigError, PermissionDenied, json_kind
from relay.files import read_toml
from relay.models import User
from relay.protocol.channels import classify
from relay.rules import ChannelRules, claim_text, compile_pattern, pattern_admits, pattern_covers, placeholders_refusing

USERS = ("authenticated", "anyone")


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A channel rule from the rules file: the channel name must be the pattern with each ``{placeholder}``
    replaced by the JWT claim of the same name. ``users = "anyone"`` also admits requests without a JWT, to the
    public channels the pattern matches (which only Ably authorizes: every Ably subscription needs a token)."""

    pattern: str
    users: str = "authenticated"
    user_info_claims: tuple[str, ...] = ("name",)

    def __post_init__(self) -> None:
        problem = users_problem(self.pattern, self.users)
        if problem is not None:
            raise ConfigError(f"channel rule {self.pattern!r}: {problem}")


def users_problem(pattern: str, users: object) -> str | None:
    """Why ``users`` cannot mean anything for ``pattern``, or None. Accepted, ``anyone`` on a pattern that only
    matches private or presence channels, or that has a placeholder, admitted nobody more than ``authenticated``."""
    if users not in USERS:
        return f"users must be {' or '.join(repr(value) for value in USERS)}, not {users!r}"
    if users != "anyone":
        return None
    literal_start = pattern.split("{", 1)[0].split("*", 1)[0]
    if classify(literal_start).needs_auth:
        reason = "private and presence channels always need a valid JWT"
    elif "{" in pattern:
        reason = "a {placeholder} compares a JWT claim, which a visitor without a JWT does not have"
    else:
        return None
    return (
        f"users = 'anyone' cannot apply to {pattern!r}: {reason}; 'anyone' only lets visitors without a JWT get "
        "Ably tokens for public channels (leave users out, or set it to 'authenticated')"
    )


DEFAULT_RULES = (
    RuleSpec("private-user-{sub}"),
    RuleSpec("private-user.{sub}"),
    RuleSpec("presence-*"),
)


RULE_KEYS = ("pattern", "users", "user_info_claims")


def load_rules(path: Path) -> tuple[RuleSpec, ...]:
    """Read ``[[channels]]`` tables: ``pattern`` (required), ``users``, ``user_info_claims``."""
    document = read_toml(path, "rules file")
    unknown = sorted(set(document) - {"channels"})
    if unknown:
        raise ConfigError(f"rules file {path}: unknown key(s) {', '.join(unknown)} (it holds [[channels]] tables)")
    tables = document.get("channels", [])
    if isinstance(tables, dict):
        raise ConfigError(f"rules file {path}: write [[channels]] (one table per rule), not [channels]")
    if not isinstance(tables, list):
        raise ConfigError(f"rules file {path}: channels must be [[channels]] tables, not {tables!r}")
    specs: list[RuleSpec] = []
    for index, table in enumerate(tables):
        where = f"{path} channels[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {table!r} is not a table: write [[channels]] with pattern = ...")
        unknown = sorted(set(table) - set(RULE_KEYS))
        if unknown:
            # Named with the allowed keys, a typo (user_info_claim) shows its fix
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(RULE_KEYS)}")
        pattern = table.get("pattern")
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}: pattern is required, a string such as 'private-user-{{sub}}'")
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        earlier = next((number for number, spec in enumerate(specs) if pattern_covers(spec.pattern, pattern)), None)
        if earlier is not None:
            raise ConfigError(
                f"{where}: pattern {pattern!r} never decides: channels[{earlier}] ({specs[earlier].pattern!r}) comes "
                "first and matches every name it matches, and the first pattern that matches decides (put the "
                "narrower rule first, or remove the one that repeats)"
            )
        users = table.get("users", "authenticated")
        problem = users_problem(pattern, users)
        if problem is not None:
            raise ConfigError(f"{where}: {problem}")
        claims = table.get("user_info_claims", ["name"])
        if not isinstance(claims, list) or not all(isinstance(claim, str) for claim in claims):
            raise ConfigError(
                f"{where}: user_info_claims must be a list of claim names such as ['name'], not {claims!r}"
            )
        specs.append(RuleSpec(pattern, users, tuple(claims)))
    if not specs:
        raise ConfigError(f"rules file {path} has no [[channels]] tables")
    return tuple(specs)


def build_rules(specs: Sequence[RuleSpec]) -> ChannelRules:
    rules = ChannelRules()
    for spec in specs:
        rules.add(spec.pattern, _claims_rule(spec), whole_name=True)
    return rules


def _claims_rule(spec: RuleSpec) -> Callable[[User | None, str], bool | dict[str, Any]]:
    placeholders = tuple(compile_pattern(spec.pattern).groupindex)

    def rule(user: User | None, channel: str) -> bool | dict[str, Any]:
        if user is None:
            if spec.users == "anyone" and not placeholders:
                return True
            if classify(channel).needs_auth:
                return False  # ChannelRules says the JWT is missing, which is the thing to fix
            raise PermissionDenied(
                f"access to {channel!r} denied by rule {spec.pattern!r}: it admits users with a JWT only "
                "(users = 'authenticated'), and this request has none"
            )
        claims = user.info
        # The claims put in the pattern, not compared with one split of the name: a claim may hold "-", and
        # "private-{org}-{sub}" reads private-acme-eu-u1 as org acme-eu and sub u1, and as org acme and sub eu-u1.
        values = {name: text for name in placeholders if (text := claim_text(claims.get(name))) is not None}
        if not pattern_admits(spec.pattern, channel, values):
            # Named, the rule and the claim say what to fix: the JWT's claims, the channel name, or the rules file.
            mismatch = _claims_mismatch(placeholders_refusing(spec.pattern, channel, values), placeholders, claims)
            raise PermissionDenied(f"access to {channel!r} denied by rule {spec.pattern!r}: {mismatch}")
        return {claim: claims[claim] for claim in spec.user_info_claims if claim in claims}

    return rule


def _claims_mismatch(refusing: Sequence[str], placeholders: Sequence[str], claims: Mapping[str, Any]) -> str:
    """Why the claims do not make the channel name, claim by claim (``refusing``: the placeholders no reading of the
    name binds to their claim). Claim values are not repeated: the message goes into the gateway's log too."""
    if not refusing:
        together = ", ".join(placeholders)
        return f"each of the JWT's {together} claims fits some reading of the name, but no reading fits them all"
    reasons = []
    for name in refusing:
        if name not in claims:
            reasons.append(f"the JWT has no {name} claim")
        elif claim_text(claims[name]) is None:
            reasons.append(f"the JWT's {name} claim is {json_kind(claims[name])}, not a string or an integer")
        else:
            reasons.append(f"the name's {{{name}}} is not the JWT's {name} claim")
    return "; ".join(reasons)
