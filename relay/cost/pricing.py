"""The pricing data file: load it (the bundled one or a user's), check every field, and build `Prices`.

Every problem is reported, each naming its entry and field (``providers.pusher.plans[1] (startup): field
'connections' ...``), in one `ConfigError`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, TypeGuard

from relay.errors import ConfigError
from relay.files import parse_toml, read_toml

from .models import MAX_QUANTITY, Capacity, Model, Plan, Prices, Provider, shown_number

__all__ = ["UNIT_RULES", "default_prices", "load_prices", "parse_prices"]

SCHEMA = 1
CONFIDENCE = ("high", "medium", "low", "unknown")
KINDS = ("managed", "selfhosted")

#: Unit-rule codes (ably-and-pricing §F.6) and the kind of provider each applies to.
UNIT_RULES: Mapping[str, str] = {
    "P_COUNT": "managed",
    "A_USAGE": "managed",
    "A_MAU25": "managed",
    "A_MAU26": "managed",
    "S_COUNT": "managed",
    "N_TXN": "managed",
    "N_MAU": "managed",
    "H_VM": "selfhosted",
    "H_PAAS_USAGE": "selfhosted",
}

# Plan fields that are limits: they may also be "unlimited".
_LIMITS = frozenset(
    {
        "connections",
        "channels",
        "messages_per_day",
        "messages_per_month",
        "messages_per_hour",
        "messages_per_second",
        "api_requests_per_hour",
        "api_requests_per_second",
        "token_requests_per_hour",
        "token_requests_per_second",
        "transactions_per_month",
        "max_message_bytes",
        "presence_members",
        "mau",
    }
)
_PLAN_TEXT = frozenset({"id", "name", "as_of", "source", "confidence", "unsuitable_reason"})
_PLAN_BOOL = frozenset({"usage_hard_cap", "suitable"})
_PLAN_SPECIAL = frozenset({"price_usd_month", "notes", "price_status", "unknown"})
# Plan fields that take one of a few words.
_PLAN_CHOICES: Mapping[str, tuple[str, ...]] = {"included_egress_per": ("node", "account")}
_PLAN_NUMBERS = frozenset(f.name for f in fields(Plan)) - _PLAN_TEXT - _PLAN_BOOL - _PLAN_SPECIAL - set(_PLAN_CHOICES)

# For each rule: fields every plan needs, and groups of which a plan with a listed price needs at least one.
_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "P_COUNT": ("connections", "messages_per_day"),
    "A_USAGE": ("connections", "channels"),
    "A_MAU25": ("connections", "usd_per_mau"),
    "A_MAU26": ("mau",),
    "S_COUNT": ("connections",),
    "N_TXN": (),
    "N_MAU": ("mau",),
    "H_VM": ("memory_mb", "cpu_cores"),
    "H_PAAS_USAGE": ("memory_mb", "cpu_cores", "usd_per_vcpu_month", "usd_per_gb_ram_month", "included_usage_usd"),
}
_ONE_OF: Mapping[str, tuple[str, ...]] = {
    "A_USAGE": ("messages_per_month", "usd_per_million_messages"),
    "S_COUNT": ("messages_per_month", "usd_per_million_messages"),
    "N_TXN": ("transactions_per_month", "usd_per_replicated_transaction"),
}

_PROVIDER_KEYS = frozenset(
    {"name", "kind", "unit_rules", "as_of", "source", "confidence", "notes", "redis_usd_month", "redis_note"}
    | {"redis_included_egress_gib", "price_days"}
    | {"new_accounts", "plan_defaults", "plans"}
)
_ID = re.compile(r"\A[a-z0-9][a-z0-9_.-]*\Z")
_DATE = re.compile(r"\A\d{4}-\d{2}(-\d{2})?\Z")


def default_prices() -> Prices:
    """The pricing data bundled with Relay (``relay/cost/pricing.toml``)."""
    text = resources.files("relay.cost").joinpath("pricing.toml").read_text(encoding="utf-8")
    return parse_prices(parse_toml(text, "pricing file", "built-in pricing.toml"), origin="built-in pricing.toml")


def load_prices(path: str | Path) -> Prices:
    """A user's pricing file, in the same format as the bundled one."""
    path = Path(path)
    return parse_prices(read_toml(path, "pricing file"), origin=str(path))


