"""What a request cost (F42), in integer micro-dollars.

Prices come from genai-prices (pydantic's maintained price table, shipped as a snapshot in
the package: no network at run time), or from an admin's per-model override. A
genai-prices lookup costs ~0.27 ms, too much for every request, so each (provider, model)
is looked up once and its per-token prices kept: a price in USD per million tokens is
exactly a price in micro-dollars per token, so a request costs
`input_tokens × input_price + output_tokens × output_price` micro-dollars, computed in
Decimal and rounded half-up once per request (at most half a micro-dollar off per request).
Models with tiered prices (a different price past some context length) are computed by
genai-prices itself on every request.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from sqlalchemy import Engine, func, select

from gateway.errors import database_down
from models import PriceOverride, ProviderKey, UsageDaily

log = logging.getLogger(__name__)
REFRESH_SECONDS = 60.0
_ONE = Decimal(1)


@dataclass(frozen=True)
class Price:
    """USD per million tokens (= micro-dollars per token) and where it came from."""

    input: Decimal
    output: Decimal
    source: str  # "override", "genai-prices"
    model: str  # the price table's model id (may differ from the requested name)
    exact: object | None = None  # a genai-prices ModelPrice for tiered prices
    # Prompt-cache writes and reads (None: priced as plain input).
    cache_write: Decimal | None = None
    cache_read: Decimal | None = None
    # USD for every request, whatever its tokens (an admin's flat price), or None.
    per_request: Decimal | None = None

    def micros(
        self, input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0
    ) -> int:
        """`input_tokens` counts every prompt token; the cached ones are priced apart."""
        if self.exact is not None:
            from genai_prices import Usage

            usage = Usage(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_write_tokens=cache_write,
                cache_read_tokens=cache_read,
            )
            total = self.exact.calc_price(usage)["total_price"] * 1_000_000
        else:
            plain = input_tokens - cache_write - cache_read
            total = (
                plain * self.input
                + cache_write * (self.input if self.cache_write is None else self.cache_write)
                + cache_read * (self.input if self.cache_read is None else self.cache_read)
                + output_tokens * self.output
            )
        if self.per_request is not None:
            total += self.per_request * 1_000_000
        return int(total.quantize(_ONE, rounding=ROUND_HALF_UP))


def parse_price(field: str, value) -> Decimal:
    """A non-negative decimal USD-per-million-tokens price; ValueError names the field."""
    try:
        price = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"'{field}' must be a decimal number of USD per million tokens.") from None
    if not price.is_finite() or price < 0 or price > 1_000_000:
        raise ValueError(f"'{field}' must be between 0 and 1000000 USD per million tokens.")
    return price


def parse_per_request(value) -> Decimal | None:
    """A flat USD price per request (None or "" for none); ValueError names the field."""
    if value is None or value == "":
        return None
    try:
        price = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError("'per_request' must be a decimal number of USD per request.") from None
    if not price.is_finite() or price < 0 or price > 1_000_000:
        raise ValueError("'per_request' must be between 0 and 1000000 USD per request.")
    if price * 1_000_000 != (price * 1_000_000).to_integral_value():
        raise ValueError("'per_request' has more than six decimals (micro-dollars).")
    return price


def from_table(provider: str | None, model: str) -> Price | None:
    """The genai-prices price of a model (None if it does not know the model)."""
    from genai_prices import Usage, calc_price

    for provider_id in ([provider] if provider else []) + [None]:
        try:
            found = calc_price(
                Usage(input_tokens=0, output_tokens=0), model, provider_id=provider_id
            )
        except LookupError:
            continue
        price = found.model_price
        if isinstance(price.input_mtok, Decimal) and isinstance(price.output_mtok, Decimal):
            write, read = price.cache_write_mtok, price.cache_read_mtok
            return Price(
                price.input_mtok,
                price.output_mtok,
                "genai-prices",
                found.model.id,
                cache_write=write if isinstance(write, Decimal) else None,
                cache_read=read if isinstance(read, Decimal) else None,
            )
        return Price(Decimal(0), Decimal(0), "genai-prices", found.model.id, exact=price)
    return None


class Prices:
    """Cached price lookups for the proxy; overrides re-read every minute or on forget()."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._table: dict[tuple[str | None, str], Price | None] = {}
        self._overrides: dict[str, Price] = {}
        self._overrides_at = float("-inf")

    def forget(self) -> None:
        self._overrides_at = float("-inf")

    def warm_up(self) -> None:
        """Load genai-prices' table now (~0.3 s) rather than in the first request."""
        from genai_prices import data_snapshot

        data_snapshot.get_snapshot()

    def _current_overrides(self) -> dict[str, Price]:
        if time.monotonic() - self._overrides_at < REFRESH_SECONDS:
            return self._overrides
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(
                        PriceOverride.model,
                        PriceOverride.input_per_mtok,
                        PriceOverride.output_per_mtok,
                        PriceOverride.per_request,
                    )
                ).all()
        except Exception as exc:
            if not database_down(exc):
                raise
            # The database is down: the overrides as last read price what is booked (an
            # answer already given must still be booked).
            log.warning("price overrides not re-read, the database is unusable: %s", exc)
            self._overrides_at = time.monotonic()
            return self._overrides
        self._overrides = {
            model: Price(
                Decimal(i),
                Decimal(o),
                "override",
                model,
                per_request=Decimal(flat) if flat else None,
            )
            for model, i, o, flat in rows
        }
        self._overrides_at = time.monotonic()
        return self._overrides

    def price(self, provider: str | None, model: str) -> Price | None:
        """The price that applies to the model now, or None when nobody knows it."""
        override = self._current_overrides().get(model)
        if override is not None:
            return override
        key = (provider, model)
        if key not in self._table:
            with self._lock:
                if key not in self._table:
                    found = from_table(provider, model)
                    if found is None:
                        log.warning("no price known for model %r (provider %r)", model, provider)
                    self._table[key] = found
        return self._table[key]

    def pricer(self, model: str) -> str | None:
        """The genai-prices provider whose price the model has ("": the first that knows
        it, or an override), or None when nothing prices it."""
        from gateway.providers import PRICE_PROVIDERS  # the providers import this module

        for provider in ("", *sorted({p for p in PRICE_PROVIDERS.values() if p})):
            if self.price(provider or None, model) is not None:
                return provider
        return None

    def effective(self, model: str, providers=()) -> Price | None:
        """The price the model's requests get: without a provider, else under the providers
        whose keys served it (as each request was priced), else the first that knows it."""
        for provider in (None, *providers):
            found = self.price(provider, model)
            if found is not None:
                return found
        pricer = self.pricer(model)
        return None if pricer is None else self.price(pricer or None, model)

    def known(self, model: str) -> bool:
        """Whether the model has a price (an override, genai-prices' or a flat one)."""
        return self.pricer(model) is not None

    def cost_micros(self, provider: str | None, model: str | None, usage) -> int:
        """The request's cost; 0 when its model has no known price."""
        if not model or not usage.total_tokens:
            return 0
        price = self.price(provider, model)
        if price is None:
            return 0
        return price.micros(
            usage.input_tokens, usage.output_tokens, usage.cache_write, usage.cache_read
        )


