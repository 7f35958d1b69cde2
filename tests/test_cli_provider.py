"""Provider kinds `claude_code` and `codex_cli`: a request routed to such a key runs the
real CLI (npm `@anthropic-ai/claude-code`, `@openai/codex`) non-interactively in an empty
temporary directory with its tools off, pointed by `upstream_base_url` at a fake upstream
(the Messages API for Claude Code, the Responses API for Codex). Every client dialect
reaches it; usage is the CLI's; the cap, the timeout and a client leaving end the run, its
process group killed."""

from __future__ import annotations

import base64
import glob
import json
import os
import socket
import sys
import tempfile
import threading
import time

import anthropic
import openai
import pytest
import urllib3

from tests.cli_clients import claude_code_env, codex_exec, folders, run_cli
from tests.conftest import MASTER_KEY, Admin, live_app
from tests.fake_anthropic import DEFAULT_TEXT, FakeAnthropic, Reply
from tests.fake_upstream import DEFAULT_CONTENT, Behaviour
from tests.npm_tools import claude_code, codex

CLAUDE = "sk-ant-api03-cliaaaaaaaaaaaaaaaaaaaa"
SPARE = "sk-ant-api03-clibbbbbbbbbbbbbbbbbbbb"
CODEX = "sk-codex-cli-aaaaaaaaaaaaaaaaaaaa"
MODEL = "claude-haiku-4-5"
CONVERSATION = [
    {"role": "system", "content": "Answer like a pirate."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris, matey."},
    {"role": "user", "content": "And of Spain?"},
]


@pytest.fixture(autouse=True)
def own_run_folders(monkeypatch, tmp_path, database_url):
    """Each test's CLI runs make their folders under its own temporary directory, so what
    the test counts there (folders, processes) is its own, whatever else runs beside it.
    (After `database_url`: the session's PostgreSQL keeps its folder in the real one.)"""
    runs = tmp_path / "cli-runs"
    runs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(runs))
    return runs


@pytest.fixture(scope="module")
def binaries():
    return str(claude_code()), str(codex())


@pytest.fixture
def upstream():
    with FakeAnthropic([CLAUDE, SPARE]) as fake:
        yield fake


def add_cli_key(admin, provider, secret, command, base, name="cli", **options) -> dict:
    options = {"command": command, "upstream_base_url": base, **options}
    body = {"provider": provider, "name": name, "secret": secret, "options": options}
    made = admin.call("POST", "/keys", body)
    assert made.status == 201, made.data
    return made.json()


def logged(server, admin) -> list[dict]:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()


def cli_processes() -> dict[int, str]:
    """pid → working directory of every live process running in one of this test's CLI
    run directories."""
    mine = os.path.join(tempfile.gettempdir(), "keyrelay-cli-")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(mine) and alive(int(entry)):
            found[int(entry)] = cwd
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run_dirs() -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), "keyrelay-cli-*"))


@pytest.mark.both_databases
def test_claude_code_serves_every_dialect_with_its_usage(binaries, upstream, admin, server, client):
    before = set(run_dirs())
    key = add_cli_key(admin, "claude_code", CLAUDE, binaries[0], upstream.base_url)
    tested = admin.call("POST", f"/keys/{key['id']}/test").json()
    assert tested["result"] == "ok" and tested["models"] is None  # the binary runs
    completion = client.chat.completions.create(model=MODEL, messages=CONVERSATION)
    assert completion.choices[0].message.content == DEFAULT_TEXT
    (sent,) = upstream.messages_requests
    assert sent.key == CLAUDE and sent.body["tools"] == []  # Claude Code's tools are off
    assert sent.body["model"] == MODEL
    assert sent.body["system"][-1]["text"] == "Answer like a pirate."
    (prompt,) = [block["text"] for block in sent.body["messages"][-1]["content"]]
    assert prompt == (
        "User: What is the capital of France?\n\nAssistant: Paris, matey.\n\nUser: And of Spain?"
    )
    reported = upstream.usage_reported[0]
    assert completion.usage.prompt_tokens == reported["input_tokens"]
    assert completion.usage.completion_tokens == reported["output_tokens"]

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 5  # deltas
    assert chunks[-1].usage.completion_tokens == upstream.usage_reported[1]["output_tokens"]
    assert upstream.messages_requests[1].body["messages"][-1]["content"][0]["text"] == "Say hello"

    sdk = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    message = sdk.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hi there"}]
    )
    assert message.content[0].text == DEFAULT_TEXT
    with sdk.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    ) as events:
        assert events.get_final_text() == DEFAULT_TEXT
    assert client.responses.create(model=MODEL, input="Hello?").output_text == DEFAULT_TEXT

    rows = logged(server, admin)
    assert [r["status_code"] for r in rows] == [200] * 5
    booked = sorted((r["input_tokens"], r["output_tokens"]) for r in rows)
    said = sorted((u["input_tokens"], u["output_tokens"]) for u in upstream.usage_reported)
    assert booked == said and not any(r["usage_estimated"] for r in rows)
    assert set(run_dirs()) == before  # every run's directory is gone
    # SIGKILLed with their group when the run closed; under load they take a moment to die
    assert wait_until(lambda: cli_processes() == {}), cli_processes()


