"""Budget alerts (F36): a message to a webhook when a client key's spend reaches a
threshold of its budget (KEYRELAY_ALERT_THRESHOLDS percent), once per threshold per period.

After a client key's request is booked, the proxy only hands the key's id to a sender
thread and goes on. The thread compares the period's spend, from the shared counters
(limiter.py, no query), with the key's budget (read at most once a second, like the
proxy's own cache). Only for a threshold newly reached does it write: it claims the alert
with a row in `budget_alerts`, unique per (key, period start, threshold), so whichever
worker inserts it sends it, once across workers and restarts. Then it posts
Slack-compatible JSON (`{"text": …}`). The scheduler's `check_all` covers what no
request shows: a budget lowered, a period this host has not counted.

A receiver that is down or slow costs the sender thread a short timeout, never a request.
Its alert is not retried (it is logged): alerts go out at most once. Since the proxy
refuses a request before it would pass a budget, spend often stops a little short of
100%; a threshold such as 95 catches that.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import orjson
import urllib3
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from gateway import store
from gateway.ledger.accounting import RequestRecord
from gateway.limits import budgets
from gateway.limits.local import SharedLimiter
from models import BudgetAlert, ClientKey, Profile
from models.types import usd

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
# A key's budget is re-read at most this often (as the proxy's own client-key cache).
CACHE_SECONDS = 1.0
_MEMORY = 100_000  # alerts remembered as claimed before the memory starts over


def parse_thresholds(text: str) -> tuple[int, ...]:
    """Thresholds as whole percentages, ascending: "80,100" → (80, 100)."""
    try:
        values = {int(part) for part in str(text).split(",") if part.strip()}
    except ValueError:
        values = set()
    if not values or min(values) < 1 or max(values) > 1000:
        raise ValueError(
            f"KEYRELAY_ALERT_THRESHOLDS must be whole percentages such as '80,100', not {text!r}."
        )
    return tuple(sorted(values))


def reached(thresholds: tuple[int, ...], spent: int, budget: int) -> list[int]:
    """The thresholds (percent) the spend has reached."""
    return [t for t in thresholds if spent * 100 >= t * budget]


@dataclass(frozen=True)
class KeyBudget:
    """A client key's budget, with what an alert names it by."""

    id: int
    name: str
    profile: str
    micros: int
    duration: str | None
    anchor: datetime


@dataclass(frozen=True)
class Alert:
    """One threshold reached by one key in one budget period."""

    key: KeyBudget
    threshold: int
    start: datetime
    end: datetime | None
    spent: int

    def text(self) -> str:
        key = self.key
        when = (
            "lifetime budget"
            if self.end is None
            else f"budget for the period {_minute(self.start)}–{_minute(self.end)}"
        )
        return (
            f"KeyRelay: client key '{key.name}' (#{key.id}, profile {key.profile}) used "
            f"{self.threshold}% of its ${_dollars(key.micros)} {when}: "
            f"${_dollars(self.spent)} spent."
        )

    def payload(self) -> dict:
        """Slack's `text`, and the same facts as fields for receivers that are programs."""
        return {
            "text": self.text(),
            "keyrelay": {
                "event": "budget.threshold",
                "client_key_id": self.key.id,
                "client_key": self.key.name,
                "profile": self.key.profile,
                "threshold": self.threshold,
                "spent": usd(self.spent),
                "max_budget": usd(self.key.micros),
                "period_start": self.start.isoformat(),
                "period_end": self.end.isoformat() if self.end else None,
            },
        }


def _minute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%MZ")


