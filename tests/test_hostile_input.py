"""Hostile bodies on every /v1 endpoint, against OpenAI, Anthropic and Gemini keys: each
is a 4xx in the client's dialect (never a 5xx) with the field's path, and each spending
call has its log row. A table of the known crash classes, then a generated pass that puts
a wrong type at every path of valid bodies. Real HTTP, fake upstreams."""

from __future__ import annotations

import copy
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import urllib3
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from extensions import db
from models.request_logs import RequestLog
from tests.conftest import MASTER_KEY, Admin, ManualClock, live_app
from tests.fake_anthropic import FakeAnthropic
from tests.fake_gemini import FakeGemini
from tests.fake_upstream import FakeUpstream

OPENAI_SECRET = "sk-hostile-openai-aaaaaaaaaaaa"
CLAUDE_SECRET = "sk-ant-api03-hostile-aaaaaaaaaaaa"
GEMINI_SECRET = "AIzaSyHostile-aaaaaaaaaaaaaaaaaaaaaaaaaa"
# The model each provider kind serves here (a key per kind, each with its own model).
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
EMBEDDERS = {"openai": "text-embedding-3-small", "gemini": "gemini-embedding-001"}
PRICE = {"input_per_mtok": "1", "output_per_mtok": "1"}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
# One whitespace-free string of about a megabyte (what the offline tokenizer once refused).
LONG_RUN = "".join(random.Random(7).choices("abcdefghijklmnopqrstuvwxyz0123456789-_/", k=10**6))
PATHS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


# One worker runs this module under pytest-xdist (./test.sh): the seeded gateway and its
# three fake upstreams are built once, not once per worker.
pytestmark = pytest.mark.xdist_group("hostile_input")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """KeyRelay with an OpenAI, an Anthropic and a Gemini key, each serving its own model,
    every model priced, and a client key with a budget."""
    tmp = tmp_path_factory.mktemp("hostile")
    settings = {
        "DATABASE_URL": None,
        "INSTANCE_PATH": str(tmp / "instance"),
        "MASTER_KEY": MASTER_KEY,
        "SECRET_KEY": Fernet.generate_key().decode(),
        "CLOCK": ManualClock(),
        "READ_TIMEOUT": 5.0,
        "CONNECT_TIMEOUT": 1.0,
        "REQUEST_DEADLINE": 10.0,
        "ADMIN_PASSWORD": "admin-pass-123",
        "SCHEDULER": False,
    }
    with (
        FakeUpstream(models=[MODELS["openai"], EMBEDDERS["openai"]]) as openai_fake,
        FakeAnthropic([CLAUDE_SECRET]) as claude_fake,
        FakeGemini([GEMINI_SECRET]) as gemini_fake,
        live_app(settings) as (app, live),
    ):
        http = urllib3.PoolManager(maxsize=8, retries=False)
        admin = Admin(live.url, http)
        keys = (
            (
                "openai",
                OPENAI_SECRET,
                openai_fake.base_url,
                [MODELS["openai"], EMBEDDERS["openai"]],
            ),
            ("anthropic", CLAUDE_SECRET, claude_fake.base_url, [MODELS["anthropic"]]),
            (
                "gemini",
                GEMINI_SECRET,
                gemini_fake.base_url,
                [MODELS["gemini"], EMBEDDERS["gemini"]],
            ),
        )
        for provider, secret, base_url, models in keys:
            admin.add_key(secret, base_url, provider=provider, name=provider, models=models)
            for model in models:
                assert admin.call("PUT", f"/prices/{model}", PRICE).status == 200
        created = admin.call("POST", "/client-keys", {"name": "budgeted", "max_budget": "100"})
        assert created.status == 201, created.data
        yield Gateway(app, live.url, http, created.json()["key"])
        http.clear()


class Gateway:
    """The served app, its URL and callers."""

    def __init__(self, app, url: str, http: urllib3.PoolManager, budgeted: str) -> None:
        self.app, self.url, self.http, self.budgeted = app, url, http, budgeted

    def post(self, path: str, body, key: str = MASTER_KEY):
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if path.startswith("/v1/messages"):
            headers["anthropic-version"] = "2023-06-01"
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.http.request("POST", self.url + path, body=raw, headers=headers)

    def log_rows(self) -> int:
        self.app.extensions["keyrelay"].books.flush()
        with self.app.app_context():
            return db.session.scalar(select(func.count()).select_from(RequestLog))


# -- valid bodies, one per endpoint -------------------------------------------------------


def chat_body(model: str) -> dict:
    return {
        "model": model,
        "max_tokens": 40,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in the picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny."},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}],
        "tool_choice": "auto",
        "stop": ["STOP"],
        "temperature": 0.5,
    }


