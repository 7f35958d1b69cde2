"""What several hosts share through Redis besides the limiter: the caches' invalidations
(pub/sub) and the scheduler's leader lease.

A process caches what every request reads: provider keys and profiles (1 and 5 seconds),
client keys (1 s), routes (5 s), price overrides (60 s) and key budgets (1 s). A change on
one host (a key disabled or cooling down, a client key revoked, a route or a price edited)
is published on `kr:<database id>:changed` as `<process> <topic>`; every other process
drops that cache, so its next request reads the database again (milliseconds, instead of
the cache's own lifetime). The listener reconnects after an outage (and then drops every
cache, for what it missed); while Redis is away the lifetimes above still bound how stale
a cache can be.

The lease is `kr:<database id>:scheduler` = this process's name, set with NX and an
expiry, renewed by its holder (compare-and-extend in Lua); when the holder dies, the key
expires and the next follower to try takes it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import redis

from gateway.limits.redis import process_name

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Invalidations:
    """Publishes this process's cache invalidations by topic; runs the handlers of the
    topics other processes publish."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis, self.channel = client, f"{namespace}changed"
        self.name = process_name()
        self._handlers: dict[str, list[Callable[[], None]]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    def publish(self, topic: str) -> None:
        """Tell every other process that what `topic` caches changed (a lost message is
        only a cache kept until its lifetime ends)."""
        try:
            self.redis.publish(self.channel, f"{self.name} {topic}")
        except redis.RedisError as exc:
            log.warning("could not publish a cache invalidation (%s) to Redis: %s", topic, exc)

    def listen(self, topic: str, on_change: Callable[[], None]) -> None:
        """Run `on_change` whenever another process publishes `topic`; starts the listener."""
        self._handlers.setdefault(topic, []).append(on_change)
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="redis-changed", daemon=True)
            self._thread.start()

    def share(self, topic: str, cache) -> None:
        """Make `cache.forget()` tell the other processes, and their publications of
        `topic` drop this process's copy (with the cache's own forget, told to nobody)."""
        local = cache.forget

        def forget() -> None:
            local()
            self.publish(topic)

        cache.forget = forget
        self.listen(topic, local)

    def _listen(self) -> None:
        while not self._stopping:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self._changed(None)  # what was published while we were not listening
                while not self._stopping:
                    message = pubsub.get_message(timeout=1.0)
                    if message:
                        sender, _, topic = str(message.get("data")).partition(" ")
                        if sender != self.name:
                            self._changed(topic)
            except (redis.RedisError, OSError) as exc:
                log.debug("cache-invalidation listener: %s; reconnecting", exc)
                time.sleep(1.0)

    def _changed(self, topic: str | None) -> None:
        """Run the handlers of `topic` (None: of every topic)."""
        if topic is None:
            handlers = [h for hs in self._handlers.values() for h in hs]
        else:
            handlers = self._handlers.get(topic, [])
        for handler in handlers:
            try:
                handler()
            except Exception:  # one cache's failure must not stop the listener
                log.exception("cache invalidation %s failed", topic)

    def close(self) -> None:
        self._stopping = True


class Lease:
    """The scheduler's leadership across hosts: a Redis key with an expiry."""

    def __init__(self, client: redis.Redis, namespace: str, seconds: float) -> None:
        self.redis, self.key = client, f"{namespace}scheduler"
        self.seconds = seconds
        self.name = process_name()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (False also when Redis is away)."""
        try:
            return bool(self.redis.set(self.key, self.name, nx=True, px=self._ms))
        except redis.RedisError as exc:
            log.warning("scheduler lease: Redis is unreachable (%s)", exc)
            return False

    def renew(self) -> bool:
        """Extend the lease; False when it was lost (expired, taken) or Redis is away."""
        try:
            return bool(self._renew(keys=[self.key], args=[self.name, self._ms]))
        except redis.RedisError as exc:
            log.warning("scheduler lease: could not renew (%s)", exc)
            return False

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):  # else it expires on its own
            self._release(keys=[self.key], args=[self.name])

    def holder(self) -> str | None:
        """Who leads (host:pid:random), if anyone."""
        try:
            return self.redis.get(self.key)
        except redis.RedisError:
            return None

    @property
    def _ms(self) -> int:
        return int(self.seconds * 1000)


class Shared:
    """The Redis pieces a Gateway holds: its client, invalidations and the lease."""

    def __init__(self, client: redis.Redis, namespace: str, lease_seconds: float) -> None:
        self.client = client
        self.invalidations = Invalidations(client, namespace)
        self.lease = Lease(client, namespace, lease_seconds)

    def close(self) -> None:
        self.invalidations.close()
