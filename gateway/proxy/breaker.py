"""A circuit breaker per upstream (seed 001): when attempts to one upstream host fail
(5xx, time-outs, refused or broken connections) `failures` times within `window` seconds,
every key of that host is passed over for `cooldown` seconds; then one attempt (the
half-open probe) decides: an answer closes the circuit, a failure opens it again. Keys of
other upstreams keep serving. The state is this worker's (each worker learns on its own
traffic, within a few requests); the clock is the gateway's."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from gateway.policy import Outcome

FAILURES = {Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION_ERROR, Outcome.BAD_RESPONSE}


def upstream_of(base_url: str) -> str:
    """The upstream a key talks to: scheme, host and port of its base URL."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class _Circuit:
    failures: deque = field(default_factory=deque)
    open_until: float | None = None
    probing: bool = False


class Breaker:
    def __init__(self, clock, failures: int, window: float, cooldown: float) -> None:
        self.clock = clock
        self.threshold, self.window, self.cooldown = failures, window, cooldown
        self._circuits: dict[str, _Circuit] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def allow(self, base_url: str) -> bool:
        """Whether a key of this upstream may be tried now (the half-open probe once)."""
        if self.threshold <= 0:
            return True
        circuit = self._circuits.get(upstream_of(base_url))
        if circuit is None or circuit.open_until is None:
            return True
        with self._lock:
            if self._now() < circuit.open_until or circuit.probing:
                return False
            circuit.probing = True
            return True

    def release(self, base_url: str) -> None:
        """A probe that made no attempt after all: the next request may probe."""
        circuit = self._circuits.get(upstream_of(base_url))
        if circuit is not None:
            circuit.probing = False

    def record(self, base_url: str, outcome: Outcome) -> None:
        """An attempt's outcome: failures open the circuit; any answer closes it."""
        if self.threshold <= 0:
            return
        host = upstream_of(base_url)
        now = self._now()
        with self._lock:
            circuit = self._circuits.get(host)
            if outcome not in FAILURES:
                if circuit is not None:
                    del self._circuits[host]  # the upstream answered: closed
                return
            circuit = self._circuits.setdefault(host, _Circuit())
            if circuit.probing:  # the probe failed: open again
                circuit.probing, circuit.failures = False, deque()
                circuit.open_until = now + self.cooldown
                return
            circuit.failures.append(now)
            while circuit.failures and circuit.failures[0] <= now - self.window:
                circuit.failures.popleft()
            if len(circuit.failures) >= self.threshold:
                circuit.open_until, circuit.failures = now + self.cooldown, deque()

    def state(self, base_url: str) -> dict | None:
        """`{"state": "open" | "half_open", "until": ISO time}` of the key's upstream, or
        None while its circuit is closed."""
        circuit = self._circuits.get(upstream_of(base_url))
        if circuit is None or circuit.open_until is None:
            return None
        until = datetime.fromtimestamp(circuit.open_until, UTC)
        half_open = self._now() >= circuit.open_until
        return {"state": "half_open" if half_open else "open", "until": until.isoformat()}
