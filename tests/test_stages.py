"""The proxy's stages (gateway/proxy/), each called directly with plain data: no HTTP, no
gateway. The live-HTTP tests (test_proxy, test_failover, test_context_overflow…) show
the stages composed; these show what each one decides on its own. Last, the rule that
keeps the path straight: no stage imports or calls back into what composes them."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.dialects.base import ProxyRequest
from gateway.dialects.openai_chat import OpenAIChat
from gateway.errors import GatewayError
from gateway.ledger.accounting import RequestRecord
from gateway.ledger.usage import Usage
from gateway.limits.local import SharedLimiter
from gateway.policy import Outcome
from gateway.providers.base import (
    ContextOverflow,
    ProviderAdapter,
    Timeouts,
    TransportError,
    UpstreamReply,
)
from gateway.providers.openai_sse import SSEFilter
from gateway.providers.transport import Target
from gateway.proxy.admission import Admission, Ticket
from gateway.proxy.attempts import Attempts, RetrySettings
from gateway.proxy.booking import Booking
from gateway.proxy.candidates import Candidates
from gateway.proxy.chain import MAX_PRUNE_ROUNDS, Walk
from gateway.proxy.infer import infer
from gateway.proxy.relay import COST_HEADER, Relay, Served
from gateway.routes import ERROR, FALLBACK, NO_ROUTE, PRUNE, RoutePolicy
from gateway.store import KeyRow, ProfileRow
from tests.conftest import ManualClock

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-stage-secret-0123456789"


def key(key_id: int, models=("*",), **fields) -> KeyRow:
    """A provider key as the selector sees it."""
    fields.setdefault("base_url", "http://upstream.test")
    return KeyRow(
        key_id, fields.pop("provider", "openai"), f"key {key_id}", fields.pop("base_url"),
        b"sealed", list(models), None, None, fields.pop("status", "active"),
        fields.pop("cooldown_until", None), 0, None, 0, **fields,
    )  # fmt: skip


def record(model: str = "gpt-4o") -> RequestRecord:
    return RequestRecord(ManualClock().now(), "chat.completions", model, False)


def chat_request(messages=None, model: str = "gpt-4o", stream: bool = False) -> ProxyRequest:
    messages = messages or [{"role": "user", "content": "hi"}]
    body = {"model": model, "messages": messages, "stream": stream}
    return ProxyRequest("chat.completions", model, stream, body, messages=messages)


def reply(status: int, headers=None, overflow=None) -> UpstreamReply:
    body = b'{"error": {"message": "nope"}}' if status >= 300 else b'{"id": "x"}'
    return UpstreamReply(status, headers or {}, body, error="nope", overflow=overflow)


def failure(code: str, retry_after: int | None = None) -> GatewayError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return GatewayError(503, code, code=code, headers=headers)


# -- chain: the models to try, and what each hop's end means -----------------------------


def walk(models, route=NO_ROUTE, fallback=None, wait=None, request=None, rec=None, clock=None):
    request = request or chat_request()
    return Walk(models, route, fallback, wait, request, rec or record(), clock or ManualClock())


def test_chain_yields_the_target_then_its_fallbacks_while_each_hop_may_go_on():
    rec = record()
    way = walk(["gpt-4o", "gpt-4o-mini", "llama"], rec=rec)
    seen = []
    for hop in way:
        seen.append((hop.model, rec.model, hop.keys))
        assert way.goes_on_after(failure("upstream_failed"))
    assert seen == [("gpt-4o", "gpt-4o", None), ("gpt-4o-mini", "gpt-4o-mini", None)] + [
        ("llama", "llama", None)
    ]
    with pytest.raises(GatewayError) as raised:
        way.end()
    assert raised.value.code == "upstream_failed"


@pytest.mark.parametrize(
    ("code", "goes_on"),
    [
        ("model_not_found", True),
        ("no_available_keys", True),
        ("provider_keys_at_limit", True),
        ("upstream_rate_limited", True),
        ("upstream_failed", True),
        ("deadline_exceeded", True),
        ("model_price_unknown", False),  # the request's own fault: every model says it
        ("unsupported_by_provider", True),  # another model's keys may carry the field
    ],
)
def test_chain_goes_on_only_after_errors_another_model_may_not_have(code, goes_on):
    way = walk(["gpt-4o", "gpt-4o-mini"])
    next(way)
    assert way.goes_on_after(failure(code)) is goes_on


@pytest.mark.parametrize(
    ("then", "answers"),
    [
        ("model_not_found", "unsupported_by_provider"),  # the fallback could not even try
        ("no_available_keys", "unsupported_by_provider"),
        ("upstream_failed", "upstream_failed"),  # the fallback's keys were tried and failed
    ],
)
def test_a_refused_field_answers_unless_a_later_model_was_tried(then, answers):
    way = walk(["gpt-4o", "gpt-4o-mini"])
    next(way)
    assert way.goes_on_after(failure("unsupported_by_provider"))
    next(way)
    assert way.goes_on_after(failure(then))
    with pytest.raises(GatewayError) as ended:
        way.end()
    assert ended.value.code == answers


@pytest.mark.parametrize(
    ("code", "fallback_tried"),
    [
        ("model_not_found", True),
        ("no_available_keys", True),
        ("provider_keys_at_limit", True),
        ("upstream_failed", False),  # the pool's keys answered (badly): not an empty pool
    ],
)
def test_chain_ends_with_the_environment_key_when_the_pool_had_nothing(code, fallback_tried):
    rec, env_key = record(), key(0)
    way = walk(["gpt-4o", "gpt-4o-mini"], fallback=env_key, rec=rec)
    hops = []
    for hop in way:
        hops.append(hop)
        way.goes_on_after(failure(code))
    models = [(h.model, h.fallback) for h in hops]
    expected = [("gpt-4o", False), ("gpt-4o-mini", False)]
    assert models == (expected + [("gpt-4o", True)] if fallback_tried else expected)
    if fallback_tried:
        assert hops[-1].keys == [env_key] and rec.model == "gpt-4o"


def test_chain_waits_for_a_key_then_walks_again_from_its_first_model():
    clock = ManualClock()
    way = walk(["gpt-4o", "gpt-4o-mini"], wait=10, clock=clock)
    models = []
    for hop in way:
        models.append(hop.model)
        way.goes_on_after(failure("no_available_keys", retry_after=4))
    # 4 s, then 4 s more (8 of the 10 allowed); a third wait would pass the 10.
    assert models == ["gpt-4o", "gpt-4o-mini"] * 3
    assert clock.slept == [4.0, 4.0]
    with pytest.raises(GatewayError):
        way.end()


def test_chain_does_not_wait_without_the_profiles_leave_or_for_a_failure():
    for wait, code in ((None, "no_available_keys"), (30, "upstream_failed")):
        clock = ManualClock()
        way = walk(["gpt-4o"], wait=wait, clock=clock)
        for _ in way:
            way.goes_on_after(failure(code, retry_after=1))
        assert clock.slept == []


def overflow_reply() -> UpstreamReply:
    return reply(400, overflow=ContextOverflow(limit=100, used=400))


def test_overflow_in_error_mode_answers_with_that_upstreams_error():
    rec, k, said = record(), key(1), overflow_reply()
    way = walk(["gpt-4o", "gpt-4o-mini"], route=RoutePolicy(on_context_overflow=ERROR), rec=rec)
    next(way)
    assert way.overflowed(k, said) == (k, said)
    assert rec.model == "gpt-4o"


def test_overflow_in_fallback_mode_goes_on_and_answers_the_first_if_nothing_fits():
    rec, first, second = record(), overflow_reply(), overflow_reply()
    way = walk(["small", "large"], route=RoutePolicy(on_context_overflow=FALLBACK), rec=rec)
    assert next(way).model == "small"
    assert way.overflowed(key(1), first) is None
    assert next(way).model == "large"
    assert way.overflowed(key(2), second) is None
    assert list(way) == []  # nothing fits: no fallback key, no waiting
    assert way.end() == (key(1), first)
    assert rec.model == "small"  # the error is the model's that said it


def long_conversation(turns: int) -> list[dict]:
    text = "word " * 200
    messages = [{"role": "system", "content": "be brief"}]
    for number in range(turns):
        messages.append({"role": "user", "content": f"{number} {text}"})
        messages.append({"role": "assistant", "content": f"{number} {text}"})
    messages.append({"role": "user", "content": "and now?"})
    return messages


def test_overflow_in_prune_mode_asks_the_same_keys_again_with_fewer_turns():
    rec = record()
    request = chat_request(long_conversation(12))
    before = len(request.messages)
    route = RoutePolicy(on_context_overflow=PRUNE, context_window=1500)
    way = walk(["gpt-4o", "gpt-4o-mini"], route=route, request=request, rec=rec)
    hop = next(way)
    hop.keys = [key(1), key(2)]  # what the gateway found for the model
    said = reply(400, overflow=ContextOverflow(limit=1500, used=6000))
    assert way.overflowed(key(1), said) is None
    again = next(way)
    assert again is hop and again.keys == [key(1), key(2)] and again.model == "gpt-4o"
    assert len(request.messages) < before and request.body["messages"] == request.messages
    assert request.messages[0]["role"] == "system" and request.messages[-1]["content"] == "and now?"
    assert rec.context_pruned == before - len(request.messages)


def test_prune_mode_answers_the_first_overflow_after_its_rounds():
    rec = record()
    request = chat_request(long_conversation(40))
    route = RoutePolicy(on_context_overflow=PRUNE, context_window=None)
    way = walk(["gpt-4o"], route=route, request=request, rec=rec)
    next(way)
    first = reply(400, overflow=ContextOverflow(limit=None, used=None))
    answers = [way.overflowed(key(1), first)]
    for _ in range(MAX_PRUNE_ROUNDS):
        next(way)
        answers.append(way.overflowed(key(1), overflow_reply()))
    assert answers[:-1] == [None] * MAX_PRUNE_ROUNDS
    assert answers[-1] == (key(1), first)
    assert rec.context_pruned is None  # the client saw its own conversation refused


def test_prune_mode_answers_at_once_when_nothing_can_be_dropped():
    request = chat_request([{"role": "user", "content": "word " * 5000}])
    route = RoutePolicy(on_context_overflow=PRUNE, context_window=100)
    way = walk(["gpt-4o"], route=route, request=request)
    next(way)
    said = overflow_reply()
    assert way.overflowed(key(1), said) == (key(1), said)


def test_the_environment_keys_overflow_answers_whatever_the_route_says():
    route = RoutePolicy(on_context_overflow=FALLBACK)
    way = walk(["gpt-4o"], route=route, fallback=key(0))
    next(way)
    way.goes_on_after(failure("no_available_keys"))
    assert next(way).fallback
    said = overflow_reply()
    assert way.overflowed(key(0), said) == (key(0), said)


# -- attempts: each outcome's verdict, and the error when no key answered ----------------

RETRY = RetrySettings(
    max_attempts=3,
    deadline=60.0,
    connect_timeout=2.0,
    read_timeout=30.0,
    cooldown_seconds=20.0,
    failure_threshold=3,
)


def attempts(settings: RetrySettings = RETRY, rec=None) -> Attempts:
    return Attempts(settings, rec or record(), ManualClock())


def test_attempts_give_each_try_its_timeouts_until_the_attempts_are_spent():
    tries = attempts()
    assert tries.timeouts() == Timeouts(2.0, 30.0)
    for number in range(3):
        decision, *_ = tries.judge(key(number), reply(500), 0.0)
        assert decision.fail_over
    assert tries.timeouts() is None


def test_attempts_read_no_longer_than_the_deadline_leaves():
    short = RetrySettings(3, 5.0, 2.0, 30.0, 20.0, 3)
    assert attempts(short).timeouts().read <= 5.0
    assert attempts(RetrySettings(3, 0.0, 2.0, 30.0, 20.0, 3)).timeouts() is None


@pytest.mark.parametrize(
    ("answer", "outcome", "done"),
    [
        (reply(200), Outcome.OK, True),
        (reply(400), Outcome.CLIENT_ERROR, True),  # the request's fault: the client is told
        (reply(400, overflow=ContextOverflow()), Outcome.CONTEXT_OVERFLOW, True),
        (reply(429), Outcome.RATE_LIMITED, False),
        (reply(401), Outcome.AUTH_FAILED, False),
        (reply(503), Outcome.SERVER_ERROR, False),
        (TransportError(Outcome.TIMEOUT, "upstream timed out"), Outcome.TIMEOUT, False),
    ],
)
def test_attempts_judge_each_outcome_and_write_it_down(answer, outcome, done):
    rec = record()
    tries = attempts(rec=rec)
    decision, got, error = tries.judge(key(7), answer, 0.0)
    assert (decision.outcome, not decision.fail_over) == (outcome, done)
    assert got is (None if isinstance(answer, TransportError) else answer)
    assert (error is None) is (outcome is Outcome.OK)
    (attempt,) = rec.attempts
    assert (attempt.number, attempt.provider_key_id, attempt.outcome) == (1, 7, outcome)


def test_all_rate_limited_is_a_429_with_the_soonest_retry():
    tries = attempts()
    tries.judge(key(1), reply(429, {"retry-after": "30"}), 0.0)
    tries.judge(key(2), reply(429, {"retry-after": "7"}), 0.0)
    err = tries.failed(None)
    assert (err.status, err.code, err.headers["Retry-After"]) == (429, "upstream_rate_limited", "7")
    assert "key #1 rate limited; key #2 rate limited" in err.message


def test_mixed_failures_are_a_502_or_a_504_when_the_last_timed_out():
    rec = record()
    tries = attempts(rec=rec)
    tries.judge(key(1, provider="anthropic"), reply(500), 0.0)
    tries.judge(key(2), TransportError(Outcome.TIMEOUT, "upstream timed out"), 0.0)
    err = tries.failed(None)
    assert (err.status, err.code, rec.provider) == (504, "upstream_failed", "openai")
    tries.judge(key(3, provider="anthropic"), reply(502), 0.0)
    assert tries.failed(None).status == 502


def test_keys_passed_over_without_an_attempt_say_why():
    tries = attempts()
    tries.full(12)
    tries.full(5)
    err = tries.failed(None)
    assert (err.status, err.code, err.headers["Retry-After"]) == (
        429,
        "provider_keys_at_limit",
        "5",
    )
    unreadable = attempts()
    unreadable.secret_unreadable(key(4))
    assert unreadable.failed(None).code == "no_available_keys"
    assert attempts(RetrySettings(3, 0.0, 2.0, 30.0, 20.0, 3)).failed(None).code == (
        "deadline_exceeded"
    )


# -- admission: a place in a provider key's windows before its attempt -------------------


def test_take_key_holds_a_place_in_the_keys_windows_or_says_when_there_is_room(tmp_path):
    clock = ManualClock()
    admission = Admission(None, None, SharedLimiter(tmp_path / "limits.bin"), None, clock)
    limited = key(3, rpm_limit=1, model_limits={"gpt-4o": {"rpm": 5}})
    first = Ticket(admission.limiter, clock)
    assert admission.take_key(first, limited, "gpt-4o", count_busy=False) is None
    assert first.key_scopes == ("pk:3:gpt-4o", "pk:3")
    second = Ticket(admission.limiter, clock)
    wait = admission.take_key(second, limited, "gpt-4o", count_busy=False)
    assert isinstance(wait, int) and 0 < wait <= 60
    free = Ticket(admission.limiter, clock)
    assert admission.take_key(free, key(4), "gpt-4o", count_busy=True) is None
    assert (free.key_scopes, free.busy_scope) == ((), "pk:4:busy")


# -- candidates: the profile's usable keys for a model, best first -----------------------


class PoolKeys:
    """The key cache as candidates read it: a profile's keys."""

    def __init__(self, keys: list[KeyRow]) -> None:
        self.rows = keys

    def keys(self, profile_id: int, day) -> list[KeyRow]:
        return self.rows


