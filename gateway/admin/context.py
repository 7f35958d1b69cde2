"""Who runs a command, on which database and gateway: audit and commit in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from gateway.admin import accounts

# Cache topics a command may change; `Admin.commit` makes this process re-read them
# (other workers see the change within their one-second cache).
KEYS = "keys"  # provider keys, profiles, routes
CALLERS = "callers"  # client keys
BUDGETS = "budgets"  # client keys and budget alerts
PRICES = "prices"


@dataclass
class Admin:
    """The context of a command: the session, the gateway (its clock and caches), who acts
    (a username, "master key", "cli") and from which address."""

    session: Session
    gateway: object
    actor: str
    address: str | None = None
    # The front end's own last check of the input (the admin API's OpenAPI contract), run
    # once a command has validated its input and before it changes anything for good.
    check: Callable[[], None] | None = None

    def checked(self) -> None:
        """Run the front end's check, if it has one."""
        if self.check is not None:
            self.check()

    def now(self) -> datetime:
        """The gateway clock's now (tests move it)."""
        return self.gateway.clock.now()

    def audit(self, action: str, target: str | None = None, **detail) -> None:
        """Record the action in the current transaction (it commits with the change)."""
        accounts.audit(
            self.session,
            self.actor,
            action,
            self.now(),
            target=target,
            detail=detail or None,
            address=self.address,
        )

    def commit(self, *topics: str) -> None:
        """Commit, then make this process's caches of the topics re-read."""
        self.session.commit()
        self.forget(*topics)

    def release(self) -> None:
        """Commit and hand the connection back: nothing is held during an upstream call."""
        self.session.commit()
        self.session.close()

    def forget(self, *topics: str) -> None:
        """Make this process's caches of the topics re-read."""
        gw = self.gateway
        if KEYS in topics:
            gw.keys.forget()
            gw.profiles.forget()
            gw.routes.forget()
        if CALLERS in topics or BUDGETS in topics:
            gw.callers.forget()
        if BUDGETS in topics and getattr(gw, "alerts", None) is not None:
            gw.alerts.forget()
        if PRICES in topics:
            gw.prices.forget()