class _Errors:
    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}" if where else message)

    def raise_if_any(self) -> None:
        if self.items:
            shown = self.items[:25]
            more = f"\n  … and {len(self.items) - 25} more" if len(self.items) > 25 else ""
            raise ConfigError(f"pricing file {self.origin} is invalid:\n  " + "\n  ".join(shown) + more)


def parse_prices(data: Mapping[str, Any], *, origin: str = "<data>") -> Prices:
    """Check a parsed pricing document and build `Prices`; raise `ConfigError` listing every problem."""
    errors = _Errors(origin)
    _unknown_keys(errors, "", data, {"schema", "version", "as_of", "model", "capacity", "providers"})
    schema = data.get("schema")
    if schema != SCHEMA:
        errors.add("", f"field 'schema' must be {SCHEMA}, got {schema!r}")
    version = _text(errors, "", data, "version", required=True)
    as_of = _date(errors, "", data, "as_of", required=True)
    model = _model(errors, _table(errors, "", data, "model"))
    capacity = _capacity(errors, _table(errors, "", data, "capacity"))
    providers_table = _table(errors, "", data, "providers")
    providers: list[Provider] = []
    for provider_id, entry in providers_table.items():
        where = f"providers.{provider_id}"
        if not _ID.match(provider_id):
            errors.add(where, "a provider id uses lower-case letters, digits, '_', '-' and '.'")
        if not isinstance(entry, dict):
            errors.add(where, f"must be a table, got {type(entry).__name__}")
            continue
        provider = _provider(errors, where, provider_id, entry, default_as_of=as_of)
        if provider is not None:
            providers.append(provider)
    if not providers_table:
        errors.add("providers", "no providers defined")
    errors.raise_if_any()
    assert model is not None and capacity is not None  # errors would have been raised
    return Prices(
        schema=SCHEMA,
        version=version,
        as_of=as_of,
        origin=origin,
        model=model,
        capacity=capacity,
        providers=tuple(providers),
    )


def _model(errors: _Errors, table: Mapping[str, Any]) -> Model | None:
    where = "model"
    _unknown_keys(
        errors, where, table, {"frame_overhead_bytes", "presence_frame_bytes", "mau_per_peak_connection", "source"}
    )
    values = {
        name: _number(errors, where, table, name, required=True)
        for name in ("frame_overhead_bytes", "presence_frame_bytes", "mau_per_peak_connection")
    }
    source = _text(errors, where, table, "source", required=True)
    if any(v is None or math.isinf(v) for v in values.values()):
        return None
    return Model(
        frame_overhead_bytes=_finite(values["frame_overhead_bytes"]),
        presence_frame_bytes=_finite(values["presence_frame_bytes"]),
        mau_per_peak_connection=_finite(values["mau_per_peak_connection"]),
        source=source,
    )


_CAPACITY_NUMBERS = (
    "base_rss_mb",
    "kb_per_connection",
    "cpu_us_per_delivery",
    "cpu_us_per_request",
    "cpu_us_per_forwarded_publish",
    "memory_usable",
    "cpu_usable",
    "idle_cpu_cores",
)


def _capacity(errors: _Errors, table: Mapping[str, Any]) -> Capacity | None:
    where = "capacity"
    _unknown_keys(errors, where, table, {"hardware", "source", "confidence", "as_of", *_CAPACITY_NUMBERS})
    numbers = {name: _number(errors, where, table, name, required=True) for name in _CAPACITY_NUMBERS}
    for name in ("memory_usable", "cpu_usable"):
        value = numbers[name]
        if value is not None and not 0 < value <= 1:
            errors.add(where, f"field {name!r} must be a fraction in (0, 1], got {value}")
    for name in ("kb_per_connection", "cpu_us_per_delivery", "cpu_us_per_request"):
        if numbers[name] == 0:
            errors.add(where, f"field {name!r} must be > 0")
    hardware = _text(errors, where, table, "hardware", required=True)
    source = _text(errors, where, table, "source", required=True)
    confidence = _confidence(errors, where, table, required=True)
    as_of = _date(errors, where, table, "as_of", required=True)
    if any(v is None or math.isinf(v) for v in numbers.values()):
        return None
    return Capacity(
        hardware=hardware,
        source=source,
        confidence=confidence,
        as_of=as_of,
        **{name: _finite(value) for name, value in numbers.items()},
    )