def test_codex_serves_every_dialect_with_its_usage(binaries, fake, admin, server, client):
    add_cli_key(admin, "codex_cli", CODEX, binaries[1], fake.base_url)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=CONVERSATION)
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    (sent,) = fake.requests
    assert sent.path == "/v1/responses" and sent.secret == CODEX
    assert sent.body["model"] == "gpt-4o-mini"
    tools = {tool.get("name") or tool.get("type") for tool in sent.body["tools"]}
    assert not tools & {"exec_command", "write_stdin", "web_search", "create_goal"}
    texts = [
        part["text"]
        for item in sent.body["input"]
        if item.get("type") == "message"
        for part in item["content"]
    ]
    assert texts[-1] == (
        "System: Answer like a pirate.\n\nUser: What is the capital of France?\n\n"
        "Assistant: Paris, matey.\n\nUser: And of Spain?"
    )
    cwd = next(t for t in texts if "<cwd>" in t).split("<cwd>")[1].split("</cwd>")[0]
    assert "/keyrelay-cli-" in cwd and not os.path.exists(cwd)  # a temporary dir, removed
    assert completion.usage.prompt_tokens == fake.usage_reported[0]["prompt_tokens"]

    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == DEFAULT_CONTENT
    sdk = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    message = sdk.messages.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text == DEFAULT_CONTENT
    answer = client.responses.create(model="gpt-4o-mini", input="Hi", stream=True)
    done = [e for e in answer if e.type == "response.completed"]
    assert done[0].response.output_text == DEFAULT_CONTENT

    rows = logged(server, admin)
    assert [r["status_code"] for r in rows] == [200] * 4
    booked = sorted((r["input_tokens"], r["output_tokens"]) for r in rows)
    said = sorted((u["prompt_tokens"], u["completion_tokens"]) for u in fake.usage_reported)
    assert booked == said and not any(r["usage_estimated"] for r in rows)
    assert wait_until(lambda: cli_processes() == {}), cli_processes()  # the group, killed


def test_tool_calls_are_refused_before_anything_runs(binaries, upstream, admin, client):
    add_cli_key(admin, "claude_code", CLAUDE, binaries[0], upstream.base_url)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], tools=[tool]
        )
    assert refused.value.code == "unsupported_by_provider"
    assert "claude_code" in refused.value.message
    assert upstream.requests == []


def test_a_refusal_names_the_field_as_the_client_wrote_it(
    binaries, upstream, admin, client, server
):
    """A Responses client's `text.format` and an Anthropic client's `stop_sequences` are
    named so, not as the chat body the CLI key reads calls them."""
    add_cli_key(admin, "claude_code", CLAUDE, binaries[0], upstream.base_url)
    schema = {"type": "object", "properties": {}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="x", text={"format": {
            "type": "json_schema", "name": "answer", "schema": schema}})  # fmt: skip
    assert refused.value.code == "unsupported_by_provider"
    assert refused.value.body["param"] == "text.format"
    assert "'text.format'" in refused.value.message
    messages = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        messages.messages.create(model=MODEL, max_tokens=10, stop_sequences=["END"],
                                 messages=[{"role": "user", "content": "x"}])  # fmt: skip
    messages.close()
    assert "'stop_sequences'" in refused.value.message
    assert upstream.requests == []


