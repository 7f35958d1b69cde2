"""The Redis-backed limiter (issue 14) against a real redis-server: the same answers as the
file limiter, shared by two limiters as two hosts would be, and the failure policy."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.errors import GatewayError
from gateway.limits.local import Limits, SharedLimiter
from gateway.limits.redis import GRANT_SECONDS, GRANT_WANTED, RedisLimiter, connect
from gateway.redis_shared import Lease
from tests.redis_server import RedisServer

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def hosts(redis_server, request):
    """Two limiters on one Redis, as on two hosts (a namespace per test)."""
    redis_server.client().flushall()
    namespace = f"kr:{request.node.name[:40]}:"
    return [RedisLimiter(connect(redis_server.url), namespace) for _ in range(2)]


def test_windows_match_the_file_limiter(hosts, tmp_path):
    """Same requests, same seconds: the same windows, refusals and Retry-After."""
    shared, local = hosts[0], SharedLimiter(tmp_path / "limits.bin")
    limits = Limits(rpm=3, tpm=100)
    for now, tokens in ((NOW, 10), (NOW + 10, 50), (NOW + 20, 50), (NOW + 30, 0), (NOW + 61, 0)):
        for limiter in (shared, local):
            limiter.settle("ck:1", tokens, now, False)
        answers = [limiter.admit("ck:1", limits, now) for limiter in (shared, local)]
        assert answers[0] == answers[1], now
    window, refusal = shared.admit("ck:1", limits, NOW + 62)
    assert (refusal.reason, refusal.retry_after, window.tokens) == ("tpm", 8, 100)
    assert shared.window("ck:1", NOW + 61) == local.window("ck:1", NOW + 61)


def test_windows_match_the_file_limiter_through_a_random_minute_and_more(hosts, tmp_path):
    """The Redis window keeps running totals and recounts once a second, as limits.bin
    does: the same answers through busy seconds, quiet gaps, a clock a moment behind
    (another host's) and settlements of earlier seconds."""
    import random

    shared, local = hosts[0], SharedLimiter(tmp_path / "limits.bin")
    limits = Limits(rpm=40, tpm=3000)
    rng, now = random.Random(14), NOW
    for step in range(600):
        now += rng.choice((0, 0, 0, 1, 1, 2, 7, 30, 59, 61)) if step % 9 else 0
        at = now - rng.choice((0, 0, 0, 1, 2))  # a clock a moment behind the newest
        answers = [limiter.admit("ck:1", limits, at) for limiter in (shared, local)]
        assert answers[0] == answers[1], (step, at)
        if answers[0][1] is None:
            tokens, done = rng.randint(0, 200), at - rng.choice((0, 0, 1, 3))
            for limiter in (shared, local):
                limiter.settle("ck:1", tokens, done, False)
        assert shared.window("ck:1", at) == local.window("ck:1", at), (step, at)


def test_a_settlement_from_long_ago_leaves_the_window_alone(hosts, tmp_path):
    """A settlement replayed after an outage (its second out of the window) counts
    nowhere and does not reset what the window holds."""
    shared = hosts[0]
    for _ in range(3):
        shared.admit("ck:1", Limits(rpm=10, tpm=None), NOW + 100)
    shared.settle("ck:1", 500, NOW, False)  # 100 s ago
    window = shared.window("ck:1", NOW + 100)
    assert (window.requests, window.tokens) == (3, 0)


def test_two_hosts_share_one_rpm_window(hosts):
    limits = Limits(rpm=10)
    admitted = [hosts[i % 2].admit("ck:7", limits, NOW)[1] is None for i in range(40)]
    assert admitted.count(True) == 10
    window, refusal = hosts[1].admit("ck:7", limits, NOW + 59)
    assert refusal.reason == "rpm" and refusal.retry_after == 1
    assert hosts[0].admit("ck:7", limits, NOW + 60)[1] is None  # the minute has passed


def test_parallel_places_are_shared_and_a_dead_process_gives_them_back(hosts, redis_server):
    limits = Limits(parallel=2)
    assert hosts[0].admit("ck:3", limits, NOW)[1] is None
    assert hosts[1].admit("ck:3", limits, NOW)[1] is None
    assert hosts[1].admit("ck:3", limits, NOW)[1].reason == "parallel"
    hosts[1].settle("ck:3", 5, NOW, True)
    assert hosts[1].admit("ck:3", limits, NOW)[0].in_flight == 2
    # Host 0 dies: its heartbeat expires, and its place is taken back when the scope is full.
    redis_server.client().delete(f"{hosts[0].ns}alive:{hosts[0].process}")
    window, refusal = hosts[1].admit("ck:3", limits, NOW)
    assert refusal is None and window.in_flight == 2


def test_a_budget_for_one_request_admits_one_across_hosts(hosts):
    loads = []

    def load():
        loads.append(1)
        return 1_000

    results = [hosts[i % 2].reserve("ck:5:budget", 42, 2_500, 1_000, load) for i in range(20)]
    assert [r[2] for r in results].count(True) == 1
    assert loads == [1]  # the spend was loaded from the database once, for both hosts
    hosts[0].settle_budget("ck:5:budget", 42, 1_000, 700)
    hosts[0].flush()  # else its settler sends it a moment later
    assert hosts[1].spent("ck:5:budget", 42) == 1_700
    assert hosts[1].reserve("ck:5:budget", 42, 2_500, 1_000, load) == (1_700, 0, False)
    assert hosts[1].spent("ck:5:budget", 43) is None  # another period: not counted here


def test_budget_and_window_in_one_call_take_nothing_unless_both_admit(hosts, tmp_path):
    """reserve_and_admit (one round trip in Redis) answers as the file limiter does."""
    shared, local = hosts[0], SharedLimiter(tmp_path / "limits.bin")
    limits = Limits(rpm=2)
    for limiter in (shared, local):
        ask = ("ck:4:budget", 7, 3_000, 1_000, lambda: 0, "ck:4", limits, NOW)
        first = limiter.reserve_and_admit(*ask)
        assert first[:3] == (0, 0, True) and first[4] is None and first[3].requests == 1
        second = limiter.reserve_and_admit(*ask)
        assert second[:3] == (0, 1_000, True) and second[4] is None
        third = limiter.reserve_and_admit(*ask)
        assert third[2] is True and third[4].reason == "rpm"  # the window refuses...
        assert limiter.reserve("ck:4:budget", 7, 3_000, 0, lambda: 0)[1] == 2_000  # ...no hold
        limiter.settle_many(
            [("b", "ck:4:budget", 7, 1_000, 1_200), ("w", "ck:4", NOW, 40, False)]
            + [("b", "ck:4:budget", 7, 1_000, 300)]
        )
        assert limiter.reserve("ck:4:budget", 7, 3_000, 0, lambda: 0)[:2] == (1_500, 0)
        assert limiter.window("ck:4", NOW).tokens == 40
        over = limiter.reserve_and_admit("ck:4:budget", 7, 3_000, 2_000, int, "ck:4", limits, NOW)
        assert over == (1_500, 0, False, None, None)  # the budget refuses: no window asked


def _scripts_run(redis_server) -> int:
    stats = redis_server.client().info("commandstats")
    return stats.get("cmdstat_evalsha", {}).get("calls", 0)


def test_a_window_far_from_its_limits_grants_requests_admitted_with_no_round_trip(
    hosts, redis_server
):
    """A process admits most requests of a roomy window from a grant (no round trip);
    Redis still ends up counting every one of them, in its second."""
    limits = Limits(rpm=1_000_000, tpm=1_000_000)
    hosts[0].admit("ck:warm", limits, NOW)  # a fresh Redis has its windows rebuilt first
    redis_server.client().config_resetstat()
    answers = [hosts[0].admit("ck:1", limits, NOW) for _ in range(100)]
    assert all(refusal is None for _, refusal in answers)
    assert [window.requests for window, _ in answers] == list(range(1, 101))
    assert _scripts_run(redis_server) <= 100 // (1 + GRANT_WANTED) + 1  # 4, not 100
    hosts[0].flush()
    assert hosts[1].window("ck:1", NOW).requests == 100
    # What is left of the last grant goes back once its moment has passed.
    grants = f"{hosts[0].ns}g:ck:1"
    assert int(redis_server.client().hget(grants, hosts[0].process)) > 0
    time.sleep(GRANT_SECONDS)
    hosts[0]._expire_grants()  # the settler's round, without waiting for it
    hosts[0].flush()
    assert redis_server.client().hgetall(grants) == {}
    assert hosts[1].window("ck:1", NOW).requests == 100


def test_grants_never_take_two_hosts_past_the_rpm_limit(hosts):
    """Granted requests are counted as taken the moment they are granted: a grant held by
    one host while the other fills the window is still there to be used, and no more."""
    limits = Limits(rpm=3_200)
    hosts[0].grant_seconds = 60  # held while the other host fills the window
    assert hosts[0].admit("ck:8", limits, NOW)[1] is None  # and 32 granted
    admitted = sum(hosts[1].admit("ck:8", limits, NOW)[1] is None for _ in range(3_300))
    assert admitted == 3_200 - 1 - GRANT_WANTED
    admitted = sum(hosts[0].admit("ck:8", limits, NOW)[1] is None for _ in range(100))
    assert admitted == GRANT_WANTED
    for host in hosts:
        host.flush()
    assert hosts[1].window("ck:8", NOW).requests == 3_200


def test_grants_never_take_eight_threads_on_two_hosts_past_the_rpm_limit(hosts):
    """640 of 2,000 from eight threads on two hosts at once, however the grants fall."""
    limits = Limits(rpm=640)
    admitted = []

    def client(number: int) -> None:
        for i in range(250):
            host = hosts[(number + i) % 2]
            admitted.append(host.admit("ck:9", limits, NOW)[1] is None)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 640
    for host in hosts:
        host.flush()
    assert hosts[0].window("ck:9", NOW).requests == 640


def test_no_grant_near_the_limits_nor_past_half_of_tpm(hosts, redis_server):
    """Small limits are admitted request by request; so is a window past half its TPM."""
    client = redis_server.client()
    hosts[0].admit("ck:2", Limits(rpm=100), NOW)  # 1/64 of the room is less than two
    assert client.hgetall(f"{hosts[0].ns}g:ck:2") == {}
    hosts[0].admit("ck:3", Limits(tpm=1_000), NOW)
    assert client.hget(f"{hosts[0].ns}g:ck:3", hosts[0].process) == str(GRANT_WANTED)
    hosts[0].settle("ck:3", 501, NOW, False)
    time.sleep(GRANT_SECONDS)
    hosts[0]._expire_grants()
    hosts[0].admit("ck:3", Limits(tpm=1_000), NOW)  # 501 of 1,000 tokens: no grant
    assert client.hgetall(f"{hosts[0].ns}g:ck:3") == {}


def test_a_dead_process_grant_is_dropped_when_the_window_looks_full(hosts, redis_server):
    assert hosts[0].admit("ck:4", Limits(rpm=10_000), NOW)[1] is None  # granted 32
    assert hosts[1].admit("ck:4", Limits(rpm=33), NOW)[1].reason == "rpm"  # 1 + 32 taken
    redis_server.client().delete(f"{hosts[0].ns}alive:{hosts[0].process}")
    window, refusal = hosts[1].admit("ck:4", Limits(rpm=33), NOW)
    assert refusal is None and window.requests == 2


def test_an_admission_is_sent_at_once_and_its_answer_read_when_asked(hosts, redis_server):
    """`later()` writes the script and returns; the answer is read when it is asked for,
    so the proxy's routing runs while Redis works (here: while Redis is paused)."""
    hosts[0].admit("ck:5", Limits(rpm=5), NOW)  # connected, its heartbeat sent
    redis_server.client().execute_command("CLIENT", "PAUSE", 400, "ALL")  # < its time-out
    started = time.monotonic()
    answer = hosts[0].later("admit", "ck:6", Limits(rpm=5, parallel=3), NOW)
    sent = time.monotonic() - started
    window, refusal = answer()
    assert sent < 0.2  # written at once...
    assert time.monotonic() - started >= 0.3  # ...answered once Redis was back
    assert refusal is None and (window.requests, window.in_flight) == (1, 1)
    assert answer() == (window, None)  # read once, kept


def test_forget_takes_a_keys_scopes_and_nothing_else(hosts):
    for scope in ("pk:7", "pk:7:gpt-4o", "pk:70"):
        hosts[0].admit(scope, Limits(rpm=1), NOW)
    hosts[0].reserve("pk:7:budget", 1, 10, 1, lambda: 0)
    assert hosts[1].forget("pk:7") == 3
    assert hosts[0].admit("pk:7:gpt-4o", Limits(rpm=1), NOW)[1] is None
    assert hosts[0].admit("pk:70", Limits(rpm=1), NOW)[1].reason == "rpm"
    with pytest.raises(ValueError):
        hosts[0].forget("pk")


@pytest.mark.parametrize(
    ("policy", "rpm_admitted", "budget_admitted"),
    [("mixed", True, False), ("open", True, True), ("closed", False, False)],
)
def test_when_redis_is_gone_the_policy_decides(
    redis_server, request, policy, rpm_admitted, budget_admitted
):
    limiter = RedisLimiter(connect(redis_server.url), f"kr:{request.node.name}:", policy)
    limiter.admit("ck:1", Limits(rpm=5, parallel=5), NOW)  # this host's place in flight
    limiter.reserve("ck:1:budget", 9, 10_000, 2_000, lambda: 0)
    redis_server.client().shutdown(save=True, nosave=False)
    redis_server.process.wait(10)
    try:
        outcomes = []
        for call in (
            lambda: limiter.admit("ck:1", Limits(rpm=5), NOW)[1] is None,
            lambda: limiter.reserve("ck:1:budget", 9, 10_000, 1_000, lambda: 0)[2],
        ):
            try:
                outcomes.append(call())
            except GatewayError as err:
                assert err.status == 503 and err.code == "limiter_unavailable"
                assert err.headers == {"Retry-After": "1"}
                outcomes.append(False)
        assert outcomes == [rpm_admitted, budget_admitted]
        # A provider key's window is never a 503: the key is passed over (closed) or used.
        refusal = limiter.admit("pk:1", Limits(rpm=5), NOW)[1]
        assert (refusal is None) == (policy != "closed")
        # Settlements made while Redis is away are kept, and replayed when it is back.
        limiter.settle("ck:1", 30, NOW, True)
        limiter.settle_budget("ck:1:budget", 9, 2_000, 1_500)
        assert limiter.stats()["pending"] == 2
    finally:
        redis_server.start()  # loads what was saved at shutdown
    limiter._down_until = 0.0  # no need to wait out the pause after the failure
    window = limiter.window("ck:1", NOW)
    assert (window.tokens, window.in_flight) == (30, 0)
    assert limiter.spent("ck:1:budget", 9) == 1_500
    assert limiter.stats()["pending"] == 0


def test_the_lease_has_one_holder_until_it_expires(redis_server):
    client = connect(redis_server.url)
    first, second = Lease(client, "kr:lease:", 0.3), Lease(client, "kr:lease:", 0.3)
    assert first.acquire() and not second.acquire()
    assert first.renew() and first.holder() == first.name
    assert redis_server.client().pexpire("kr:lease:scheduler", 1)  # as if it had expired
    time.sleep(0.01)
    assert second.acquire() and not first.renew()  # the old leader learns it lost
    second.release()
    assert first.holder() is None
