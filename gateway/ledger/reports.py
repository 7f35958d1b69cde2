"""Read models for the dashboard: totals, quota bars, key health, the log search, series.

Everything the overview shows comes from the `usage_daily` roll-ups, the provider keys and
a partial index of failed requests, so its cost does not grow with the request log (P5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.orm import Session

from gateway import periods
from gateway.admin.errors import InputError
from gateway.keys import catalog, selection, states
from gateway.keys import provider_keys as keyring
from gateway.validation import FIRST_DAY, LAST_DAY, MAX_SQL_INT, whole_number
from models import ClientKey, Profile, ProviderKey, RequestLog, UsageDaily
from models.provider_keys import AUTH_FAILED, DISABLED, EXPIRED, SECRET_STATUSES

# Statuses a key leaves only by an admin's (or a re-test's) hand.
DEAD = (DISABLED, AUTH_FAILED, EXPIRED, *SECRET_STATUSES)

_SUMS = ("requests", "successes", "failures", "total_tokens", "cost_micros")


def totals(session: Session, first: date, last: date) -> dict:
    """Requests, success rate, tokens and cost (micro-dollars) for days first..last."""
    row = session.execute(
        select(*(func.coalesce(func.sum(getattr(UsageDaily, n)), 0) for n in _SUMS)).where(
            UsageDaily.day >= first, UsageDaily.day <= last
        )
    ).one()
    values = dict(zip(_SUMS, (int(v) for v in row), strict=True))
    values["success_rate"] = (
        values["successes"] / values["requests"] if values["requests"] else None
    )
    return values


def overview_cards(session: Session, today: date) -> dict:
    """Today's and this month's totals."""
    return {
        "today": totals(session, today, today),
        "month": totals(session, today.replace(day=1), today),
    }


def _used_today(session: Session, today: date) -> dict[int, tuple[int, int, int]]:
    rows = session.execute(
        select(
            UsageDaily.provider_key_id,
            func.sum(UsageDaily.total_tokens),
            func.sum(UsageDaily.requests),
            func.sum(UsageDaily.failures),
        )
        .where(UsageDaily.day == today)
        .group_by(UsageDaily.provider_key_id)
    )
    return {
        key_id: (int(tokens or 0), int(count or 0), int(failed or 0))
        for key_id, tokens, count, failed in rows
    }


def _percent(used: int, limit: int | None) -> float | None:
    return None if not limit else round(100.0 * used / limit, 1)  # over 100 when over the limit


@dataclass
class KeyHealth:
    """One provider key as the dashboard shows it (the secret only masked)."""

    id: int
    name: str
    profile: str
    provider: str
    secret: str
    base_url: str
    status: str
    cooldown_until: datetime | None
    used: int
    requests: int
    limit: int | None
    percent: float | None
    last_error: str | None
    last_used_at: datetime | None
    models: list
    # Why it is in its status and until when (states.key_state), every limit that binds
    # it, tightest first, and its failures: in a row now, and today.
    state: states.KeyState | None = None
    limits: list = field(default_factory=list)
    failures_in_a_row: int = 0
    failures_today: int = 0
    expires_at: datetime | None = None
    is_default: bool = False  # its profile's default key: tried first while usable

    @property
    def tightest(self):
        """The limit closest to binding, or None for a key without limits."""
        return self.limits[0] if self.limits else None


def key_health(
    session: Session,
    now: datetime,
    profile: str | None = None,
    windows=None,
    threshold: int | None = None,
    when=None,
    retest_at=None,
) -> list[KeyHealth]:
    """Every provider key with today's usage, its limits (RPM/TPM too given `windows(scope)`
    → the limiter's Window), and its status now with the reason (times written by `when`)."""
    today = periods.local_day(now)
    used = _used_today(session, today)
    usage = keyring.key_usage(session, today)
    query = select(ProviderKey).order_by(ProviderKey.id)
    if profile:
        query = query.join(Profile).where(Profile.name == profile)
    result = []
    for key in session.scalars(query):
        tokens, count, failed = used.get(key.id, (0, 0, 0))
        keyring.attach_usage(key, usage.get(key.id))
        status = selection.effective_status(key, now)
        state = states.key_state(key, now, threshold, when, retest_at)
        result.append(
            KeyHealth(
                id=key.id,
                name=key.name,
                profile=key.profile.name,
                provider=key.provider,
                secret=key.secret_masked,
                base_url=key.base_url,
                status=status,
                cooldown_until=key.cooldown_until if status == "cooling_down" else None,
                used=tokens,
                requests=count,
                limit=key.daily_token_limit,
                percent=_percent(tokens, key.daily_token_limit),
                last_error=key.last_error,
                last_used_at=key.last_used_at,
                models=catalog.served(key),  # what it serves, declared or discovered
                state=state,
                limits=states.binding_limits(key, now, windows),
                failures_in_a_row=key.consecutive_failures,
                failures_today=failed,
                expires_at=key.expires_at,
                is_default=bool(key.is_default),
            )
        )
    return result