@pytest.mark.both_databases
def test_a_key_at_its_cap_is_passed_over(binaries, upstream, admin, server, client):
    first = add_cli_key(
        admin, "claude_code", CLAUDE, binaries[0], upstream.base_url, max_concurrency=1
    )
    gate = threading.Event()
    upstream.script(CLAUDE, [Reply.held((4, gate))])  # stops after its first word
    held = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], stream=True
    )
    try:
        assert next(iter(held)).choices[0].delta.role == "assistant"
        running = cli_processes()
        assert running and all(os.listdir(cwd) == [] for cwd in running.values())  # empty
        with pytest.raises(openai.RateLimitError) as full:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert full.value.code == "provider_keys_at_limit"
        assert full.value.response.headers["Retry-After"] == "1"
        second = add_cli_key(admin, "claude_code", SPARE, binaries[0], upstream.base_url)
        other = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )
        assert other.parse().choices[0].message.content == DEFAULT_TEXT
    finally:
        gate.set()
    assert "".join(c.choices[0].delta.content or "" for c in held) == DEFAULT_TEXT
    rows = logged(server, admin)
    served = sorted(r["provider_key_id"] for r in rows if r["status_code"] == 200)
    assert served == sorted([first["id"], second["id"]])
    assert upstream.messages_requests[-1].key == SPARE


def test_a_run_past_its_timeout_is_killed_and_fails_over(binaries, upstream, admin, server):
    gate = threading.Event()
    upstream.script(CLAUDE, [Reply.held((0, gate))])  # never answers
    slow = add_cli_key(
        admin, "claude_code", CLAUDE, binaries[0], upstream.base_url, timeout_seconds=2
    )
    spare = add_cli_key(admin, "claude_code", SPARE, binaries[0], upstream.base_url, name="b")
    http = urllib3.PoolManager(retries=False)
    result = {}

    def ask():
        result["response"] = http.request(
            "POST",
            f"{server.url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )

    asking = threading.Thread(target=ask)
    try:
        asking.start()
        running: dict[int, str] = {}

        def asked() -> bool:
            # The CLI's processes, gathered while waiting: the 2 s timeout runs from its
            # start, so under load it may be killed soon after its request reaches the
            # upstream, and one look afterwards could find nothing left.
            running.update(cli_processes())
            return bool(upstream.messages_requests)

        assert wait_until(asked), result
        assert running
        asking.join(20)
    finally:
        gate.set()
    response = result["response"]
    assert response.status == 200, response.data
    assert response.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert not any(alive(pid) for pid in running)  # the whole group was killed
    assert not any(os.path.exists(cwd) for cwd in running.values())
    (row,) = logged(server, admin)
    attempts = [(a["provider_key_id"], a["outcome"]) for a in row["attempts"]]
    assert attempts == [(slow["id"], "timeout"), (spare["id"], "ok")]
    assert 2000 <= row["attempts"][0]["latency_ms"] < 5000
    assert "did not finish in time" in row["attempts"][0]["error"]


def test_a_client_that_leaves_kills_the_run(binaries, upstream, admin, server):
    add_cli_key(admin, "claude_code", CLAUDE, binaries[0], upstream.base_url)
    first, rest = threading.Event(), threading.Event()
    upstream.script(CLAUDE, [Reply.held((4, first), (9, rest))])
    body = json.dumps(
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER_KEY}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        .encode()
    )  # fmt: skip
    try:
        seen = b""
        while b"Hello" not in seen:
            seen += sock.recv(4096)
        running = cli_processes()
        assert running
        sock.close()  # the client goes away mid-answer
        first.set()  # the next words reach the gateway, which finds the client gone
        assert wait_until(lambda: not any(alive(pid) for pid in running))
        assert not rest.is_set()  # killed while the upstream was still answering
    finally:
        first.set()
        rest.set()
    assert wait_until(lambda: logged(server, admin))
    (row,) = logged(server, admin)
    assert row["status_code"] == 499
    assert not any(os.path.exists(cwd) for cwd in running.values())


