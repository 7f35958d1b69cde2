"""Admission: what a client key may do before any upstream is asked (F31, F7, F34).

The model permission, the budget reservation and a place in the key's rate window, in
that order (a request the budget refuses takes no place in the window). What was taken is
a `Ticket`: `settle()` turns it into the request's real tokens and cost once the request
is booked; a ticket settled without usage gives everything back. Provider-key windows an
attempt was admitted to (F30) are kept on the ticket too, to book their tokens.

The budget and the window are asked for as soon as the request is parsed, and their
answer is read only just before the first upstream call (`Ticket.admitted()`): with the
shared Redis limiter the round trip overlaps the routing and key selection in between. A
refusal read then is raised as `Refused`, which nothing on the way takes for an upstream's
error, and the proxy answers with it (the admission was decided first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from gateway import metrics, store
from gateway.dialects.base import ProxyRequest
from gateway.errors import GatewayError
from gateway.keys.client_keys import Caller
from gateway.ledger import wallet
from gateway.ledger.books import Books
from gateway.ledger.pricing import Prices
from gateway.ledger.usage import Usage
from gateway.limits import budgets
from gateway.limits.local import Limits, SharedLimiter, Window, granted
from gateway.providers import ADAPTERS
from gateway.store import KeyRow
from models.types import usd


class Refused(Exception):  # noqa: N818 - it is what happened, not an error of ours
    """The admission's refusal (429), read late: carried past the routing, whose error
    handling must not take it for an upstream's, to the proxy, which answers with it."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class Ticket:
    """What one request holds in the shared limiter until it is booked."""

    limiter: SharedLimiter
    clock: object
    # The client key's window scope, and whether it holds a place in flight there.
    scope: tuple[str, bool] | None = None
    # (scope, period id, reserved micro-dollars) of the budget reservation.
    reservation: tuple[str, int, int] | None = None
    # The answer tokens (all choices) the budget reservation pays for: a stream that
    # passes them is ended with the length stop (None: no budget).
    answer_cap: int | None = None
    # The member's reservations (scope, period id, reserved micro-dollars) of their
    # balance and budget, and their rate window's scope: booked with the key's.
    member_holds: list[tuple[str, int, int]] = field(default_factory=list)
    member_scope: str | None = None
    # The x-ratelimit-* headers the admission produced (F7).
    headers: dict[str, str] = field(default_factory=dict)
    # The provider key's windows the serving attempt was admitted to (F30).
    key_scopes: tuple[str, ...] = ()
    # The provider key's in-flight count it holds a place in (strategy least-busy).
    busy_scope: str | None = None
    # The serving key's count of running requests, for a kind with a cap (a CLI's).
    running_scope: str | None = None
    # The admission's answer not read yet: what completes this ticket or raises the
    # client's refusal (`admitted()`); the refusal once read.
    pending: Callable[[], None] | None = None
    refused: GatewayError | None = None

    def admitted(self) -> None:
        """Read the admission's answer (once); a refusal is raised as `Refused`."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            try:
                pending()
            except GatewayError as err:
                self.refused = err
        if self.refused is not None:
            raise Refused(self.refused)

    def refusal(self) -> GatewayError | None:
        """The admission's refusal, if it refused (its answer is read first)."""
        try:
            self.admitted()
        except Refused as refused:
            return refused.error
        return None

    def leave_running(self) -> None:
        """Give back the place under the serving key's concurrency cap (once)."""
        if self.running_scope is not None:
            scope, self.running_scope = self.running_scope, None
            self.limiter.settle(scope, 0, int(self.clock.now().timestamp()), True)

    def leave_busy(self) -> None:
        """Give back the place in the serving key's in-flight count (once)."""
        if self.busy_scope is not None:
            scope, self.busy_scope = self.busy_scope, None
            self.limiter.settle(scope, 0, int(self.clock.now().timestamp()), True)

    def settle(self, total_tokens: int = 0, cost_micros: int = 0) -> None:
        """Book the request's tokens in the windows and its cost in the budget period, and
        free its places; once (a second call does nothing). With no arguments: a release.
        All in one call to the limiter (one round trip when it is Redis)."""
        self.refusal()  # what the admission took, if it has not been read yet
        now = int(self.clock.now().timestamp())
        items = [("w", scope, now, 0, True) for scope in (self.busy_scope, self.running_scope)]
        items = [item for item in items if item[1] is not None]
        self.busy_scope = self.running_scope = None
        items += [("w", scope, now, total_tokens, False) for scope in self.key_scopes]
        self.key_scopes = ()
        if self.reservation is not None:
            scope, period_id, estimate = self.reservation
            self.reservation = None
            items.append(("b", scope, period_id, estimate, cost_micros))
        holds, self.member_holds = self.member_holds, []
        items += [("b", scope, period, held, cost_micros) for scope, period, held in holds]
        if self.member_scope is not None:
            items.append(("w", self.member_scope, now, total_tokens, False))
            self.member_scope = None
        if self.scope is not None:
            scope, parallel = self.scope
            self.scope = None
            items.append(("w", scope, now, total_tokens, parallel))
        if items:
            self.limiter.settle_many(items)

    release = settle