@dataclass
class ProfileUsage:
    """A profile's tokens today against the daily capacity of its keys."""

    id: int
    name: str
    strategy: str | None
    keys: int
    usable: int
    used: int
    requests: int
    capacity: int | None
    percent: float | None
    wait_for_key_seconds: int | None = None
    use_paid_models: bool | None = None


def profile_usage(session: Session, keys: list[KeyHealth]) -> list[ProfileUsage]:
    """Per profile: keys, usable keys, tokens and requests today, and the quota bar.

    Capacity is the sum of its live keys' daily limits when every live key has one; a
    profile with an unlimited live key has no ceiling to draw. A key that cannot come back
    by itself (disabled, auth failed, expired, secret to re-enter) is not live: it neither
    adds capacity nor removes the ceiling.
    """
    result = []
    for profile in session.scalars(select(Profile).order_by(Profile.name)):
        own = [k for k in keys if k.profile == profile.name]
        enabled = [k for k in own if k.status not in DEAD]
        used = sum(k.used for k in own)
        capacity = None
        if enabled and all(k.limit for k in enabled):
            capacity = sum(k.limit for k in enabled)
        result.append(
            ProfileUsage(
                id=profile.id,
                name=profile.name,
                strategy=profile.strategy,
                keys=len(own),
                usable=sum(1 for k in own if k.status == "active"),
                used=used,
                requests=sum(k.requests for k in own),
                capacity=capacity,
                percent=_percent(used, capacity),
                wait_for_key_seconds=profile.wait_for_key_seconds,
                use_paid_models=profile.use_paid_models,
            )
        )
    return result


def recent_errors(session: Session, limit: int = 10, kind: str | None = None) -> list[RequestLog]:
    """The newest failed requests (the partial index `ix_request_logs_errors`), of one kind
    (`provider`: what went wrong upstream; `client`: refusals) or all."""
    query = select(RequestLog).where(RequestLog.status_code >= 400)
    if kind:
        query = query.where(ERROR_KINDS[kind])
    return list(session.scalars(query.order_by(RequestLog.id.desc()).limit(limit)))


# -- request log search ---------------------------------------------------------------


