"""The scheduler (F33, F23, F46): each job run with the clock moved, catch-up after
downtime, one leader among processes, the schedule in the configured time zone."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import openai
import pytest
from sqlalchemy import func, select, update

from app import create_app
from extensions import db
from gateway import periods
from gateway.jobs import housekeeping, scheduler
from models import Attempt, AuditEntry, ProviderKey, RequestLog
from tests.conftest import MASTER_KEY, LiveServer, chat
from tests.fake_upstream import Behaviour

ROOT = Path(__file__).resolve().parent.parent.parent
A, B, C, D, E = (f"sk-sched{n}-000000000000000{n}" for n in "abcde")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def run(app, name: str) -> dict:
    """Run a job as the scheduler would, at the gateway clock's now; its summary."""
    outcome = scheduler.run_job(app, name)
    assert outcome["error"] is None, outcome
    return outcome["result"]


def set_key(app, key_id: int, **values) -> None:
    gateway = app.extensions["keyrelay"]
    with gateway.engine.begin() as conn:
        conn.execute(update(ProviderKey).where(ProviderKey.id == key_id).values(**values))
    gateway.keys.forget()


def stored(app, key_id: int):
    """The key's row as stored (not the derived status the API shows)."""
    with app.extensions["keyrelay"].engine.connect() as conn:
        query = select(ProviderKey.status, ProviderKey.consecutive_failures)
        return conn.execute(query.where(ProviderKey.id == key_id)).one()


def audited(app, action: str) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(
            select(AuditEntry.actor, AuditEntry.target)
            .where(AuditEntry.action == action)
            .order_by(AuditEntry.id)
        )
        return [tuple(row) for row in rows]


def ask(client, model: str = "gpt-4o-mini"):
    return client.chat.completions.with_raw_response.create(**chat(model=model))


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll for something another thread or process does (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def build(settings):
    """create_app with the test settings and overrides; schedulers stopped afterwards."""
    made = []

    def make(**overrides):
        made.append(create_app({**settings, **overrides}))
        return made[-1]

    yield make
    for app in made:
        if "scheduler" in app.extensions:
            app.extensions["scheduler"].stop(wait=True)
        app.extensions["keyrelay"].close()
        with app.app_context():
            db.engine.dispose()


# -- the schedule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "zone", "last_ok", "now", "due"),
    [
        ("daily-reset", "UTC", None, "2026-11-23 12:00", True),  # never ran
        ("daily-reset", "UTC", "2026-11-23 23:59", "2026-11-24 00:00:30", True),
        ("daily-reset", "UTC", "2026-11-23 23:59:59.900000", "2026-11-24 00:00", True),
        ("daily-reset", "UTC", "2026-11-24 00:00", "2026-11-24 23:59:59", False),  # on time
        ("daily-reset", "UTC", "2026-11-20 00:00", "2026-11-23 12:00", True),  # days down
        ("daily-reset", "Asia/Tokyo", "2026-11-23 14:59", "2026-11-23 15:01", True),
        ("daily-reset", "Asia/Tokyo", "2026-11-23 15:01", "2026-11-24 14:59", False),
        ("monthly-reset", "UTC", "2026-11-30 23:00", "2026-12-01 00:05", True),
        ("monthly-reset", "UTC", "2026-11-02 00:00", "2026-11-30 23:59", False),
        ("key-expiry", "UTC", "2026-11-23 12:59", "2026-11-23 13:00", True),
        ("key-expiry", "UTC", "2026-11-23 13:00", "2026-11-23 13:59", False),
        ("key-revalidation", "UTC", "2026-11-23 12:00", "2026-11-23 12:29", False),
        ("key-revalidation", "UTC", "2026-11-23 12:00", "2026-11-23 12:30", True),
        ("log-retention", "UTC", "2026-11-23 03:00", "2026-11-24 02:59", False),
        ("log-retention", "UTC", "2026-11-23 03:00", "2026-11-24 03:00", True),
    ],
)
def test_catch_up_rule(job, zone, last_ok, now, due):
    """A job is due at start-up when its time came after its last good run."""
    periods.configure(zone)
    try:
        entry = scheduler.BY_NAME[job]
        trigger = entry.trigger({"REVALIDATE_MINUTES": 30.0})
        last = at(last_ok) if last_ok else None
        assert entry.due(trigger, last, at(now)) is due
    finally:
        periods.configure("UTC")


