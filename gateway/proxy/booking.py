"""Booking: the only caller of accounting. A finished request is priced, its ticket
settled (tokens into the windows, cost into the budget), its rows journaled and the key
cache told; budget alerts look at it afterwards."""

from __future__ import annotations

from gateway import metrics
from gateway.keys.cache import KeyCache, apply_booking, needs_touch
from gateway.ledger import accounting
from gateway.ledger.accounting import RequestRecord
from gateway.ledger.books import Books
from gateway.ledger.pricing import Prices
from gateway.providers import PRICE_PROVIDERS
from gateway.proxy.admission import Ticket
from gateway.store import KeyRow


class Booking:
    def __init__(self, books: Books, prices: Prices, keys: KeyCache, clock, profiles=None) -> None:
        self.books, self.prices, self.keys, self.clock = books, prices, keys, clock
        self.profiles = profiles  # names the profile in metrics (candidates.Profiles)
        self.alerts = None  # budget alerts (alerts.py), attached by create_app when set up

    def book(
        self,
        rec: RequestRecord,
        ticket: Ticket | None = None,
        key: KeyRow | None = None,
        strict: bool = False,
    ) -> None:
        """Write a finished request to the books (once), and mirror it in the key cache.
        With `strict` a journal that cannot take it raises JournalFull, nothing booked."""
        first = not rec.recorded
        if first:
            priced_as = PRICE_PROVIDERS.get(rec.provider, rec.provider)
            rec.cost_micros = self.prices.cost_micros(priced_as, rec.model, rec.usage)
        now = self.clock.now()
        ok = key is not None and 200 <= rec.status_code < 300
        touch = ok and needs_touch(key, now)
        accounting.record(self.books, rec, now, touch_key=touch, strict=strict)
        if ticket is not None:
            ticket.settle(rec.usage.total_tokens, rec.cost_micros)
        if first:
            metrics.sink.request(rec, self._profile_name(rec.profile_id))
        if key is not None:
            apply_booking(key, rec.usage.total_tokens, rec.cost_micros, touch, now)
            if touch:
                self.keys.touched(key.id, now)
        if self.alerts is not None:
            self.alerts.after_booking(rec)

    def _profile_name(self, profile_id: int | None) -> str:
        if profile_id is None or self.profiles is None:
            return ""
        return self.profiles.name_of(profile_id)
