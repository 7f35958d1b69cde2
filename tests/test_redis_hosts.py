"""Two KeyRelay hosts sharing one database and one Redis (issue 14).

Each host is a real gunicorn (gevent worker) with an instance folder of its own, as on two
machines; they share one PostgreSQL database (the session's throwaway server, tests/pg.py)
through KEYRELAY_DATABASE_URL and a throwaway redis-server. Requests go over loopback HTTP.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import urllib3
from cryptography.fernet import Fernet

from tests.conftest import MASTER_KEY, Admin, chat
from tests.fake_upstream import Behaviour, FakeUpstream
from tests.redis_server import RedisServer
from tests.test_durability import free_port

ROOT = Path(__file__).resolve().parent.parent
LEASE = 2.0  # the scheduler's lease in these tests (seconds)
FIRST, SECOND = "sk-first-key-aaaaaaaaaaaaaaaa", "sk-second-key-bbbbbbbbbbbbbbb"
PRICE = {"input_per_mtok": "1000", "output_per_mtok": "1000"}


class Host:
    """One KeyRelay host: gunicorn with one worker, its log in the instance folder."""

    def __init__(self, instance: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        instance.mkdir(parents=True, exist_ok=True)
        self.log_path = instance / "server.log"
        env = {
            **os.environ,
            **env,
            "KEYRELAY_INSTANCE_PATH": str(instance),
            "KEYRELAY_BIND": f"127.0.0.1:{self.port}",
        }
        gunicorn = Path(sys.executable).with_name("gunicorn")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(gunicorn), "-c", "gunicorn.conf.py", "app:create_app()"],
                cwd=ROOT,
                env=env,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.admin = Admin(self.url, urllib3.PoolManager(retries=False, maxsize=64))
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.admin.http.request("GET", f"{self.url}/healthz", timeout=1).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"gunicorn did not start: {self.log()[-2000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def chat(self, key: str, **extra) -> urllib3.BaseHTTPResponse:
        return self.admin.http.request(
            "POST",
            f"{self.url}/v1/chat/completions",
            json=chat(**extra),
            headers={"Authorization": f"Bearer {key}"},
            timeout=20,
        )

    def jobs(self) -> dict:
        return self.admin.call("GET", "/jobs").json()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


# One worker runs this module under pytest-xdist (./test.sh): two gunicorn hosts, Redis and
# a database are built once, not once per worker.
pytestmark = pytest.mark.xdist_group("redis_hosts")


@pytest.fixture(scope="module")
def shared(tmp_path_factory, pg_server):
    """(redis, fake upstream, [host A, host B], provider key ids)."""
    folder = tmp_path_factory.mktemp("hosts")
    redis_server = RedisServer(folder / "redis")
    database = pg_server.create_database()
    env = {
        "KEYRELAY_DATABASE_URL": database,
        "KEYRELAY_REDIS_URL": redis_server.url,
        "KEYRELAY_REDIS_LEASE_SECONDS": str(LEASE),
        "KEYRELAY_SECRET_KEY": Fernet.generate_key().decode(),
        "KEYRELAY_MASTER_KEY": MASTER_KEY,
        "KEYRELAY_WORKERS": "1",
        "KEYRELAY_SCHEDULER": "true",
        "KEYRELAY_STRATEGY": "priority",
        "KEYRELAY_ADMIN_PASSWORD": "admin-pass-123",
    }
    hosts = []
    with FakeUpstream(models=["gpt-4o-mini"]) as fake:
        try:
            hosts.append(Host(folder / "a", env))
            first = hosts[0].admin.add_key(FIRST, fake.base_url, name="first", priority=0)
            second = hosts[0].admin.add_key(SECOND, fake.base_url, name="second", priority=1)
            assert hosts[0].admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200
            hosts.append(Host(folder / "b", env))  # after the price: it reads it at start
            yield redis_server, fake, hosts, (first["id"], second["id"])
        finally:
            for host in hosts:
                host.kill()
            redis_server.stop()
            pg_server.drop_database(database)


def client_key(host: Host, **fields) -> str:
    body = {"name": "app", "rpm_limit": None, "tpm_limit": None, **fields}
    response = host.admin.call("POST", "/client-keys", body)
    assert response.status == 201, response.data
    return response.json()["key"]


def spread(hosts: list[Host], key: str, count: int, **extra) -> list[urllib3.BaseHTTPResponse]:
    """`count` requests at once, alternating between the hosts."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(hosts[i % 2].chat, key, **extra) for i in range(count)]
        return [future.result() for future in futures]


def test_an_rpm_limit_of_10_admits_10_of_40_across_both_hosts(shared):
    _, _, hosts, _ = shared
    key = client_key(hosts[0], rpm_limit=10)
    statuses = [response.status for response in spread(hosts, key, 40)]
    assert statuses.count(200) == 10 and statuses.count(429) == 30