@dataclass
class LogFilter:
    """The request log's filters; empty strings mean "any"."""

    profile: str = ""
    key: str = ""
    model: str = ""
    status: str = ""
    since: str = ""
    until: str = ""
    request: str = ""  # a request id, or its beginning
    client_key: str = ""  # a client key id, or `master`
    kind: str = ""  # `client` or `provider` errors
    # Match `request` as the id's end instead (ids begin with their time, so a copied
    # tail is the part that tells one request from its neighbours).
    request_end: bool = False

    FIELDS = (
        "profile",
        "key",
        "model",
        "status",
        "since",
        "until",
        "request",
        "client_key",
        "kind",
    )

    @classmethod
    def from_args(cls, args) -> LogFilter:
        return cls(**{f: (args.get(f) or "").strip()[:128] for f in cls.FIELDS})

    def query_args(self) -> dict:
        return {f: getattr(self, f) for f in self.FIELDS if getattr(self, f)}

    def _day(self, field: str) -> date | None:
        raw = getattr(self, field)
        if not raw:
            return None
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise InputError(field, "Use a date like 2026-11-23.") from None
        if not FIRST_DAY <= day <= LAST_DAY:
            raise InputError(field, f"Use a date from {FIRST_DAY} to {LAST_DAY}.")
        return day

    def apply(self, session: Session, query):
        """Add the filters to a RequestLog query; InputError names a bad field."""
        if self.profile:
            profile_id = session.scalar(select(Profile.id).where(Profile.name == self.profile))
            if profile_id is None:
                raise InputError("profile", f"No profile named '{self.profile}'.")
            query = query.where(RequestLog.profile_id == profile_id)
        if self.key:
            key_id = whole_number(self.key)
            if key_id is None or key_id > MAX_SQL_INT:
                raise InputError("key", "Pick a key from the list.")
            query = query.where(RequestLog.provider_key_id == key_id)
        if self.model:
            query = query.where(
                or_(RequestLog.model == self.model, RequestLog.requested_model == self.model)
            )
        if self.request:
            wanted = self.request.strip().lower()
            if not _REQUEST_ID.match(wanted):
                raise InputError("request", "Give a request id (letters, digits and '-').")
            match = (
                RequestLog.request_id.endswith
                if self.request_end
                else (RequestLog.request_id.startswith)
            )
            query = query.where(match(wanted, autoescape=True))
        if self.client_key:
            query = query.where(_client_key_clause(self.client_key))
        if self.kind:
            if self.kind not in ERROR_KINDS:
                raise InputError("kind", "Pick client or provider errors.")
            query = query.where(ERROR_KINDS[self.kind])
        if self.status:
            query = query.where(*_status_clause(self.status))
        since, until = self._day("since"), self._day("until")
        if since and until and since > until:
            raise InputError("until", "'To' is before 'From'.")
        if since:
            query = query.where(RequestLog.created_at >= _midnight(since))
        if until:
            query = query.where(RequestLog.created_at < _midnight(until + timedelta(days=1)))
        return query


_REQUEST_ID = re.compile(r"^[a-z0-9_-]{1,40}$")
# What the client got wrong or was refused by KeyRelay itself (its own limits, an unknown
# model, a bad body) versus what went wrong at the providers (every key failed, timeouts).
_CLIENT_FAULT = and_(
    RequestLog.status_code >= 400,
    RequestLog.status_code < 500,
    or_(RequestLog.attempt_count == 0, RequestLog.status_code.in_((400, 404, 413, 422))),
)
ERROR_KINDS = {
    "client": _CLIENT_FAULT,
    "provider": and_(RequestLog.status_code >= 400, not_(_CLIENT_FAULT)),
}


def error_kind(row: RequestLog) -> str | None:
    """`client` or `provider` for a failed request (the same rule as the filter)."""
    if row.status_code < 400:
        return None
    client = row.status_code < 500 and (
        row.attempt_count == 0 or row.status_code in (400, 404, 413, 422)
    )
    return "client" if client else "provider"


def _client_key_clause(value: str):
    if value == "master":
        return RequestLog.client_key_id.is_(None)
    key_id = whole_number(value)
    if key_id is None or key_id > MAX_SQL_INT:
        raise InputError("client_key", "Pick a client key from the list.")
    return RequestLog.client_key_id == key_id


def _midnight(day: date) -> datetime:
    """The UTC instant the local day begins (KEYRELAY_TIMEZONE)."""
    return periods.day_start(day)


def _status_clause(status: str) -> list:
    if status == "ok":
        return [RequestLog.status_code >= 200, RequestLog.status_code < 300]
    if status == "error":
        return [RequestLog.status_code >= 400]
    if status.isdigit() and len(status) == 3:
        return [RequestLog.status_code == int(status)]
    raise InputError("status", "Use 'ok', 'error' or a status code such as 429.")


def search_logs(
    session: Session, filters: LogFilter, before: int | None, page_size: int = 50
) -> tuple[list[RequestLog], int | None]:
    """One page in time order, newest first, from the row `before` on; and the cursor of the
    next page (a row id: rows are written when they end, so ids are not in time order)."""
    query = filters.apply(session, select(RequestLog))
    if before is not None:
        at = session.scalar(select(RequestLog.created_at).where(RequestLog.id == before))
        if at is None:
            query = query.where(RequestLog.id < before)
        else:
            older = and_(RequestLog.created_at == at, RequestLog.id < before)
            query = query.where(or_(RequestLog.created_at < at, older))
    newest = (RequestLog.created_at.desc(), RequestLog.id.desc())
    rows = list(session.scalars(query.order_by(*newest).limit(page_size + 1)))
    more = len(rows) > page_size
    rows = rows[:page_size]
    return rows, (rows[-1].id if more else None)