PROFILE = ProfileRow(1, None, None, None)


def test_candidates_are_the_keys_that_serve_the_model_in_the_profiles_order():
    clock = ManualClock()
    pool = [key(1, ["gpt-4o"], priority=2), key(2, ["llama"]), key(3, priority=1)]
    found = Candidates(None, PoolKeys(pool), None, clock, "priority")("team", PROFILE, "gpt-4o")
    assert [k.id for k in found] == [3, 1]


def test_no_candidates_is_a_404_or_a_503_saying_when_a_key_is_back():
    clock = ManualClock()
    none = Candidates(None, PoolKeys([key(1, models=["llama"])]), None, clock, "priority")
    with pytest.raises(GatewayError) as missing:
        none("team", PROFILE, "gpt-4o")
    assert (missing.value.status, missing.value.code) == (404, "model_not_found")
    until = clock.now() + timedelta(seconds=42)
    cooling = key(1, status="cooling_down", cooldown_until=until)
    busy = Candidates(None, PoolKeys([cooling]), None, clock, "priority")
    with pytest.raises(GatewayError) as unavailable:
        busy("team", PROFILE, "gpt-4o")
    err = unavailable.value
    assert (err.status, err.code, err.headers["Retry-After"]) == (503, "no_available_keys", "42")


# -- infer: one upstream call ------------------------------------------------------------