def test_grants_keep_a_roomy_rpm_exact_across_both_hosts(shared):
    """At `rpm 640` each host's worker is granted requests to admit with no round trip
    (up to 1/64 of the room at a time); they are counted in Redis when granted, so 700
    requests from 32 clients on both hosts still get exactly 640 answers and 60 429s, and
    the upstream hears exactly 640."""
    _, fake, hosts, _ = shared
    key = client_key(hosts[0], rpm_limit=640)
    before = len(fake.requests)
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda i: hosts[i % 2].chat(key).status, range(700)))
    assert statuses.count(200) == 640 and statuses.count(429) == 60
    assert len(fake.requests) - before == 640


def test_a_budget_for_one_request_admits_one_of_20_across_both_hosts(shared):
    _, fake, hosts, _ = shared
    probe = hosts[0].chat(client_key(hosts[0], max_budget="0.000001"), max_tokens=20)
    message = probe.json()["error"]["message"]
    least = round(float(re.search(r"at least \$([0-9.]+)", message).group(1)) * 1_000_000)
    most = round(float(re.search(r"up to \$([0-9.]+)", message).group(1)) * 1_000_000)
    assert 0 < least < most
    # One full reservation, and less than the least the next request needs.
    budget = most + least - 1
    # An RPM limit too: budget and window are asked in one round trip (reserve_and_admit).
    key = client_key(hosts[0], max_budget=f"{budget / 1_000_000:.6f}", rpm_limit=1000)
    fake.set_behaviour(FIRST, Behaviour.slow(0.5))  # all 20 are in flight together
    try:
        answers = spread(hosts, key, 20, max_tokens=20)
    finally:
        fake.set_behaviour(FIRST, None)
    statuses = [response.status for response in answers]
    assert statuses.count(200) == 1, statuses
    refused = [r.json()["error"]["code"] for r in answers if r.status == 429]
    assert refused == ["budget_exceeded"] * 19


def test_fifty_streams_on_both_hosts_spend_the_budget_and_one_reservation_at_most(shared):
    """An upstream that ignores max_tokens: each host ends its streams at the length their
    reservations pay for, and the budget is shared through Redis."""
    _, fake, hosts, _ = shared
    cheap = {"input_per_mtok": "1", "output_per_mtok": "1"}  # $0.01 pays 10,000 tokens
    assert hosts[0].admin.call("PUT", "/prices/gpt-4o", cheap).status == 200
    created = (
        hosts[0]
        .admin.call(
            "POST", "/client-keys", {"name": "streams", "rpm_limit": None, "max_budget": "0.01"}
        )
        .json()
    )
    for secret in (FIRST, SECOND):
        fake.set_behaviour(secret, Behaviour.ok(content=" ".join(["word"] * 2000)))
    try:
        answers = spread(hosts, created["key"], 50, model="gpt-4o", stream=True)
    finally:
        fake.set_behaviour(FIRST, None)
        fake.set_behaviour(SECOND, None)
    deadline = time.monotonic() + 10
    while True:  # every request's row, from both hosts
        rows = hosts[1].admin.logs(limit=500)
        rows = [row for row in rows if row["client_key_id"] == created["id"]]
        if len(rows) == 50 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    spent = sum(Decimal(row["cost_usd"]) for row in rows)
    print(f"spent {spent / Decimal('0.0001'):.1f} % of the budget")  # noqa: T201 - the figure
    ok = [r.data for r in answers if r.status == 200]
    refused = {r.json()["error"]["code"] for r in answers if r.status != 200}
    assert ok and refused <= {"budget_exceeded"}
    unfinished = [body[-400:] for body in ok if b'"finish_reason":"length"' not in body]
    assert not unfinished, unfinished
    assert len(rows) == 50
    assert spent <= Decimal("0.01") + Decimal("0.000264")  # one reservation: 8 + 256 tokens


def test_a_key_disabled_on_one_host_leaves_the_others_pool_at_once(shared):
    _, fake, hosts, (first, _) = shared
    key = client_key(hosts[0])
    assert hosts[1].chat(key).status == 200  # host B's snapshot of the pool is fresh now
    before = len(fake.requests_for(SECOND))
    assert len(fake.requests_for(FIRST)) > 0
    toggled = hosts[0].admin.call("POST", f"/keys/{first}/toggle", {"active": False})
    assert toggled.status == 200
    disabled_at = time.monotonic()
    try:
        while len(fake.requests_for(SECOND)) == before:
            assert hosts[1].chat(key).status == 200
            # The key cache's own TTL would take up to 1 s; the invalidation is immediate.
            assert time.monotonic() - disabled_at < 0.5, "host B still uses the disabled key"
    finally:
        hosts[0].admin.call("POST", f"/keys/{first}/toggle", {"active": True})


