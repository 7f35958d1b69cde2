"""Prometheus /metrics: real requests through the fake upstream, then a scrape over HTTP."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path

import openai
import pytest
import urllib3
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from extensions import db
from gateway.jobs import scheduler
from models import RequestLog
from tests.conftest import MASTER_KEY, Admin, chat, live_app
from tests.fake_upstream import Behaviour
from tests.test_durability import Gunicorn

METRICS_TOKEN = "metrics-token-for-the-scraper"
A, B = "sk-metrics-aaaa-000000000001", "sk-metrics-bbbb-000000000002"
CHAT = {"dialect": "chat.completions", "profile": "default", "model": "gpt-4o-mini"}


def scrape(http, base: str, token: str = MASTER_KEY) -> dict:
    """{(sample name, sorted labels): value} of one scrape; fails unless it is a 200."""
    response = http.request("GET", f"{base}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200, response.data
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.data.decode()
    assert A not in text and B not in text  # never a secret in a label
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def log_sums(app) -> tuple[int, int, int, int]:
    """(rows, input tokens, output tokens, cost micros) of the request log, all written."""
    app.extensions["keyrelay"].books.flush()
    log = RequestLog
    sums = (func.sum(c) for c in (log.input_tokens, log.output_tokens, log.cost_micros))
    with app.app_context():
        return tuple(db.session.execute(select(func.count(), *sums).select_from(log)).one())


@pytest.fixture
def settings(settings):
    return {**settings, "METRICS": True, "METRICS_TOKEN": METRICS_TOKEN}


@pytest.mark.both_databases
def test_requests_tokens_and_cost_match_the_request_log(app, server, admin, client, http, fake):
    """5 answers (3 JSON, 2 streamed): the request counter of that dialect/profile/model/
    status moves by 5, tokens and cost by the log's sums, the histograms by their counts."""
    admin.add_key(A, fake.base_url)
    before = scrape(http, server.url)
    for _ in range(3):
        client.chat.completions.create(**chat())
    for _ in range(2):
        list(client.chat.completions.create(**chat(), stream=True))
    after = scrape(http, server.url)
    rows, input_tokens, output_tokens, cost = log_sums(app)
    assert rows == 5 and cost > 0
    assert delta(before, after, "keyrelay_requests_total", **CHAT, status="200") == 5
    assert delta(before, after, "keyrelay_tokens_total", **CHAT, kind="input") == input_tokens
    assert delta(before, after, "keyrelay_tokens_total", **CHAT, kind="output") == output_tokens
    assert delta(before, after, "keyrelay_cost_usd_total", **CHAT) == pytest.approx(cost / 1e6)
    series = {"dialect": "chat.completions", "model": "gpt-4o-mini"}
    assert delta(before, after, "keyrelay_request_duration_seconds_count", **series) == 5
    assert delta(before, after, "keyrelay_time_to_first_token_seconds_count", **series) == 2


def test_failed_requests_count_under_their_status(server, admin, client, http, fake):
    """A model no key serves is booked as a 404 of that model."""
    admin.add_key(A, fake.base_url, models=["gpt-4o-mini"])
    before = scrape(http, server.url)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(**chat(model="no-such-model"))
    after = scrape(http, server.url)
    labels = {**CHAT, "model": "no-such-model", "status": "404"}
    assert delta(before, after, "keyrelay_requests_total", **labels) == 1


@pytest.mark.both_databases
def test_attempts_by_provider_key_and_outcome(server, admin, client, http, fake):
    """A 500 from the first key, then its sibling answers: one attempt of each outcome,
    labelled by the key's id."""
    first = admin.add_key(A, fake.base_url, name="a")
    second = admin.add_key(B, fake.base_url, name="b")
    fake.script(A, [Behaviour.server_error(500)])
    before = scrape(http, server.url)
    client.chat.completions.create(**chat())
    after = scrape(http, server.url)
    name = "keyrelay_upstream_attempts_total"
    failed = {"provider": "openai", "key": str(first["id"]), "outcome": "server_error"}
    served = {"provider": "openai", "key": str(second["id"]), "outcome": "ok"}
    assert delta(before, after, name, **failed) == 1
    assert delta(before, after, name, **served) == 1
    assert delta(before, after, "keyrelay_requests_total", **CHAT, status="200") == 1


