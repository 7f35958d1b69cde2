"""What several hosts share through Redis besides the limiter: the key cache's
invalidations (pub/sub) and the scheduler's leader lease.

A change to provider keys on one host (disabled, cooling down, edited) is published on
`kr:<database id>:keys`; every process listens and drops its key snapshots, so the next
request reads the database again (well under a second, instead of the cache's own TTL).
The listener reconnects after an outage; while Redis is away the one-second TTL still
bounds how stale a snapshot can be.

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

from gateway.redis_limiter import process_name

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
    """Publishes this process's key-cache invalidations; runs `on_change` for others'."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis, self.channel = client, f"{namespace}keys"
        self.name = process_name()
        self._handlers: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    def publish(self) -> None:
        """Tell every other process that provider keys changed (a lost message is only
        a snapshot kept until its TTL)."""
        try:
            self.redis.publish(self.channel, self.name)
        except redis.RedisError as exc:
            log.warning("could not publish a key-cache invalidation to Redis: %s", exc)

    def listen(self, on_change: Callable[[], None]) -> None:
        """Run `on_change` whenever another process publishes; starts the listener."""
        self._handlers.append(on_change)
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="redis-keys", daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        while not self._stopping:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self._changed()  # what was published while we were not listening
                while not self._stopping:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("data") != self.name:
                        self._changed()
            except (redis.RedisError, OSError) as exc:
                log.debug("key-cache listener: %s; reconnecting", exc)
                time.sleep(1.0)

    def _changed(self) -> None:
        for handler in self._handlers:
            handler()

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
