"""Faithful passthrough through the official SDKs: the client headers an upstream honours
reach it (and nothing else of the client's does), a conversation stays on the provider
key that holds its state, a passthrough response is read back from its upstream, and
prompt-cache hits of OpenAI-format upstreams are booked and priced as cache reads."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import anthropic
import openai
import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from sqlalchemy import func, select

from gateway.dialects.base import ProxyRequest
from gateway.jobs import scheduler
from gateway.providers.base import UpstreamReply
from gateway.providers.openai import ResponsesEvents
from gateway.proxy import pins
from models import ConversationPin
from tests.conftest import MASTER_KEY
from tests.fake_anthropic import FakeAnthropic
from tests.fake_fixtures import anthropic_fake
from tests.fake_upstream import Behaviour
from tests.npm_tools import claude_code, codex
from tests.test_claude_code import run
from tests.test_codex import run as run_codex

SECRET = "sk-passthrough-aaaaaaaaaaaaaaaa"
OTHER = "sk-passthrough-bbbbbbbbbbbbbbbb"
CLAUDE = "sk-ant-api03-passthrough-aaaaaaaa"
BETAS = "interleaved-thinking-2025-05-14,context-1m-2025-08-07"


claude = anthropic_fake(CLAUDE)


@pytest.fixture
def messages_sdk(messages_sdk):
    """The Anthropic SDK sending betas and a Claude Code session, as Claude Code does."""
    session = {"anthropic-beta": BETAS, "x-claude-code-session-id": "s-1"}
    return messages_sdk.with_options(default_headers=session)


def logged(server, admin) -> list[dict]:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()


def exact_micros(model: str, provider: str, prompt: int, cached: int, output: int) -> Decimal:
    """What genai-prices says the usage costs, in micro-dollars (rounded half up)."""
    usage = PriceUsage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=output)
    price = calc_price(usage, model, provider_id=provider).total_price
    return (price * 1_000_000).quantize(Decimal(1))


# -- client headers -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_beta_reaches_an_anthropic_key(messages_sdk, admin, claude, stream):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
    asked = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        # What the client says of the version is not passed on: the adapter's is.
        "extra_headers": {"anthropic-version": "2023-01-01"},
    }
    if stream:
        with messages_sdk.messages.stream(**asked) as events:
            assert events.get_final_message().content[0].text
    else:
        assert messages_sdk.messages.create(**asked).content[0].text
    (sent,) = claude.messages_requests
    assert sent.headers["anthropic-beta"] == BETAS
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.key == CLAUDE and "authorization" not in sent.headers
    assert not [name for name in sent.headers if name.startswith("x-stainless")]
    assert "x-claude-code-session-id" not in sent.headers


def test_the_sdk_betas_parameter_reaches_an_anthropic_key(server, admin, claude):
    admin.add_key(CLAUDE, claude.base_url, provider="anthropic")
    sdk = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    sdk.beta.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
        betas=["token-efficient-tools-2025-02-19", "fine-grained-tool-streaming-2025-05-14"],
    )
    sdk.close()
    (sent,) = claude.messages_requests
    assert sent.headers["anthropic-beta"] == (
        "token-efficient-tools-2025-02-19,fine-grained-tool-streaming-2025-05-14"
    )


def test_anthropic_beta_does_not_reach_another_kind(messages_sdk, admin, fake):
    admin.add_key(SECRET, fake.base_url)
    messages_sdk.messages.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    (sent,) = fake.requests
    assert "anthropic-beta" not in sent.headers and sent.secret == SECRET


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
def test_openai_beta_reaches_an_openai_key_and_the_accounts_headers_do_not(
    server, admin, fake, endpoint
):
    admin.add_key(SECRET, fake.base_url, responses_api=True)
    client = openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key=MASTER_KEY,
        max_retries=0,
        organization="org-client",
        project="proj-client",
        default_headers={"OpenAI-Beta": "assistants=v2"},
    )
    if endpoint == "chat":
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    else:
        client.responses.create(model="gpt-4o-mini", input="hi")
    client.close()
    (sent,) = fake.requests
    assert sent.headers["openai-beta"] == "assistants=v2" and sent.secret == SECRET
    for name in ("openai-organization", "openai-project", "x-stainless-lang"):
        assert name not in sent.headers


# -- cached prompt tokens ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("provider", "model", "deepseek"),
    [("openai", "gpt-4o-mini", False), ("deepseek", "deepseek-chat", True)],
)
def test_cached_prompt_tokens_are_priced_as_cache_reads(
    client, admin, fake, server, provider, model, deepseek, stream
):
    admin.add_key(SECRET, fake.base_url, provider=provider)
    fake.set_behaviour(SECRET, Behaviour.cached(5000, 3968, deepseek=deepseek))
    asked = {"model": model, "messages": [{"role": "user", "content": "Use the cache"}]}
    if stream:
        chunks = list(client.chat.completions.create(**asked, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        client.chat.completions.create(**asked)
    reported = fake.usage_reported[0]
    (row,) = logged(server, admin)
    assert (row["input_tokens"], row["cache_read_tokens"]) == (5000, 3968)
    assert not row["cache_write_tokens"] and not row["usage_estimated"]
    output = reported["completion_tokens"]
    cost = Decimal(row["cost_usd"]) * 1_000_000
    assert cost == exact_micros(model, provider, 5000, 3968, output)
    # The same usage without the cache hit would have cost more: the hit was priced apart.
    assert cost < exact_micros(model, provider, 5000, 0, output)


@pytest.mark.parametrize("stream", [False, True])
def test_cached_tokens_of_a_responses_upstream_are_cache_reads(client, admin, fake, server, stream):
    admin.add_key(SECRET, fake.base_url, responses_api=True)
    fake.set_behaviour(SECRET, Behaviour.cached(6000, 4096))
    asked = {"model": "gpt-4o-mini", "input": "Use the cache"}
    if stream:
        events = list(client.responses.create(**asked, stream=True))
        usage = events[-1].response.usage
    else:
        usage = client.responses.create(**asked).usage
    assert usage.input_tokens_details.cached_tokens == 4096  # the upstream's, relayed
    (row,) = logged(server, admin)
    assert (row["input_tokens"], row["cache_read_tokens"]) == (6000, 4096)
    cost = Decimal(row["cost_usd"]) * 1_000_000
    assert cost == exact_micros("gpt-4o-mini", "openai", 6000, 4096, usage.output_tokens)


# -- conversations pinned to the key that holds them ---------------------------------------


@pytest.fixture
def two_keys(admin, fake, clock) -> dict[str, int]:
    """Two keys of one upstream kind with the Responses API, tried in turn (round robin:
    each request below comes a second after the one before)."""
    assert admin.call("PUT", "/profiles/default", {"strategy": "round-robin"}).status == 200
    made = [
        admin.add_key(secret, fake.base_url, name=name, responses_api=True)
        for secret, name in ((SECRET, "a"), (OTHER, "b"))
    ]
    return {SECRET: made[0]["id"], OTHER: made[1]["id"]}


def _create(client, clock, stream: bool, **asked):
    clock.advance(seconds=1)
    if not stream:
        return client.responses.create(model="gpt-4o-mini", **asked)
    events = list(client.responses.create(model="gpt-4o-mini", stream=True, **asked))
    assert events[-1].type == "response.completed"
    return events[-1].response


@pytest.mark.parametrize("stream", [False, True])
def test_previous_response_id_goes_to_the_key_that_holds_it(client, fake, clock, two_keys, stream):
    first = _create(client, clock, stream, input="My name is Ada.")
    holder = fake.requests[-1].secret
    for number in range(4):
        answer = _create(
            client, clock, stream, input=f"Turn {number}", previous_response_id=first.id
        )
        assert answer.output_text == "Hello from the fake upstream"
        assert fake.requests[-1].secret == holder
        assert fake.requests[-1].body["previous_response_id"] == first.id
    # A request of no conversation still takes its turn on the keys.
    _create(client, clock, stream, input="Another conversation")
    _create(client, clock, stream, input="And another")
    assert {r.secret for r in fake.requests[-2:]} == {SECRET, OTHER}


def _go_on_refused(sdk, response_id: str) -> dict:
    """The error of a request continuing the response, refused with a 400."""
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="gpt-4o-mini", input="go on", previous_response_id=response_id)
    return refused.value.body


def test_a_held_response_whose_key_is_out_of_service_is_a_clear_error(
    client, admin, fake, two_keys
):
    first = client.responses.create(model="gpt-4o-mini", input="Remember this.")
    holder = two_keys[fake.requests[-1].secret]
    assert admin.call("POST", f"/keys/{holder}/toggle", {"active": False}).status == 200
    error = _go_on_refused(client, first.id)
    assert (error["code"], error["param"]) == (
        "previous_response_unavailable",
        "previous_response_id",
    )
    assert (
        f"#{holder}" in error["message"] and "out of service (status: disabled)" in error["message"]
    )
    assert SECRET not in error["message"] and OTHER not in error["message"]
    assert len(fake.requests) == 1  # the other key was never sent a response it lacks


def test_a_held_response_whose_only_key_expired_is_a_clear_error(client, admin, fake, clock):
    expires = (clock.now() + timedelta(hours=1)).isoformat()
    key = admin.add_key(SECRET, fake.base_url, responses_api=True, expires_at=expires)
    first = client.responses.create(model="gpt-4o-mini", input="Remember this.")
    clock.advance(hours=2)  # the profile has no key left: still the response's own error
    error = _go_on_refused(client, first.id)
    assert (error["code"], error["param"]) == (
        "previous_response_unavailable",
        "previous_response_id",
    )
    assert f"#{key['id']}" in error["message"] and "(status: expired)" in error["message"]
    assert len(fake.requests) == 1


@pytest.mark.parametrize("caller", ["client key moved", "master key's X-Profile"])
def test_a_held_response_of_another_profiles_key_is_not_found_like_openai_says(
    server, admin, fake, two_keys, caller
):
    """OpenAI answers an unknown previous_response_id with 400 previous_response_not_found
    ("Previous response with id '…' not found."): so does KeyRelay, saying why."""
    admin.add_key("sk-passthrough-team-cccccccc", fake.base_url, profile="team")
    made = admin.call("POST", "/client-keys", {"name": "app"}).json()
    key = made["key"] if caller == "client key moved" else MASTER_KEY
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    first = sdk.responses.create(model="gpt-4o-mini", input="Remember this.")
    holder = two_keys[fake.requests[-1].secret]
    if caller == "client key moved":
        assert admin.call("PUT", f"/client-keys/{made['id']}", {"profile": "team"}).status == 200
    else:
        sdk = sdk.with_options(default_headers={"X-Profile": "team"})
    error = _go_on_refused(sdk, first.id)
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "previous_response_not_found",
        "previous_response_id",
    )
    assert error["message"].startswith(f"Previous response with id '{first.id}' not found.")
    assert (
        f"#{holder}" in error["message"] and "not in the pool of profile 'team'" in error["message"]
    )
    assert SECRET not in error["message"] and OTHER not in error["message"]
    assert len(fake.requests) == 1  # the team key was never sent a response it lacks
    sdk.close()


@pytest.mark.both_databases
def test_a_held_response_belongs_to_the_client_key_that_made_it(server, admin, fake, two_keys):
    made = [admin.call("POST", "/client-keys", {"name": n}).json()["key"] for n in ("a", "b")]
    mine, theirs = (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=k, max_retries=0) for k in made
    )
    first = mine.responses.create(model="gpt-4o-mini", input="mine")
    assert mine.responses.retrieve(first.id).id == first.id
    with pytest.raises(openai.NotFoundError):
        theirs.responses.create(model="gpt-4o-mini", input="x", previous_response_id=first.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.delete(first.id)
    assert [r.method for r in fake.requests] == ["POST", "GET"]
    mine.close()
    theirs.close()


@pytest.mark.parametrize("stream", [False, True])
def test_get_and_delete_of_a_passthrough_response_ask_its_upstream(
    client, fake, clock, two_keys, stream
):
    first = _create(client, clock, stream, input="Say hello")
    holder = fake.requests[-1].secret
    _create(client, clock, False, input="the other key's turn")
    assert fake.requests[-1].secret != holder
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == "Hello from the fake upstream"
    asked = fake.requests[-1]
    assert (asked.method, asked.path, asked.secret) == ("GET", f"/v1/responses/{first.id}", holder)
    client.responses.delete(first.id)
    assert (fake.requests[-1].method, fake.requests[-1].secret) == ("DELETE", holder)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_a_translated_response_is_read_and_deleted_here(client, admin, fake):
    admin.add_key(SECRET, fake.base_url)  # no Responses API: KeyRelay translates and keeps
    first = client.responses.create(model="gpt-4o-mini", input="Say hello")
    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(first.id)
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"]


def test_a_conversation_kept_here_is_translated_for_a_responses_key(client, admin, fake):
    plain = admin.add_key(OTHER, fake.base_url, name="plain")
    first = client.responses.create(model="gpt-4o-mini", input="My name is Ada.")
    assert admin.call("POST", f"/keys/{plain['id']}/toggle", {"active": False}).status == 200
    admin.add_key(SECRET, fake.base_url, name="responses", responses_api=True)
    client.responses.create(model="gpt-4o-mini", input="My name?", previous_response_id=first.id)
    sent = fake.requests[-1]  # the upstream never saw that response: it gets the history
    assert sent.secret == SECRET and sent.path == "/v1/chat/completions"
    assert [m["content"] for m in sent.body["messages"]] == [
        "My name is Ada.",
        "Hello from the fake upstream",
        "My name?",
    ]


def _chat(client, clock, **extra):
    clock.advance(seconds=1)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], **extra
    )


@pytest.mark.both_databases
def test_a_session_prefers_the_key_that_served_it_and_moves_only_on_failover(
    client, fake, clock, two_keys
):
    session = {"extra_body": {"prompt_cache_key": "session-42"}}
    _chat(client, clock, **session)
    pinned = fake.requests[-1].secret
    for _ in range(3):
        _chat(client, clock, **session)
        assert fake.requests[-1].secret == pinned
    _chat(client, clock)  # another request takes its turn
    _chat(client, clock)
    assert {r.secret for r in fake.requests[-2:]} == {SECRET, OTHER}
    # The pinned key fails: the other serves, and the session moves there.
    fake.script(pinned, [Behaviour.server_error(502)])
    _chat(client, clock, **session)
    other = OTHER if pinned == SECRET else SECRET
    assert [r.secret for r in fake.requests[-2:]] == [pinned, other]
    for _ in range(3):
        _chat(client, clock, **session)
        assert fake.requests[-1].secret == other


@pytest.mark.parametrize("how", ["header", "metadata"])
def test_claude_codes_session_is_pinned(server, fake, two_keys, how):
    headers = {"x-claude-code-session-id": "cc-session-1"} if how == "header" else {}
    sdk = anthropic.Anthropic(
        base_url=server.url, api_key=MASTER_KEY, max_retries=0, default_headers=headers
    )
    extra = {"metadata": {"user_id": "user_abc_account__session_1"}} if how == "metadata" else {}
    for _ in range(4):
        sdk.messages.create(
            model="gpt-4o-mini",
            max_tokens=20,
            messages=[{"role": "user", "content": "hi"}],
            **extra,
        )
    sdk.close()
    assert len({r.secret for r in fake.requests}) == 1


def test_pins_are_forgotten_with_the_request_log(app, client, fake, clock, two_keys):
    def count_pins() -> int:
        gateway = app.extensions["keyrelay"]
        with gateway.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(ConversationPin))

    _chat(client, clock, extra_body={"prompt_cache_key": "old-session"})
    client.responses.create(model="gpt-4o-mini", input="an old conversation")
    assert count_pins() == 2
    clock.advance(days=40)
    _chat(client, clock, extra_body={"prompt_cache_key": "recent-session"})
    outcome = scheduler.run_job(app, "log-retention")
    assert outcome["error"] is None and count_pins() == 1


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/messages", {"metadata": "not an object"}, {}),
        ("/v1/messages", {"metadata": {"user_id": 7}}, {"x-claude-code-session-id": ""}),
        ("/v1/chat/completions", {"prompt_cache_key": {"no": "string"}}, {}),
        ("/v1/chat/completions", {}, {"session-id": "x" * 4000, "openai-beta": " "}),
        ("/v1/responses", {"prompt_cache_key": None, "previous_response_id": "r" * 65}, {}),
    ],
)
def test_odd_session_values_are_no_server_error(server, http, admin, fake, path, body, headers):
    admin.add_key(SECRET, fake.base_url)
    base = {"model": "gpt-4o-mini", "max_tokens": 20}
    if path == "/v1/responses":
        base = {"model": "gpt-4o-mini", "input": "hi"}
    else:
        base["messages"] = [{"role": "user", "content": "hi"}]
    response = http.request(
        "POST",
        f"{server.url}{path}",
        json={**base, **body},
        headers={"Authorization": f"Bearer {MASTER_KEY}", **headers},
    )
    assert response.status < 500, response.data
    if response.status >= 400:
        assert response.json()["error"]["message"]
    for sent in fake.requests:
        assert "openai-beta" not in sent.headers and "session-id" not in sent.headers


def test_claude_code_itself_keeps_its_betas_and_its_session(app, server, admin, tmp_path):
    """The real Claude Code through an Anthropic key: its `anthropic-beta` flags reach the
    upstream, and its session (in its header, or its `metadata.user_id`) is pinned."""

    with FakeAnthropic([CLAUDE]) as upstream:
        admin.add_key(CLAUDE, upstream.base_url, provider="anthropic")
        made = admin.call("POST", "/client-keys", {"name": "cc", "rpm_limit": 50}).json()
        done = run(claude_code(), server, made["key"], tmp_path, "Say hello")
        assert done.returncode == 0, done.stderr
        (sent,) = upstream.messages_requests
    assert "claude-code-20250219" in sent.headers["anthropic-beta"].split(",")
    assert sent.headers["anthropic-version"] == "2023-06-01" and sent.key == CLAUDE
    with app.extensions["keyrelay"].engine.connect() as conn:
        scopes = list(conn.scalars(select(ConversationPin.scope)))
    assert len(scopes) == 1 and scopes[0].startswith("session:")


def test_codex_itself_keeps_its_session_on_one_key(server, admin, fake, clock, two_keys, tmp_path):
    """The real Codex CLI with two Responses-API keys tried in turn: the turn that sends a
    command's output back goes to the key that served the turn before (its prompt cache)."""
    for secret in (SECRET, OTHER):
        fake.script(
            secret,
            [
                Behaviour.tool_call("exec_command", {"cmd": "echo hello-from-codex"}),
                Behaviour.ok("Codex saw hello-from-codex."),
            ],
        )
    made = admin.call("POST", "/client-keys", {"name": "codex", "rpm_limit": 50}).json()
    done = run_codex(codex(), server, made["key"], tmp_path, "Run echo hello-from-codex")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Codex saw hello-from-codex."
    first, second = fake.requests
    assert first.path == second.path == "/v1/responses"
    assert first.body["prompt_cache_key"] == second.body["prompt_cache_key"]
    assert first.secret == second.secret


@pytest.mark.parametrize(
    ("first", "found"),
    [
        (b'event: response.created\ndata: {"type":"response.created","response":'
         b'{"id":"resp_whole","status":"in_progress"}}\n\nevent: x', "resp_whole"),
        (b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
         b'"response":{"id":"resp_cut","object":"resp', "resp_cut"),
        (b'event: response.created\ndata: {"type":"response.created","sequence_n', None),
        (b'data: {"type":"response.created","response":{"id":"' + b"r" * 65 + b'"}}\n\n', None),
    ],
)  # fmt: skip
def test_a_streamed_responses_id_is_read_from_its_first_bytes(first, found):
    request = ProxyRequest("responses", "m", True, {}, native=("openai_responses", {}))
    reply = UpstreamReply(200, {}, stream=ResponsesEvents(), format="openai_responses")
    reply.first_chunk = first
    assert pins.upstream_response_id(request, reply) == found