def test_jobs_run_at_midnight_in_the_configured_zone(build):
    app = build(SCHEDULER=True, TIMEZONE="Asia/Tokyo")
    leader = app.extensions["scheduler"]
    assert leader.leading
    tokyo = periods.zone()
    daily = leader.aps.get_job("daily-reset").next_run_time
    assert daily.astimezone(tokyo).time() == clock_time(0, 0)
    assert daily.astimezone(UTC).time() == clock_time(15, 0)
    monthly = leader.aps.get_job("monthly-reset").next_run_time.astimezone(tokyo)
    assert (monthly.day, monthly.time()) == (1, clock_time(0, 0))
    revalidation = leader.aps.get_job("key-revalidation").trigger
    assert revalidation.interval == timedelta(minutes=30)
    # The admin API shows the same schedule, from the gateway clock (12:00 UTC = 21:00 JST).
    engine = app.extensions["keyrelay"].engine
    scheduled = [job for job in scheduler.JOBS if job.trigger(app.config)]  # backup is off
    wait_until(lambda: len(scheduler.last_runs(engine)) == len(scheduled))  # all caught up
    listing = app.test_client().get(
        "/api/admin/jobs", headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert listing.status_code == 200, listing.text
    body = listing.json
    assert (body["timezone"], body["enabled"], body["leader_pid"]) == (
        "Asia/Tokyo",
        True,
        os.getpid(),
    )
    jobs = {job["name"]: job for job in body["data"]}
    assert jobs["daily-reset"]["next_run_at"] == "2026-11-23T15:00:00+00:00"
    assert jobs["monthly-reset"]["next_run_at"] == "2026-11-30T15:00:00+00:00"
    assert jobs["log-retention"]["next_run_at"] == "2026-11-23T18:00:00+00:00"
    assert jobs["daily-reset"]["last_ok_at"] == "2026-11-23T12:00:00+00:00"  # caught up


# -- expiry (hourly) ----------------------------------------------------------------------


def test_expiry_job_stores_expired_and_the_proxy_stops_using_the_key(
    app, admin, client, fake, clock
):
    old = admin.add_key(A, fake.base_url, name="old")
    admin.add_key(B, fake.base_url, name="fresh")
    off = admin.add_key(C, fake.base_url, name="off")
    later = admin.add_key(D, fake.base_url, name="later")
    admin.call("POST", f"/keys/{off['id']}/toggle", {"active": False})
    set_key(app, old["id"], expires_at=clock.now() + timedelta(minutes=30))
    set_key(app, off["id"], expires_at=clock.now() + timedelta(minutes=30))
    set_key(app, later["id"], expires_at=clock.now() + timedelta(days=7))
    created = admin.call(
        "POST", "/client-keys", {"name": "app", "expires_at": "2026-11-23T12:30:00+00:00"}
    )
    assert created.status == 201, created.data
    assert run(app, "key-expiry")["provider_keys_expired"] == []

    clock.advance(hours=1)
    summary = run(app, "key-expiry")
    assert summary["provider_keys_expired"] == [old["id"], off["id"]]
    assert summary["client_keys_expired_last_hour"] == 1
    assert stored(app, old["id"]).status == "expired"
    assert stored(app, off["id"]).status == "expired"  # admin-disabled, and past expiry too
    assert stored(app, later["id"]).status == "active"
    assert admin.key(old["id"])["status"] == "expired"
    assert audited(app, "key.expire") == [
        ("scheduler", f"key:{old['id']}"),
        ("scheduler", f"key:{off['id']}"),
    ]
    fake.reset()
    for _ in range(4):
        ask(client)
    assert A not in {r.secret for r in fake.requests}
    assert run(app, "key-expiry")["provider_keys_expired"] == []  # idempotent
    assert len(audited(app, "key.expire")) == 2


# -- re-validation (F23) ------------------------------------------------------------------


@pytest.fixture
def fragile(settings):
    """One failure disables a key; a request may try every key."""
    settings.update(FAILURE_THRESHOLD=1, MAX_ATTEMPTS=5)


def test_revalidation_restores_keys_that_answer_and_leaves_admin_disabled_ones(
    fragile, app, admin, client, fake
):
    a, b, c, d, _ = (admin.add_key(s, fake.base_url, name=s[3:10]) for s in (A, B, C, D, E))
    admin.call("POST", f"/keys/{c['id']}/toggle", {"active": False})  # an admin's choice
    fake.set_behaviour(A, Behaviour.unauthorized())
    fake.set_behaviour(B, Behaviour.server_error())
    fake.set_behaviour(D, Behaviour.unauthorized())
    assert ask(client).headers["x-keyrelay-attempts"] == "4"  # A, B, D failed; E answered
    assert tuple(stored(app, a["id"])) == ("auth_failed", 0)
    assert tuple(stored(app, b["id"])) == ("disabled", 1)  # disabled by its failure streak
    assert tuple(stored(app, c["id"])) == ("disabled", 0)
    assert stored(app, d["id"]).status == "auth_failed"

    fake.reset()  # A and B are fixed upstream; D's secret is still refused
    fake.set_behaviour(D, Behaviour.unauthorized())
    summary = run(app, "key-revalidation")
    assert summary == {
        "tested": 3,
        "restored": [a["id"], b["id"]],
        "still_failing": {str(d["id"]): "auth_failed"},
        "discovered": [],
    }
    assert {r.secret for r in fake.requests if r.method == "GET"} == {A, B, D}
    assert tuple(stored(app, a["id"])) == ("active", 0)
    assert tuple(stored(app, b["id"])) == ("active", 0)
    assert stored(app, c["id"]).status == "disabled"
    assert stored(app, d["id"]).status == "auth_failed"
    assert audited(app, "key.restore") == [
        ("scheduler", f"key:{a['id']}"),
        ("scheduler", f"key:{b['id']}"),
    ]
    fake.reset()
    for _ in range(3):
        ask(client)
    assert {A, B} <= {r.secret for r in fake.requests}
    assert run(app, "key-revalidation")["tested"] == 1  # only D is left to re-test


# -- log retention (F46) ------------------------------------------------------------------


def budget_client(admin, server, **budget) -> tuple[int, openai.OpenAI]:
    body = {"name": "app", "rpm_limit": None, "tpm_limit": None, "max_budget": "100", **budget}
    created = admin.call("POST", "/client-keys", body)
    assert created.status == 201, created.data
    key = created.json()
    return key["id"], openai.OpenAI(base_url=f"{server.url}/v1", api_key=key["key"], max_retries=0)


def statistics(admin, **params) -> list[dict]:
    query = "&".join(
        f"{k}={v}" for k, v in {"from": "2026-09-01", "to": "2026-11-30", **params}.items()
    )
    answer = admin.call("GET", f"/statistics?{query}")
    assert answer.status == 200, answer.data
    return answer.json()["data"]


@pytest.mark.both_databases
def test_retention_deletes_old_logs_and_keeps_rollups_and_budget_periods(
    app, admin, server, client, fake, clock, monkeypatch
):
    monkeypatch.setattr(housekeeping, "RETENTION_BATCH", 2)  # several batches
    admin.add_key(A, fake.base_url)
    clock.current = at("2026-10-01 12:00")
    lifetime_id, lifetime = budget_client(admin, server)  # spend counted for ever
    daily_id, daily = budget_client(admin, server, budget_duration="1d")
    for _ in range(3):
        client.chat.completions.create(**chat())
    lifetime.chat.completions.create(**chat())
    daily.chat.completions.create(**chat())
    clock.advance(days=25)
    recent = ask(client).headers["x-keyrelay-request-id"]
    clock.advance(days=10)  # 5 Nov: 30 days back is 6 Oct
    by_day, by_month = statistics(admin), statistics(admin, period="month")
    assert sum(row["requests"] for row in by_day) == 6

    summary = run(app, "log-retention")
    assert summary["deleted"] == 4  # 3 master-key requests and the 1d key's
    assert summary["cutoff"] == "2026-10-06T12:00:00+00:00"
    logs = admin.logs(limit=100)
    assert {log["request_id"] for log in logs if log["client_key_id"] is None} == {recent}
    assert [log["client_key_id"] for log in logs if log["client_key_id"]] == [lifetime_id]
    assert daily_id != lifetime_id
    with app.app_context():
        kept = set(db.session.scalars(select(RequestLog.id)))
        attempts = list(db.session.scalars(select(Attempt.request_log_id)))
    assert len(kept) == 2 and set(attempts) == kept
    # Roll-ups stay: statistics (and the charts built on them) do not change.
    assert statistics(admin) == by_day
    assert statistics(admin, period="month") == by_month
    assert run(app, "log-retention")["deleted"] == 0


@pytest.mark.both_databases
def test_retention_zero_keeps_logs_for_ever(app, client, admin, fake, clock):
    admin.add_key(A, fake.base_url)
    client.chat.completions.create(**chat())
    app.extensions["keyrelay"].books.flush()
    clock.advance(days=4000)
    summary = housekeeping.prune_logs(app.extensions["keyrelay"], clock.now(), {})
    assert summary == {"retention_days": 0, "deleted": 0}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(RequestLog)) == 1


