"""Prometheus metrics: the sink the gateway reports to, and the gauges read at scrape time
(keys by state, journal backlog, scheduled jobs).

Counting is on the request path, so it is plain memory writes: each process keeps its
values in a file of prometheus_client's multiprocess format (`counter_<pid>.db`,
`histogram_<pid>.db`), mapped into memory, and an increment adds to a float slot of that
map (found once per label set), with no lock of the library's, no system call and no
formatting. prometheus_client's own values took ~22 µs a request this way (a lock, a
getpid and a pack per increment; bench/metrics_cost.py), these ~1 µs. A scrape, served by
whichever worker, reads and sums every process's files with prometheus_client's
multiprocess collector. Under gunicorn, gunicorn.conf.py names the folder
(PROMETHEUS_MULTIPROC_DIR) and empties it at start; a process without one (`flask run`,
the tests) keeps its files in a private temporary folder.
"""

from __future__ import annotations

import atexit
import logging
import mmap
import os
import shutil
import struct
import tempfile
from bisect import bisect_left
from datetime import UTC, datetime

from gevent import monkey
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import _read_all_values, mmap_key
from prometheus_client.utils import floatToGoString
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
# A real lock even under gevent: nothing inside it can switch greenlets, and the
# scheduler's jobs may run on OS threads (gthread workers too).
_lock = monkey.get_original("_thread", "allocate_lock")()

# name: (help, label names[, buckets])
COUNTERS = {
    "keyrelay_requests": (
        "Client requests booked, by dialect (endpoint), profile, model and HTTP status.",
        ("dialect", "profile", "model", "status"),
    ),
    "keyrelay_tokens": (
        "Tokens of booked requests (kind: input or output).",
        ("dialect", "profile", "model", "kind"),
    ),
    "keyrelay_cost_usd": (
        "Cost of booked requests in US dollars (as priced in the request log).",
        ("dialect", "profile", "model"),
    ),
    "keyrelay_upstream_attempts": (
        "Upstream attempts by provider, provider key id and outcome.",
        ("provider", "key", "outcome"),
    ),
    "keyrelay_limiter_rejections": (
        "Requests or attempts a limit refused (scope: client_key or provider_key).",
        ("scope", "limit"),
    ),
    "keyrelay_job_runs": (
        "Scheduled job runs since the server started (result: ok or error).",
        ("job", "result"),
    ),
}
HISTOGRAMS = {
    "keyrelay_request_duration_seconds": (
        "Time from a request's arrival to its booking (a stream: its end).",
        ("dialect", "model"),
        LATENCY_BUCKETS,
    ),
    "keyrelay_time_to_first_token_seconds": (
        "Time from a streamed request's arrival to its first token.",
        ("dialect", "model"),
        TTFT_BUCKETS,
    ),
}
_INITIAL_SIZE = 1 << 16
_header = struct.Struct("i")


class ValueFile:
    """One process's values of one metric type, in prometheus_client's mmap file layout
    (a used-bytes header, then entries: key length, key, padding, value, timestamp).
    `values` is the map seen as floats; `slot(key)` is the index of a key's value."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a+b")  # noqa: SIM115 - mapped for the process's life
        if os.fstat(self._file.fileno()).st_size < _INITIAL_SIZE:
            self._file.truncate(_INITIAL_SIZE)
        self._map(os.fstat(self._file.fileno()).st_size)
        # A file already there is a dead process's whose pid this one got: its values stay
        # (they are in the sum) and this process adds to them.
        self._used = _header.unpack_from(self._mmap, 0)[0] or 8
        self._slots = {key: pos // 8 for key, _, _, pos in _read_all_values(self._mmap, self._used)}
        _header.pack_into(self._mmap, 0, self._used)

    def _map(self, size: int) -> None:
        self._mmap = mmap.mmap(self._file.fileno(), size)
        self._bytes = memoryview(self._mmap)
        self.values = self._bytes.cast("d")

    def slot(self, key: str) -> int:
        """The index in `values` of the key's value (its entry written the first time)."""
        found = self._slots.get(key)
        if found is not None:
            return found
        encoded = key.encode()
        padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
        entry = struct.pack(f"i{len(padded)}sdd", len(encoded), padded, 0.0, 0.0)
        if self._used + len(entry) > len(self._mmap):
            self._grow(self._used + len(entry))
        self._mmap[self._used : self._used + len(entry)] = entry
        self._used += len(entry)
        _header.pack_into(self._mmap, 0, self._used)  # after the entry: readers trust it
        found = self._slots[key] = (self._used - 16) // 8
        return found

    def close(self) -> None:
        """Unmap and close the file (its values stay in it)."""
        self.values.release()
        self._bytes.release()
        self._mmap.close()
        self._file.close()

    def _grow(self, needed: int) -> None:
        size = len(self._mmap)
        while size < needed:
            size *= 2
        self.values.release()
        self._bytes.release()
        self._mmap.close()
        self._file.truncate(size)
        self._map(size)


class _Histogram:
    """The slots of one histogram label set: its sum and one per bucket (not cumulative,
    as prometheus_client's multiprocess files keep them)."""

    __slots__ = ("bounds", "sum", "buckets")

    def __init__(self, values: ValueFile, name: str, labels: tuple[str, ...]) -> None:
        help_text, names, bounds = HISTOGRAMS[name]
        self.bounds = (*(float(b) for b in bounds), float("inf"))
        self.sum = values.slot(mmap_key(name, name + "_sum", names, labels, help_text))
        self.buckets = [
            values.slot(
                mmap_key(
                    name, name + "_bucket", (*names, "le"), (*labels, floatToGoString(b)), help_text
                )
            )
            for b in self.bounds
        ]