@pytest.mark.both_databases
def test_keys_by_state(server, admin, http, fake):
    """The gauge counts the keys in each state now, read at scrape time."""
    admin.add_key(A, fake.base_url, name="a")
    second = admin.add_key(B, fake.base_url, name="b")
    labels = {"profile": "default", "provider": "openai"}
    samples = scrape(http, server.url)
    assert value(samples, "keyrelay_provider_keys", **labels, state="active") == 2
    response = admin.call("POST", f"/keys/{second['id']}/toggle", {"active": False})
    assert response.status == 200
    samples = scrape(http, server.url)
    assert value(samples, "keyrelay_provider_keys", **labels, state="active") == 1
    assert value(samples, "keyrelay_provider_keys", **labels, state="disabled") == 1


def test_limiter_rejections(server, admin, http, fake):
    """A client key with rpm_limit 1: its second request is refused, and counted."""
    admin.add_key(A, fake.base_url)
    created = admin.call("POST", "/client-keys", {"name": "app", "rpm_limit": 1}).json()
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=created["key"], max_retries=0)
    before = scrape(http, server.url)
    sdk.chat.completions.create(**chat())
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(**chat())
    sdk.close()
    after = scrape(http, server.url)
    labels = {"scope": "client_key", "limit": "rpm"}
    assert delta(before, after, "keyrelay_limiter_rejections_total", **labels) == 1
    assert delta(before, after, "keyrelay_requests_total", **CHAT, status="429") == 1


@pytest.mark.sqlite_only  # SQLite's write lock held from outside
def test_journal_backlog_and_job_runs(app, server, admin, client, http, fake, clock):
    """While the database is write-locked from outside, the booked request waits in the
    journal (backlog > 0); committed, the backlog is 0. A job run shows its time."""
    admin.add_key(A, fake.base_url)
    locker = sqlite3.connect(Path(app.instance_path) / "keyrelay.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        client.chat.completions.create(**chat())
        samples = scrape(http, server.url)
        assert value(samples, "keyrelay_journal_backlog_bytes") > 0
        assert value(samples, "keyrelay_journal_backlog_segments") == 1
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert app.extensions["keyrelay"].books.flush()
    samples = scrape(http, server.url)
    assert value(samples, "keyrelay_journal_backlog_bytes") == 0
    before = samples
    scheduler.run_job(app, "key-expiry")
    after = scrape(http, server.url)
    job = {"job": "key-expiry"}
    assert value(after, "keyrelay_job_last_run_timestamp_seconds", **job) == (
        clock.now().timestamp()
    )
    assert value(after, "keyrelay_job_last_run_failed", **job) == 0
    assert delta(before, after, "keyrelay_job_runs_total", **job, result="ok") == 1


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong-token", 401),
        (f"Bearer {METRICS_TOKEN}", 200),
        (f"Bearer {MASTER_KEY}", 200),
    ],
    ids=["none", "wrong", "metrics-token", "master-key"],
)
def test_metrics_need_the_metrics_token_or_the_master_key(server, http, header, status):
    headers = {"Authorization": header} if header else {}
    response = http.request("GET", f"{server.url}/metrics", headers=headers)
    assert response.status == status
    if status == 401:
        assert response.json()["error"]["type"] == "authentication_error"
        assert "keyrelay_requests" not in response.data.decode()
    else:
        assert b"# TYPE keyrelay_provider_keys gauge" in response.data


def test_metrics_are_on_by_default(settings, fake, monkeypatch):
    """No KEYRELAY_METRICS anywhere: /metrics answers, and a request served is counted."""
    monkeypatch.delenv("KEYRELAY_METRICS", raising=False)
    defaults = {k: v for k, v in settings.items() if k not in ("METRICS", "METRICS_TOKEN")}
    http = urllib3.PoolManager(retries=False)
    with live_app(defaults) as (_, live):
        Admin(live.url, http).add_key(A, fake.base_url)
        before = scrape(http, live.url)
        sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=MASTER_KEY, max_retries=0)
        sdk.chat.completions.create(**chat())
        sdk.close()
        after = scrape(http, live.url)
    assert delta(before, after, "keyrelay_requests_total", **CHAT, status="200") == 1
    assert delta(before, after, "keyrelay_tokens_total", **CHAT, kind="input") > 0


