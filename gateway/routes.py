"""Routes (F20, F25): aliases, prefix patterns, fallback chains and paid-model gating.

A request for model `M` becomes a *chain* of upstream models: the route's target first,
then its fallbacks, each resolved through the routes once more (an alias in a chain is
followed, a fallback's own fallbacks are not). Paid models leave the chain when paid
models are off. Without a matching route the chain is just `[M]`.

The route `M` matched also sets, for the whole request (every model of its chain), the key
selection strategy (None: the profile's) and what a context overflow does (`error`,
`fallback` to the next model of the chain, or `prune` the oldest turns; chain.py).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.admin import apischema
from gateway.admin.errors import InputError, Problems
from gateway.errors import GatewayError, database_down
from gateway.keys.selection import STRATEGIES
from models import Route

CACHE_SECONDS = 5.0
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,126}\*?$")
MAX_FALLBACKS = 5
# What an upstream's "prompt too long" does: go back to the client, move on to the next
# model of the chain, or drop the oldest turns and try again.
ERROR, FALLBACK, PRUNE = "error", "fallback", "prune"
OVERFLOW_MODES = (ERROR, FALLBACK, PRUNE)
MAX_CONTEXT_WINDOW = 100_000_000
_MODEL = {"type": "string", "pattern": NAME.pattern}
_PLAIN = r"[A-Za-z0-9_.:/@+-]"
# A model name; a target may hold one '*' anywhere (the part a pattern route matched).
_TARGET = {
    "type": "string",
    "maxLength": 127,
    "pattern": rf"^(?:[A-Za-z0-9]{_PLAIN}*|\*{_PLAIN}*|[A-Za-z0-9]{_PLAIN}*\*{_PLAIN}*)$",
    "x-expected": "be a model name with at most one '*'",
}
# The fields of a route as the OpenAPI document writes them; parse() accepts these only.
SCHEMA = {
    "name": {**_MODEL, "description": "a model name; ending in '*': a pattern route"},
    "target": apischema.nullable(_TARGET),
    "fallbacks": {
        "type": "array",
        "items": {
            "type": "string",
            "pattern": NAME.pattern.replace(r"\*?$", "$"),
            "x-expected": "be a model name, not a pattern",
        },
        "maxItems": MAX_FALLBACKS,
    },
    "paid": apischema.BOOLEAN,
    "strategy": apischema.nullable({"type": "string", "enum": list(STRATEGIES)}),
    "on_context_overflow": apischema.nullable({"type": "string", "enum": list(OVERFLOW_MODES)}),
    "context_window": apischema.nullable(apischema.integer(1, MAX_CONTEXT_WINDOW)),
}
FIELDS = set(SCHEMA)
STAR_RULE = "Only a pattern route (a name ending in '*') may have a target holding '*'."
FALLBACK_RULE = (
    "'fallback' moves on to the route's fallbacks when the prompt is too long: give "
    "the route fallbacks (models with a larger context window), or choose 'prune'."
)


def input_schema(creating: bool) -> dict:
    """The body parse() accepts, as an OpenAPI schema. Rules between fields are anyOf
    forms (on an update the field left out is the saved route's: a clash is a 409)."""
    schema = apischema.obj(SCHEMA, required=("name",) if creating else ())
    star_target = _given("target", {"type": "string", "pattern": r"\*"})
    pattern_name = _given("name", {"pattern": r"\*$"})
    with_fallbacks = _given("fallbacks", {"minItems": 1})
    overflow = _given("on_context_overflow", {"enum": [FALLBACK]})
    if not creating:
        pattern_name = {"anyOf": [pattern_name, {"not": {"required": ["name"]}}]}
        with_fallbacks = {"anyOf": [with_fallbacks, {"not": {"required": ["fallbacks"]}}]}
    schema["allOf"] = [
        {
            "anyOf": [{"not": star_target}, pattern_name],
            "x-rule": STAR_RULE,
            "x-field": "target",
        },
        {
            "anyOf": [{"not": overflow}, with_fallbacks],
            "x-rule": FALLBACK_RULE,
            "x-field": "on_context_overflow",
        },
    ]
    return schema


def _given(field: str, schema: dict) -> dict:
    """A form of the body: `field` is there and fits `schema`."""
    return {"properties": {field: schema}, "required": [field]}


@dataclass(frozen=True)
class Hop:
    """One model of a chain and whether it is paid."""

    model: str
    paid: bool


@dataclass(frozen=True)
class RoutePolicy:
    """What the route a request matched says beyond its models: the key selection
    strategy (None: the profile's), the context-overflow mode and the context window."""

    strategy: str | None = None
    on_context_overflow: str = ERROR
    context_window: int | None = None


NO_ROUTE = RoutePolicy()


@dataclass(frozen=True)
class _Entry:
    name: str
    target: str | None
    fallbacks: tuple[str, ...]
    paid: bool
    policy: RoutePolicy = NO_ROUTE


class RouteTable:
    """Routes by exact name and by prefix (longest first)."""

    def __init__(self, routes: list[_Entry]) -> None:
        self.exact = {r.name: r for r in routes if not r.name.endswith("*")}
        self.patterns = sorted(
            (r for r in routes if r.name.endswith("*")), key=lambda r: -len(r.name)
        )

    def match(self, model: str) -> tuple[_Entry, str] | None:
        """The route for a model and the model it sends upstream, or None."""
        entry = self.exact.get(model)
        if entry is not None:
            return entry, entry.target or model
        for entry in self.patterns:
            prefix = entry.name[:-1]
            if model.startswith(prefix) and len(model) > len(prefix):
                rest = model[len(prefix) :]
                if entry.target is None:
                    return entry, model
                return entry, entry.target.replace("*", rest)
        return None

    def hop(self, model: str) -> Hop:
        """A model resolved once: its alias target, paid if its route or the target's
        own route says so."""
        found = self.match(model)
        if found is None:
            return Hop(model, False)
        entry, target = found
        own = self.exact.get(target) if target != model else None
        return Hop(target, entry.paid or (own is not None and own.paid))

    def chain(self, model: str, paid_allowed: bool) -> list[str]:
        """Upstream models to try for a requested model, best first (403 if every one is
        paid and paid models are off)."""
        found = self.match(model)
        if found is None:
            return [model]
        hops = [self.hop(model), *(self.hop(name) for name in found[0].fallbacks)]
        chain: list[str] = []
        for hop in hops:
            if (paid_allowed or not hop.paid) and hop.model not in chain:
                chain.append(hop.model)
        if not chain:
            raise GatewayError(
                403,
                f"The model '{model}' is a paid model, and paid models are off for this "
                "profile (KEYRELAY_USE_PAID_MODELS or the profile's setting).",
                type="permission_error",
                code="paid_model_disabled",
                param="model",
            )
        return chain

    def policy(self, model: str) -> RoutePolicy:
        """The strategy and overflow handling of the route a requested model matches."""
        found = self.match(model)
        return NO_ROUTE if found is None else found[0].policy

    def aliases(self) -> list[str]:
        """Exact route names that are not model ids of their own (for /v1/models)."""
        return sorted(name for name, r in self.exact.items() if r.target not in (None, name))


class Routes:
    """The route table, read from the database at most every few seconds per process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._table: RouteTable | None = None
        self._loaded = 0.0
        self._lock = threading.Lock()

    def table(self) -> RouteTable:
        if self._table is None or time.monotonic() - self._loaded > CACHE_SECONDS:
            with self._lock:
                try:
                    with Session(self.engine) as session:
                        rows = session.scalars(select(Route)).all()
                        self._table = RouteTable([_entry(r) for r in rows])
                except Exception as exc:
                    if self._table is None or not database_down(exc):
                        raise
                    # The database is down: the routes as last read serve until it is back.
                self._loaded = time.monotonic()
        return self._table

    def forget(self) -> None:
        """Re-read the routes on next use (they changed in this process)."""
        self._table = None


def _entry(route: Route) -> _Entry:
    policy = RoutePolicy(route.strategy, route.on_context_overflow or ERROR, route.context_window)
    return _Entry(route.name, route.target, tuple(route.fallbacks or ()), route.paid, policy)


# -- admin input ---------------------------------------------------------------------


def _name(field: str, value, pattern_ok: bool = True) -> str:
    if not isinstance(value, str) or not NAME.match(value.strip()):
        raise InputError(
            field, f"'{field}' must be a model name (letters, digits, '/', ':', '.', '-', …)."
        )
    value = value.strip()
    if value.endswith("*") and not pattern_ok:
        raise InputError(field, f"'{field}' must be a model name, not a pattern.")
    return value


def parse(data: object, creating: bool) -> dict:
    """The given fields of a route, checked: name, target, fallbacks, paid, strategy,
    on_context_overflow, context_window. InputError names the first bad field and carries
    every bad one in its `errors`."""
    if not isinstance(data, dict):
        raise InputError("body", "The request body must be a JSON object.")
    problems = Problems()
    for field in sorted(set(data) - FIELDS - {"id"}):
        problems.add(InputError(field, f"Unknown route field '{field}'."))
    values: dict = {}
    if "name" in data or creating:
        with problems.field():
            values["name"] = _name("name", data.get("name"))
    with problems.field():
        values.update(_target(data, values.get("name")))
    with problems.field():
        values.update(_fallbacks(data, creating))
    with problems.field():
        if "paid" in data:
            if not isinstance(data["paid"], bool):
                raise InputError("paid", "'paid' must be true or false.")
            values["paid"] = data["paid"]
        elif creating:
            values["paid"] = False
    values.update(_pool_fields(data, creating, problems))
    problems.check()
    return values


def _target(data: dict, name: str | None) -> dict:
    if data.get("target") not in (None, ""):
        target = data["target"]
        if not isinstance(target, str) or target.count("*") > 1:
            raise InputError("target", "'target' must be a model name with at most one '*'.")
        _name("target", target.replace("*", "x"), pattern_ok=False)  # `*` stands for a name
        if "*" in target and name is not None and not name.endswith("*"):
            raise InputError("target", STAR_RULE)
        return {"target": target.strip()}
    return {"target": None} if "target" in data else {}


def _fallbacks(data: dict, creating: bool) -> dict:
    if "fallbacks" in data:
        fallbacks = data["fallbacks"] or []
        if isinstance(fallbacks, str):
            fallbacks = [part.strip() for part in fallbacks.split(",") if part.strip()]
        if not isinstance(fallbacks, list) or len(fallbacks) > MAX_FALLBACKS:
            raise InputError(
                "fallbacks", f"'fallbacks' must be a list of at most {MAX_FALLBACKS} model names."
            )
        return {"fallbacks": [_name("fallbacks", f, pattern_ok=False) for f in fallbacks]}
    return {"fallbacks": []} if creating else {}


def _pool_fields(data: dict, creating: bool, problems: Problems) -> dict:
    """strategy, on_context_overflow and context_window, checked ("" or null: unset)."""
    values: dict = {}
    with problems.field():
        if data.get("strategy") not in (None, ""):
            if data["strategy"] not in STRATEGIES:
                raise InputError(
                    "strategy", f"'strategy' must be one of {', '.join(STRATEGIES)} (or null: "
                    "the profile's)."
                )  # fmt: skip
            values["strategy"] = data["strategy"]
        elif "strategy" in data or creating:
            values["strategy"] = None
    with problems.field():
        if data.get("on_context_overflow") not in (None, ""):
            if data["on_context_overflow"] not in OVERFLOW_MODES:
                raise InputError(
                    "on_context_overflow",
                    f"'on_context_overflow' must be one of {', '.join(OVERFLOW_MODES)}.",
                )
            values["on_context_overflow"] = data["on_context_overflow"]
        elif "on_context_overflow" in data or creating:
            values["on_context_overflow"] = ERROR
    with problems.field():
        values.update(_context_window(data, creating))
    return values


def _context_window(data: dict, creating: bool) -> dict:
    window = data.get("context_window")
    if isinstance(window, str) and re.fullmatch(r"[0-9]{1,12}", window.strip()):  # a form field
        window = int(window.strip())
    if window not in (None, ""):
        if isinstance(window, bool) or not isinstance(window, int):
            raise InputError("context_window", "'context_window' must be a whole number.")
        if not 1 <= window <= MAX_CONTEXT_WINDOW:
            raise InputError(
                "context_window",
                f"'context_window' must be between 1 and {MAX_CONTEXT_WINDOW:,} tokens.",
            )
        return {"context_window": window}
    return {"context_window": None} if "context_window" in data or creating else {}


def save(session: Session, values: dict, now: datetime, route: Route | None = None) -> Route:
    """Create a route, or change one; a name already taken is a 409."""
    name = values.get("name")
    if name is not None:
        taken = session.scalar(select(Route.id).where(Route.name == name))
        if taken is not None and (route is None or taken != route.id):
            raise InputError("name", f"A route named '{name}' exists.", 409)
    if route is None:
        route = Route(name=name, fallbacks=[], paid=False)
        session.add(route)
    for field, value in values.items():
        setattr(route, field, value)
    if route.target == route.name:
        route.target = None
    # The body's own clashes were refused by parse(); here one field meets the saved
    # route's others: a conflict with it (409).
    saved = 409 if route.id is not None else 400
    if route.on_context_overflow == FALLBACK and not route.fallbacks:
        given = {"on_context_overflow", "fallbacks"} <= set(values)
        raise InputError("on_context_overflow", FALLBACK_RULE, 400 if given else saved)
    if "*" in (route.target or "") and not route.name.endswith("*"):
        given = {"target", "name"} <= set(values)
        raise InputError("target", STAR_RULE, 400 if given else saved)
    route.updated_at = now
    session.flush()
    return route