def names(session: Session, model) -> dict[int, str]:
    """id → name for every row of a model with `id` and `name` (keys, profiles)."""
    return {row_id: name for row_id, name in session.execute(select(model.id, model.name))}


def log_choices(session: Session) -> dict:
    """Values for the filter drop-downs: profiles, keys, models seen in the roll-ups."""
    return {
        "profiles": list(session.scalars(select(Profile.name).order_by(Profile.name))),
        "keys": list(session.execute(select(ProviderKey.id, ProviderKey.name).order_by("id"))),
        "client_keys": list(
            session.execute(select(ClientKey.id, ClientKey.name).order_by(ClientKey.id))
        ),
        "models": list(
            session.scalars(select(UsageDaily.model).distinct().order_by(UsageDaily.model))
        ),
    }


# -- usage series ---------------------------------------------------------------------


@dataclass
class Series:
    """Per-day values over `days`, one list per label (model or key), plus totals."""

    days: list[date]
    tokens: dict[str, list[int]]
    requests: dict[str, list[int]]
    cost_micros: dict[str, list[int]]


def daily_series(session: Session, today: date, by: str, days: int = 30) -> Series:
    """Tokens, requests and cost per day for the last `days` days, by `model` or `key`."""
    first = today - timedelta(days=days - 1)
    column = UsageDaily.model if by == "model" else UsageDaily.provider_key_id
    rows = session.execute(
        select(
            UsageDaily.day,
            column,
            func.sum(UsageDaily.total_tokens),
            func.sum(UsageDaily.requests),
            func.sum(UsageDaily.cost_micros),
        )
        .where(UsageDaily.day >= first, UsageDaily.day <= today)
        .group_by(UsageDaily.day, column)
    ).all()
    labels = _labels(session, by, {row[1] for row in rows})
    day_list = [first + timedelta(days=i) for i in range(days)]
    tokens = {label: [0] * days for label in sorted(set(labels.values()))}
    requests = {label: [0] * days for label in tokens}
    cost = {label: [0] * days for label in tokens}
    for day, group, token_sum, request_sum, cost_sum in rows:
        index = (day - first).days
        label = labels[group]
        tokens[label][index] += int(token_sum or 0)
        requests[label][index] += int(request_sum or 0)
        cost[label][index] += int(cost_sum or 0)
    return Series(day_list, tokens, requests, cost)


def _labels(session: Session, by: str, groups: set) -> dict:
    if by == "model":
        return {group: group for group in groups}
    names = {
        key_id: name
        for key_id, name in session.execute(
            select(ProviderKey.id, ProviderKey.name).where(ProviderKey.id.in_(groups))
        )
    }
    return {group: _key_label(group, names) for group in groups}


# Requests refused before any key was chosen are rolled up under key 0.
NO_KEY = "no key (refused before one was chosen)"


def _key_label(key_id: int | None, names_by_id: dict) -> str:
    if not key_id:
        return NO_KEY
    return f"#{key_id} {names_by_id[key_id]}" if key_id in names_by_id else f"#{key_id} (deleted)"


# -- statistics and export (F44) --------------------------------------------------------

GROUPS = ("global", "profile", "provider_key", "client_key", "model")
PERIODS = ("day", "month")
STAT_FIELDS = (
    "requests",
    "successes",
    "failures",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_micros",
)