class CannedAdapter(ProviderAdapter):
    """An adapter whose upstream answers what the test says (and records what it was
    asked): infer's part is choosing the call, scrubbing and reading a stream's start."""

    name = "canned"

    def __init__(self, answer: UpstreamReply, passthrough: bool = False) -> None:
        super().__init__(None)
        self.answer, self.passthrough, self.asked = answer, passthrough, []

    def chat(self, target, body, timeouts, native=None):
        self.asked.append(("chat", body["model"], native))
        return self.answer

    def chat_stream(self, target, body, timeouts, wants_usage, native=None):
        self.asked.append(("chat_stream", body["model"], wants_usage))
        return self.answer

    def embeddings(self, target, body, timeouts):
        self.asked.append(("embeddings", body["model"], None))
        return self.answer

    def passes_through(self, target, native) -> bool:
        return self.passthrough

    def list_models(self, target, timeouts):
        raise AssertionError("not a proxy call")

    def model_ids(self, reply):
        return None


TARGET = Target(1, "canned", "http://upstream.test", SECRET)
TIMEOUTS = Timeouts(1.0, 1.0)


def test_infer_asks_the_hops_model_and_the_answer_never_carries_the_secret():
    echoed = UpstreamReply(200, {}, f'{{"echo": "{SECRET}"}}'.encode(), text=SECRET)
    adapter = CannedAdapter(echoed)
    request = chat_request()
    got = infer(adapter, TARGET, request, request.for_model("gpt-4o-mini"), TIMEOUTS)
    assert adapter.asked == [("chat", "gpt-4o-mini", None)]
    assert SECRET.encode() not in got.body and SECRET not in got.text