def messages_body(model: str) -> dict:
    return {
        "model": model,
        "max_tokens": 40,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in the picture?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny."}],
            },
        ],
        "tools": [{"name": "get_weather", "description": "Weather.", "input_schema": SCHEMA}],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "stop_sequences": ["STOP"],
        "metadata": {"user_id": "u1"},
    }


def responses_body(model: str) -> dict:
    return {
        "model": model,
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in the picture?"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PIXEL}"},
                ],
            },
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "Sunny."},
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": SCHEMA}],
        "reasoning": {"effort": "low"},
        "max_output_tokens": 40,
        "store": False,
    }


def completions_body(model: str) -> dict:
    return {"model": model, "prompt": ["Say hi", "Say bye"], "max_tokens": 20}


def embeddings_body(model: str) -> dict:
    return {"model": model, "input": ["hello", "world"]}


BODIES = {
    "chat": chat_body,
    "messages": messages_body,
    "responses": responses_body,
    "completions": completions_body,
    "embeddings": embeddings_body,
}


def targets() -> list[tuple[str, str, str]]:
    """(endpoint, provider, model) for every endpoint a provider kind serves here."""
    out = [(e, p, m) for e in ("chat", "messages", "responses") for p, m in MODELS.items()]
    out += [("completions", "openai", MODELS["openai"])]
    out += [("embeddings", p, m) for p, m in EMBEDDERS.items()]
    return out


# -- the classes of the report ------------------------------------------------------------


def _set(body: dict, path: tuple, value) -> dict:
    body = copy.deepcopy(body)
    node = body
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return body


CHAT_USER = ("messages", 1)
CHAT_CLASSES = {
    "content 5": (CHAT_USER + ("content",), 5),
    "content true": (CHAT_USER + ("content",), True),
    "content [x]": (CHAT_USER + ("content",), ["x"]),
    "content [null]": (CHAT_USER + ("content",), [None]),
    "text part a number": (CHAT_USER + ("content", 0, "text"), 5),
    "text part a list": (CHAT_USER + ("content", 0, "text"), ["x"]),
    "image url null": (CHAT_USER + ("content", 1, "image_url", "url"), None),
    "image url a number": (CHAT_USER + ("content", 1, "image_url", "url"), 5),
    "image url an object": (CHAT_USER + ("content", 1, "image_url", "url"), {"u": 1}),
    "reasoning_effort []": (("reasoning_effort",), []),
    "role a list": (CHAT_USER + ("role",), ["user"]),
    "tool call a string": (("messages", 2, "tool_calls", 0), "call"),
    "tool function null": (("messages", 2, "tool_calls", 0, "function"), None),
}
RESPONSES_CLASSES = {
    "reasoning a string": (("reasoning",), "high"),
    "reasoning a list": (("reasoning",), ["high"]),
    "reasoning a number": (("reasoning",), 5),
    "input role a list": (("input", 0, "role"), ["user"]),
    "input text a number": (("input", 0, "content", 0, "text"), 5),
    "input image url a number": (("input", 0, "content", 1, "image_url"), 5),
    "input content [null]": (("input", 0, "content"), [None]),
    "function arguments a list": (("input", 1, "arguments"), ["x"]),
}
MESSAGES_CLASSES = {
    "content 5": (("messages", 0, "content"), 5),
    "content [x]": (("messages", 0, "content"), ["x"]),
    "content [null]": (("messages", 0, "content"), [None]),
    "text block a number": (("messages", 0, "content", 0, "text"), 5),
    "image source a string": (("messages", 0, "content", 1, "source"), "x"),
    "image data a number": (("messages", 0, "content", 1, "source", "data"), 5),
    "role a list": (("messages", 0, "role"), ["user"]),
    "thinking a list": (("thinking",), ["x"]),
    "tool_choice a string": (("tool_choice",), "auto"),
    "system [5]": (("system",), [5]),
}
CLASSES = {"chat": CHAT_CLASSES, "responses": RESPONSES_CLASSES, "messages": MESSAGES_CLASSES}


def _path_text(path: tuple) -> str:
    """("messages", 1, "content") as `messages[1].content`."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else f".{step}" if out else step
    return out


def table() -> list:
    cases = []
    for endpoint, provider, model in targets():
        for name, (path, value) in CLASSES.get(endpoint, {}).items():
            body = _set(BODIES[endpoint](model), path, value)
            where = _path_text(path)
            cases.append(pytest.param(endpoint, body, where, id=f"{endpoint}-{provider}-{name}"))
    return cases


def assert_refused(gateway: Gateway, endpoint: str, response, body) -> dict:
    """A 4xx in the endpoint's dialect, never a 5xx."""
    assert 400 <= response.status < 500, (response.status, response.data[:500], str(body)[:300])
    error = response.json()
    if endpoint == "messages":
        assert error["type"] == "error", error
        assert error["error"]["type"] == "invalid_request_error", error
        assert isinstance(error["error"]["message"], str)
        return error["error"]
    assert set(error["error"]) >= {"message", "type", "param", "code"}, error
    return error["error"]


