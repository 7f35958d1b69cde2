"""The shared limiter never fails open: a full table, a file overwritten with garbage,
deleted or truncated under the workers, or written for another database, still leaves the
limits enforced (gateway/limits/local.py). Real files, real processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

from gateway.limits import local as limiter_module
from gateway.limits.local import Limits, SharedLimiter

T0 = 1_800_000_000
SPAWN = multiprocessing.get_context("spawn")


class Small(SharedLimiter):
    """Small tables: quick to fill, to overwrite and to look through."""

    slots = 256
    flights = 64
    budgets = 256
    probe = 16


class OneNeighbourhood(Small):
    """An in-flight table of 16 entries, all in one neighbourhood."""

    flights = 1


def admitted(limiter, scope, limits, now, times) -> int:
    return sum(limiter.admit(scope, limits, now)[1] is None for _ in range(times))


def reserved(limiter, scope, times, load_spent, budget=100, estimate=10, period=5) -> int:
    return sum(
        limiter.reserve(scope, period, budget, estimate, load_spent)[2] for _ in range(times)
    )


# -- 1, 2: a full table reuses slots, it never stops counting ----------------------------


def test_a_full_table_still_enforces_limits_on_new_keys(tmp_path):
    limiter = SharedLimiter(tmp_path / "limits.bin")
    for i in range(4_100):
        assert limiter.admit(f"ck:{i}", Limits(rpm=100), T0)[1] is None
    assert admitted(limiter, "ck:new", Limits(rpm=2), T0, 10) == 2
    # 100,000 more keys in the same minute: every one keeps its window.
    for i in range(100_000):
        limiter.admit(f"pk:{i}", Limits(rpm=100), T0)
    stats = limiter.stats()
    assert stats["slots_used"] == 104_101 and stats["evicted"] == stats["reclaimed"] == 0
    assert admitted(limiter, "pk:99999", Limits(rpm=2), T0, 10) == 1
    # Then 200,000 more, 1,500 new ones a second (90,000 in use at a time): more keys than
    # slots (262,144), the slots of keys idle for a minute are taken over.
    total = 200_000
    for i in range(total):
        limiter.admit(f"xk:{i}", Limits(rpm=100), T0 + 61 + i // 1_500)
    now = T0 + 61 + (total - 1) // 1_500
    stats = limiter.stats()
    assert stats["reclaimed"] > 0 and stats["evicted"] == 0
    assert stats["slots_used"] <= stats["slots"] + SharedLimiter.probe - 1
    assert limiter.window(f"xk:{total - 1}", now).requests == 1
    assert admitted(limiter, f"xk:{total - 5}", Limits(rpm=2), now, 10) == 1
    assert admitted(limiter, "ck:newer", Limits(rpm=2), now, 10) == 2
    print(f"304,101 keys, {stats['reclaimed']} slots reclaimed")  # for the record


def test_windows_older_than_a_minute_are_reclaimed(tmp_path):
    limiter = Small(tmp_path / "limits.bin")
    for i in range(2_000):  # far more than 256 slots, all busy this minute
        limiter.admit(f"ck:{i}", Limits(rpm=5), T0)
    full = limiter.stats()
    assert full["evicted"] > 0  # busy ones had to go: least recently used first
    assert full["slots_used"] >= 250
    for i in range(120):  # a minute later: all of those are idle
        assert limiter.admit(f"ck:late{i}", Limits(rpm=5), T0 + 61)[1] is None
    later = limiter.stats()
    reused = later["reclaimed"] - full["reclaimed"]
    assert reused == 120 - (later["slots_used"] - full["slots_used"]) and reused >= 100
    assert later["evicted"] == full["evicted"]  # only idle windows were taken
    assert admitted(limiter, "ck:one-more", Limits(rpm=3), T0 + 61, 10) == 3


# -- 3: garbage is detected, not trusted ----------------------------------------------


def test_a_body_of_random_bytes_is_reset_not_trusted(tmp_path):
    path = tmp_path / "limits.bin"
    limiter = Small(path)
    assert limiter.admit("ck:1", Limits(rpm=20), T0)[1] is None
    assert limiter.reserve("ck:1:budget", 5, 100, 10, lambda: 0)[2]
    size = path.stat().st_size
    start = limiter_module._HEADER  # the header stays: each entry must notice by itself
    with open(path, "r+b") as file:
        file.seek(start)
        file.write(os.urandom(size - start))
    assert path.stat().st_size == size
    assert admitted(limiter, "ck:1", Limits(rpm=20), T0 + 1, 60) == 20
    assert admitted(Small(path), "ck:2", Limits(rpm=20), T0 + 1, 60) == 20  # a new worker
    loads = []

    def load_spent():
        loads.append(1)
        return 0

    assert reserved(limiter, "ck:1:budget", 30, load_spent) <= 10
    assert loads  # the spend was taken from the database again
    # A file overwritten whole (header too) is rebuilt.
    with open(path, "r+b") as file:
        file.write(os.urandom(size))
    assert admitted(limiter, "ck:1", Limits(rpm=20), T0 + 2, 60) == 20
    assert limiter.stats()["rebuilt"] >= 1


# -- 4, 5: a file deleted or truncated under the workers -------------------------------


def _no_spend():
    return 0


def _reserve_then_wait(path, out, done):
    limiter = SharedLimiter(Path(path))
    got = reserved(limiter, "ck:1:budget", 10, _no_spend)
    out.put((got, os.fstat(limiter._fd).st_ino))
    done.wait(60)  # alive: its reservations still count


def test_a_deleted_file_is_replaced_by_one_file_for_every_worker(tmp_path):
    path = tmp_path / "limits.bin"
    limiter = SharedLimiter(path)
    assert reserved(limiter, "ck:1:budget", 1, _no_spend) == 1
    path.unlink()
    out, done = SPAWN.Queue(), SPAWN.Event()
    child = SPAWN.Process(target=_reserve_then_wait, args=(str(path), out, done))
    child.start()
    try:
        child_got, child_inode = out.get(timeout=60)
        ours = reserved(limiter, "ck:1:budget", 10, _no_spend)
        assert child_got + ours <= 10  # $100 / $10: one budget for both
        assert os.fstat(limiter._fd).st_ino == child_inode == path.stat().st_ino
    finally:
        done.set()
        child.join(60)
    assert child.exitcode == 0


def _truncate_while_mapped(path, out):
    limiter = SharedLimiter(Path(path))
    assert limiter.admit("ck:1", Limits(rpm=3), T0)[1] is None
    os.truncate(path, 0)
    got = admitted(limiter, "ck:1", Limits(rpm=3), T0, 5)
    out.put((got, os.stat(path).st_size))


def test_a_truncated_file_is_rebuilt_without_sigbus(tmp_path):
    path = tmp_path / "limits.bin"
    out = SPAWN.Queue()
    child = SPAWN.Process(target=_truncate_while_mapped, args=(str(path), out))
    child.start()
    child.join(60)
    assert child.exitcode == 0  # not -SIGBUS
    got, size = out.get(timeout=5)
    assert got == 3 and size > 0  # rebuilt to full size; windows start empty
    # Another worker shares the rebuilt file.
    assert SharedLimiter(path).admit("ck:1", Limits(rpm=3), T0)[1].reason == "rpm"


# -- 6: the file belongs to one database ------------------------------------------------


def test_a_file_of_another_database_is_rebuilt(tmp_path, caplog):
    path = tmp_path / "limits.bin"
    first = SharedLimiter(path, "db-A")
    assert admitted(first, "ck:1", Limits(rpm=1), T0, 3) == 1
    with caplog.at_level(logging.WARNING, logger="gateway.limits.local"):
        second = SharedLimiter(path, "db-B")
        assert second.window("ck:1", T0).requests == 0
    assert second.stats()["database_id"] == "db-B"
    assert any("db-A" in r.getMessage() and "rebuilt" in r.getMessage() for r in caplog.records)
    assert admitted(second, "ck:1", Limits(rpm=1), T0, 3) == 1
    assert SharedLimiter(path, "db-B").window("ck:1", T0).requests == 1  # same id: kept


# -- 7: a revoked key's entries are freed -----------------------------------------------


def test_forget_frees_every_scope_of_a_key(tmp_path):
    limiter = SharedLimiter(tmp_path / "limits.bin")
    for scope in ("ck:7", "ck:70", "pk:3", "pk:3:gpt-4o"):
        assert admitted(limiter, scope, Limits(rpm=1), T0, 2) == 1
    loads = []

    def load_spent():
        loads.append(1)
        return 40

    assert limiter.reserve("ck:7:budget", 5, 100, 10, load_spent)[:2] == (40, 0)
    limiter.settle_budget("ck:7:budget", 5, 10, 10)
    assert limiter.spent("ck:7:budget", 5) == 50
    used = limiter.stats()["slots_used"]
    assert limiter.forget("ck:7") == 2  # its window and its budget entry
    assert limiter.forget("pk:3") == 2
    assert limiter.stats()["slots_used"] == used - 3
    assert limiter.window("ck:7", T0).requests == 0
    assert limiter.window("pk:3:gpt-4o", T0).requests == 0
    assert limiter.spent("ck:7:budget", 5) is None
    assert limiter.window("ck:70", T0).requests == 1  # another key: kept
    limiter.reserve("ck:7:budget", 5, 100, 10, load_spent)
    assert len(loads) == 2  # reloaded from the database


# -- 8: the in-flight table -------------------------------------------------------------


def _hold_places(path, scopes, small, out):
    limiter = (OneNeighbourhood if small else SharedLimiter)(Path(path))
    got = sum(limiter.admit(s, Limits(parallel=1), T0)[1] is None for s in scopes)
    out.put((os.getpid(), got))  # and exit without giving any back


def _run(target, *args):
    out = SPAWN.Queue()
    child = SPAWN.Process(target=target, args=args + (out,))
    child.start()
    result = out.get(timeout=120)
    child.join(60)
    return result


def test_in_flight_places_of_dead_workers_are_reclaimed_and_a_full_table_refuses(tmp_path):
    # 70,000 scopes in flight: more than the table holds (old: 4,096; now 65,536).
    path = tmp_path / "limits.bin"
    scopes = [f"ck:{i}" for i in range(70_000)]
    _, held = _run(_hold_places, str(path), scopes, False)
    assert held > 4_096
    limiter = SharedLimiter(path)
    assert admitted(limiter, "ck:target", Limits(parallel=2), T0, 10) == 2  # the dead's places
    for scope in scopes:  # now a live worker holds the places
        limiter.admit(scope, Limits(parallel=1), T0 + 1)
    results = [limiter.admit("ck:other", Limits(parallel=3), T0 + 1) for _ in range(10)]
    assert sum(refusal is None for _, refusal in results) <= 3
    assert {refusal.reason for _, refusal in results if refusal} == {"parallel"}


def test_a_small_in_flight_table_full_of_live_places_refuses(tmp_path):
    path = tmp_path / "limits.bin"
    dead_pid, held = _run(_hold_places, str(path), [f"ck:{i}" for i in range(200)], True)
    assert held == 16  # every entry taken, then refused
    limiter = OneNeighbourhood(path)
    assert admitted(limiter, "ck:a", Limits(parallel=2), T0, 5) == 2
    assert limiter.stats()["flights_reclaimed"] >= 1
    assert dead_pid != os.getpid()
    for i in range(200):
        limiter.admit(f"ck:live{i}", Limits(parallel=1), T0)
    assert limiter.stats()["flights_used"] == 16
    assert admitted(limiter, "ck:b", Limits(parallel=5), T0, 10) == 0  # no room: refused
    limiter.settle("ck:a", 0, T0, parallel=True)  # a place is given back
    assert admitted(limiter, "ck:a", Limits(parallel=2), T0, 5) == 1


def test_revoking_or_deleting_a_key_frees_its_shared_state(app, admin, server, fake):
    """Through the admin API: a revoked or deleted client key and a deleted provider key
    give their windows and budget entries back at once (the table keeps room)."""
    import openai

    from tests.conftest import chat

    limiter = app.extensions["keyrelay"].limiter
    provider = admin.add_key("sk-forget-aaaaaaaaaaaaaaaa", fake.base_url, rpm_limit=100)
    keys = []
    for name in ("revoked", "deleted"):
        body = {"name": name, "rpm_limit": 50, "max_budget": "5.00"}
        created = admin.call("POST", "/client-keys", body).json()
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=created["key"], max_retries=0)
        sdk.chat.completions.create(**chat(), max_tokens=5)
        sdk.close()
        keys.append(created["id"])
    used = limiter.stats()
    assert used["slots_used"] >= 3 and used["budgets_used"] >= 2
    assert admin.call("POST", f"/client-keys/{keys[0]}/revoke").status == 200
    assert admin.call("DELETE", f"/client-keys/{keys[1]}").status == 204
    assert admin.call("DELETE", f"/keys/{provider['id']}").status == 204
    after = limiter.stats()
    assert after["slots_used"] == used["slots_used"] - 3
    assert after["budgets_used"] == used["budgets_used"] - 2
