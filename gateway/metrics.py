"""What the gateway reports to a metrics system: one sink per process, called where the
facts are already at hand (booking, the attempt loop, admission, the scheduler).

The base sink reports nothing (KEYRELAY_METRICS off); gateway/prometheus.py implements
it with prometheus_client. The gateway only ever calls `metrics.sink`, so it neither
imports nor knows the metrics library.
"""

from __future__ import annotations


class Sink:
    """Metrics off: every report is a no-op."""

    def request(self, rec, profile: str) -> None:
        """A booked client request (a RequestRecord) of the named profile."""

    def attempt(self, provider: str, key_id: int, outcome: str) -> None:
        """One upstream attempt with a provider key and its outcome."""

    def rejected(self, scope: str, limit: str) -> None:
        """A limit refused: scope `client_key` or `provider_key`; limit rpm/tpm/parallel/budget."""

    def job_ran(self, job: str, ok: bool) -> None:
        """A scheduled job ran (ok: without an error)."""


sink = Sink()


def install(new: Sink | None) -> None:
    """Report to `new` from now on in this process (None: report nothing)."""
    global sink
    sink = new if new is not None else Sink()