def test_a_cli_error_comes_back_with_its_message_and_no_secret(
    binaries, upstream, admin, server, client
):
    wrong = "sk-ant-api03-notknownaaaaaaaaaaaaaa"
    key = add_cli_key(admin, "claude_code", wrong, binaries[0], upstream.base_url)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
    assert "rejected the key" in failed.value.message
    assert admin.key(key["id"])["status"] == "auth_failed"  # Claude Code said 401
    (row,) = logged(server, admin)
    assert "Invalid API key" in str(row)
    assert wrong not in str(row) and wrong not in str(admin.key(key["id"]))


@pytest.mark.parametrize(
    ("provider", "fields", "param"),
    [
        ("claude_code", {"options": {"max_concurrency": 0}}, "options.max_concurrency"),
        ("codex_cli", {"options": {"timeout_seconds": "soon"}}, "options.timeout_seconds"),
        ("claude_code", {"options": {"upstream_base_url": "ftp://x"}}, "options.upstream_base_url"),
        ("codex_cli", {"options": {"command": ""}}, "options.command"),
        ("claude_code", {"options": {"colour": "red"}}, "options.colour"),
        ("claude_code", {"base_url": "http://127.0.0.1:1"}, "base_url"),
        ("openai", {"base_url": "cli://claude-code"}, "base_url"),
    ],
)
def test_bad_cli_settings_are_refused_by_name(admin, provider, fields, param):
    body = {"provider": provider, "name": "n", "secret": "sk-x", **fields}
    response = admin.call("POST", "/keys", body)
    assert response.status == 400
    assert response.json()["error"]["param"] == param


@pytest.mark.both_databases
def test_a_cli_key_gets_its_placeholder_base_url_and_options(admin):
    made = admin.call(
        "POST",
        "/keys",
        {"provider": "codex_cli", "name": "c", "secret": "dir:/srv/codex-home",
         "options": {"max_concurrency": 3, "timeout_seconds": 60}},
    )  # fmt: skip
    assert made.status == 201, made.data
    key = made.json()
    assert key["base_url"] == "cli://codex"
    assert key["options"] == {"max_concurrency": 3, "timeout_seconds": 60}


def _body(model: str, content="Say hello", system: str | None = None) -> dict:
    messages = [{"role": "user", "content": content}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"model": model, "messages": messages}


# What a client can send that no CLI run could serve: refused before anything runs.
CLIENT_FAULTS = [
    ("codex_cli", _body("--x"), "model"),
    ("codex_cli", {**_body("--x"), "stream": True}, "model"),
    ("codex_cli", _body("-c"), "model"),
    ("codex_cli", _body("gpt\x00-4o-mini"), "model"),
    ("codex_cli", _body("gpt-4o-mini\n--help"), "model"),
    ("codex_cli", _body("gpt-4o-mini", content=""), "messages"),
    ("codex_cli", _body("gpt-4o-mini", content="hi\x00there"), "messages"),
    ("claude_code", _body(MODEL, content=""), "messages"),
    ("claude_code", {**_body(MODEL, content=""), "stream": True}, "messages"),
    ("claude_code", _body(MODEL, content="  \n "), "messages"),
    ("claude_code", _body(MODEL, content=[{"type": "text", "text": ""}]), "messages"),
    ("claude_code", _body("--x"), "model"),
    ("claude_code", _body(MODEL + "\x00"), "model"),
    ("claude_code", _body(MODEL, system="be\x00brief"), "messages"),
]


