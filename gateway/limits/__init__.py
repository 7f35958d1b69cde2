"""Limits: who may make a request now — RPM/TPM windows, requests in flight, budgets.

Two limiters keep the counters: `local.SharedLimiter` (a memory-mapped file shared by the
workers of one host) and `redis.RedisLimiter` (Redis, shared by several hosts). Both are a
`Limiter` (below): the gateway picks one at start and never asks which. `budgets` says what a
client key's budget and period are; the limiter holds what was spent in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gateway.limits.local import Limits, Refusal, Window


@runtime_checkable
class Limiter(Protocol):
    """What admission, booking and alerts ask of a limiter, wherever its counters live."""

    def admit(self, scope: str, limits: Limits, now: int) -> tuple[Window, Refusal | None]:
        """Count one request against `scope`'s windows, or refuse it saying which limit."""

    def settle(self, scope: str, tokens: int, now: int, parallel: bool) -> None:
        """Book a finished request's tokens and end it as in flight."""

    def settle_many(self, items: list[tuple]) -> None:
        """Settle several requests' windows and budgets at once."""

    def window(self, scope: str, now: int) -> Window:
        """What `scope`'s windows hold now."""

    def reserve(
        self,
        scope: str,
        period: int,
        budget: int,
        estimate: int,
        load_spent: Callable[[], int],
        minimum: int | None = None,
    ) -> tuple[int, int, bool]:
        """Reserve an estimate of a budget period before the call: (spent, reserved, admitted)."""

    def reserve_and_admit(
        self,
        budget_scope: str,
        period: int,
        budget: int,
        estimate: int,
        load_spent: Callable[[], int],
        scope: str,
        limits: Limits,
        now: int,
        minimum: int | None = None,
    ) -> tuple[int, int, bool, Window | None, Refusal | None]:
        """`reserve`, then `admit`; nothing stays taken unless both admit."""

    def settle_budget(self, scope: str, period: int, estimate: int, cost: int) -> None:
        """Replace a reservation by the request's real cost."""

    def spent(self, scope: str, period: int) -> int | None:
        """What `scope` spent in `period`, or None when not known here."""

    def forget(self, owner: str) -> int:
        """Drop every counter of `owner` (a deleted key)."""

    def later(self, operation: str, *args) -> Callable[[], tuple]:
        """Start `operation` now and return a function that waits for its answer."""

    def stats(self) -> dict:
        """Figures about the limiter itself, for metrics."""