class Admission:
    """Admits a caller's request, or refuses it with the client's error."""

    def __init__(
        self, engine: Engine, books: Books, limiter: SharedLimiter, prices: Prices, clock
    ) -> None:
        self.engine, self.books, self.limiter = engine, books, limiter
        self.prices, self.clock = prices, clock
        self.routes = None  # the route table (routes.Routes): an alias is priced as its target
        if hasattr(limiter, "load_windows"):  # Redis: what it is given when it lost them
            limiter.load_windows = self._recent_windows

    def _recent_windows(self, now: int) -> dict[str, list[tuple[int, int, int]]]:
        """The last minute's rate windows, from the request log (this process's queued
        rows written first)."""
        self.books.flush(timeout=1.0)
        since = datetime.fromtimestamp(now - 59, UTC)
        with self.engine.connect() as conn:
            return store.recent_windows(conn, since)

    def ticket(self) -> Ticket:
        return Ticket(self.limiter, self.clock)

    def admit(self, caller: Caller, request: ProxyRequest, ticket: Ticket) -> None:
        """Check the model, then ask for the budget reservation and a place in the window
        (in that order, in one call to the limiter). Their answer is read by
        `ticket.admitted()`, which puts what was taken on the ticket."""
        if caller.models is not None and request.model not in caller.models:
            raise _model_not_allowed(request.model, caller)
        if caller.member_id is not None:
            self._admit_member(caller.member_id, request, ticket)
        if caller.budget is None:
            if caller.limits is not None:
                now = int(self.clock.now().timestamp())
                answer = self.limiter.later("admit", caller.scope, caller.limits, now)
                ticket.pending = lambda: self._placed(caller, ticket, *answer())
            return
        priced_as = self._priced_as(request.model)
        ask = self._estimate(caller, request, priced_as)
        request.limit_answer(ask.answer)  # the upstream is asked for no more than reserved
        budget = caller.budget.micros
        if caller.limits is None:
            reserved = self.limiter.later(
                "reserve", ask.scope, ask.period_id, budget, ask.estimate, ask.load_spent,
                ask.minimum,
            )  # fmt: skip
            answer = lambda: (*reserved(), None, None)  # noqa: E731
        else:
            now = int(self.clock.now().timestamp())
            answer = self.limiter.later(
                "reserve_and_admit", ask.scope, ask.period_id, budget, ask.estimate,
                ask.load_spent, caller.scope, caller.limits, now, ask.minimum,
            )  # fmt: skip

        def read() -> None:
            spent, reserved, admitted, window, refusal = answer()
            if not admitted:
                metrics.sink.rejected("client_key", "budget")
                raise _over_budget(caller, ask, spent, reserved)
            held = granted(budget, ask.estimate, spent, reserved)
            if window is not None:
                self._placed(caller, ticket, window, refusal)
            ticket.reservation = (ask.scope, ask.period_id, held)
            self._cap(request, ticket, ask, held)

        ticket.pending = read

    def _cap(self, request: ProxyRequest, ticket: Ticket, ask: _Ask, held: int) -> None:
        """The answer the reservation pays for: the asked length, or fewer tokens when the
        budget could pay only part of the estimate (the upstream is asked for no more)."""
        if not request.answers:
            return
        answer = ask.answer
        if held < ask.estimate:  # the most tokens per choice whose cost fits what is held
            low, high = 1, answer
            while low < high:
                middle = (low + high + 1) // 2
                if self._cost(request, ask.prompt, middle, ask.priced_as) <= held:
                    low = middle
                else:
                    high = middle - 1
            answer = low
            request.limit_answer(answer)
        cap = answer * request.choices
        ticket.answer_cap = cap if ticket.answer_cap is None else min(cap, ticket.answer_cap)

    def _admit_member(self, member_id: int, request: ProxyRequest, ticket: Ticket) -> None:
        """A member's key: reserve against the member's balance, then their budget, then
        take a place in their rate window (all their keys together). Each is on the ticket
        as soon as it is taken, so a refusal further on gives the earlier ones back."""
        with self.engine.connect() as conn:
            account = wallet.load(conn, member_id)
        if account is None:
            return
        priced_as = self._priced_as(request.model)
        now = self.clock.now()
        ask = self._ask(request, priced_as, account.balance_scope, now, None)
        ask.period_id = account.funded_micros  # new credits: a new "period" (wallet.py)
        ask.load_spent = lambda: self._member_spend(member_id, None, None)
        asks = [(ask, account.funded_micros)]
        if account.budget_micros is not None:
            start, end = budgets.period(account.created_at, account.budget_period, now)
            ask = self._ask(request, priced_as, account.budget_scope, start, end, now)
            ask.load_spent = lambda: self._member_spend(member_id, start, end)
            asks.append((ask, account.budget_micros))
        request.limit_answer(ask.answer)
        for ask, budget in asks:
            spent, reserved, admitted = self.limiter.reserve(
                ask.scope, ask.period_id, budget, ask.estimate, ask.load_spent, ask.minimum
            )
            if not admitted:
                metrics.sink.rejected("client_key", "budget")
                if ask.scope == account.balance_scope:
                    raise wallet.balance_used_up(account, spent, reserved, ask.minimum)
                raise wallet.budget_used_up(account, spent, reserved, ask.minimum, ask.end, now)
            held = granted(budget, ask.estimate, spent, reserved)
            ticket.member_holds.append((ask.scope, ask.period_id, held))
            self._cap(request, ticket, ask, held)
        if account.limits is not None:
            _, refusal = self.limiter.admit(account.scope, account.limits, int(now.timestamp()))
            if refusal is not None:
                metrics.sink.rejected("client_key", refusal.reason)
                raise wallet.rate_limited(account, refusal, now)
            ticket.member_scope = account.scope

    def _member_spend(self, member_id: int, start, end) -> int:
        self.books.flush(timeout=1.0)
        with self.engine.connect() as conn:
            return wallet.spend(conn, member_id, start, end)

    def _cost(self, request: ProxyRequest, prompt: int, answer: int, priced_as: tuple) -> int:
        usage = Usage(prompt, answer * request.choices)
        return max(0, self.prices.cost_micros(*priced_as, usage))

    def _priced_as(self, model: str) -> tuple[str | None, str]:
        """(price provider, model) a budgeted request is estimated with (a route alias is
        priced as its target). A budget counts only what has a price: a model without one
        (no override, no flat price, unknown to genai-prices) would cost a budgeted key
        nothing, so it is refused."""
        provider = self.prices.pricer(model)
        if provider is not None:
            return provider or None, model
        if self.routes is not None:
            target = self.routes.table().hop(model).model
            provider = self.prices.pricer(target) if target != model else None
            if provider is not None:
                return provider or None, target
        metrics.sink.rejected("client_key", "budget")
        raise GatewayError(
            400,
            f"The model '{model}' has no known price, and this API key spends a budget or "
            "a prepaid balance: its "
            "requests cannot be counted against it. An admin can set a price for the model "
            "(per million tokens or per request) on the dashboard's Prices page or with "
            f"PUT /api/admin/prices/{model}.",
            type="invalid_request_error",
            code="model_price_unknown",
            param="model",
        )

    @staticmethod
    def _placed(caller: Caller, ticket: Ticket, window: Window, refusal) -> None:
        """The rate-limit headers, and the place on the ticket; or 429 with Retry-After."""
        limits = caller.limits
        ticket.headers = ratelimit_headers(limits, window)
        if refusal is not None:
            metrics.sink.rejected("client_key", refusal.reason)
            what = {
                "rpm": f"{limits.rpm} requests per minute",
                "tpm": f"{limits.tpm} tokens per minute",
                "parallel": f"{limits.parallel} requests at a time",
            }[refusal.reason]
            raise GatewayError(
                429,
                f"Rate limit of this API key reached: {what}. Retry after {refusal.retry_after} s.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(refusal.retry_after)},
            )
        ticket.scope = (caller.scope, limits.parallel is not None)

    def _estimate(self, caller: Caller, request: ProxyRequest, priced_as: tuple) -> _Ask:
        """The request's estimated cost in the key's budget period (F34)."""
        budget = caller.budget
        now = self.clock.now()
        start, end = budgets.period(budget.anchor, budget.duration, now)

        def spent_so_far() -> int:
            self.books.flush(timeout=1.0)
            with self.engine.connect() as conn:
                return store.client_key_spend(conn, caller.client_key_id, start, end)

        ask = self._ask(request, priced_as, f"ck:{caller.client_key_id}:budget", start, end, now)
        ask.load_spent = spent_so_far
        return ask

    def _ask(
        self, request: ProxyRequest, priced_as: tuple, scope: str, start: datetime,
        end: datetime | None, now: datetime | None = None,
    ) -> _Ask:  # fmt: skip
        """What the request asks of one budget (`scope`) in its period [start, end); its
        spend so far is read by the `load_spent` the caller sets."""
        now = start if now is None else now
        asked = request.answer_tokens  # the dialect made it a positive integer, or None
        answer = (asked or budgets.DEFAULT_ANSWER_TOKENS) if request.answers else 0
        choices = request.choices
        prompt = request.count_prompt() + request.prompt_tokens
        usage = Usage(prompt, answer * choices)
        estimate = max(0, self.prices.cost_micros(*priced_as, usage))
        basis = (
            f"{prompt} prompt tokens + {answer:,} answer tokens"
            + (f" x {choices} choices" if choices > 1 else "")
            + (
                ""
                if asked
                else " (the default when the request sets no max_tokens; "
                "a smaller max_tokens needs less)"
            )
        )
        # The least worth holding: the prompt and one answer token per choice.
        minimum = self._cost(request, prompt, 1, priced_as) if request.answers else estimate
        return _Ask(
            scope, int(start.timestamp()), estimate, int, now, end, basis,
            answer, prompt, minimum, priced_as,
        )  # fmt: skip

    def take_key(self, ticket: Ticket, key: KeyRow, model: str, count_busy: bool) -> int | None:
        """Before an attempt with a provider key: a place in its RPM/TPM windows (and the
        model's on that key), or the seconds until there is room. Keys without such limits
        cost nothing here. With `count_busy` (strategy least-busy) the attempt also takes a
        place in the key's in-flight count, shared by every worker. A key whose kind caps
        its concurrent requests (`max_concurrency`, shared by every worker) is passed over
        at its cap like a key at its RPM limit. The client key's own admission is read
        first (a refusal raises `Refused`)."""
        ticket.admitted()
        ticket.leave_running()  # a previous attempt's key is done with
        if (wait := self._take_running(key, ticket)) is not None:
            return wait
        if (wait := self._take_windows(key, model, ticket, count_busy)) is not None:
            ticket.leave_running()
            return wait
        return None

    def _take_windows(self, key: KeyRow, model: str, ticket: Ticket, count_busy: bool):
        if count_busy:
            ticket.leave_busy()  # a previous attempt's key is done with
            now = int(self.clock.now().timestamp())
            scope = busy_scope(key.id)
            self.limiter.admit(scope, BUSY_LIMITS, now)
            ticket.busy_scope = scope
        if not key.rate_limited:
            ticket.key_scopes = ()
            return None
        now = int(self.clock.now().timestamp())
        scopes = []
        per_model = (key.model_limits or {}).get(model)
        windows = [(f"pk:{key.id}:{model}", per_model)] if per_model else []
        if key.rpm_limit or key.tpm_limit:
            windows.append((f"pk:{key.id}", {"rpm": key.rpm_limit, "tpm": key.tpm_limit}))
        for scope, limits in windows:
            limits = Limits(limits.get("rpm"), limits.get("tpm"))
            _, refusal = self.limiter.admit(scope, limits, now)
            if refusal is not None:
                metrics.sink.rejected("provider_key", refusal.reason)
                return refusal.retry_after
            scopes.append(scope)
        ticket.key_scopes = tuple(scopes)
        return None

    def _take_running(self, key: KeyRow, ticket: Ticket) -> int | None:
        adapter = ADAPTERS.get(key.provider)
        cap = adapter.max_concurrency(key.options or {}) if adapter else None
        if cap is None:
            return None
        scope = f"pk:{key.id}:running"
        _, refusal = self.limiter.admit(
            scope, Limits(parallel=cap), int(self.clock.now().timestamp())
        )
        if refusal is not None:
            metrics.sink.rejected("provider_key", "parallel")
            return refusal.retry_after
        ticket.running_scope = scope
        return None