# -- catch-up after downtime --------------------------------------------------------------


def test_restart_after_downtime_across_midnight(app, admin, client, fake, clock, build):
    """Counters and statuses are right after the restart, and the missed jobs run once."""
    clock.current = at("2026-11-23 23:00")
    limited = admin.add_key(A, fake.base_url, name="limited", daily_token_limit=10)
    cooling = admin.add_key(B, fake.base_url, name="cooling", models=["gpt-4o-mini"])
    fake.script(B, [Behaviour.rate_limited(retry_after=600)])
    ask(client)  # B (unlimited, so first) cools down until 23:10; A serves 8 tokens
    ask(client)  # A: 16 tokens, past its daily limit of 10
    with pytest.raises(openai.APIStatusError) as refused:
        ask(client)
    assert refused.value.status_code == 503
    for job in scheduler.JOBS:  # every job ran before the server went down at 23:00
        run(app, job.name)
    assert stored(app, cooling["id"]).status == "cooling_down"

    clock.current = at("2026-11-24 00:05")
    restarted = build(SCHEDULER=True)
    leader = restarted.extensions["scheduler"]
    assert leader.leading
    assert leader.caught_up == [
        "daily-reset",
        "key-expiry",
        "key-revalidation",
        "budget-alerts",
        "credits-sync",
    ]
    engine = restarted.extensions["keyrelay"].engine

    def caught_up() -> bool:
        runs = scheduler.last_runs(engine)
        return all(runs[name].last_ok_at == clock.now() for name in leader.caught_up)

    wait_until(caught_up, what="the catch-up runs")
    daily = scheduler.last_runs(engine)["daily-reset"].last_result
    assert daily == {"day": "2026-11-24", "back_from_limit": [limited["id"]], "cooldowns_ended": 1}
    assert stored(restarted, cooling["id"]).status == "active"
    live = LiveServer(restarted)
    try:
        sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=MASTER_KEY, max_retries=0)
        fake.reset()
        ask(sdk, model="gpt-4o")  # only A serves it: a new day, its limit is back
        ask(sdk)  # B comes first again: its cooldown is over
        assert [r.secret for r in fake.requests] == [A, B]
        sdk.close()
    finally:
        live.close()

    before = {name: run.last_run_at for name, run in scheduler.last_runs(engine).items()}
    leader.stop(wait=True)
    again = build(SCHEDULER=True)  # a second start the same night: nothing is due
    assert again.extensions["scheduler"].leading
    assert again.extensions["scheduler"].caught_up == []
    after = {name: run.last_run_at for name, run in scheduler.last_runs(engine).items()}
    assert after == before


