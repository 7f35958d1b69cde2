"""A member's own view and actions: their keys, personal access tokens, budget, usage and
request log, always scoped to that member (someone else's key or request is "not found").

The commands (create or revoke a key or token) audit as the member and commit through the
same `Admin` context the admin commands use; the queries only read.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select, update

from gateway import members
from gateway.admin.context import BUDGETS, CALLERS, Admin
from gateway.admin.errors import InputError
from gateway.keys import client_keys as clientkeys
from gateway.keys.secrets import token_hash
from gateway.limits import budgets
from models import ClientKey, Member, MemberToken, RequestLog, User

TOKEN_PREFIX = "krp-"
MAX_NAME = 128
LOG_ROWS = 50
USAGE_DAYS = 30


class Refused(InputError):
    """A member may not do this now (suspended, at their key allowance): 403 or 409."""


def _name(value: object, what: str) -> str:
    """A name for a key or token: 1 to 128 characters."""
    if not isinstance(value, str) or not value.strip():
        raise InputError("name", f"Give the {what} a name, such as “laptop”.")
    if len(value.strip()) > MAX_NAME:
        raise InputError("name", f"Keep the name under {MAX_NAME} characters.")
    return value.strip()


# -- keys --------------------------------------------------------------------------------


def create_key(admin: Admin, member: Member, name: object) -> tuple[ClientKey, str]:
    """A new key on the member's profile: (row, the key itself, shown once). Refused
    while suspended (403) or at max_keys live keys (409)."""
    name = _name(name, "key")
    if member.suspended_at is not None:
        raise Refused("member", "Your account is suspended: you cannot create keys.", 403)
    # Take the member's row first (a no-op write): two creates at once count one after
    # the other, so together they never pass max_keys.
    admin.session.execute(
        update(Member)
        .where(Member.user_id == member.user_id)
        .values(max_keys=Member.max_keys)
        .execution_options(synchronize_session=False)
    )
    if members.live_keys(admin.session, member.user_id) >= member.max_keys:
        raise Refused(
            "max_keys",
            f"You may hold {member.max_keys} live key{'' if member.max_keys == 1 else 's'} "
            "and have reached that. Revoke one to create another.",
            409,
        )
    spec = clientkeys.parse({"name": name, "profile": member.profile.name}, creating=True)
    row, key = clientkeys.create(admin.session, spec, admin.actor, admin.now())
    row.member_id = member.user_id
    admin.audit("member.key_create", f"client_key:{row.id}", name=row.name)
    admin.commit(CALLERS)
    return row, key


def find_key(session, member: Member, key_id: int) -> ClientKey:
    """The member's own key of that id; InputError (404) for anyone else's or none."""
    row = session.get(ClientKey, key_id)
    if row is None or row.member_id != member.user_id:
        raise InputError("id", f"You have no key with id {key_id}.", 404)
    return row


def revoke_key(admin: Admin, row: ClientKey) -> None:
    """Revoke the member's key for good: refused from the next request on."""
    clientkeys.revoke(row, admin.now())
    admin.audit("member.key_revoke", f"client_key:{row.id}", name=row.name)
    admin.commit(BUDGETS)
    admin.gateway.forget_limits(f"ck:{row.id}")


@dataclass
class KeyView:
    """A key as its member sees it: never the key, only its hint."""

    row: ClientKey
    spend_micros: int
    last_used_at: datetime | None

    def to_dict(self, now: datetime) -> dict:
        """As /api/keys/manage answers (money as exact USD strings)."""
        from models.types import usd

        row = self.row
        return {
            "id": row.id,
            "name": row.name,
            "key_hint": row.key_hint,
            "profile": row.profile.name,
            "status": row.status(now),
            "spend": usd(self.spend_micros),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "rpm_limit": row.rpm_limit,
            "tpm_limit": row.tpm_limit,
            "created_at": row.created_at.isoformat(),
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        }


def keys(session, member: Member) -> list[KeyView]:
    """The member's keys, newest first, with spend and last use (from the request log)."""
    rows = list(
        session.scalars(
            select(ClientKey)
            .where(ClientKey.member_id == member.user_id)
            .order_by(ClientKey.id.desc())
        )
    )
    totals = {
        key_id: (int(spent), last)
        for key_id, spent, last in session.execute(
            select(
                RequestLog.client_key_id,
                func.coalesce(func.sum(RequestLog.cost_micros), 0),
                func.max(RequestLog.created_at),
            )
            .where(RequestLog.client_key_id.in_([row.id for row in rows]))
            .group_by(RequestLog.client_key_id)
        )
    }
    return [KeyView(row, *totals.get(row.id, (0, None))) for row in rows]


# -- money and usage -------------------------------------------------------------------


@dataclass
class Budget:
    """The member's budget in the current period: spent of limit, and when it resets."""

    limit_micros: int
    spent_micros: int
    end: datetime | None

    @property
    def percent(self) -> int:
        return self.spent_micros * 100 // self.limit_micros if self.limit_micros else 100


