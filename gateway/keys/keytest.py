"""The key test: one cheap real call (the upstream's model list) that says whether a
provider key works, and teaches its catalog the models it serves (gateway/keys/catalog.py).

Run when a key is added (every front end, unless told not to), on demand, and by the
re-validation job for keys taken out of the pool."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine

from gateway import periods, store
from gateway.errors import GatewayError
from gateway.keys import lifecycle
from gateway.keys.messages import SYSTEM, upstream_message
from gateway.keys.secrets import SecretUnreadable
from gateway.policy import Outcome
from gateway.providers.base import Timeouts, TransportError
from models.provider_keys import (
    COOLING_DOWN,
    SECRET_INSECURE,
    SECRET_UNREADABLE,
    STATUS_SENTENCES,
)

# At most: the proxy's own timeouts (KEYRELAY_CONNECT_TIMEOUT / _READ_TIMEOUT) apply when
# shorter. The whole test (every page of a model list) takes at most connect + read: an
# upstream that trickles its answer must not hold the admin's call (key creation) for long.
TEST_TIMEOUTS = Timeouts(connect=5.0, read=15.0)
# Client errors of a key test that are no verdict on the key: an upstream without a model
# list (404/405), a timeout or conflict on its side, a rate limit.
_TEST_SAYS_NOTHING_OF_THE_KEY = {404, 405, 408, 409, 429}
# Keys of one import tested side by side: a pasted list of dead keys takes one test's time.
PARALLEL_TESTS = 8


class KeyTester:
    """Tests provider keys and stores what each test found."""

    def __init__(
        self, engine: Engine, candidates, adapters: dict, keys, clock, timeouts=TEST_TIMEOUTS
    ) -> None:
        self.engine, self.candidates, self.adapters = engine, candidates, adapters
        self.keys, self.clock = keys, clock  # the key cache, dropped after each test
        self.timeouts = Timeouts(
            min(timeouts.connect, TEST_TIMEOUTS.connect), min(timeouts.read, TEST_TIMEOUTS.read)
        )
        self.bound = self.timeouts.connect + self.timeouts.read  # seconds, the whole test

    def test(self, key_id: int) -> dict:
        """A cheap real call (the model list): ok / auth_failed / rate_limited / unreachable
        / error; secret_unreadable / secret_insecure (no call) when the secret must be
        re-entered. An answered list becomes the key's discovered models."""
        now = self.clock.now()
        with self.engine.connect() as conn:
            key = store.load_key(conn, key_id, periods.local_day(now))
        if key.status == SECRET_INSECURE:
            return _secret_result(SECRET_INSECURE)
        try:
            target = self.candidates.target(key)
        except SecretUnreadable:
            return _secret_result(SECRET_UNREADABLE)
        adapter = self.adapters[key.provider]
        started = time.perf_counter()
        try:  # the upstream's answer, without the key's secret (it may echo it)
            asked = _within(self.bound, lambda: adapter.list_models(target, self.timeouts))
            reply = target.scrub.reply(asked)
        except TransportError as exc:
            reply = target.scrub.error(exc)
        except GatewayError as exc:  # a setting of the key's that cannot be sent: not its fault
            ms = round((time.perf_counter() - started) * 1000)
            return self._result(key, "error", None, exc.message, {"last_error": exc.message}, ms)
        ms = round((time.perf_counter() - started) * 1000)
        if isinstance(reply, TransportError):
            error = str(reply)
            return self._result(key, "unreachable", None, error, {"last_error": error}, ms)
        if 200 <= reply.status < 300:
            models = adapter.model_ids(reply)
            values = {"discovered_models": models, "consecutive_failures": 0}
            if cooling_note(key, now) is None:  # a cooling key keeps the upstream's reason
                values["last_error"] = None
            values["unserved_models"] = None  # the upstream's list is the word on its models
            passed = (lifecycle.TEST_PASSED, {})
            result = self._result(key, "ok", reply.status, None, values, ms, models, passed)
            return {**result, "note": cooling_note(key, now)}
        error = f"HTTP {reply.status}: {reply.body[:200].decode('utf-8', 'replace')}"
        if 400 <= reply.status < 500 and reply.status not in _TEST_SAYS_NOTHING_OF_THE_KEY:
            # A trivial request refused (LiteLLM answers a bad key with 400 "No connected
            # db."): the key is not trusted until a test passes (re-validation retries it).
            result = "auth_failed" if reply.status in (401, 403) else "error"
            refused = (lifecycle.REFUSED, {"disabled_by": SYSTEM, "disabled_at": now})
            values = {"last_error": error}
            return self._result(key, result, reply.status, error, values, ms, None, refused)
        result = "rate_limited" if reply.status == 429 else "error"
        return self._result(key, result, reply.status, error, {"last_error": error}, ms)

    def test_many(self, key_ids: list[int]) -> dict[int, dict]:
        """Test keys side by side (at most PARALLEL_TESTS at once): {key id: its result}."""
        if len(key_ids) <= 1:
            return {key_id: self.test(key_id) for key_id in key_ids}
        with ThreadPoolExecutor(min(PARALLEL_TESTS, len(key_ids)), "key-tests") as pool:
            return dict(zip(key_ids, pool.map(self.test, key_ids), strict=True))

    def _result(self, key, result, status, error, values, ms, models=None, moved=None) -> dict:
        """Store what the test found (and `moved`, the (event, fields) of the key's change of
        state, guarded by gateway/keys/lifecycle.py); the answer names the upstream's
        message and the time the call took (`latency_ms`)."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            store.record_test(conn, key.id, {**values, "updated_at": now})
            if moved is not None:
                event, fields = moved
                conn.execute(lifecycle.update_for(event, lifecycle.keys_t.c.id == key.id, **fields))
        self.keys.forget()
        return {
            "result": result,
            "status_code": status,
            "error": error,
            "message": upstream_message(error),
            "latency_ms": ms,
            "models": models,
        }


def cooling_note(key, now) -> str | None:
    """What a passing test leaves as it was: the cooldown the upstream asked for (a rate
    limit or an exhausted quota, which a model list cannot check). None when not cooling."""
    until = key.cooldown_until
    if key.status != COOLING_DOWN or until is None or until <= now:
        return None
    when = until.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"The key answers, but stays cooling down until {when} as its upstream asked "
        "(a test cannot tell whether a rate limit or quota is over)."
    )


def _secret_result(status: str) -> dict:
    """A key test's answer for a key whose secret must be re-entered (nothing was called)."""
    error = STATUS_SENTENCES[status]
    return {
        "result": status,
        "status_code": None,
        "error": error,
        "message": error,
        "latency_ms": None,
        "models": None,
    }


def _within(seconds: float, call):
    """call()'s answer if it comes within `seconds`; else TransportError (a timeout). The
    call goes on in the background until its own timeouts end it; its answer is dropped."""
    done: dict = {}

    def run() -> None:
        try:
            done["reply"] = call()
        except BaseException as exc:  # handed to the caller below
            done["error"] = exc

    worker = threading.Thread(target=run, name="key-test", daemon=True)
    worker.start()
    worker.join(seconds)
    if "error" in done:
        raise done["error"]
    if "reply" not in done:
        raise TransportError(
            Outcome.TIMEOUT, f"upstream timed out (no complete answer within {seconds:g} s)"
        )
    return done["reply"]