class _RequestSeries:
    """The slots one (dialect, profile, model, status) adds to, found once."""

    __slots__ = ("count", "input", "output", "cost", "latency", "ttft")

    def __init__(self, files: _Files, dialect: str, profile: str, model: str, status: int):
        counter = files.counter
        self.count = counter("keyrelay_requests", dialect, profile, model, str(status))
        self.input = counter("keyrelay_tokens", dialect, profile, model, "input")
        self.output = counter("keyrelay_tokens", dialect, profile, model, "output")
        self.cost = counter("keyrelay_cost_usd", dialect, profile, model)
        self.latency = _Histogram(
            files.histograms, "keyrelay_request_duration_seconds", (dialect, model)
        )
        self.ttft = _Histogram(
            files.histograms, "keyrelay_time_to_first_token_seconds", (dialect, model)
        )


class _Files:
    """This process's two value files, made when first counted into."""

    def __init__(self, folder: str) -> None:
        pid = os.getpid()
        self.counters = ValueFile(os.path.join(folder, f"counter_{pid}.db"))
        self.histograms = ValueFile(os.path.join(folder, f"histogram_{pid}.db"))
        self.requests: dict[tuple, _RequestSeries] = {}
        self.attempts: dict[tuple, int] = {}
        self.counts: dict[tuple, int] = {}

    def close(self) -> None:
        """Close both files (this process's copies of them; their values stay)."""
        self.counters.close()
        self.histograms.close()

    def counter(self, name: str, *labels: str) -> int:
        """The slot of a counter's label set."""
        help_text, names = COUNTERS[name]
        return self.counters.slot(mmap_key(name, name + "_total", names, labels, help_text))


_files: _Files | None = None
_private: str | None = None  # the folder of a process without PROMETHEUS_MULTIPROC_DIR


def _here() -> _Files:
    """This process's value files (after a fork, the child's own)."""
    global _files
    if _files is None:
        _files = _Files(metrics_folder())
    return _files


def _forget() -> None:
    """After a fork: the child counts into files of its own; its copies of the parent's
    are closed here (left to the garbage collector, each was an unclosed-file warning)."""
    global _files
    inherited, _files = _files, None
    if inherited is not None:
        inherited.close()


os.register_at_fork(after_in_child=_forget)


class PrometheusSink(Sink):
    """Reports into this process's value files."""

    def request(self, rec, profile: str) -> None:
        key = (rec.endpoint, profile, rec.model or "", rec.status_code)
        try:
            files = _files or _here()
            series = files.requests.get(key)
            if series is None:
                series = files.requests[key] = _RequestSeries(files, *key)
        except OSError:  # the metrics folder gone: never fail the request
            log.exception("metrics: request not counted")
            return
        usage, counts, timings = rec.usage, files.counters.values, files.histograms.values
        latency = series.latency
        seconds = rec.latency_ms / 1000
        with _lock:
            counts[series.count] += 1
            counts[series.input] += usage.input_tokens
            counts[series.output] += usage.output_tokens
            counts[series.cost] += rec.cost_micros / 1_000_000
            timings[latency.sum] += seconds
            timings[latency.buckets[bisect_left(latency.bounds, seconds)]] += 1
            if rec.ttft_ms is not None:
                ttft, seconds = series.ttft, rec.ttft_ms / 1000
                timings[ttft.sum] += seconds
                timings[ttft.buckets[bisect_left(ttft.bounds, seconds)]] += 1

    def attempt(self, provider: str, key_id: int, outcome: str) -> None:
        try:
            files = _files or _here()
            slot = files.attempts.get((provider, key_id, outcome))
            if slot is None:  # the key's id, never anything of its secret
                slot = files.attempts[provider, key_id, outcome] = files.counter(
                    "keyrelay_upstream_attempts", provider, str(key_id), outcome
                )
        except OSError:
            log.exception("metrics: attempt not counted")
            return
        with _lock:
            files.counters.values[slot] += 1

    def rejected(self, scope: str, limit: str) -> None:
        self._count("keyrelay_limiter_rejections", scope, limit)

    def job_ran(self, job: str, ok: bool) -> None:
        self._count("keyrelay_job_runs", job, "ok" if ok else "error")

    def _count(self, name: str, *labels: str) -> None:
        """Add 1 to a counter's label set (the rarer ones)."""
        try:
            files = _files or _here()
            slot = files.counts.get((name, *labels))
            if slot is None:
                slot = files.counts[name, *labels] = files.counter(name, *labels)
        except OSError:
            log.exception("metrics: %s not counted", name)
            return
        with _lock:
            files.counters.values[slot] += 1


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


def metrics_folder() -> str:
    """Where this process's value files go: the workers' shared folder, or a private one."""
    global _private
    shared = multiprocess_dir()
    if shared:
        return shared
    if _private is None or not os.path.isdir(_private):
        _private = tempfile.mkdtemp(prefix="keyrelay-metrics-")
        atexit.register(shutil.rmtree, _private, ignore_errors=True)
    return _private


def exposition(gateway) -> tuple[bytes, str]:
    """The text a scrape gets: every process's counters, and the gauges read now."""
    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry, path=metrics_folder())
    registry.register(StateCollector(gateway))
    return generate_latest(registry), CONTENT_TYPE_LATEST