def unpriced_asked(session, prices: Prices, aliases: set[str]) -> list[dict]:
    """The models asked for that have no price (route aliases aside), most asked first:
    model, times asked and the last day asked (from the daily usage roll-up)."""
    rows = session.execute(
        select(UsageDaily.model, func.sum(UsageDaily.requests), func.max(UsageDaily.day))
        .where(UsageDaily.model != "")
        .group_by(UsageDaily.model)
    ).all()
    found = [
        {"model": model, "asked": int(asked or 0), "last_asked": last}
        for model, asked, last in rows
        if model not in aliases and not prices.known(model)
    ]
    return sorted(found, key=lambda row: (-row["asked"], row["model"]))


def served_by(session) -> dict[str, list[str]]:
    """model → the price providers of the keys that served it (from the daily roll-up)."""
    from gateway.providers import PRICE_PROVIDERS  # the providers import this module

    rows = session.execute(
        select(UsageDaily.model, ProviderKey.provider)
        .join(ProviderKey, ProviderKey.id == UsageDaily.provider_key_id)
        .where(UsageDaily.model != "")
        .distinct()
    ).all()
    served: dict[str, list[str]] = {}
    for model, kind in rows:
        priced_as = PRICE_PROVIDERS.get(kind, kind)
        if priced_as and priced_as not in served.setdefault(model, []):
            served[model].append(priced_as)
    return {model: sorted(kinds) for model, kinds in served.items()}


def describe(model: str, price: Price | None) -> dict:
    """A model's effective price as the admin API and dashboard show it."""
    if price is None:
        return {
            "model": model,
            "source": None,
            "input_per_mtok": None,
            "output_per_mtok": None,
            "per_request": None,
        }
    tiered = price.exact is not None
    return {
        "model": model,
        "source": price.source,
        "matched_model": price.model,
        "input_per_mtok": None if tiered else str(price.input),
        "output_per_mtok": None if tiered else str(price.output),
        "per_request": None if price.per_request is None else str(price.per_request),
        "tiered": tiered,
    }


def set_override(session, model: str, data: object, actor: str, now) -> PriceOverride:
    """Create or change a model's override; ValueError names a bad field."""
    if not isinstance(data, dict):
        raise ValueError("The request body must be a JSON object.")
    if not model or len(model) > 128:
        raise ValueError("'model' must be 1 to 128 characters.")
    flat = parse_per_request(data.get("per_request"))
    # A flat price alone is a price: the token prices then default to nothing.
    default = "0" if flat is not None else None
    prices = {
        f: parse_price(f, default if data.get(f) in (None, "") else data.get(f))
        for f in ("input_per_mtok", "output_per_mtok")
    }
    row = session.scalar(select(PriceOverride).where(PriceOverride.model == model))
    if row is None:
        row = PriceOverride(model=model)
        session.add(row)
    row.input_per_mtok = str(prices["input_per_mtok"])
    row.output_per_mtok = str(prices["output_per_mtok"])
    row.per_request = None if flat is None else str(flat)
    row.updated_by, row.updated_at = actor, now
    return row