def test_infer_reads_a_streams_first_bytes_and_refuses_an_empty_one():
    first = b'data: {"choices": []}\n\n'
    streamed = UpstreamReply(200, {}, chunks=iter([first, b"data: [DONE]\n\n"]))
    streamed.stream = SSEFilter(False)
    request = chat_request(stream=True)
    got = infer(CannedAdapter(streamed), TARGET, request, request.body, TIMEOUTS)
    assert got.first_chunk == first
    empty = UpstreamReply(200, {}, chunks=iter([]))
    empty.stream = SSEFilter(False)
    with pytest.raises(TransportError) as raised:
        infer(CannedAdapter(empty), TARGET, request, request.body, TIMEOUTS)
    assert raised.value.outcome is Outcome.BAD_RESPONSE


def test_infer_asks_for_embeddings_and_refuses_a_conversation_it_cannot_know():
    request = ProxyRequest("embeddings", "emb", False, {"model": "emb", "input": "x"})
    request.operation = "embeddings"
    adapter = CannedAdapter(reply(200))
    infer(adapter, TARGET, request, request.body, TIMEOUTS)
    assert adapter.asked == [("embeddings", "emb", None)]
    unknown = GatewayError(400, "unknown previous response", code="previous_response_not_found")
    chat = chat_request()
    chat.extra["unresolved"] = unknown
    with pytest.raises(GatewayError) as raised:
        infer(CannedAdapter(reply(200)), TARGET, chat, chat.body, TIMEOUTS)
    assert raised.value is unknown
    assert infer(CannedAdapter(reply(200), passthrough=True), TARGET, chat, chat.body, TIMEOUTS)