def statistics(session: Session, group: str, period: str, first: date, last: date) -> list[dict]:
    """Totals per (day or month, group) for days first..last, oldest first.

    Everything but `client_key` comes from the usage_daily roll-ups; client keys are not a
    roll-up dimension, so their figures are summed from the request log (the partial
    index on client_key_id keeps that to the client keys' own rows).
    """
    if group == "client_key":
        return _client_key_statistics(session, period, first, last)
    column = {
        "global": None,
        "profile": UsageDaily.profile_id,
        "provider_key": UsageDaily.provider_key_id,
        "model": UsageDaily.model,
    }[group]
    sums = [func.sum(getattr(UsageDaily, name)) for name in STAT_FIELDS]
    keys = [UsageDaily.day] + ([column] if column is not None else [])
    rows = session.execute(
        select(*keys, *sums).where(UsageDaily.day >= first, UsageDaily.day <= last).group_by(*keys)
    ).all()
    names = _group_names(session, group)
    merged: dict[tuple, dict] = {}
    for row in rows:
        day, rest = row[0], row[1:]
        label = None
        if column is not None:
            label, rest = rest[0], rest[1:]
        bucket = day.isoformat() if period == "day" else day.strftime("%Y-%m")
        entry = merged.setdefault(
            (bucket, label),
            {"period": bucket, **_label(group, label, names), **dict.fromkeys(STAT_FIELDS, 0)},
        )
        for name, value in zip(STAT_FIELDS, rest, strict=True):
            entry[name] += int(value or 0)
    return sorted(merged.values(), key=lambda e: (e["period"], str(e.get(group) or "")))


def _group_names(session: Session, group: str) -> dict:
    if group == "profile":
        return names(session, Profile)
    if group == "provider_key":
        return names(session, ProviderKey)
    if group == "client_key":
        return names(session, ClientKey)
    return {}


def _label(group: str, value, names_by_id: dict) -> dict:
    if group == "global":
        return {}
    if group == "model":
        return {"model": value}
    return {f"{group}_id": value, f"{group}_name": names_by_id.get(value)}


def _client_key_statistics(session: Session, period: str, first: date, last: date) -> list[dict]:
    start, end = _midnight(first), _midnight(last + timedelta(days=1))
    rows = session.execute(
        select(
            RequestLog.client_key_id,
            RequestLog.created_at,
            RequestLog.status_code,
            RequestLog.input_tokens,
            RequestLog.output_tokens,
            RequestLog.cost_micros,
        ).where(
            RequestLog.client_key_id.is_not(None),
            RequestLog.created_at >= start,
            RequestLog.created_at < end,
        )
    )
    names_by_id = _group_names(session, "client_key")
    merged: dict[tuple, dict] = {}
    for key_id, created, status, tokens_in, tokens_out, cost in rows:
        day = periods.local_day(created)
        bucket = day.isoformat() if period == "day" else day.strftime("%Y-%m")
        entry = merged.setdefault(
            (bucket, key_id),
            {
                "period": bucket,
                **_label("client_key", key_id, names_by_id),
                **dict.fromkeys(STAT_FIELDS, 0),
            },
        )
        success = 200 <= status < 300
        entry["requests"] += 1
        entry["successes"] += int(success)
        entry["failures"] += int(not success)
        entry["input_tokens"] += tokens_in
        entry["output_tokens"] += tokens_out
        entry["total_tokens"] += tokens_in + tokens_out
        entry["cost_micros"] += cost
    return sorted(merged.values(), key=lambda e: (e["period"], e["client_key_id"]))


# -- client-key budgets -------------------------------------------------------------------


@dataclass
class BudgetUse:
    """A budgeted client key's spend in its current period."""

    id: int
    name: str
    profile: str
    spent: int
    limit: int
    percent: float
    duration: str | None
    end: datetime | None
    status: str


def client_budgets(session: Session, limiter, now: datetime, active_only: bool = False):
    """Spend against budget for every client key with a budget. The spend comes from the
    shared limiter when this host has counted the period (no query), else from the log."""
    from gateway import store
    from gateway.limits import budgets

    query = select(ClientKey).where(ClientKey.max_budget_micros.is_not(None))
    result = []
    for row in session.scalars(query.order_by(ClientKey.id)):
        status = row.status(now)
        if active_only and status != "active":
            continue
        start, end = budgets.period(row.created_at, row.budget_duration, now)
        spent = limiter.spent(f"ck:{row.id}:budget", int(start.timestamp()))
        if spent is None:
            spent = store.client_key_spend(session.connection(), row.id, start, end)
        limit = row.max_budget_micros
        result.append(
            BudgetUse(
                id=row.id,
                name=row.name,
                profile=row.profile.name,
                spent=spent,
                limit=limit,
                percent=round(100 * spent / limit, 1) if limit else 100.0,
                duration=row.budget_duration,
                end=end,
                status=status,
            )
        )
    return result