@pytest.mark.parametrize("endpoint,body,where", table())
def test_each_class_is_a_400_with_its_path_and_a_log_row(gateway, endpoint, body, where):
    before = gateway.log_rows()
    response = gateway.post(PATHS[endpoint], body)
    error = assert_refused(gateway, endpoint, response, body)
    assert response.status == 400
    assert where in error["message"], error  # names the field, e.g. messages[1].content
    if endpoint != "messages":
        assert error["param"].startswith(where), error
    assert gateway.log_rows() == before + 1


@pytest.mark.parametrize(
    "endpoint,where",
    [
        ("chat", "content"),
        ("messages", "content"),
        ("responses", "input"),
        ("completions", "prompt"),
        ("embeddings", "input"),
    ],
)
@pytest.mark.parametrize("budgeted", [False, True], ids=["master", "budgeted"])
def test_a_megabyte_without_whitespace_is_counted_in_time(gateway, endpoint, where, budgeted):
    """The offline tokenizer counts it (budget estimates, embeddings on Gemini) in pieces:
    an answer, and a log row, in well under a second of counting."""
    key = gateway.budgeted if budgeted else MASTER_KEY
    providers = ["openai", "gemini"] if endpoint == "embeddings" else ["openai"]
    if endpoint in ("chat", "messages", "responses"):
        providers = list(MODELS)
    for provider in providers:
        model = (EMBEDDERS if endpoint == "embeddings" else MODELS)[provider]
        body = BODIES[endpoint](model)
        if endpoint in ("chat", "messages"):
            body["messages"] = [{"role": "user", "content": LONG_RUN}]
        else:
            body[where] = LONG_RUN
        before = gateway.log_rows()
        started = time.perf_counter()
        response = gateway.post(PATHS[endpoint], body, key)
        assert response.status < 500, (provider, response.status, response.data[:300])
        assert time.perf_counter() - started < 5
        assert gateway.log_rows() == before + 1


def test_count_tokens_counts_a_megabyte_without_whitespace(gateway):
    body = {"model": MODELS["anthropic"], "messages": [{"role": "user", "content": LONG_RUN}]}
    response = gateway.post("/v1/messages/count_tokens", body)
    assert response.status == 200, response.data[:300]
    assert 10**6 // 8 < response.json()["input_tokens"] < 10**6


def test_count_tokens_refuses_a_bad_body_in_anthropic_shape(gateway):
    body = {"model": MODELS["anthropic"], "messages": [{"role": "user", "content": [None]}]}
    response = gateway.post("/v1/messages/count_tokens", body)
    assert response.status == 400, response.data[:300]
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0]" in response.json()["error"]["message"]


# -- generated bodies ---------------------------------------------------------------------

WRONG = [None, 5, -1, 1.5, True, "x", "", [], ["x"], [None], [5], {}, {"x": 1}, [{}]]


def _paths(value, path=()):
    """Every path into a JSON value (the value itself included)."""
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*path, index))


def mutations() -> list[tuple[str, str, dict]]:
    """(endpoint, what changed, body): for every endpoint and provider, each path of a
    valid body given each wrong value, or removed."""
    out = []
    for endpoint, _, model in targets():
        valid = BODIES[endpoint](model)
        for path in _paths(valid):
            if not path:
                continue
            where = f"{model}: {_path_text(path)}"
            for value in WRONG:
                out.append((endpoint, f"{where} = {value!r}", _set(valid, path, value)))
            parent = valid
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(parent, dict):
                removed = copy.deepcopy(valid)
                node = removed
                for step in path[:-1]:
                    node = node[step]
                del node[path[-1]]
                out.append((endpoint, f"{where} removed", removed))
    return out


# A deterministic sample in CI; KEYRELAY_FUZZ_CASES=all (or a number) tries more.
FUZZ_CASES = os.environ.get("KEYRELAY_FUZZ_CASES", "1500")


def test_generated_bodies_are_never_a_server_error(gateway):
    cases = mutations()
    if FUZZ_CASES != "all":
        cases = random.Random(20).sample(cases, min(int(FUZZ_CASES), len(cases)))
    before = gateway.log_rows()

    def send(case):
        endpoint, what, body = case
        response = gateway.post(PATHS[endpoint], body)
        return endpoint, what, response.status, response.data

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, cases))
    server_errors = [(e, w, s, d[:300]) for e, w, s, d in results if s >= 500]
    for error in server_errors:
        print(*error)
    print(f"generated bodies: {len(results)} tried, {len(server_errors)} answered 5xx")
    assert server_errors == []
    assert gateway.log_rows() == before + len(results)