# -- relay: the answer to the client, booked ---------------------------------------------


class Ledger:
    """Booking as the relay uses it: what was booked, and when."""

    prices = None

    def __init__(self) -> None:
        self.booked: list[tuple[int, str | None, int | None]] = []

    def book(self, rec, ticket=None, key=None, strict=False) -> None:
        if not rec.recorded:
            rec.recorded, rec.cost_micros = True, 1234
            self.booked.append((rec.status_code, rec.error, key.id if key else None))


def served(request: ProxyRequest, rec: RequestRecord) -> Served:
    ticket = Ticket(None, ManualClock())
    ticket.reservation = ("ck:1:budget", 0, 5000)
    return Served(request, OpenAIChat(), rec, ticket, 0.0)


def test_relay_books_a_whole_answer_before_it_goes_with_its_cost():
    ledger, rec = Ledger(), record()
    answer = UpstreamReply(200, {}, b'{"id": "chatcmpl-1"}', text="hello")
    response = Relay(ledger).respond(served(chat_request(), rec), key(5), answer)
    assert (response.status, response.body) == (200, b'{"id": "chatcmpl-1"}')
    assert ledger.booked == [(200, None, 5)]
    assert response.headers[COST_HEADER] == "0.001234"
    assert (rec.provider, rec.provider_key_id) == ("openai", 5)