@dataclass
class _Ask:
    """What a request asks of its key's budget: the period and the estimated cost."""

    scope: str
    period_id: int
    estimate: int
    load_spent: Callable[[], int]
    now: datetime
    end: datetime | None
    basis: str
    answer: int = 0  # answer tokens per choice the estimate pays for
    prompt: int = 0
    minimum: int = 0  # the least it holds: the prompt and one answer token per choice
    priced_as: tuple = (None, "")  # (price provider, model) that prices it (an alias's target)


def _over_budget(caller: Caller, ask: _Ask, spent: int, reserved: int) -> GatewayError:
    """429 insufficient_quota, saying what is spent, reserved and asked (F34)."""
    headers = {}
    when = "for the key's lifetime"
    if ask.end is not None:
        headers["Retry-After"] = str(max(1, int((ask.end - ask.now).total_seconds() + 0.999)))
        when = f"until {ask.end.isoformat(timespec='seconds')}"
    return GatewayError(
        429,
        f"Budget of this API key reached: ${usd(spent)} spent and ${usd(reserved)} "
        f"reserved by requests in flight, of ${usd(caller.budget.micros)} {when}; this "
        f"request needs at least ${usd(ask.minimum)} (its prompt and one answer token) and "
        f"reserves up to ${usd(ask.estimate)} ({ask.basis}).",
        type="insufficient_quota",
        code="budget_exceeded",
        headers=headers,
    )


# In-flight counting without a cap (least-busy reads the counts; nothing is refused).
BUSY_LIMITS = Limits(parallel=2**31 - 1)


def busy_scope(key_id: int) -> str:
    return f"pk:{key_id}:busy"


def ratelimit_headers(limits: Limits, window: Window) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the client key's limits (F7)."""
    headers = {}
    if limits.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(limits.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - window.requests))
        headers["x-ratelimit-reset-requests"] = f"{window.requests_reset}s"
    if limits.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - window.tokens))
        headers["x-ratelimit-reset-tokens"] = f"{window.tokens_reset}s"
    return headers


def _model_not_allowed(model: str, caller: Caller) -> GatewayError:
    allowed = ", ".join(sorted(caller.models))
    return GatewayError(
        403,
        f"This API key may not use the model '{model}'. Allowed: {allowed}.",
        type="permission_error",
        code="model_not_allowed",
        param="model",
    )