def _their_requests(member: Member):
    """The request-log rows of the member's keys (a subquery of their key ids)."""
    ids = select(ClientKey.id).where(ClientKey.member_id == member.user_id)
    return RequestLog.client_key_id.in_(ids)


def budget(session, member: Member, now: datetime) -> Budget | None:
    """The budget of the period containing now (periods run from the member's creation);
    None when the member has no budget."""
    if member.budget_micros is None:
        return None
    start, end = budgets.period(member.created_at, member.budget_period, now)
    spent = session.scalar(
        select(func.coalesce(func.sum(RequestLog.cost_micros), 0)).where(
            _their_requests(member), RequestLog.created_at >= start
        )
    )
    return Budget(member.budget_micros, int(spent), end)


def usage(session, member: Member, now: datetime, days: int = USAGE_DAYS):
    """Spend (micro-dollars) and tokens per UTC day over the last `days` days, by model:
    (days, {model: [cost per day]}, {model: [tokens per day]})."""
    first = (now - timedelta(days=days - 1)).date()
    day_list = [first + timedelta(days=i) for i in range(days)]
    start = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    rows = session.execute(
        select(RequestLog.created_at, RequestLog.model, RequestLog.cost_micros)
        .add_columns(RequestLog.total_tokens)
        .where(_their_requests(member), RequestLog.created_at >= start)
    )
    cost: dict[str, list[int]] = {}
    tokens: dict[str, list[int]] = {}
    for created, model, micros, total in rows:
        index = (_day(created) - first).days
        if not 0 <= index < days:
            continue
        label = model or "unknown"
        cost.setdefault(label, [0] * days)[index] += micros or 0
        tokens.setdefault(label, [0] * days)[index] += total or 0
    return day_list, cost, tokens


def _day(moment: datetime) -> date:
    return moment.date()


def request_log(session, member: Member, limit: int = LOG_ROWS) -> list[RequestLog]:
    """The member's latest requests (what the proxy logged; prompts are never kept)."""
    return list(
        session.scalars(
            select(RequestLog)
            .where(_their_requests(member))
            .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
            .limit(limit)
        )
    )


def find_request(session, member: Member, request_id: str) -> RequestLog:
    """One of the member's requests; InputError (404) for anyone else's or none."""
    row = session.scalar(select(RequestLog).where(RequestLog.request_id == request_id[:40]))
    owner = None
    if row is not None and row.client_key_id is not None:
        owner = session.scalar(select(ClientKey.member_id).where(ClientKey.id == row.client_key_id))
    if row is None or owner != member.user_id:
        raise InputError("id", f"You have no request with id {request_id}.", 404)
    return row


# -- personal access tokens ------------------------------------------------------------


def _token_hint(token: str) -> str:
    return f"{token[:8]}…{token[-4:]}"


def create_token(admin: Admin, member: Member, name: object) -> tuple[MemberToken, str]:
    """A personal access token for /api/keys/manage: (row, the token, shown once)."""
    name = _name(name, "token")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = MemberToken(
        user_id=member.user_id,
        name=name,
        token_hash=token_hash(token),
        token_hint=_token_hint(token),
        created_at=admin.now(),
    )
    admin.session.add(row)
    admin.session.flush()
    admin.audit("member.token_create", f"member_token:{row.id}", name=name)
    admin.commit()
    return row, token


def tokens(session, member: Member) -> list[MemberToken]:
    """The member's personal access tokens, newest first (revoked ones too)."""
    return list(
        session.scalars(
            select(MemberToken)
            .where(MemberToken.user_id == member.user_id)
            .order_by(MemberToken.id.desc())
        )
    )


def find_token(session, member: Member, token_id: int) -> MemberToken:
    """The member's own token of that id; InputError (404) for anyone else's or none."""
    row = session.get(MemberToken, token_id)
    if row is None or row.user_id != member.user_id:
        raise InputError("id", f"You have no token with id {token_id}.", 404)
    return row


def revoke_token(admin: Admin, row: MemberToken) -> None:
    """Revoke a personal access token: refused from now on."""
    if row.revoked_at is None:
        row.revoked_at = admin.now()
    admin.audit("member.token_revoke", f"member_token:{row.id}", name=row.name)
    admin.commit()


def token_member(session, token: str, now: datetime) -> Member | None:
    """The member a live personal access token belongs to (its last use noted), or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalar(
        select(MemberToken).where(
            MemberToken.token_hash == token_hash(token), MemberToken.revoked_at.is_(None)
        )
    )
    if row is None:
        return None
    user = session.get(User, row.user_id)
    member = session.get(Member, row.user_id)
    if user is None or not user.is_member or member is None:
        return None
    row.last_used_at = now
    session.commit()
    return member