def test_metrics_off(settings):
    """KEYRELAY_METRICS=false: /metrics is not there, even with the master key."""
    with live_app(settings, METRICS=False) as (_, live):
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        assert urllib3.request("GET", f"{live.url}/metrics", headers=headers).status == 404


def test_gunicorn_workers_are_summed_in_one_scrape(tmp_path, fake):
    """The real server with 2 workers and metrics as by default: requests served by both
    are in every scrape, exactly."""
    instance = tmp_path / "instance"
    server = Gunicorn(instance, Fernet.generate_key().decode(), WORKERS="2", METRICS=None)
    http = urllib3.PoolManager(retries=False)
    try:
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        body = {"provider": "openai", "name": "k", "secret": A, "base_url": fake.base_url}
        added = http.request("POST", f"{server.url}/api/admin/keys", json=body, headers=headers)
        assert added.status == 201
        sent = _until_both_workers_served(server.url, instance / "metrics")
        for _ in range(4):  # whichever worker answers the scrape, it sums both
            samples = scrape(http, server.url)
            assert value(samples, "keyrelay_requests_total", **CHAT, status="200") == sent
        # A worker killed outright keeps its counts in the sum; the rest go on counting.
        os.kill(min(_served(instance / "metrics")), signal.SIGKILL)
        http = urllib3.PoolManager(retries=False)  # no connection to the killed worker
        for _ in range(3):
            response = http.request("POST", f"{server.url}/v1/chat/completions", json=chat(),
                                    headers=headers, timeout=30)  # fmt: skip
            assert response.status == 200
        samples = scrape(http, server.url)
        assert value(samples, "keyrelay_requests_total", **CHAT, status="200") == sent + 3
    finally:
        server.kill()


def _until_both_workers_served(base: str, folder: Path) -> int:
    """Send requests, each on a new connection from parallel threads, until two worker
    processes have counter files (each booked some); returns how many were sent. Which
    worker accepts a connection is the kernel's choice, and one gevent worker may take
    them all: then the workers that served are stopped (SIGSTOP) for one round, so that
    the other one must accept it."""
    sent, statuses = 0, []
    body = chat()

    def one() -> None:
        response = urllib3.request(
            "POST",
            f"{base}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {MASTER_KEY}", "Connection": "close"},
            timeout=30,
        )
        statuses.append(response.status)

    for round_ in range(4):
        stopped = _served(folder) if round_ else []
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            threads = [threading.Thread(target=one) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        sent += len(threads)
        assert statuses == [200] * sent
        if len(_served(folder)) >= 2:
            return sent
    raise AssertionError(f"one worker served all {sent} requests")


def _served(folder: Path) -> list[int]:
    """The worker processes that have counted something (their counter files)."""
    return [int(path.stem.split("_")[-1]) for path in folder.glob("counter_*.db")]


def test_a_worker_with_a_dead_workers_pid_adds_to_its_counts(tmp_path):
    """A new worker that got the pid of a dead one opens that one's file: the dead
    worker's counts stay in the sum and the new worker's add to them."""
    from prometheus_client.mmap_dict import mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    from gateway.prometheus import ValueFile

    path = str(tmp_path / "counter_4242.db")
    names = ("job", "result")
    runs = mmap_key("keyrelay_job_runs", "keyrelay_job_runs_total", names, ("a", "ok"), "Runs.")
    fails = mmap_key("keyrelay_job_runs", "keyrelay_job_runs_total", names, ("a", "error"), "Runs.")
    dead = ValueFile(path)
    dead.values[dead.slot(runs)] += 2
    dead.close()
    new = ValueFile(path)
    new.values[new.slot(runs)] += 1
    new.values[new.slot(fails)] += 5
    new.close()
    merged = {
        sample.labels["result"]: sample.value
        for metric in MultiProcessCollector.merge([path])
        for sample in metric.samples
    }
    assert merged == {"ok": 3, "error": 5}