def test_relay_streams_and_books_once_even_when_the_client_leaves_first():
    ledger, rec = Ledger(), record()
    events = [b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n', b"data: [DONE]\n\n"]
    stream = UpstreamReply(200, {}, chunks=iter(events[1:]), first_chunk=events[0])
    stream.stream = SSEFilter(False)
    response = Relay(ledger).respond(served(chat_request(stream=True), rec), key(5), stream)
    assert response.headers[COST_HEADER + "-estimated"] == "true"
    assert b"".join(response.chunks) == b"".join(events)
    assert ledger.booked == [(200, None, 5)]
    left, rec = Ledger(), record()
    stream = UpstreamReply(200, {}, chunks=iter(events[1:]), first_chunk=events[0])
    stream.stream = SSEFilter(False)
    response = Relay(left).respond(served(chat_request(stream=True), rec), key(5), stream)
    response.chunks.close()  # the client went away before the first chunk
    response.chunks.close()
    assert left.booked == [(499, "client disconnected before the stream finished", 5)]


# -- booking: a finished request priced, settled and written, once ----------------------


class Journal:
    """The books as booking writes them: one row per request."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, bool]] = []

    def write(self, log_row, attempts, usage_row, touched, strict=False) -> None:
        self.rows.append((log_row["status_code"], len(attempts), touched is not None))


class PerToken:
    """A price of 10 micro-dollars a token, whatever the model."""

    def cost_micros(self, provider, model, usage) -> int:
        return 10 * usage.total_tokens


class Held:
    """A ticket as booking settles it."""

    def __init__(self) -> None:
        self.settled: list[tuple[int, int]] = []

    def settle(self, tokens: int = 0, cost: int = 0) -> None:
        self.settled.append((tokens, cost))


class Touches:
    """The key cache as booking tells it of a key's use."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def touched(self, key_id: int, now) -> None:
        self.seen.append(key_id)


def test_booking_prices_settles_and_writes_a_request_once():
    journal, ticket, keys, clock = Journal(), Held(), Touches(), ManualClock()
    booking = Booking(journal, PerToken(), keys, clock)
    rec, served_by = record(), key(9)
    rec.status_code, rec.provider, rec.provider_key_id = 200, "openai", 9
    rec.usage = Usage(10, 8)
    booking.book(rec, ticket, served_by)
    assert (rec.recorded, rec.cost_micros) == (True, 180)
    assert (journal.rows, ticket.settled) == ([(200, 0, True)], [(18, 180)])
    assert (served_by.used_today, served_by.cost_today, keys.seen) == (18, 180, [9])
    booking.book(rec)  # booked already: priced and written once
    assert (rec.cost_micros, journal.rows) == (180, [(200, 0, True)])


# -- the rule: stages take data and return data; none calls back up ----------------------

STAGES = ROOT / "gateway" / "proxy"
COMPOSER = "gateway.service"


def _imports(path: Path) -> set[str]:
    """Every gateway module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if _module_path(name) is not None}


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def test_no_stage_imports_the_module_that_composes_the_stages_not_even_through_another():
    for stage in sorted(STAGES.glob("*.py")):
        seen, todo = set(), [f"gateway.proxy.{stage.stem}"]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(_imports(_module_path(name)))
        assert COMPOSER not in seen, f"{stage.name} reaches {COMPOSER}"
        assert not {n for n in seen if n.split(".")[0] in ("blueprints", "app")}, stage.name


def _callbacks(tree: ast.Module) -> list[str]:
    """Parameters of the stages' functions that are callables they call: annotated as
    Callable, called by name, or kept on `self` and called from there."""
    found = []
    for cls in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]:
        kept = {}  # attribute of self → the constructor's parameter it holds
        methods = [n for n in cls.body if isinstance(n, ast.FunctionDef)]
        for method in methods:
            params = {a.arg: a for a in [*method.args.args, *method.args.kwonlyargs]}
            for name, arg in params.items():
                if arg.annotation is not None and "Callable" in ast.unparse(arg.annotation):
                    found.append(f"{method.name}({name}: Callable)")
            for node in ast.walk(method):
                called = node.func if isinstance(node, ast.Call) else None
                if isinstance(called, ast.Name) and called.id in params:
                    found.append(f"{method.name} calls its parameter {called.id}")
                held = node.value if isinstance(node, ast.Assign) else None
                if method.name == "__init__" and isinstance(held, ast.Name) and held.id in params:
                    for target in node.targets:
                        if isinstance(target, ast.Attribute):
                            kept[target.attr] = held.id
        for method in methods:
            for node in ast.walk(method):
                called = node.func if isinstance(node, ast.Call) else None
                on = called.value if isinstance(called, ast.Attribute) else None
                if isinstance(on, ast.Name) and on.id == "self" and called.attr in kept:
                    found.append(f"{method.name} calls back through self.{called.attr}")
    return found


def test_no_stage_takes_a_callback():
    found = {stage.name: _callbacks(ast.parse(stage.read_text())) for stage in STAGES.glob("*.py")}
    assert {name: calls for name, calls in found.items() if calls} == {}


def test_the_composer_hands_no_closure_down_on_the_request_path():
    tree = ast.parse((ROOT / "gateway" / "service.py").read_text())
    gateway = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Gateway")
    methods = {n.name: n for n in gateway.body if isinstance(n, ast.FunctionDef)}
    path, todo = set(), ["serve"]
    while todo:  # serve and every method of the gateway it calls, at any depth
        name = todo.pop()
        if name in path or name not in methods:
            continue
        path.add(name)
        for node in ast.walk(methods[name]):
            on = node.value if isinstance(node, ast.Attribute) else None
            if isinstance(on, ast.Name) and on.id == "self":
                todo.append(node.attr)
    assert {"serve", "_try_keys"} <= path
    for name in path:
        inner = [
            type(node).__name__
            for node in ast.walk(methods[name])
            if node is not methods[name]
            and isinstance(node, ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef)
            or (isinstance(node, ast.Name | ast.Attribute) and "partial" in ast.unparse(node))
        ]
        assert inner == [], f"Gateway.{name} builds a closure: {inner}"


CHAT_ANSWER = (
    b'{"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",'
    b' "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",'
    b' "content": "hi", "tool_calls": [{"id": "call_1", "type": "function",'
    b' "function": {"name": "f", "arguments": "{}"}}]}}],'
    b' "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}'
)
CHAT_CHUNKS = [
    b'data: {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "h"}}]}'
    b"\n\n",
    b'data: {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {},'
    b' "finish_reason": "stop"}]}\n\n'
    b'data: {"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1,'
    b' "total_tokens": 6}}\n\ndata: [DONE]\n\n',
]


@pytest.mark.parametrize("client", ["anthropic", "openai_responses"])
def test_infer_decodes_a_chat_answer_once_for_a_client_of_another_format(client):
    request = chat_request()
    request.format = client
    answer = UpstreamReply(200, {}, CHAT_ANSWER, usage=Usage(5, 2))
    got = infer(CannedAdapter(answer), TARGET, request, request.body, TIMEOUTS)
    assert got.format == "internal" and got.body == CHAT_ANSWER  # the upstream's bytes kept
    (choice,) = got.reply.choices
    assert (choice.parts[0].text, choice.parts[1].name, choice.raw_stop) == ("hi", "f", "stop")
    assert (got.reply.usage.input, got.reply.usage.output) == (5, 2)


def test_infer_decodes_a_chat_stream_once_and_still_reads_its_usage():
    request = chat_request(stream=True)
    request.format = "anthropic"
    streamed = UpstreamReply(200, {}, chunks=iter(CHAT_CHUNKS), stream=SSEFilter(True))
    got = infer(CannedAdapter(streamed), TARGET, request, request.body, TIMEOUTS)
    assert got.format == "internal"
    events = got.stream.feed(got.first_chunk)
    for chunk in got.chunks:
        events += got.stream.feed(chunk)
    kinds = [type(event).__name__ for event in events]
    assert kinds == ["Start", "PartStart", "TextDelta", "PartStop", "Stop", "End"]
    assert got.stream.done and got.stream.read_usage() == Usage(5, 1)
    assert (got.stream.completion_text(), got.stream.billable_text()) == ("h", "h")


def test_infer_leaves_a_chat_clients_answer_and_stream_as_the_upstreams_bytes():
    request = chat_request()  # passthrough: no decoding, the cheap usage peek only
    answer = UpstreamReply(200, {}, CHAT_ANSWER, usage=Usage(5, 2))
    got = infer(CannedAdapter(answer), TARGET, request, request.body, TIMEOUTS)
    assert (got.format, got.reply, got.body) == ("openai", None, CHAT_ANSWER)
    request = chat_request(stream=True)
    reader = SSEFilter(True)
    streamed = UpstreamReply(200, {}, chunks=iter(CHAT_CHUNKS), stream=reader)
    got = infer(CannedAdapter(streamed), TARGET, request, request.body, TIMEOUTS)
    assert got.stream is reader and got.stream.feed(got.first_chunk) == [CHAT_CHUNKS[0]]
