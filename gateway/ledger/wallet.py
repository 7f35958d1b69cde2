"""A member's money in the proxy: their prepaid balance, their budget per period, and
their requests and tokens per minute, each counted over all their keys together.

The balance is kept exact under concurrency the way client-key budgets are (budgets.py):
a request reserves its estimated cost in the shared limiter before the upstream call and
settles its real cost after. The balance is held there as a lifetime budget whose size
is what the member was ever funded with: `balance + everything their keys' requests cost`.
That sum does not move when a request is booked (the booking writes the request's cost,
takes it off the balance and adds it to the member's running total `spent_micros` in one
transaction, books.py), only when credits are added or taken away, so it also names the
limiter's "period": new credits start a new one, whose spend is read again from that
total. Both are one row's columns: admitting a request costs the same whatever the
member's history (the total was once summed from the request log on every request).

The budget is a client-key budget over the member's keys, its periods counted from the
member's creation (budgets.period).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select

from gateway.errors import GatewayError
from gateway.limits.local import Limits, Refusal
from models import ClientKey, Member, RequestLog
from models.types import usd


@dataclass(frozen=True)
class Account:
    """What the proxy needs of one member for one request."""

    member_id: int
    balance_micros: int
    funded_micros: int  # balance + the cost of every request of theirs booked so far
    budget_micros: int | None
    budget_period: str | None
    created_at: datetime
    limits: Limits | None

    @property
    def balance_scope(self) -> str:
        return f"mb:{self.member_id}:balance"

    @property
    def budget_scope(self) -> str:
        return f"mb:{self.member_id}:budget"

    @property
    def scope(self) -> str:
        """The rate-limit window shared by all the member's keys."""
        return f"mb:{self.member_id}"


_M = Member.__table__.c
_LOAD = select(
    _M.balance_micros, _M.spent_micros, _M.budget_micros, _M.budget_period, _M.created_at,
    _M.rpm_limit, _M.tpm_limit,
).where(_M.user_id == bindparam("member_id"))  # fmt: skip


def _spend_query(member_id: int):
    log, key = RequestLog.__table__.c, ClientKey.__table__.c
    return (
        select(func.coalesce(func.sum(log.cost_micros), 0))
        .select_from(RequestLog.__table__.join(ClientKey.__table__, key.id == log.client_key_id))
        .where(key.member_id == member_id)
    )


def spend(conn: Connection, member_id: int, start=None, end=None) -> int:
    """Micro-dollars the member's keys' requests cost in [start, end) (None: open); all
    of it (both open) is the running total, not a sum over the log."""
    if start is None and end is None:
        total = conn.execute(select(_M.spent_micros).where(_M.user_id == member_id)).scalar()
        return int(total or 0)
    query = _spend_query(member_id)
    log = RequestLog.__table__.c
    if start is not None:
        query = query.where(log.created_at >= start)
    if end is not None:
        query = query.where(log.created_at < end)
    return int(conn.execute(query).scalar_one())


def load(conn: Connection, member_id: int) -> Account | None:
    """The member's money and limits, read from their row (so the balance and the spend
    it is the rest of come from the same snapshot); None when the member is gone."""
    row = conn.execute(_LOAD, {"member_id": member_id}).first()
    if row is None:
        return None
    limits = Limits(row.rpm_limit, row.tpm_limit)
    return Account(
        member_id,
        int(row.balance_micros),
        int(row.balance_micros) + int(row.spent_micros),
        row.budget_micros,
        row.budget_period,
        row.created_at,
        limits if limits.any() else None,
    )


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def balance_used_up(account: Account, spent: int, reserved: int, needs: int) -> GatewayError:
    """429: the prepaid balance cannot pay for the request (no time helps: credits do)."""
    left = max(0, account.funded_micros - spent)
    return GatewayError(
        429,
        f"Your balance is used up: ${usd(left)} left, ${usd(reserved)} of it held by "
        f"requests in flight, and this request needs at least ${usd(needs)}. "
        "It stays refused until you add credits on your dashboard (/analytics).",
        type="insufficient_quota",
        code="balance_exhausted",
    )


def budget_used_up(
    account: Account, spent: int, reserved: int, needs: int, end: datetime | None, now: datetime
) -> GatewayError:
    """429: the budget of the current period is used up, until the period ends."""
    headers = {}
    if end is None:
        until = "for good (your budget has no period); ask an admin to raise it"
    else:
        headers["Retry-After"] = str(max(1, int((end - now).total_seconds() + 0.999)))
        until = f"until {_iso(end)} (UTC), when your next budget period starts"
    return GatewayError(
        429,
        f"Your budget is used up: ${usd(spent)} spent and ${usd(reserved)} held by requests "
        f"in flight, of ${usd(account.budget_micros)}, and this request needs at least "
        f"${usd(needs)}. It stays refused {until}.",
        type="insufficient_quota",
        code="budget_exceeded",
        headers=headers,
    )


def rate_limited(account: Account, refusal: Refusal, now: datetime) -> GatewayError:
    """429: the member's requests or tokens per minute over all their keys."""
    limits = account.limits
    what = {
        "rpm": f"{limits.rpm} requests per minute",
        "tpm": f"{limits.tpm} tokens per minute",
    }.get(refusal.reason, refusal.reason)
    until = datetime.fromtimestamp(int(now.timestamp()) + refusal.retry_after, now.tzinfo)
    return GatewayError(
        429,
        f"Your rate limit is reached: {what} over all your API keys together. It stays "
        f"refused until {_iso(until)} (UTC); retry after {refusal.retry_after} s.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(refusal.retry_after)},
    )
