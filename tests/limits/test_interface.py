"""Both limiters are one `Limiter`: the file limiter and the Redis limiter have every method
of the interface with the same parameters, so the gateway can hold either."""

from __future__ import annotations

import inspect

from gateway.limits import Limiter
from gateway.limits.local import SharedLimiter
from gateway.limits.redis import RedisLimiter

METHODS = [
    name for name, value in vars(Limiter).items() if callable(value) and not name.startswith("_")
]


def test_the_interface_names_what_admission_and_booking_call():
    assert {"admit", "settle", "reserve_and_admit", "settle_budget", "spent"} <= set(METHODS)


def parameters(cls, name: str) -> list[tuple[str, object]]:
    """A method's parameter names, kinds and defaults (annotations are strings, not compared)."""
    signature = inspect.signature(getattr(cls, name))
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_both_limiters_have_every_method_with_the_interfaces_parameters():
    for name in METHODS:
        assert parameters(SharedLimiter, name) == parameters(Limiter, name), name
        assert parameters(RedisLimiter, name) == parameters(Limiter, name), name


def test_a_class_without_the_methods_is_not_a_limiter():
    assert not isinstance(object(), Limiter)