@pytest.mark.sqlite_only  # SQLite's write lock held from outside
def test_a_job_sees_what_a_sibling_worker_booked_and_had_not_committed(
    app, admin, client, fake, clock, build, settings
):
    """The cause of the old flaky restart test: a job summed usage before another
    process's writer had committed it. Here the serving worker's writer is held back by a
    write lock while the leader's daily reset starts; the job waits for it."""
    clock.current = at("2026-11-23 23:00")
    limited = admin.add_key(A, fake.base_url, name="limited", daily_token_limit=10)
    leader = build()  # a second worker on the same database and instance folder
    database = Path(settings["INSTANCE_PATH"]) / "keyrelay.db"
    lock = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")  # the serving worker's commits wait behind this
    try:
        ask(client)
        ask(client)  # 16 tokens booked (journal), not committed
        releaser = threading.Timer(0.3, lock.rollback)
        releaser.start()
        clock.current = at("2026-11-24 00:05")
        result = run(leader, "daily-reset")
        releaser.join()
    finally:
        lock.close()
    assert result["back_from_limit"] == [limited["id"]]


# -- the CLI and a failing job ------------------------------------------------------------


def test_jobs_run_and_list_from_the_cli(app, clock):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["jobs", "run", "daily-reset"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["result"]["day"] == "2026-11-23"
    listing = runner.invoke(args=["jobs", "list"]).output.splitlines()
    assert [line.split()[0] for line in listing] == [job.name for job in scheduler.JOBS]
    assert listing[0].endswith("(ok)") and listing[1].endswith("(never run)")
    assert runner.invoke(args=["jobs", "run", "no-such-job"]).exit_code == 2


def test_a_failing_job_is_recorded_and_due_again(app, monkeypatch):
    def broken(gateway, now, config):
        raise RuntimeError("database on fire")

    job = dataclasses.replace(scheduler.BY_NAME["daily-reset"], run=broken)
    monkeypatch.setitem(scheduler.BY_NAME, "daily-reset", job)
    result = app.test_cli_runner().invoke(args=["jobs", "run", "daily-reset"])
    assert result.exit_code == 1
    record = scheduler.last_runs(app.extensions["keyrelay"].engine)["daily-reset"]
    assert record.last_error == "RuntimeError: database on fire"
    assert record.last_ok_at is None  # so the next start runs it again


def test_flask_commands_take_no_part_in_the_election(build, monkeypatch):
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    command = build(SCHEDULER=True)
    assert "scheduler" not in command.extensions
    monkeypatch.delenv("FLASK_RUN_FROM_CLI")
    assert build(SCHEDULER=True).extensions["scheduler"].leading  # the lock was free


# -- one leader among processes -----------------------------------------------------------

CONTENDER = """
import os, sys, time
from app import create_app

instance, status, secret = sys.argv[1:4]
app = create_app({"INSTANCE_PATH": instance, "MASTER_KEY": "kr-test-master-key",
                  "SECRET_KEY": secret, "ADMIN_PASSWORD": "admin-pass-123",
                  "SCHEDULER": True, "SCHEDULER_RETRY_SECONDS": 0.1})
scheduler = app.extensions["scheduler"]
mine = os.path.join(status, str(os.getpid()))
while True:
    with open(mine + ".tmp", "w") as out:
        out.write(f"{'leader' if scheduler.leading else 'follower'} {scheduler.tries}")
    os.replace(mine + ".tmp", mine)
    time.sleep(0.02)
"""


def test_one_leader_among_processes_and_a_successor_when_it_dies(tmp_path, settings):
    status = tmp_path / "status"
    status.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "FLASK_RUN_FROM_CLI"}
    args = [str(tmp_path / "instance"), str(status), settings["SECRET_KEY"]]
    logs = [tmp_path / f"contender-{n}.log" for n in range(2)]

    def contender(log: Path) -> subprocess.Popen:
        with log.open("w") as errors:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                [sys.executable, "-c", CONTENDER, *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )

    procs = [contender(log) for log in logs]

    def states() -> dict[int, tuple[str, int]]:
        found = {}
        for path in status.glob("[0-9]*"):
            if not path.name.endswith(".tmp"):
                state, tries = path.read_text().split()
                found[int(path.name)] = (state, int(tries))
        return found

    def contended() -> bool:
        assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
        now = states()
        return len(now) == 2 and any(s == "follower" and t >= 5 for s, t in now.values())

    try:
        wait_until(contended, timeout=60, what="both processes to contend for the lock")
        leaders = [pid for pid, (state, _) in states().items() if state == "leader"]
        assert len(leaders) == 1
        (follower,) = set(states()) - set(leaders)
        os.kill(leaders[0], signal.SIGKILL)
        wait_until(lambda: states()[follower][0] == "leader", timeout=30, what="a successor")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