def _provider(
    errors: _Errors, where: str, provider_id: str, entry: Mapping[str, Any], *, default_as_of: str
) -> Provider | None:
    _unknown_keys(errors, where, entry, _PROVIDER_KEYS)
    kind = entry.get("kind")
    if kind not in KINDS:
        errors.add(where, f"field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    rules = entry.get("unit_rules")
    if not isinstance(rules, str) or rules not in UNIT_RULES:
        errors.add(where, f"field 'unit_rules' must be one of {', '.join(UNIT_RULES)}, got {rules!r}")
        rules = None
    elif kind in KINDS and UNIT_RULES[rules] != kind:
        errors.add(where, f"unit_rules {rules!r} is for {UNIT_RULES[rules]} providers, but kind is {kind!r}")
    name = _text(errors, where, entry, "name", required=True)
    as_of = _date(errors, where, entry, "as_of", required=False) or default_as_of
    source = _text(errors, where, entry, "source", required=True)
    confidence = _confidence(errors, where, entry, required=True)
    notes = _notes(errors, where, entry)
    redis = _number(errors, where, entry, "redis_usd_month", required=False)
    redis_note = _text(errors, where, entry, "redis_note", required=False)
    redis_egress = _number(errors, where, entry, "redis_included_egress_gib", required=False)
    price_days = _number(errors, where, entry, "price_days", required=False)
    if price_days is not None and not 1 <= price_days <= 31:
        errors.add(where, f"field 'price_days' must be the days a listed price covers, 1 to 31, got {price_days!r}")
        price_days = None
    # Only machine prices and usage rates are listed for some days: a managed plan's price is a calendar month's.
    if price_days is not None and rules not in ("H_VM", "H_PAAS_USAGE"):
        errors.add(
            where,
            "field 'price_days' is for providers priced by machine (unit_rules H_VM) or by usage (H_PAAS_USAGE), "
            f"not {rules!r}",
        )
        price_days = None
    new_accounts = entry.get("new_accounts", True)
    if not isinstance(new_accounts, bool):
        errors.add(where, f"field 'new_accounts' must be true or false, got {new_accounts!r}")
        new_accounts = True
    defaults = _table(errors, where, entry, "plan_defaults", required=False)
    for key in defaults:
        if key in ("id", "name", "price_usd_month"):
            errors.add(f"{where}.plan_defaults", f"field {key!r} must be set on each plan, not as a default")
    raw_plans = entry.get("plans")
    if not isinstance(raw_plans, list) or not raw_plans:
        errors.add(where, "field 'plans' must be a non-empty array of tables ([[providers.ID.plans]])")
        return None
    plans: list[Plan] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_plans):
        plan_where = f"{where}.plans[{index}]"
        if not isinstance(raw, dict):
            errors.add(plan_where, f"must be a table, got {type(raw).__name__}")
            continue
        plan_id = raw.get("id")
        if isinstance(plan_id, str):
            plan_where += f" ({plan_id})"
            if plan_id in seen:
                errors.add(plan_where, f"duplicate plan id {plan_id!r}")
            seen.add(plan_id)
        merged = {**defaults, **raw}
        plan = _plan(
            errors,
            plan_where,
            merged,
            rules=rules or "",
            kind=str(kind),
            inherited=(as_of, source, confidence),
        )
        if plan is not None:
            plans.append(plan)
    if kind not in KINDS or rules is None:
        return None
    if redis is not None and math.isinf(redis):
        errors.add(where, "field 'redis_usd_month' must be a number")
        redis = None
    if redis_egress is not None and math.isinf(redis_egress):
        errors.add(where, "field 'redis_included_egress_gib' must be a number")
        redis_egress = None
    return Provider(
        id=provider_id,
        name=name,
        kind=kind,
        unit_rules=rules,
        plans=tuple(plans),
        as_of=as_of,
        source=source,
        confidence=confidence,
        notes=notes,
        redis_usd_month=redis or 0.0,
        redis_note=redis_note,
        redis_included_egress_gib=redis_egress or 0.0,
        price_days=price_days or 0.0,
        new_accounts=new_accounts,
    )


