"""Prometheus metrics with prometheus_client: the sink the gateway reports to, and the
gauges read at scrape time (keys by state, journal backlog, scheduled jobs).

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a folder before any
worker imports prometheus_client: each worker's counters then live in its own mmap file
there, and a scrape (served by whichever worker) sums them all. Without it (one process:
`flask run`, the tests) the counters are this process's own registry.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import select

from gateway import periods, store
from gateway.jobs import scheduler
from gateway.keys import selection
from gateway.ledger import journal
from gateway.metrics import Sink

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger(__name__)
# Whole requests (streams included) run from milliseconds to minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)

_registry = CollectorRegistry()  # this process's metrics, scraped as they are in one process
REQUESTS = Counter(
    "keyrelay_requests",
    "Client requests booked, by dialect (endpoint), profile, model and HTTP status.",
    ["dialect", "profile", "model", "status"],
    registry=_registry,
)
TOKENS = Counter(
    "keyrelay_tokens",
    "Tokens of booked requests (kind: input or output).",
    ["dialect", "profile", "model", "kind"],
    registry=_registry,
)
COST = Counter(
    "keyrelay_cost_usd",
    "Cost of booked requests in US dollars (as priced in the request log).",
    ["dialect", "profile", "model"],
    registry=_registry,
)
LATENCY = Histogram(
    "keyrelay_request_duration_seconds",
    "Time from a request's arrival to its booking (a stream: its end).",
    ["dialect", "model"],
    buckets=LATENCY_BUCKETS,
    registry=_registry,
)
TTFT = Histogram(
    "keyrelay_time_to_first_token_seconds",
    "Time from a streamed request's arrival to its first token.",
    ["dialect", "model"],
    buckets=TTFT_BUCKETS,
    registry=_registry,
)
ATTEMPTS = Counter(
    "keyrelay_upstream_attempts",
    "Upstream attempts by provider, provider key id and outcome.",
    ["provider", "key", "outcome"],
    registry=_registry,
)
REJECTIONS = Counter(
    "keyrelay_limiter_rejections",
    "Requests or attempts a limit refused (scope: client_key or provider_key).",
    ["scope", "limit"],
    registry=_registry,
)
JOB_RUNS = Counter(
    "keyrelay_job_runs",
    "Scheduled job runs since the server started (result: ok or error).",
    ["job", "result"],
    registry=_registry,
)


class _RequestSeries:
    """The labelled children one (dialect, profile, model, status) updates: looked up
    once, since `labels()` costs more than the increments themselves."""

    def __init__(self, dialect: str, profile: str, model: str, status: int) -> None:
        self.count = REQUESTS.labels(dialect, profile, model, str(status))
        self.input = TOKENS.labels(dialect, profile, model, "input")
        self.output = TOKENS.labels(dialect, profile, model, "output")
        self.cost = COST.labels(dialect, profile, model)
        self.latency = LATENCY.labels(dialect, model)
        self.ttft = TTFT.labels(dialect, model)

    def observe(self, rec) -> None:
        self.count.inc()
        usage = rec.usage
        if usage.input_tokens:
            self.input.inc(usage.input_tokens)
        if usage.output_tokens:
            self.output.inc(usage.output_tokens)
        if rec.cost_micros:
            self.cost.inc(rec.cost_micros / 1_000_000)
        self.latency.observe(rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            self.ttft.observe(rec.ttft_ms / 1000)


class PrometheusSink(Sink):
    """Reports to the prometheus_client metrics above."""

    def __init__(self) -> None:
        self._requests: dict[tuple, _RequestSeries] = {}
        self._attempts: dict[tuple, object] = {}

    def request(self, rec, profile: str) -> None:
        key = (rec.endpoint, profile, rec.model or "", rec.status_code)
        try:
            series = self._requests.get(key)
            if series is None:
                series = self._requests[key] = _RequestSeries(*key)
            series.observe(rec)
        except OSError:  # its metric files gone (a folder wiped): never fail the request
            log.exception("metrics: request not counted")

    def attempt(self, provider: str, key_id: int, outcome: str) -> None:
        key = (provider, key_id, outcome)
        try:
            child = self._attempts.get(key)
            if child is None:  # the key's id, never anything of its secret
                child = self._attempts[key] = ATTEMPTS.labels(provider, str(key_id), outcome)
            child.inc()
        except OSError:
            log.exception("metrics: attempt not counted")

    def rejected(self, scope: str, limit: str) -> None:
        REJECTIONS.labels(scope, limit).inc()

    def job_ran(self, job: str, ok: bool) -> None:
        JOB_RUNS.labels(job, "ok" if ok else "error").inc()


class StateCollector:
    """Gauges computed when scraped, from what every worker shares (the database and the
    journal folder): so they are right whichever worker serves the scrape."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway

    def describe(self):
        return []  # registering must not run the queries

    def collect(self):
        yield self._keys()
        yield from self._journal()
        yield from self._jobs()

    def _keys(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "keyrelay_provider_keys",
            "Provider keys by profile, provider and state (as the proxy sees them now).",
            labels=["profile", "provider", "state"],
        )
        now = self.gateway.clock.now()
        today = periods.local_day(now)
        counts: dict[tuple[str, str, str], int] = {}
        with self.gateway.engine.connect() as conn:
            profiles = conn.execute(select(store.profiles_t.c.id, store.profiles_t.c.name))
            for profile_id, name in profiles.all():
                for key in store.load_keys(conn, profile_id, today):
                    labels = (name, key.provider, selection.effective_status(key, now))
                    counts[labels] = counts.get(labels, 0) + 1
        for labels, count in sorted(counts.items()):
            family.add_metric(list(labels), count)
        return family

    def _journal(self):
        books = self.gateway.books
        segments = journal.live_segments(books.journal_dir, books.database)
        size = sum(journal.backlog_bytes(path) for path in segments)
        yield GaugeMetricFamily(
            "keyrelay_journal_backlog_bytes",
            "Bytes of booked requests in the journals not yet committed to the database.",
            value=size,
        )
        yield GaugeMetricFamily(
            "keyrelay_journal_backlog_segments",
            "Journal segments holding requests not yet committed to the database.",
            value=len(segments),
        )

    def _jobs(self):
        last_run = GaugeMetricFamily(
            "keyrelay_job_last_run_timestamp_seconds",
            "When each scheduled job last ran (Unix time).",
            labels=["job"],
        )
        last_ok = GaugeMetricFamily(
            "keyrelay_job_last_success_timestamp_seconds",
            "When each scheduled job last ran without an error (Unix time).",
            labels=["job"],
        )
        failed = GaugeMetricFamily(
            "keyrelay_job_last_run_failed",
            "1 when a scheduled job's last run ended in an error, else 0.",
            labels=["job"],
        )
        for name, run in sorted(scheduler.last_runs(self.gateway.engine).items()):
            if run.last_run_at is not None:
                last_run.add_metric([name], _timestamp(run.last_run_at))
                failed.add_metric([name], 1 if run.last_error else 0)
            if run.last_ok_at is not None:
                last_ok.add_metric([name], _timestamp(run.last_ok_at))
        yield from (last_run, last_ok, failed)


def _timestamp(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def multiprocess_dir() -> str | None:
    """The folder the workers' metric files are in, when serving with several processes."""
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(gateway) -> tuple[bytes, str]:
    """The text a scrape gets: every process's counters, and the gauges read now."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_registry)
    registry.register(StateCollector(gateway))
    return generate_latest(registry), CONTENT_TYPE_LATEST
