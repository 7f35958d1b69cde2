"""The in-process scheduler (F33): one leader among the workers, the job table, catch-up.

gunicorn runs several worker processes, each with its own create_app(). Each tries a
non-blocking `flock` on `instance/scheduler.lock`; the one that gets it runs APScheduler
with the jobs below, the others try again every minute. The kernel drops the lock with
the process that held it, so when the leader dies another worker takes over within a
minute, and no two processes on the host ever run the jobs at once.

With KEYRELAY_REDIS_URL, the holder of the file lock must also take a lease in Redis
(redis_shared.Lease: a key with an expiry, renewed every third of it): one process across
every host leads. A leader that cannot renew (Redis away, lease lost) stops its jobs and
gives the file lock back; followers then try every third of the lease, so the jobs move to
another host within the lease (and one try) after their leader dies.

Every run is stored in `job_runs`. When a process becomes leader it compares each job's
last good run with its schedule: a job whose time came while nothing ran (the server was
down across midnight, the leader died) runs once, at once. The jobs are idempotent and
counters are period-keyed (housekeeping.py), so a late or repeated run changes nothing
that a punctual one would not have.

`flask` commands (`flask jobs run`, `flask init-db`, ...) never take part in the election.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import metrics, periods
from gateway.jobs import backup, housekeeping, usage_sync
from models import JobRun

log = logging.getLogger(__name__)
# APScheduler logs every run at INFO; the jobs log what they did themselves.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

RETRY_SECONDS = 60.0  # how often a follower tries to become the leader
LOCK_FILE = "scheduler.lock"  # in the instance folder


@dataclass(frozen=True)
class Job:
    """One scheduled job: its work, and when it runs (a cron rule in KEYRELAY_TIMEZONE, or
    an interval in minutes, or the name of the setting holding them)."""

    name: str
    run: Callable[..., dict]
    schedule: str
    cron: dict | None = None
    minutes: float | str | None = None
    switch: str | None = None  # a setting that must be non-zero for the job to run

    def trigger(self, config: Mapping) -> CronTrigger | IntervalTrigger | None:
        """The APScheduler trigger; None when the job is switched off (0 minutes, or its
        switch setting 0)."""
        if self.switch is not None and not config.get(self.switch):
            return None
        if self.cron is not None:
            return CronTrigger(timezone=periods.zone(), **self.cron)
        minutes = config[self.minutes] if isinstance(self.minutes, str) else self.minutes
        if not minutes or minutes <= 0:
            return None
        return IntervalTrigger(minutes=minutes, timezone=periods.zone())

    @staticmethod
    def due(trigger, last_ok: datetime | None, now: datetime) -> bool:
        """Whether a run was due since the last good one: the catch-up rule."""
        if last_ok is None:
            return True
        if isinstance(trigger, IntervalTrigger):
            return now - last_ok >= trigger.interval
        return trigger.get_next_fire_time(None, last_ok + timedelta(microseconds=1)) <= now

    @staticmethod
    def next_run(trigger, last_ok: datetime | None, now: datetime) -> datetime:
        """When the job runs next, as any worker can compute it."""
        if isinstance(trigger, IntervalTrigger):
            return now if last_ok is None else max(now, last_ok + trigger.interval)
        return trigger.get_next_fire_time(None, now).astimezone(UTC)


JOBS = (
    Job("daily-reset", housekeeping.daily_reset, "00:00 every day", cron={"hour": 0, "minute": 0}),
    Job(
        "monthly-reset",
        housekeeping.monthly_reset,
        "00:00 on the 1st of each month",
        cron={"day": 1, "hour": 0, "minute": 0},
    ),
    Job("key-expiry", housekeeping.expire_keys, "every hour at :00", cron={"minute": 0}),
    Job(
        "key-revalidation",
        housekeeping.revalidate_keys,
        "every KEYRELAY_REVALIDATE_MINUTES",
        minutes="REVALIDATE_MINUTES",
    ),
    Job("log-retention", housekeeping.prune_logs, "03:00 every day", cron={"hour": 3, "minute": 0}),
    Job("budget-alerts", housekeeping.budget_alerts, "every 5 minutes", minutes=5),
    Job(
        "credits-sync",
        usage_sync.credits_sync,
        "every KEYRELAY_CREDITS_SYNC_MINUTES",
        minutes="CREDITS_SYNC_MINUTES",
    ),
    Job(
        "backup",
        backup.scheduled_backup,
        "02:30 every day, if KEYRELAY_BACKUP_KEEP",
        cron={"hour": 2, "minute": 30},
        switch="BACKUP_KEEP",
    ),
)
BY_NAME = {job.name: job for job in JOBS}
# One run of a job at a time in this process (a catch-up and a regular run, or `jobs run`).
_running = {job.name: threading.Lock() for job in JOBS}


# -- running a job ------------------------------------------------------------------------


def run_job(app, name: str, now: datetime | None = None) -> dict:
    """Run one job now in an app context and record the run; an error is logged and
    recorded, not raised. Returns {job, ran_at, result, error}."""
    job = BY_NAME[name]
    gateway = app.extensions["keyrelay"]
    if not _running[name].acquire(blocking=False):
        return {"job": name, "ran_at": None, "result": None, "error": "already running"}
    try:
        # A job sums usage: let every process's bookings so far reach the database first.
        if not gateway.books.settle():
            log.info("job %s: a sibling worker still had bookings to commit", name)
        now = now or gateway.clock.now()
        with app.app_context():
            try:
                result, error = _plain(job.run(gateway, now, app.config)), None
            except Exception as exc:  # noqa: BLE001 - recorded, and retried at its next time
                log.exception("scheduled job %s failed", name)
                result, error = None, f"{type(exc).__name__}: {exc}"
            _record(gateway.engine, name, now, result, error)
            metrics.sink.job_ran(name, error is None)
    finally:
        _running[name].release()
    return {"job": name, "ran_at": now.isoformat(), "result": result, "error": error}


def _plain(result) -> dict:
    """The summary as JSON the database takes (ids as keys become strings)."""
    return orjson.loads(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS, default=str))


def _record(engine: Engine, name: str, now: datetime, result, error: str | None) -> None:
    try:
        with Session(engine) as session, session.begin():
            row = session.get(JobRun, name)
            if row is None:
                row = JobRun(name=name)
                session.add(row)
            row.last_run_at, row.last_result, row.last_error = now, result, error
            if error is None:
                row.last_ok_at = now
    except IntegrityError:  # a `flask jobs run` recorded the first run at the same moment
        log.warning("job %s ran at %s; its run was recorded by another process", name, now)


def last_runs(engine: Engine) -> dict[str, JobRun]:
    """Job name → its stored run."""
    with Session(engine, expire_on_commit=False) as session:
        return {row.name: row for row in session.scalars(select(JobRun))}


def next_run_at(app, name: str):
    """When the named job runs next (UTC), or False when it does not (scheduler or job off)."""
    job = BY_NAME[name]
    trigger = job.trigger(app.config)
    if not app.config["SCHEDULER"] or trigger is None:
        return False
    gateway = app.extensions["keyrelay"]
    with Session(gateway.engine) as session:
        run = session.get(JobRun, name)
        last_ok = run.last_ok_at if run is not None else None
    return job.next_run(trigger, last_ok, gateway.clock.now())


def describe(app) -> dict:
    """Every job with its schedule, last run and next run; and which process leads."""
    gateway = app.extensions["keyrelay"]
    now = gateway.clock.now()
    runs = last_runs(gateway.engine)
    enabled = bool(app.config["SCHEDULER"])
    jobs = []
    for job in JOBS:
        trigger = job.trigger(app.config)
        run = runs.get(job.name) or JobRun(name=job.name)
        upcoming = job.next_run(trigger, run.last_ok_at, now) if enabled and trigger else None
        jobs.append(
            {
                "name": job.name,
                "schedule": job.schedule if trigger else "off",
                **run.to_dict(),
                "next_run_at": upcoming.isoformat() if upcoming else None,
            }
        )
    leader = leader_pid(Path(app.instance_path) / LOCK_FILE) if enabled else None
    shared = gateway.redis
    return {
        "enabled": enabled,
        "timezone": periods.zone_name(),
        "leader_pid": leader,
        # Across hosts (KEYRELAY_REDIS_URL): the lease holder, `host:pid:random`.
        "leader": shared.lease.holder() if enabled and shared is not None else None,
        "data": jobs,
    }


# -- the election -------------------------------------------------------------------------


def leader_pid(lock_path: Path) -> int | None:
    """The pid of the process running the jobs on this host, if one is."""
    try:
        pid = int(lock_path.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if not pid:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


class Scheduler:
    """This process's part in the election, and the APScheduler it runs when it leads."""

    def __init__(
        self, app, lock_path: Path, retry_seconds: float = RETRY_SECONDS, lease=None
    ) -> None:
        self.app = app
        self.lock_path = lock_path
        self.lease = lease  # redis_shared.Lease when hosts share Redis
        if lease is not None:
            retry_seconds = min(retry_seconds, lease.seconds / 3)
        self.retry_seconds = retry_seconds
        self.aps: BackgroundScheduler | None = None
        self.caught_up: list[str] = []  # jobs run at once when this process became leader
        self.tries = 0  # attempts to take the lock, for tests and logs
        self._fd: int | None = None
        self._stopping = threading.Event()
        self._catching_up: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self.aps is not None

    def start(self) -> None:
        """Lead if no other process does; else keep trying in the background."""
        if not self._try_to_lead() or self.lease is not None:
            thread = threading.Thread(target=self._follow, name="scheduler-election", daemon=True)
            thread.start()

    def stop(self, wait: bool = False) -> None:
        """Stop the jobs and give up the lock; `wait` for a run in progress to finish."""
        self._stopping.set()
        if self.aps is not None:
            self.aps.shutdown(wait=wait)
            self.aps = None
        if wait and self._catching_up is not None:
            self._catching_up.join()
        self._unlock()

    def _unlock(self) -> None:
        if self._fd is not None:
            if self.lease is not None:
                self.lease.release()
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the flock
            self._fd = None

    def _follow(self) -> None:
        while not self._stopping.is_set():
            if self.leading and self.lease is not None:
                self._keep_lease()  # returns when the lease is lost: follow again
                continue
            if self._stopping.wait(self.retry_seconds):
                return
            if self._try_to_lead() and self.lease is None:
                return

    def _keep_lease(self) -> None:
        """Renew the lease while leading; on failure stop the jobs and unlock."""
        while not self._stopping.wait(self.lease.seconds / 3):
            if not self.lease.renew():
                log.warning("scheduler: process %d lost the leader lease", os.getpid())
                if self.aps is not None:
                    self.aps.shutdown(wait=False)
                    self.aps = None
                self._unlock()
                return

    def _try_to_lead(self) -> bool:
        self.tries += 1
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if self._stopping.is_set():  # stopped while trying: lead nothing, try no more
            os.close(fd)
            return True
        if self.lease is not None and not self.lease.acquire():
            os.close(fd)  # another host leads
            return False
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            self._lead()
        except Exception:  # noqa: BLE001 - give the lock to a worker that can lead
            log.exception("the scheduler could not start; another worker will try")
            self.stop()
            self._stopping.clear()
            return False
        return True

    def _lead(self) -> None:
        """Start APScheduler with every job, and a thread that runs the due ones now."""
        config = self.app.config
        gateway = self.app.extensions["keyrelay"]
        now = gateway.clock.now()
        runs = last_runs(gateway.engine)
        aps = BackgroundScheduler(
            timezone=periods.zone(),
            executors={"default": ThreadPoolExecutor(3)},
            # A run that comes late (a busy worker, a suspended machine) still runs, once.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        caught_up = []
        for job in JOBS:
            trigger = job.trigger(config)
            if trigger is None:
                continue
            aps.add_job(run_job, trigger, args=(self.app, job.name), id=job.name, name=job.name)
            last = runs.get(job.name)
            if job.due(trigger, last.last_ok_at if last else None, now):
                caught_up.append(job.name)
        aps.start()
        self.aps, self.caught_up = aps, caught_up
        if caught_up:
            self._catching_up = threading.Thread(
                target=self._catch_up, args=(caught_up,), name="scheduler-catch-up", daemon=True
            )
            self._catching_up.start()
        log.info(
            "scheduler: process %d runs the jobs (%s); catching up: %s",
            os.getpid(),
            periods.zone_name(),
            ", ".join(caught_up) or "nothing",
        )

    def _catch_up(self, names: list[str]) -> None:
        """Run the due jobs once, one after the other (not all at once on the database)."""
        for name in names:
            if self._stopping.is_set():
                return
            run_job(self.app, name)


def init_app(app) -> Scheduler | None:
    """Take part in the election when KEYRELAY_SCHEDULER is on, unless this process is a
    `flask` command. The scheduler is app.extensions["scheduler"]."""
    if not app.config["SCHEDULER"] or os.environ.get("FLASK_RUN_FROM_CLI") == "true":
        return None
    retry = app.config.get("SCHEDULER_RETRY_SECONDS", RETRY_SECONDS)
    shared = app.extensions["keyrelay"].redis
    lease = shared.lease if shared is not None else None
    scheduler = Scheduler(app, Path(app.instance_path) / LOCK_FILE, retry, lease)
    app.extensions["scheduler"] = scheduler
    scheduler.start()
    atexit.register(scheduler.stop)
    return scheduler