def logged_cost(host: Host, request_id: str) -> str:
    """The cost the request log booked for `request_id` (the writer commits it shortly)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = host.admin.call("GET", "/logs?limit=50").json()["data"]
        for row in rows:
            if row["request_id"] == request_id:
                return row["cost_usd"]
        time.sleep(0.05)
    raise AssertionError(f"{request_id} was not logged")


def test_a_price_changed_on_one_host_prices_the_others_next_request(shared):
    """Price overrides are cached for 60 s; the invalidation makes B use the new one at once."""
    _, _, hosts, _ = shared
    key = client_key(hosts[0])
    assert hosts[1].chat(key).status == 200  # B's overrides are loaded (fresh for 60 s)
    before = hosts[1].chat(key)
    expensive = {"input_per_mtok": "3000", "output_per_mtok": "3000"}
    assert hosts[0].admin.call("PUT", "/prices/gpt-4o-mini", expensive).status == 200
    try:
        deadline = time.monotonic() + 0.5
        while True:  # the message crosses Redis in milliseconds; the cache would take 60 s
            after = hosts[1].chat(key)
            old = logged_cost(hosts[1], before.headers["x-keyrelay-request-id"])
            new = logged_cost(hosts[1], after.headers["x-keyrelay-request-id"])
            if Decimal(new) == 3 * Decimal(old):
                break
            assert Decimal(new) == Decimal(old)
            assert time.monotonic() < deadline, "host B still prices with the old override"
    finally:
        assert hosts[0].admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200


def test_a_client_key_revoked_on_one_host_is_refused_by_the_other_at_once(shared):
    """B caches client keys for 1 s; the revocation reaches it well within that second."""
    _, _, hosts, _ = shared
    for _ in range(3):  # a try counts only when it all happened within B's cache second
        response = hosts[0].admin.call("POST", "/client-keys", {"name": "revoked"})
        key, key_id = response.json()["key"], response.json()["id"]
        assert hosts[1].chat(key).status == 200  # B caches the key now
        warmed = time.monotonic()
        assert hosts[0].admin.call("POST", f"/client-keys/{key_id}/revoke").status == 200
        refused = hosts[1].chat(key)
        if time.monotonic() - warmed < 0.8:
            assert refused.status == 401, "host B still admits the revoked key from its cache"
            assert refused.json()["error"]["code"] == "api_key_revoked"
            return
    raise AssertionError("the machine was too slow to judge within B's cache second")


def leader(hosts: list[Host]) -> Host:
    """The host whose worker holds the lease (its instance's lock file names it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for host in hosts:
            jobs = host.jobs()
            if jobs["leader_pid"] and f":{jobs['leader_pid']}:" in (jobs["leader"] or ""):
                return host
        time.sleep(0.1)
    raise AssertionError("no host leads the scheduler")


def daily_resets(hosts: list[Host]) -> int:
    return sum(host.log().count("daily reset (") for host in hosts)


def test_the_daily_job_runs_once_across_both_hosts(shared):
    _, _, hosts, _ = shared
    first = leader(hosts)
    deadline = time.monotonic() + 10
    while daily_resets(hosts) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daily_resets(hosts) == 1
    assert "daily reset (" in first.log()
    assert sum(host.log().count("runs the jobs") for host in hosts) == 1
    time.sleep(LEASE)  # a follower has tried at least twice since
    assert daily_resets(hosts) == 1 and leader(hosts) is first


def test_when_redis_goes_away_rpm_fails_open_budgets_fail_closed_and_nothing_is_lost(shared):
    redis_server, _, hosts, _ = shared
    limited, budgeted = client_key(hosts[0], rpm_limit=100), client_key(hosts[0], max_budget="5")
    redis_server.stop()
    try:
        served = spread(hosts, limited, 10)
        assert [r.status for r in served] == [200] * 10  # RPM: fail open
        refused = spread(hosts, budgeted, 4)
        assert {r.status for r in refused} == {503}  # budgets: fail closed
        assert {r.json()["error"]["code"] for r in refused} == {"limiter_unavailable"}
        assert all("Redis (the shared limiter) is unreachable" in h.log() for h in hosts)
    finally:
        redis_server.start()
    # Every request served while Redis was away is in the request log (the database).
    ids = {r.headers["x-keyrelay-request-id"] for r in served}
    deadline = time.monotonic() + 10
    while True:
        logged = {row["request_id"] for row in hosts[1].admin.logs(limit=500)}
        if ids <= logged or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ids <= logged
    # Redis came back empty: budgets are reloaded from the database and work again.
    time.sleep(1.1)  # the limiter asks a failed Redis again after 1 s (wall clock)
    assert hosts[0].chat(budgeted, max_tokens=5).status == 200


def test_killing_the_leader_hands_the_jobs_to_the_other_within_its_lease(shared):
    _, _, hosts, _ = shared
    first = leader(hosts)  # after the outage above the lease was taken again
    other = hosts[1 - hosts.index(first)]
    first.kill()
    killed_at = time.monotonic()
    deadline = killed_at + LEASE + LEASE / 3 + 3  # the lease, a follower's try, slack
    while "runs the jobs" not in other.log():
        assert time.monotonic() < deadline, "no host took the jobs over"
        time.sleep(0.05)
    took = time.monotonic() - killed_at
    assert took <= LEASE + LEASE / 3 + 1, took
    assert leader([other]) is other
    assert daily_resets(hosts) == 1  # its catch-up saw the run in the shared database