def _plan(
    errors: _Errors, where: str, raw: Mapping[str, Any], *, rules: str, kind: str, inherited: tuple[str, str, str]
) -> Plan | None:
    count = len(errors.items)
    allowed = _PLAN_TEXT | _PLAN_BOOL | _PLAN_NUMBERS | set(_PLAN_CHOICES) | {"price_usd_month", "notes"}
    _unknown_keys(errors, where, raw, allowed)
    plan_id = raw.get("id")
    if not isinstance(plan_id, str) or not _ID.match(plan_id):
        errors.add(where, f"field 'id' must be an id (lower-case letters, digits, '_', '-', '.'), got {plan_id!r}")
        plan_id = "?"
    price = raw.get("price_usd_month")
    price_status = "listed"
    price_value: float | None = None
    if price in ("custom", "unknown"):
        price_status = str(price)
    elif _amount(price):
        price_value = float(price)
    elif "price_usd_month" not in raw:
        errors.add(where, "missing required field 'price_usd_month'")
    elif _too_large(price):
        errors.add(where, _too_large_message("price_usd_month", price))
    else:
        errors.add(where, f'field \'price_usd_month\' must be a number ≥ 0, "custom" or "unknown", got {price!r}')
    if kind == "selfhosted" and price_status != "listed":
        errors.add(where, "a self-hosted plan needs a listed price_usd_month")
    values: dict[str, float | None] = {}
    unknown: set[str] = set()
    for name in _PLAN_NUMBERS:
        if name not in raw:
            continue
        value = raw[name]
        if value == "unknown":
            unknown.add(name)
            values[name] = None
            continue
        if value == "unlimited" and name in _LIMITS:
            values[name] = math.inf
            continue
        values[name] = _number(errors, where, raw, name, required=False, allow_unlimited=name in _LIMITS)
    for name in ("memory_mb", "cpu_cores"):
        value = values.get(name)
        if value is not None and value <= 0:
            errors.add(where, f"field {name!r} must be > 0, got {value}")
    choices = _choices(errors, where, raw)
    if values.get("included_egress_gib") != 0 and "included_egress_gib" in raw and "included_egress_per" not in raw:
        # Render's allowance is the workspace's, Hetzner's each server's: a default would be wrong for one of them.
        errors.add(
            where,
            "field 'included_egress_gib' needs 'included_egress_per': 'node' (each machine has the allowance) or "
            "'account' (one allowance for the account or workspace, however many machines)",
        )
    for name in _REQUIRED.get(rules, ()):
        if name not in raw:
            errors.add(where, f"missing required field {name!r} (needed by unit_rules {rules})")
    group = _ONE_OF.get(rules)
    if group and price_status == "listed" and not any(name in raw for name in group):
        errors.add(where, f"needs one of the fields {', '.join(repr(n) for n in group)} (unit_rules {rules})")
    as_of = _date(errors, where, raw, "as_of", required=False) or inherited[0]
    source = _text(errors, where, raw, "source", required=False) or inherited[1]
    confidence = _confidence(errors, where, raw, required=False) or inherited[2]
    notes = _notes(errors, where, raw)
    flags: dict[str, bool] = {}
    for name in _PLAN_BOOL:
        if name in raw:
            if not isinstance(raw[name], bool):
                errors.add(where, f"field {name!r} must be true or false, got {raw[name]!r}")
            else:
                flags[name] = raw[name]
    name_text = _text(errors, where, raw, "name", required=False) or plan_id
    reason = _text(errors, where, raw, "unsuitable_reason", required=False)
    if flags.get("suitable") is False and not reason:
        errors.add(where, "a plan with suitable = false needs an 'unsuitable_reason'")
    if len(errors.items) > count:
        return None
    extra: dict[str, Any] = {**flags, **values, **choices}
    return Plan(
        id=plan_id,
        name=name_text,
        price_usd_month=price_value,
        price_status=price_status,  # type: ignore[arg-type]
        as_of=as_of,
        source=source,
        confidence=confidence,
        notes=notes,
        unknown=frozenset(unknown),
        unsuitable_reason=reason,
        **extra,
    )


