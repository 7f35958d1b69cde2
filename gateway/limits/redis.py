"""The shared limiter in Redis (KEYRELAY_REDIS_URL): several hosts, one set of counters.

`RedisLimiter` has `SharedLimiter`'s interface (limiter.py) and semantics; every operation
is one atomic Lua script (EVALSHA), so one round trip, and settlements travel with the
process's next script (or a background thread's, 20 ms later): at most one round trip per
request on the hot path, which `later()` sends at once and reads when the caller asks (the
proxy asks just before the upstream call, so the routing in between overlaps it). A
window far from its limits grants the process a few requests to admit with no round trip
at all (`g:<scope>`, below). Under the namespace `kr:<database id>:` (two databases on one
Redis never mix):

- `w:<scope>`: the sliding 60-second window, a hash of per-second buckets `r<second>`
  (requests) and `t<second>` (tokens) with running totals beside them (`_h` the newest
  second, `_R`, `_T`, and the oldest seconds `_oR`, `_oT`): a request reads the totals
  (five fields), and the buckets are read and the old ones deleted once a second, when
  the window moves, so a full window (120 buckets) costs a request no more than an empty
  one; the hash expires 2 minutes after its last write.
- `f:<scope>`: requests in flight per process (`<host>:<pid>:<random>`), and `m:<scope>`:
  micro-dollars reserved per process. A process keeps `alive:<process>` with an expiry
  (renewed every few seconds); when a scope looks full, what processes without it held is
  dropped first (the file's dead-pid reclamation, across hosts).
- `b:<scope>`: a budget's period id and spend in it, loaded from the database once per
  period (again whenever Redis lost it).
- `g:<scope>`: requests granted per process and not yet used or given back. The RPM check
  counts them as taken, so grants never let the hosts past a limit. A grant is at most
  `GRANT_WANTED`, at most 1/64 of the room left, none for a window with a parallel limit
  or past half its TPM, nor with a budget (checked request by request); the process uses
  it for `GRANT_SECONDS`, each use settled like a request's tokens (`g` settlements: the
  second it was admitted in), and gives back the rest.

When Redis cannot be reached (`KEYRELAY_REDIS_FAILURE`): `mixed` (the default) admits by
RPM/TPM/parallel limits as if the windows were empty, with a log line, and refuses
budgeted requests with 503; `open` admits both, `closed` refuses both. Settlements are
sent by a background thread (one round trip for all that is pending, off the request's
path); those Redis does not take are kept in memory and sent, in order, when it answers
again, so spend and in-flight counts come back right; the request log itself is the
database journal, which never depends on Redis.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from gateway.errors import GatewayError
from gateway.limits.local import Limits, Refusal, Window

log = logging.getLogger(__name__)

ALIVE_SECONDS = 15  # a process whose heartbeat is this old is taken for dead
HEARTBEAT_SECONDS = 5
DOWN_SECONDS = 1.0
# A settlement waits this long for this process's next operation to carry it to Redis in
# its round trip; then the settler sends it (other hosts see it at most this much later).
SETTLE_DELAY = 0.02  # after a failure, Redis is not asked again for this long
FAILURE_POLICIES = ("mixed", "open", "closed")
_REPLAY_MAX = 100_000  # settlements kept while Redis is away
# A window far from its limits grants a process up to this many requests to admit with no
# round trip, for this long; then what is left goes back.
GRANT_WANTED = 32
GRANT_SECONDS = 0.1

_COMMON = """
local num = tonumber
-- The window's running totals live beside its buckets: `_h` (the newest second seen),
-- `_R`/`_T` (requests/tokens of the buckets in (_h - 60, _h]) and `_oR`/`_oT` (the oldest
-- second with requests/tokens, 0: none). A request reads five fields; the buckets are
-- read once a second, when the window moves (as limits.bin recounts).
local function recount(key, now)
  local all = redis.call('HGETALL', key)
  local req, tok, oldr, oldt, stale = 0, 0, nil, nil, {}
  for i = 1, #all, 2 do
    local f = all[i]
    local kind = string.sub(f, 1, 1)
    if kind == 'r' or kind == 't' then
      local sec, v = tonumber(string.sub(f, 2)), tonumber(all[i + 1])
      if sec <= now - 60 or sec > now then
        stale[#stale + 1] = f
      elseif kind == 'r' then
        req = req + v
        if oldr == nil or sec < oldr then oldr = sec end
      else
        tok = tok + v
        if oldt == nil or sec < oldt then oldt = sec end
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  redis.call('HSET', key, '_h', now, '_R', req, '_T', tok, '_oR', oldr or 0, '_oT', oldt or 0)
  redis.call('EXPIRE', key, 120)
  return req, tok, oldr, oldt
end
-- The window at `now`: moved there first when `now` is newer than its head. A `now` a
-- little behind the head (another host's clock read a moment earlier) moves nothing and
-- leaves out the seconds after it; one more than a window behind starts afresh.
local function window(key, now)
  local m = redis.call('HMGET', key, '_h', '_R', '_T', '_oR', '_oT')
  local head = tonumber(m[1])
  if head == nil or now > head then return recount(key, now) end
  if head - now >= 60 then
    redis.call('DEL', key)
    return recount(key, now)
  end
  local req, tok, oldr, oldt = tonumber(m[2]), tonumber(m[3]), tonumber(m[4]), tonumber(m[5])
  if oldr == 0 then oldr = nil end
  if oldt == 0 then oldt = nil end
  if now < head then
    local later = {}
    for sec = now + 1, head do
      later[#later + 1] = 'r' .. sec
      later[#later + 1] = 't' .. sec
    end
    local values = redis.call('HMGET', key, unpack(later))
    for i = 1, #values, 2 do
      req = req - (tonumber(values[i]) or 0)
      tok = tok - (tonumber(values[i + 1]) or 0)
    end
    if req <= 0 or (oldr and oldr > now) then req = math.max(req, 0); oldr = nil end
    if tok <= 0 or (oldt and oldt > now) then tok = math.max(tok, 0); oldt = nil end
  end
  return req, tok, oldr, oldt
end
-- Count `delta` in the bucket of `now` ('r' requests, 't' tokens) and in the totals,
-- moving the window first if `now` is newer. A second already out of it (a settlement
-- replayed late) counts nowhere.
local function bump(key, kind, now, delta)
  local K = string.upper(kind)
  local m = redis.call('HMGET', key, '_h', '_o' .. K)
  local head, oldest = tonumber(m[1]), tonumber(m[2]) or 0
  if head == nil or now > head then
    recount(key, now)
    oldest = tonumber(redis.call('HGET', key, '_o' .. K))
  elseif now <= head - 60 then
    return
  end
  redis.call('HINCRBY', key, kind .. now, delta)
  local total = redis.call('HINCRBY', key, '_' .. K, delta)
  if total == delta or oldest == 0 or oldest > now then
    redis.call('HSET', key, '_o' .. K, now)
  end
  redis.call('EXPIRE', key, 120)
end
-- Per-second counts of the window (sec -> count), read only to refuse.
local function buckets(key, kind, now)
  local fields = {}
  for sec = now - 59, now do fields[#fields + 1] = kind .. sec end
  local values = redis.call('HMGET', key, unpack(fields))
  local found = {}
  for i, v in ipairs(values) do
    if v then found[now - 60 + i] = tonumber(v) end
  end
  return found
end
local function flying(key, alive, purge)
  local all = redis.call('HGETALL', key)
  local total = 0
  for i = 1, #all, 2 do
    if purge and redis.call('EXISTS', alive .. all[i]) == 0 then
      redis.call('HDEL', key, all[i])
    else
      total = total + tonumber(all[i + 1])
    end
  end
  return total
end
local function retry(buckets, now, total, limit)
  for sec = now - 59, now do
    total = total - (buckets[sec] or 0)
    if total < limit then return math.max(1, sec - now + 60) end
  end
  return 1
end
local function reset(oldest, now)
  if oldest == nil then return 0 end
  return 60 - (now - oldest)
end
local function add(key, inst, delta)
  local left = redis.call('HINCRBY', key, inst, delta)
  if left <= 0 then redis.call('HDEL', key, inst) end
end
"""

_CHECKS = """
-- `gk`: the requests granted to processes to admit on their own (counted as taken until
-- they are used or given back); a dead process's grants are dropped when the window
-- looks full.
local function admit_check(wk, fk, gk, now, rpm, tpm, par, alive)
  local req, tok, oldr, oldt = window(wk, now)
  local fly, granted = 0, 0
  if par >= 0 then
    fly = flying(fk, alive, false)
    if fly >= par then fly = flying(fk, alive, true) end
  end
  if rpm >= 0 then
    granted = flying(gk, alive, false)
    if granted > 0 and req + granted >= rpm then granted = flying(gk, alive, true) end
  end
  local reason, wait = '', 0
  if par >= 0 and fly >= par then reason, wait = 'parallel', 1
  elseif rpm >= 0 and req + granted >= rpm then
    reason, wait = 'rpm', retry(buckets(wk, 'r', now), now, req + granted, rpm)
  elseif tpm >= 0 and tok >= tpm then
    reason, wait = 'tpm', retry(buckets(wk, 't', now), now, tok, tpm)
  end
  return {reason, wait, req, tok, fly, reset(oldr, now), reset(oldt, now), granted}
end
-- Requests this process may admit on its own for a moment (F30 windows without a
-- parallel limit), taken from the window at once: at most `want`, at most 1/64 of the
-- room left (none if that is less than two), none when the tokens are past half of TPM.
local function grant(gk, inst, want, rpm, tpm, par, answer)
  if want <= 0 or par >= 0 or (tpm >= 0 and answer[4] * 2 > tpm) then return 0 end
  local n = want
  if rpm >= 0 then n = math.min(want, math.floor((rpm - answer[3] - answer[8]) / 64)) end
  if n < 2 then return 0 end
  redis.call('HINCRBY', gk, inst, n)
  redis.call('EXPIRE', gk, 120)
  return n
end
local function admit_commit(wk, fk, now, par, inst, answer)
  bump(wk, 'r', now, 1)
  answer[3] = answer[3] + 1
  if answer[6] == 0 then answer[6] = 60 end
  if par >= 0 then add(fk, inst, 1); answer[5] = answer[5] + 1 end
end
-- {-1}: the period is not known here (load its spend); else {admitted 0/1, spent, reserved,
-- what to hold: the estimate, or what the budget can still pay if at least `minimum`}
local function budget_check(bk, mk, period, budget, estimate, minimum, alive, loaded)
  local known = redis.call('HGET', bk, 'period')
  if known ~= period then
    if loaded == '' then return {-1, 0, 0} end
    redis.call('HSET', bk, 'period', period, 'spent', loaded)
  end
  local spent = tonumber(redis.call('HGET', bk, 'spent'))
  local reserved = flying(mk, alive, false)
  if spent + reserved + minimum > budget then reserved = flying(mk, alive, true) end
  if spent + reserved + minimum > budget then return {0, spent, reserved, 0} end
  return {1, spent, reserved, math.max(0, math.min(estimate, budget - spent - reserved))}
end
local function settle_window(wk, fk, now, tokens, parallel, inst)
  if tokens > 0 then bump(wk, 't', now, tokens) end
  if parallel == '1' then add(fk, inst, -1) end
end
-- Granted requests the process admitted at `now` (counted in the window from the grants)
-- or gives back unused.
local function settle_grant(wk, gk, now, used, unused, inst)
  if used > 0 then bump(wk, 'r', now, used) end
  add(gk, inst, -(used + unused))
end
local function settle_budget(bk, mk, period, estimate, cost, inst)
  if estimate > 0 then add(mk, inst, -estimate) end
  if redis.call('HGET', bk, 'period') == period and cost > 0 then
    redis.call('HINCRBY', bk, 'spent', cost)
  end
end
"""

# Every script first applies this process's pending settlements, in order: KEYS start with
# two per settlement, ARGV with their count of keys, the process, then four per settlement:
# 'w', now, tokens, parallel (0/1) | 'b', period, estimate, cost. The operation's own
# KEYS and ARGV follow, as K and A.
_SETTLE_FIRST = """
local n, inst = tonumber(ARGV[1]), ARGV[2]
for i = 0, n / 2 - 1 do
  local a, k1, k2 = 3 + 4 * i, KEYS[2 * i + 1], KEYS[2 * i + 2]
  if ARGV[a] == 'w' then
    settle_window(k1, k2, tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3], inst)
  elseif ARGV[a] == 'g' then
    settle_grant(k1, k2, tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), num(ARGV[a + 3]), inst)
  else
    settle_budget(k1, k2, ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), inst)
  end
end
local K, A = {}, {}
for i = n + 1, #KEYS do K[#K + 1] = KEYS[i] end
for i = 3 + 2 * n, #ARGV do A[#A + 1] = ARGV[i] end
"""

# KEYS: window, flights, grants. ARGV: now, rpm, tpm, parallel (-1: none), process, alive
# prefix, requests wanted as a grant, the windows' marker. Answers the window and the
# requests granted; {'rebuild'} when the marker is gone (Redis came back empty: the
# windows are rebuilt from the request log first, `_SEED`).
_ADMIT = (
    _COMMON
    + _CHECKS
    + _SETTLE_FIRST
    + """
if redis.call('EXISTS', A[8]) == 0 then return {'rebuild'} end
local now, rpm, tpm, par = tonumber(A[1]), num(A[2]), num(A[3]), tonumber(A[4])
local answer = admit_check(K[1], K[2], K[3], now, rpm, tpm, par, A[6])
local granted = 0
if answer[1] == '' then
  admit_commit(K[1], K[2], now, par, A[5], answer)
  granted = grant(K[3], A[5], tonumber(A[7]), rpm, tpm, par, answer)
end
answer[8] = granted
return answer
"""
)

# KEYS: budget, reserved. ARGV: period, budget, estimate, process, alive prefix, loaded
# spend ('' when not loaded: answers {-1} if the period is unknown), minimum.
_RESERVE = (
    _COMMON
    + _CHECKS
    + _SETTLE_FIRST
    + """
local estimate = tonumber(A[3])
local answer = budget_check(K[1], K[2], A[1], num(A[2]), estimate, tonumber(A[7]), A[5], A[6])
if answer[1] == 1 and answer[4] > 0 then redis.call('HINCRBY', K[2], A[4], answer[4]) end
return {answer[1], answer[2], answer[3]}
"""
)

# The budget, then the window, in one round trip; nothing is taken unless both admit
# (and nothing is granted: a budget is checked request by request).
# KEYS: budget, reserved, window, flights, grants. ARGV: _RESERVE's but the minimum, then
# now, rpm, tpm, parallel, minimum, the windows' marker (as _ADMIT's).
_RESERVE_ADMIT = (
    _COMMON
    + _CHECKS
    + _SETTLE_FIRST
    + """
if redis.call('EXISTS', A[12]) == 0 then return {'rebuild'} end
local estimate, now, par = tonumber(A[3]), tonumber(A[7]), tonumber(A[10])
local budget = budget_check(K[1], K[2], A[1], num(A[2]), estimate, tonumber(A[11]), A[5], A[6])
if budget[1] ~= 1 then return {budget[1], budget[2], budget[3]} end
local answer = admit_check(K[3], K[4], K[5], now, num(A[8]), num(A[9]), par, A[5])
if answer[1] == '' then
  admit_commit(K[3], K[4], now, par, A[4], answer)
  if budget[4] > 0 then redis.call('HINCRBY', K[2], A[4], budget[4]) end
end
return {1, budget[2], budget[3], unpack(answer)}
"""
)

# KEYS: window, flights. ARGV: now.
_WINDOW = (
    _COMMON
    + _CHECKS
    + _SETTLE_FIRST
    + """
local now = tonumber(A[1])
local req, tok, oldr, oldt = window(K[1], now)
local fly = 0
for _, v in ipairs(redis.call('HVALS', K[2])) do fly = fly + tonumber(v) end
return {req, tok, fly, reset(oldr, now), reset(oldt, now)}
"""
)

# Settlements only.
_SETTLE = _COMMON + _CHECKS + _SETTLE_FIRST + "return 0"

# The windows as the request log had them, written once after Redis came back empty.
# KEYS: the marker, then one window per scope. ARGV per window: its number of seconds,
# then second, requests, tokens for each (oldest first). Nothing if the marker is back.
_SEED = (
    _COMMON
    + _CHECKS
    + _SETTLE_FIRST
    + """
if redis.call('EXISTS', K[1]) == 1 then return 0 end
local i = 1
for k = 2, #K do
  local count = tonumber(A[i])
  i = i + 1
  for _ = 1, count do
    local sec, req, tok = tonumber(A[i]), tonumber(A[i + 1]), tonumber(A[i + 2])
    i = i + 3
    if req > 0 then bump(K[k], 'r', sec, req) end
    if tok > 0 then bump(K[k], 't', sec, tok) end
  end
end
redis.call('SET', K[1], '1')
return 1
"""
)
# An answer saying the windows must be rebuilt first.
_REBUILD = "rebuild"


def connect(url: str) -> redis.Redis:
    """A client with short time-outs: a Redis that went away must not stall requests."""
    return redis.Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        health_check_interval=30,
        decode_responses=True,
    )


def process_name() -> str:
    """This process's name in Redis: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Grant:
    """Requests Redis granted this process for one scope: `left` of them until `until`
    (monotonic), for these limits; the window as of the grant, and how many were
    admitted from it since."""

    left: int
    until: float
    limits: Limits
    window: Window
    admitted: int = 0
    # Tokens this process booked in the scope since (a grant holds only while far from
    # the TPM limit: past half of it, requests go to Redis again, request by request).
    tokens: int = 0


class _Sent:
    """A script written to Redis whose answer is read when `answer()` is first called:
    what the caller does in between overlaps the round trip."""

    __slots__ = ("limiter", "conn", "script", "command", "batch", "reused", "_answer", "_error")

    def __init__(self, limiter, conn, script, command: tuple, batch: list, reused=False) -> None:
        self.limiter, self.conn, self.script = limiter, conn, script
        self.command, self.batch, self.reused = command, batch, reused
        self._answer = self._error = None

    @classmethod
    def failed(cls, exc: Exception) -> _Sent:
        sent = cls(None, None, None, (), [])
        sent._error = exc
        return sent

    def fail(self, exc: Exception) -> None:
        """The script did not get an answer: its connection is dropped, its settlements
        are pending again."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.disconnect()
            self.limiter._give_back(conn)
        self._error = exc
        self.limiter._failed(exc, self.batch)

    def answer(self):
        """The script's answer (once read, kept); redis.RedisError when there is none."""
        conn = self.conn
        if conn is not None:
            try:
                self._answer = self._read(conn)
            except redis.RedisError as exc:
                self.fail(exc)
            else:
                self.conn = None
                self.limiter._give_back(conn)
        if self._error is not None:
            raise self._error
        return self._answer

    def _read(self, conn):
        # A restarted Redis: the idle connection it closed is tried once more on a new one,
        # and a script it no longer knows is loaded again (both, one after the other).
        for last in (False, False, True):
            try:
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                if last:
                    raise
                self.limiter.redis.script_load(self.script.script)
            except redis.ConnectionError:
                if not self.reused or last:
                    raise
                self.reused = False
                conn.disconnect()
            conn.send_command("EVALSHA", self.script.sha, *self.command)
        return None  # not reached: the last try returns or raises


class RedisLimiter:
    """`SharedLimiter`'s operations on counters in Redis, shared by every host."""

    def __init__(self, client: redis.Redis, namespace: str, failure: str = "mixed") -> None:
        if failure not in FAILURE_POLICIES:
            raise ValueError(f"KEYRELAY_REDIS_FAILURE={failure!r}: one of {FAILURE_POLICIES}")
        self.redis, self.ns, self.failure = client, namespace, failure
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("admit", _ADMIT),
                ("window", _WINDOW),
                ("reserve", _RESERVE),
                ("reserve_admit", _RESERVE_ADMIT),
                ("settle", _SETTLE),
                ("seed", _SEED),
            )
        }
        # The windows of the last minute as the request log has them, {scope: [(second,
        # requests, tokens)]} (set by the admission): what a Redis that lost them is given.
        self.load_windows: Callable[[int], dict[str, list[tuple[int, int, int]]]] | None = None
        self._pid = None
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._logged = 0.0
        # Settlements not yet in Redis, oldest first: (keys, operations) of settle_many.
        self._pending: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._grants: dict[str, _Grant] = {}
        self.grant_seconds = GRANT_SECONDS
        self._conns: collections.deque = collections.deque()  # idle connections, newest last
        self._conns_pid = os.getpid()
        self._counts = {"failures": 0, "dropped": 0, "failed_open": 0, "failed_closed": 0}

    # -- this process -----------------------------------------------------------------

    @property
    def process(self) -> str:
        """This process's name; a forked child gets its own, and its own heartbeat."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    if self._pid is not None:  # a forked child: the parent's are not its own
                        self._grants.clear()
                        self._pending.clear()
                    self._process = process_name()
                    self._pid = os.getpid()
                    self._beat()
                    threading.Thread(target=self._heartbeat, daemon=True).start()
                    threading.Thread(target=self._settler, daemon=True).start()
        return self._process

    def _beat(self) -> None:
        # A failed beat is tried again at the next; the operations report the outage.
        with contextlib.suppress(redis.RedisError):
            self.redis.set(self._alive + self._process, "1", ex=ALIVE_SECONDS)

    def _heartbeat(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(HEARTBEAT_SECONDS)
            self._beat()

    @property
    def _alive(self) -> str:
        return f"{self.ns}alive:"

    @property
    def _marker(self) -> str:
        """Set once the windows are complete; gone when Redis restarted or was flushed."""
        return f"{self.ns}windows"

    def _rebuild(self, now: int) -> None:
        """Give a Redis that came back empty the windows of the last minute from the
        request log, before anything is admitted (once: the first process to get there)."""
        windows: dict = {}
        if self.load_windows is not None:
            try:
                windows = self.load_windows(now)
            except Exception:  # noqa: BLE001 - the database away too: admit from empty
                log.exception("the rate windows could not be read from the request log")
        keys, args = [self._marker], []
        for scope, seconds in windows.items():
            keys += self._keys(scope, "w")
            args.append(len(seconds))
            for second, requests, used in sorted(seconds):
                args += [second, requests, used]
        if self._run("seed", keys, args):
            log.warning(
                "Redis had lost the rate windows (restarted or flushed): %d rebuilt from "
                "the last minute's request log",
                len(windows),
            )

    def _keys(self, scope: str, kinds: str) -> list[str]:
        return [f"{self.ns}{kind}:{scope}" for kind in kinds]

    # -- failures ---------------------------------------------------------------------

    def _send(self, name: str, keys: list[str], args: list) -> _Sent:
        """Send a script, with this process's pending settlements first in the same round
        trip (so it reads its own settlements), and come back without waiting for its
        answer: `_Sent.answer()` reads it (redis.RedisError when Redis is away, or was a
        moment ago). Settlements already on their way with another script are not waited
        for: they were written to Redis before this one."""
        if time.monotonic() < self._down_until:
            return _Sent.failed(redis.ConnectionError("Redis was unreachable a moment ago"))
        conn, reused = self._connection()
        batch = self._take_batch()
        settle_keys = [key for entry in batch for key in entry[0]]
        settle_args = [arg for entry in batch for arg in entry[1]]
        command = (len(settle_keys) + len(keys), *settle_keys, *keys)
        command += (len(settle_keys), self.process, *settle_args, *args)
        sent = _Sent(self, conn, self._scripts[name], command, batch, reused)
        try:
            try:
                conn.send_command("EVALSHA", sent.script.sha, *command)
            except (redis.ConnectionError, redis.TimeoutError):
                if not reused:
                    raise
                conn.disconnect()  # a connection Redis closed: once more on a new one
                conn.send_command("EVALSHA", sent.script.sha, *command)
        except redis.RedisError as exc:
            sent.fail(exc)
        return sent

    def _run(self, name: str, keys: list[str], args: list):
        """Run a script and wait for its answer (redis.RedisError when Redis is away)."""
        return self._send(name, keys, args).answer()

    def _connection(self):
        """An idle connection of this process's own (and whether it was used before), or a
        new one (it connects when first used). redis-py's pool would check each one for
        unread data on every use, a system call per request on the hot path; these are
        only ever given back with their answer read."""
        if self._conns_pid != os.getpid():
            self._conns, self._conns_pid = collections.deque(), os.getpid()  # forked
        try:
            return self._conns.pop(), True
        except IndexError:
            pool = self.redis.connection_pool
            return pool.connection_class(**pool.connection_kwargs), False

    def _give_back(self, conn) -> None:
        if len(self._conns) < 64:
            self._conns.append(conn)
        else:
            conn.disconnect()

    def _take_batch(self) -> list:
        """The oldest pending settlements (up to 64 requests'), taken to send now."""
        with self._lock:
            return [self._pending.popleft() for _ in range(min(64, len(self._pending)))]

    def _failed(self, exc: Exception, batch: list) -> None:
        """Redis did not answer: settlements that went with the script are pending again
        (first, in their order), and Redis is not asked again for a moment."""
        if batch:
            with self._lock:
                self._pending.extendleft(reversed(batch))
        self._down_until = time.monotonic() + DOWN_SECONDS
        self._counts["failures"] += 1
        self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged >= 10:  # one line per 10 s, not one per request
            self._logged = now
            log.warning(
                "Redis (the shared limiter) is unreachable: %s; limits fail %s, budgets "
                "fail %s (KEYRELAY_REDIS_FAILURE=%s)",
                exc,
                "closed" if self.failure == "closed" else "open",
                "open" if self.failure == "open" else "closed",
                self.failure,
            )

    def _drain(self) -> None:
        """Send the pending settlements, in order, up to 64 requests' per round trip; what
        Redis does not take stays pending (redis.RedisError)."""
        while self._pending:
            self._send("settle", [], []).answer()

    def flush(self) -> None:
        """Send this process's pending settlements now (redis.RedisError if Redis is away)."""
        self._drain()

    def _settler(self) -> None:
        """Settles off the request's path: woken by each settlement, and every second
        (Redis away: what is pending is sent when it answers again)."""
        pid = os.getpid()
        while self._pid == pid:
            self._wake.wait(DOWN_SECONDS)
            self._wake.clear()
            time.sleep(SETTLE_DELAY)  # the next request usually takes them along first
            self._expire_grants()
            with contextlib.suppress(redis.RedisError):
                self._drain()

    def _unavailable(self, what: str) -> GatewayError:
        self._counts["failed_closed"] += 1
        return GatewayError(
            503,
            f"The shared {what} cannot be checked right now (Redis is unreachable); "
            "retry in a moment.",
            type="service_unavailable",
            code="limiter_unavailable",
            headers={"Retry-After": "1"},
        )

    # -- windows ----------------------------------------------------------------------

    @staticmethod
    def _limit_args(limits: Limits) -> list[int]:
        return [-1 if value is None else value for value in (limits.rpm, limits.tpm)] + [
            -1 if limits.parallel is None else limits.parallel
        ]

    @staticmethod
    def _answer(reason, wait, req, tok, fly, rr, tr) -> tuple[Window, Refusal | None]:
        window = Window(int(req), int(tok), int(fly), int(rr), int(tr))
        return window, (Refusal(reason, int(wait), window) if reason else None)

    def later(self, operation: str, *args) -> Callable[[], tuple]:
        """`admit`, `reserve` or `reserve_and_admit` sent to Redis now; calling what this
        returns reads the answer (once), so the round trip overlaps what the caller does in
        between. The answer is the operation's, Redis failures included."""
        return getattr(self, "_" + operation)(*args)

    def admit(self, scope: str, limits: Limits, now: int) -> tuple[Window, Refusal | None]:
        """Count one request against the scope if its limits allow it (atomically)."""
        return self._admit(scope, limits, now)()

    def _admit(self, scope: str, limits: Limits, now: int):
        if limits.parallel is None and (granted := self._from_grant(scope, limits, now)):
            return lambda: (granted, None)
        want = GRANT_WANTED if limits.parallel is None else 0
        args = [now, *self._limit_args(limits), self.process, self._alive, want, self._marker]
        keys = self._keys(scope, "wfg")
        sent = self._send("admit", keys, args)

        def answer() -> tuple[Window, Refusal | None]:
            try:
                found = sent.answer()
                if found[0] == _REBUILD:
                    self._rebuild(now)
                    found = self._run("admit", keys, args)
                *found, granted = found
            except redis.RedisError:
                empty = Window(0, 0, 0, 0, 0)
                if self.failure != "closed" or scope.endswith(":busy"):
                    self._counts["failed_open"] += 1
                    return empty, None
                if scope.startswith("ck:"):
                    raise self._unavailable("rate limits") from None
                return empty, Refusal("rpm", 1, empty)  # a provider key: passed over for now
            window, refusal = self._answer(*found)
            if granted:
                self._keep_grant(scope, limits, window, int(granted), now)
            return window, refusal

        return answer

    # -- grants -----------------------------------------------------------------------
    # A window far from its limits grants this process a few requests at a time (taken in
    # Redis at once, so other hosts count them): the process admits them with no round
    # trip, for a moment, and its settlements tell Redis their seconds (or give back what
    # it did not use). See `grant` in the scripts for how much.

    def _from_grant(self, scope: str, limits: Limits, now: int) -> Window | None:
        """A request admitted from this process's grant for the scope, if it holds one."""
        with self._lock:
            grant = self._grants.get(scope)
            if grant is None or self._pid != os.getpid():  # none, or a forked child's parent's
                return None
            seen = grant.window
            near_tpm = limits.tpm is not None and (seen.tokens + grant.tokens) * 2 > limits.tpm
            if (
                grant.left <= 0
                or grant.limits != limits
                or near_tpm
                or time.monotonic() >= grant.until
            ):
                del self._grants[scope]
                self._give_back_grant(scope, grant, now)
                return None
            grant.left -= 1
            grant.admitted += 1
            self._pending.append((self._keys(scope, "wg"), ["g", now, 1, 0]))
            window = Window(
                seen.requests + grant.admitted, seen.tokens + grant.tokens, 0,
                seen.requests_reset, seen.tokens_reset,
            )  # fmt: skip
        self._wake.set()
        return window

    def _count_granted_tokens(self, scope: str, tokens: int) -> None:
        """Tokens booked in a scope this process holds a grant for: the grant sees them."""
        with self._lock:
            grant = self._grants.get(scope)
            if grant is not None:
                grant.tokens += tokens

    def _keep_grant(self, scope: str, limits: Limits, window: Window, count: int, now) -> None:
        with self._lock:
            if (old := self._grants.get(scope)) is not None:
                self._give_back_grant(scope, old, now)
            until = time.monotonic() + self.grant_seconds
            self._grants[scope] = _Grant(count, until, limits, window)

    def _give_back_grant(self, scope: str, grant: _Grant, now: int) -> None:
        """(With the lock held.) What is left of a grant goes back to the window."""
        if grant.left > 0:
            self._pending.append((self._keys(scope, "wg"), ["g", now, 0, grant.left]))
            grant.left = 0
            self._wake.set()

    def _expire_grants(self) -> None:
        """Give back what is left of grants whose moment has passed."""
        moment = time.monotonic()
        with self._lock:
            for scope, grant in list(self._grants.items()):
                if moment >= grant.until:
                    del self._grants[scope]
                    self._give_back_grant(scope, grant, int(time.time()))

    def settle(self, scope: str, tokens: int, now: int, parallel: bool) -> None:
        """Book the request's tokens in this second and end its in-flight count."""
        self.settle_many([("w", scope, now, tokens, parallel)])

    def settle_many(self, items: list[tuple]) -> None:
        """Several settlements: ("w", scope, now, tokens, parallel) for a window, ("b",
        scope, period, estimate, cost) for a budget. Sent by this process's settler, off
        the request's path (one round trip for all that is pending); this process's next
        operation sends them first if it has not yet."""
        keys, args = [], []
        for kind, scope, first, second, third in items:
            if kind == "w" and second <= 0 and not third:
                continue  # nothing to book
            if kind == "w" and second > 0 and self._grants:
                self._count_granted_tokens(scope, second)
            keys += self._keys(scope, "wf" if kind == "w" else "bm")
            if kind == "w":
                args += ["w", first, max(0, second), 1 if third else 0]
            else:
                args += ["b", first, max(0, second), max(0, third)]
        if not keys:
            return
        self.process  # noqa: B018 - starts this process's settler
        if len(self._pending) >= _REPLAY_MAX:
            self._counts["dropped"] += 1  # Redis away for long: bounded memory
            return
        self._pending.append((keys, args))
        self._wake.set()

    def window(self, scope: str, now: int) -> Window:
        """The scope's window now, without counting anything."""
        try:
            req, tok, fly, rr, tr = self._run("window", self._keys(scope, "wf"), [now])
        except redis.RedisError:
            return Window(0, 0, 0, 0, 0)
        return Window(int(req), int(tok), int(fly), int(rr), int(tr))

    # -- budgets ----------------------------------------------------------------------

    def _budget_failed(self) -> tuple[int, int, bool]:
        if self.failure == "open":
            self._counts["failed_open"] += 1
            return 0, 0, True
        raise self._unavailable("budget") from None

    def reserve(
        self, scope: str, period: int, budget: int, estimate: int, load_spent,
        minimum: int | None = None,
    ) -> tuple[int, int, bool]:  # fmt: skip
        """Reserve `estimate` micro-dollars of the scope's budget for one request (or what
        it can still pay, if at least `minimum`); the period's spend so far comes from
        `load_spent()` when Redis does not know it."""
        return self._reserve(scope, period, budget, estimate, load_spent, minimum)()

    def _reserve(self, scope, period, budget, estimate, load_spent, minimum=None):
        keys = self._keys(scope, "bm")
        minimum = estimate if minimum is None else min(minimum, estimate)
        args = [period, budget, estimate, self.process, self._alive, "", minimum]
        sent = self._send("reserve", keys, args)

        def answer() -> tuple[int, int, bool]:
            try:
                admitted, spent, reserved = sent.answer()
                if admitted == -1:
                    args[5] = max(0, int(load_spent()))
                    admitted, spent, reserved = self._run("reserve", keys, args)
            except redis.RedisError:
                return self._budget_failed()
            return int(spent), int(reserved), bool(admitted)

        return answer

    def reserve_and_admit(
        self, budget_scope: str, period: int, budget: int, estimate: int, load_spent,
        scope: str, limits: Limits, now: int, minimum: int | None = None,
    ) -> tuple[int, int, bool, Window | None, Refusal | None]:  # fmt: skip
        """`reserve`, then `admit`, in one round trip; nothing is taken unless both admit.
        Returns (spent, reserved, budget admitted, window, refusal); no window when the
        budget refused."""
        return self._reserve_and_admit(
            budget_scope, period, budget, estimate, load_spent, scope, limits, now, minimum
        )()

    def _reserve_and_admit(
        self, budget_scope, period, budget, estimate, load_spent, scope, limits, now,
        minimum=None,
    ):  # fmt: skip
        keys = self._keys(budget_scope, "bm") + self._keys(scope, "wfg")
        minimum = estimate if minimum is None else min(minimum, estimate)
        args = [period, budget, estimate, self.process, self._alive, ""]
        args += [now, *self._limit_args(limits), minimum, self._marker]
        sent = self._send("reserve_admit", keys, args)

        def answer() -> tuple[int, int, bool, Window | None, Refusal | None]:
            try:
                found = sent.answer()
                if found[0] == _REBUILD:
                    self._rebuild(now)
                    found = self._run("reserve_admit", keys, args)
                if found[0] == -1:
                    args[5] = max(0, int(load_spent()))
                    found = self._run("reserve_admit", keys, args)
            except redis.RedisError:
                spent, reserved, _ = self._budget_failed()  # open: admitted, as the window is
                return spent, reserved, True, Window(0, 0, 0, 0, 0), None
            admitted, spent, reserved, *window = found
            if not admitted:
                return int(spent), int(reserved), False, None, None
            return int(spent), int(reserved), True, *self._answer(*window[:7])

        return answer

    def settle_budget(self, scope: str, period: int, estimate: int, cost: int) -> None:
        """Give back the reservation and add the request's real cost to its period."""
        self.settle_many([("b", scope, period, estimate, cost)])

    def spent(self, scope: str, period: int) -> int | None:
        """The scope's spend in the period, if Redis has counted it."""
        try:
            self.flush()
            known, spent = self.redis.hmget(f"{self.ns}b:{scope}", "period", "spent")
        except redis.RedisError:
            return None
        return int(spent) if known == str(period) and spent is not None else None

    # -- upkeep -----------------------------------------------------------------------

    def forget(self, owner: str) -> int:
        """Delete the windows and budgets of every scope of a key that is gone (`ck:7`
        and `ck:7:…`, never `ck:70`). Returns the number of Redis keys deleted."""
        if owner.count(":") != 1:
            raise ValueError(f"forget() takes a key's scope prefix like 'ck:7', not {owner!r}")
        try:
            names = []
            for kind in "wbg":
                names.append(f"{self.ns}{kind}:{owner}")
                names += self.redis.scan_iter(f"{self.ns}{kind}:{owner}:*", count=1000)
            return self.redis.delete(*names)
        except redis.RedisError as exc:
            self._warn(exc)
            return 0

    def stats(self) -> dict:
        """The backend, and what this process has seen: failures, settlements replayed
        after an outage and still waiting, requests admitted / refused while Redis was away."""
        return {"backend": "redis", "pending": len(self._pending), **self._counts}

    def close(self) -> None:
        """Send what is pending; stop the heartbeat (its process name expires in Redis)."""
        if self._pid == os.getpid():
            with contextlib.suppress(redis.RedisError):
                self._drain()
        self._pid = None
        while self._conns:
            self._conns.pop().disconnect()