@pytest.mark.parametrize("provider", ["codex_cli", "claude_code"])
def test_a_clients_bad_input_is_its_own_400_and_never_the_keys_failure(
    provider, binaries, upstream, fake, admin, server, http, monkeypatch, tmp_path
):
    runs = tmp_path / "cli-runs"  # this test's own run folders (own_run_folders)
    binary, base, secret = (
        (binaries[1], fake.base_url, CODEX)
        if provider == "codex_cli"
        else (binaries[0], upstream.base_url, CLAUDE)
    )
    key = add_cli_key(admin, provider, secret, binary, base)
    cases = [(body, param) for kind, body, param in CLIENT_FAULTS if kind == provider]
    answers = []
    for body, param in cases:
        for _ in range(6):  # in a row: past the failure threshold (5) and the breaker's
            answer = http.request(
                "POST",
                f"{server.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {MASTER_KEY}"},
            )
            answers.append((answer.status, answer.json()["error"]["param"], param))
            assert os.listdir(runs) == []  # no run folder is left behind, not even one
    assert all(status == 400 and got == want for status, got, want in answers), answers
    # The Anthropic dialect says it in its own error shape.
    sdk = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(model="--x", max_tokens=9, messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert fake.requests == [] and upstream.requests == []  # nothing ran
    state = admin.key(key["id"])
    assert state["status"] == "active" and state["consecutive_failures"] == 0
    assert state["upstream_circuit"] is None
    # Everyone else is still served by the key.
    good = _body("gpt-4o-mini" if provider == "codex_cli" else MODEL)
    answer = http.request(
        "POST",
        f"{server.url}/v1/chat/completions",
        json=good,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert answer.status == 200, answer.data
    assert os.listdir(runs) == []


def _png() -> bytes:
    """A valid 1x1 PNG: what Codex's view_image would read and send upstream."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _codex_default_tools(binary: str, fake, tmp_path, model: str) -> set[str]:
    """The tools Codex offers with its defaults: its built-in tools for this model."""
    home, work = folders(tmp_path, "default-")
    command = codex_exec(binary, fake.base_url, "OPENAI_API_KEY", model, "Say hello", "fake")
    done = run_cli(command, home, work, OPENAI_API_KEY=CODEX)
    assert done.returncode == 0, done.stderr[-2000:]
    (sent,) = fake.requests
    fake.reset()
    return {tool.get("name") or tool.get("type") for tool in sent.body["tools"]}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-5.5"])  # gpt-5.5 is offered apply_patch
def test_codex_offers_and_runs_none_of_its_built_in_tools(
    model, binaries, fake, admin, client, tmp_path
):
    builtin = _codex_default_tools(binaries[1], fake, tmp_path, model)
    assert {"view_image", "exec_command"} <= builtin  # what the defaults would offer
    image = tmp_path / "private.png"
    image.write_bytes(_png())
    secret_text = tmp_path / "private.txt"
    secret_text.write_text("PRIVATE-MARKER-4242")
    arguments = {
        "path": str(image), "cmd": f"cat {secret_text}", "command": ["cat", str(secret_text)],
        "input": f"*** Begin Patch\n*** Add File: {tmp_path}/written.txt\n+x\n*** End Patch",
        "questions": [], "plan": [], "query": "x",
    }  # fmt: skip
    names = sorted(builtin)
    fake.script(
        CODEX, [Behaviour.tool_call(name, arguments) for name in names] + [Behaviour.ok("done")]
    )
    add_cli_key(admin, "codex_cli", CODEX, binaries[1], fake.base_url)
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Look at my picture"}]
    )
    assert completion.choices[0].message.content == "done"
    sent = fake.requests
    assert len(sent) == len(names) + 1  # every forced call came back, none ran
    assert all(request.body["tools"] == [] for request in sent)  # nothing offered
    raw = b"".join(request.raw for request in sent)
    encoded = base64.b64encode(image.read_bytes())
    assert b"input_image" not in raw and encoded not in raw and b"PRIVATE-MARKER" not in raw
    assert not (tmp_path / "written.txt").exists()
    outputs = {
        item["call_id"]: str(item.get("output"))
        for item in sent[-1].body["input"]
        if item.get("type") == "function_call_output"
    }
    calls = {
        item["call_id"]: item["name"]
        for item in sent[-1].body["input"]
        if item.get("type") == "function_call"
    }
    assert sorted(calls.values()) == names  # each built-in tool was asked for, by name...
    for call_id, name in calls.items():  # ...and each was refused as unknown
        assert "unsupported" in outputs[call_id].lower() or name in outputs[call_id], (
            name,
            outputs[call_id],
        )


def _claude_default_tools(binary: str, upstream, tmp_path) -> set[str]:
    """The tools Claude Code offers with its defaults: its built-in tools."""
    home, work = folders(tmp_path, "default-")
    base_url = upstream.base_url.rstrip("/").removesuffix("/v1")
    env = claude_code_env(base_url, ANTHROPIC_API_KEY=CLAUDE)
    done = run_cli([binary, "-p", "--model", MODEL, "Say hello"], home, work, **env)
    assert done.returncode == 0, done.stderr[-2000:]
    sent = upstream.messages_requests[-1]
    upstream.requests.clear()
    return {tool["name"] for tool in sent.body["tools"]}


def test_claude_code_offers_and_runs_none_of_its_built_in_tools(
    binaries, upstream, admin, client, tmp_path
):
    builtin = _claude_default_tools(binaries[0], upstream, tmp_path)
    assert {"Bash", "Read"} <= builtin  # what the defaults would offer
    secret_text = tmp_path / "private.txt"
    secret_text.write_text("PRIVATE-MARKER-4242")
    arguments = {
        "command": f"cat {secret_text}", "file_path": str(secret_text), "path": str(tmp_path),
        "pattern": "PRIVATE", "content": "x", "old_string": "P", "new_string": "Q",
        "url": f"{upstream.base_url}/leak", "prompt": "x", "description": "x", "query": "x",
    }  # fmt: skip
    names = sorted(builtin)
    upstream.script(
        CLAUDE,
        [Reply.tool_use(name, arguments, tool_id=f"toolu_{n:04d}") for n, name in enumerate(names)]
        + [Reply.ok("done")],
    )
    add_cli_key(admin, "claude_code", CLAUDE, binaries[0], upstream.base_url)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Read my file"}]
    )
    assert completion.choices[0].message.content == "done"
    sent = upstream.messages_requests
    assert len(sent) == len(names) + 1  # every forced call came back, none ran
    assert all(request.body["tools"] == [] for request in sent)  # nothing offered
    assert "PRIVATE-MARKER" not in json.dumps([request.body for request in sent])
    assert not any(request.path.endswith("/leak") for request in upstream.requests)
    results = {
        block["tool_use_id"]: block
        for message in sent[-1].body["messages"]
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    }
    assert sorted(results) == [f"toolu_{n:04d}" for n in range(len(names))]  # each one...
    for n, name in enumerate(names):  # ...refused as a tool that is not there
        result = results[f"toolu_{n:04d}"]
        assert result.get("is_error") and "No such tool available" in str(result["content"]), (
            name,
            result,
        )


# A stdio MCP server offering one tool that, when called, leaves a file behind.
MCP_SERVER = """
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("id") is None:
        continue
    result = {}
    if msg["method"] == "initialize":
        result = {"protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "leaky", "version": "1"}}
    elif msg["method"] == "tools/list":
        result = {"tools": [{"name": "leak", "description": "Reads the user's files",
                             "inputSchema": {"type": "object", "properties": {}}}]}
    elif msg["method"] == "tools/call":
        open(sys.argv[1], "w").write("called")
        result = {"content": [{"type": "text", "text": "LEAKED"}]}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"""


def test_claude_code_with_a_config_directory_offers_none_of_its_mcp_tools(
    binaries, upstream, admin, client, tmp_path
):
    """A `dir:` key's configuration may list MCP servers (the admin's own tools): the
    model is offered none of them, and a call it forces anyway reaches none."""
    server, called = tmp_path / "mcp_server.py", tmp_path / "called"
    server.write_text(MCP_SERVER)
    config = tmp_path / "claude-config"
    config.mkdir()
    (config / "settings.json").write_text(json.dumps({"env": {"ANTHROPIC_API_KEY": CLAUDE}}))
    leaky = {"type": "stdio", "command": sys.executable, "args": [str(server), str(called)]}
    (config / ".claude.json").write_text(json.dumps({"mcpServers": {"leaky": leaky}}))
    upstream.script(CLAUDE, [Reply.tool_use("mcp__leaky__leak", {}), Reply.ok("done")])
    add_cli_key(admin, "claude_code", f"dir:{config}", binaries[0], upstream.base_url)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Use your tools"}]
    )
    assert completion.choices[0].message.content == "done"
    sent = upstream.messages_requests
    assert len(sent) == 2 and all(request.body["tools"] == [] for request in sent)
    assert not called.exists()
    assert "LEAKED" not in json.dumps(sent[-1].body)


def test_codex_with_a_config_directory_offers_none_of_its_mcp_tools(
    binaries, fake, admin, client, tmp_path
):
    server, called = tmp_path / "mcp_server.py", tmp_path / "called"
    server.write_text(MCP_SERVER)
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "auth.json").write_text(json.dumps({"OPENAI_API_KEY": CODEX}))
    (home / "config.toml").write_text(
        f"[mcp_servers.leaky]\ncommand = {json.dumps(sys.executable)}\n"
        f"args = [{json.dumps(str(server))}, {json.dumps(str(called))}]\n"
    )
    fake.script(CODEX, [Behaviour.tool_call("mcp__leaky__leak", {}), Behaviour.ok("done")])
    add_cli_key(admin, "codex_cli", f"dir:{home}", binaries[1], fake.base_url)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Use your tools"}]
    )
    assert completion.choices[0].message.content == "done"
    assert len(fake.requests) == 2
    assert all(request.body["tools"] == [] for request in fake.requests)
    assert not called.exists() and b"LEAKED" not in fake.requests[-1].raw


def test_a_clients_bad_input_does_not_hold_a_half_open_circuits_probe(
    settings, clock, http, tmp_path
):
    """After the cooldown the next attempt probes the upstream. A request refused for its
    own input before anything ran must leave the probe to the next request, not keep the
    circuit shut for everyone."""
    failing = tmp_path / "failing"
    failing.touch()
    script = tmp_path / "fake-claude"
    script.write_text(
        f"#!/bin/sh\n[ -e {failing} ] && exit 1\n"
        'echo \'{"type":"result","subtype":"success","is_error":false,"result":"ok",'
        '"usage":{"input_tokens":1,"output_tokens":1}}\'\n'
    )
    script.chmod(0o755)
    overrides = {"BREAKER_FAILURES": 2, "BREAKER_COOLDOWN": 30.0, "FAILURE_THRESHOLD": 100}
    with live_app(settings, **overrides) as (_, live):
        admin = Admin(live.url, http)
        add_cli_key(admin, "claude_code", CLAUDE, str(script), "http://127.0.0.1:9/v1")

        def ask(model: str = MODEL) -> int:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            headers = {"Authorization": f"Bearer {MASTER_KEY}"}
            return http.request(
                "POST", f"{live.url}/v1/chat/completions", json=body, headers=headers
            ).status

        assert [ask(), ask(), ask()] == [502, 502, 503]  # two failures open the circuit
        failing.unlink()  # the upstream is back
        clock.advance(seconds=31)  # half-open: the next attempt probes
        assert ask("--x") == 400  # the client's own fault: no attempt, no probe
        assert ask() == 200  # the probe is this request's, and it closes the circuit


def test_claude_code_cache_usage_reaches_a_messages_client(binaries, upstream, admin, server):
    """The prompt-cache reads and writes Claude Code reports are shown to a Messages client
    of a whole answer, as Anthropic counts them (input tokens: the uncached ones)."""
    add_cli_key(admin, "claude_code", CLAUDE, binaries[0], upstream.base_url)
    upstream.script(CLAUDE, [Reply.ok(cache_creation=7, cache_read=2048)])
    sdk = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    message = sdk.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hi there"}]
    )
    sdk.close()
    assert message.content[0].text == DEFAULT_TEXT
    usage = message.usage
    reported = upstream.usage_reported[0]
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (7, 2048)
    assert usage.input_tokens == reported["input_tokens"]


def test_claude_code_cache_usage_reaches_a_streaming_messages_and_responses_client(
    binaries, upstream, admin, server, client
):
    """A streamed answer carries Claude Code's prompt-cache reads and writes to the client's
    usage, as a whole one does, and books them."""
    add_cli_key(admin, "claude_code", CLAUDE, binaries[0], upstream.base_url)
    upstream.script(
        CLAUDE,
        [Reply.ok(cache_creation=7, cache_read=2048), Reply.ok(cache_creation=5, cache_read=64)],
    )
    sdk = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    with sdk.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    ) as events:
        assert events.get_final_text() == DEFAULT_TEXT
        usage = events.get_final_message().usage
    sdk.close()
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (7, 2048)
    assert usage.input_tokens == upstream.usage_reported[0]["input_tokens"]
    streamed = client.responses.create(model=MODEL, input="Hello?", stream=True)
    (done,) = [event for event in streamed if event.type == "response.completed"]
    assert done.response.output_text == DEFAULT_TEXT
    assert done.response.usage.input_tokens_details.cached_tokens == 64
    rows = logged(server, admin)
    assert sorted((r["cache_write_tokens"], r["cache_read_tokens"]) for r in rows) == [
        (5, 64),
        (7, 2048),
    ]