def _dollars(micros: int) -> str:
    """Dollars to the cent at least, without trailing zeros: "4.01", "0.092"."""
    whole, fraction = usd(micros).split(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


_BUDGETS = (
    select(
        ClientKey.id,
        ClientKey.name,
        Profile.name.label("profile"),
        ClientKey.max_budget_micros,
        ClientKey.budget_duration,
        ClientKey.created_at,
        ClientKey.expires_at,
    )
    .join(Profile, Profile.id == ClientKey.profile_id)
    .where(ClientKey.max_budget_micros > 0, ClientKey.revoked_at.is_(None))
)


def _budget(row) -> KeyBudget:
    return KeyBudget(
        row.id, row.name, row.profile, row.max_budget_micros, row.budget_duration, row.created_at
    )


class BudgetAlerts:
    """Checks client keys' spend after their requests, claims and posts alerts."""

    def __init__(
        self, engine: Engine, limiter: SharedLimiter, clock, url: str, thresholds: tuple[int, ...]
    ):
        self.engine, self.limiter, self.clock = engine, limiter, clock
        self.url, self.thresholds = url, thresholds
        timeout = urllib3.Timeout(connect=TIMEOUT_SECONDS, read=TIMEOUT_SECONDS)
        self._http = urllib3.PoolManager(num_pools=2, retries=False, timeout=timeout)
        self._claimed: set[tuple[int, datetime, int]] = set()
        self._budgets: dict[int, tuple[KeyBudget | None, float]] = {}
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._pending: dict[int, None] = {}  # key ids to check, in order, each once
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, gateway, settings: dict) -> BudgetAlerts | None:
        """Alerts for the gateway, or None when KEYRELAY_ALERT_WEBHOOK_URL is unset."""
        if not settings.get("ALERT_WEBHOOK_URL"):
            return None
        url, thresholds = settings["ALERT_WEBHOOK_URL"], settings["ALERT_THRESHOLDS"]
        return cls(
            gateway.engine, gateway.limiter, gateway.clock, url, parse_thresholds(thresholds)
        )

    # -- the proxy's side -------------------------------------------------------------

    def after_booking(self, rec: RequestRecord) -> None:
        """Have the sender check the request's client key; returns at once."""
        if rec.client_key_id is None or rec.cost_micros <= 0:
            return
        with self._lock:
            if self._closed:
                return
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._run, name="budget-alerts", daemon=True)
                self._thread.start()
            self._pending[rec.client_key_id] = None
            self._work.notify()

    def forget(self) -> None:
        """Re-read budgets from the database (one changed in this process)."""
        self._budgets.clear()

    # -- the scheduler's side ---------------------------------------------------------

    def check_all(self, now: datetime | None = None) -> int:
        """Check every active key with a budget, from the caller's thread (a scheduled
        job): it catches what the proxy's checks cannot see (a budget lowered, a period
        this host has not counted). Returns the alerts sent."""
        now = now or self.clock.now()
        with self.engine.connect() as conn:
            rows = conn.execute(_BUDGETS).all()
        sent = 0
        for row in rows:
            if row.expires_at is None or row.expires_at > now:
                sent += self._check(_budget(row), now, from_log=True)
        return sent

    # -- tests and shutdown -----------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued check (and its post) is done; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued checks and stop the sender thread."""
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._work.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._http.clear()

    # -- the sender thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                key_id = next(iter(self._pending))
                del self._pending[key_id]
                self._busy = True
            try:
                self._check_key(key_id, self.clock.now())
            except Exception:  # the thread must outlive a database hiccup
                log.exception("budget alert check failed for client key #%s", key_id)
            finally:
                with self._lock:
                    self._busy = False
                    self._idle.notify_all()

    def _check_key(self, key_id: int, now: datetime) -> None:
        """The cheap check on the budget as cached; a threshold that looks reached is
        checked again on the budget as it is now (a top-up may have just moved it)."""
        budget = self._budget(key_id, fresh=False)
        if budget is None or not self._due(budget, now, from_log=False)[3]:
            return
        budget = self._budget(key_id, fresh=True)
        if budget is not None:
            self._check(budget, now, from_log=False)

    def _budget(self, key_id: int, fresh: bool) -> KeyBudget | None:
        hit = self._budgets.get(key_id)
        if not fresh and hit is not None and time.monotonic() - hit[1] < CACHE_SECONDS:
            return hit[0]
        with self.engine.connect() as conn:
            row = conn.execute(_BUDGETS.where(ClientKey.id == key_id)).first()
        budget = None if row is None else _budget(row)
        if len(self._budgets) > 10_000:
            self._budgets.clear()
        self._budgets[key_id] = (budget, time.monotonic())
        return budget

    def _due(self, budget: KeyBudget, now: datetime, from_log: bool):
        """(period start, end, spent, thresholds reached and not yet claimed here)."""
        start, end = budgets.period(budget.anchor, budget.duration, now)
        spent = self.limiter.spent(f"ck:{budget.id}:budget", int(start.timestamp()))
        if spent is None and from_log:
            with self.engine.connect() as conn:
                spent = store.client_key_spend(conn, budget.id, start, end)
        if spent is None:
            return start, end, 0, []  # not counted on this host: check_all reads the log
        due = [
            t
            for t in reached(self.thresholds, spent, budget.micros)
            if (budget.id, start, t) not in self._claimed
        ]
        return start, end, spent, due

    def _check(self, budget: KeyBudget, now: datetime, from_log: bool) -> int:
        """Claim and post the alert for thresholds newly reached; returns posts made."""
        start, end, spent, due = self._due(budget, now, from_log)
        claimed = [t for t in due if self._claim(budget.id, start, t, now)]
        if len(self._claimed) > _MEMORY:
            self._claimed.clear()
        self._claimed.update((budget.id, start, t) for t in due)
        if not claimed:
            return 0
        # Several thresholds at once (one large request): one message, for the highest.
        return int(self._post(Alert(budget, max(claimed), start, end, spent)))

    def _claim(self, key_id: int, start: datetime, threshold: int, now: datetime) -> bool:
        """Insert the alert's row; False when another worker (or an earlier run) has."""
        row = {"client_key_id": key_id, "period_start": start, "threshold": threshold}
        try:
            with self.engine.begin() as conn:
                conn.execute(BudgetAlert.__table__.insert().values(**row, sent_at=now))
        except IntegrityError:
            return False
        return True

    def _post(self, alert: Alert) -> bool:
        """POST the alert; a failure is logged without the URL (it holds Slack's secret)."""
        what = f"budget alert for client key #{alert.key.id} at {alert.threshold}%"
        try:
            response = self._http.request(
                "POST",
                self.url,
                body=orjson.dumps(alert.payload()),
                headers={"Content-Type": "application/json"},
            )
        except urllib3.exceptions.HTTPError as exc:
            log.warning("%s not delivered: %s", what, type(exc).__name__)
            return False
        if not 200 <= response.status < 300:
            log.warning("%s not delivered: the receiver answered %s", what, response.status)
            return False
        log.info("%s sent", what)
        return True