# Field readers: each records an error naming the field and returns a harmless value.


def _unknown_keys(errors: _Errors, where: str, table: Mapping[str, Any], allowed: set[str] | frozenset[str]) -> None:
    for key in table:
        if key not in allowed:
            # Compare with whole names and with their first word ("prise" → "price_usd_month").
            names = {name: name for name in sorted(allowed)} | {name.split("_")[0]: name for name in sorted(allowed)}
            close = [names[m] for m in difflib.get_close_matches(str(key), list(names), n=1)]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.add(where, f"unknown field {key!r}{hint}")


def _table(errors: _Errors, where: str, data: Mapping[str, Any], key: str, required: bool = True) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            errors.add(where, f"missing required table {key!r}")
        return {}
    if not isinstance(value, dict):
        errors.add(where, f"field {key!r} must be a table, got {type(value).__name__}")
        return {}
    return value


def _text(errors: _Errors, where: str, data: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = data.get(key)
    if value is None:
        if required:
            errors.add(where, f"missing required field {key!r}")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        errors.add(where, f"field {key!r} must be a non-empty string, got {value!r}")
        return ""
    return value


def _date(errors: _Errors, where: str, data: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = data.get(key)
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is None:
        if required:
            errors.add(where, f"missing required field {key!r}")
        return ""
    if not isinstance(value, str) or not _DATE.match(value) or not _is_date(value):
        errors.add(where, f"field {key!r} must be a date YYYY-MM-DD (or YYYY-MM), got {value!r}")
        return ""
    return value


def _is_date(text: str) -> bool:
    """``text`` (YYYY-MM-DD or YYYY-MM) names a real day or month: not 2026-13-45 or 2026-02-30."""
    try:
        dt.date.fromisoformat(text if len(text) == 10 else f"{text}-01")
    except ValueError:
        return False
    return True


def _confidence(errors: _Errors, where: str, data: Mapping[str, Any], *, required: bool) -> str:
    value = data.get("confidence")
    if value is None:
        if required:
            errors.add(where, "missing required field 'confidence'")
        return ""
    if value not in CONFIDENCE:
        errors.add(where, f"field 'confidence' must be one of {', '.join(CONFIDENCE)}, got {value!r}")
        return ""
    return str(value)


def _choices(errors: _Errors, where: str, data: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, words in _PLAN_CHOICES.items():
        if name not in data:
            continue
        if data[name] not in words:
            errors.add(where, f"field {name!r} must be one of {', '.join(words)}, got {data[name]!r}")
        else:
            found[name] = data[name]
    return found


def _notes(errors: _Errors, where: str, data: Mapping[str, Any]) -> tuple[str, ...]:
    value = data.get("notes", [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        errors.add(where, "field 'notes' must be an array of strings")
        return ()
    return tuple(value)


def _number(
    errors: _Errors,
    where: str,
    data: Mapping[str, Any],
    key: str,
    *,
    required: bool,
    allow_unlimited: bool = False,
) -> float | None:
    value = data.get(key)
    if value is None:
        if required:
            errors.add(where, f"missing required field {key!r}")
        return None
    if _too_large(value):
        errors.add(where, _too_large_message(key, value))
        return None
    if not _amount(value):
        expected = 'a number ≥ 0, "unlimited" or "unknown"' if allow_unlimited else "a number ≥ 0"
        errors.add(where, f"field {key!r} must be {expected}, got {value!r}")
        return None
    return float(value)


def _amount(value: object) -> TypeGuard[int | float]:
    """A number ≥ 0 the model can compute with: 10**400 is a valid TOML integer but no float, and would overflow."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= MAX_QUANTITY


def _too_large(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and MAX_QUANTITY < value < math.inf


def _too_large_message(key: str, value: object) -> str:
    return f"field {key!r} is {shown_number(value)}, more than 10**18, the largest number the cost model takes"


def _finite(value: float | None) -> float:
    assert value is not None
    return value
