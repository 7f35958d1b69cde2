"""The Codex CLI itself (npm `@openai/codex`) pointed at KeyRelay as a model provider with
the Responses wire API, while the pool holds only a chat-completions upstream: it prints
the upstream's answer, and runs a command the model asks for and sends the output back."""

from __future__ import annotations

import pytest

from tests.cli_clients import cli_client_key, codex_exec, folders, run_cli
from tests.fake_upstream import Behaviour
from tests.npm_tools import codex

SECRET = "sk-codex-aaaaaaaaaaaaaaaaaaaa"


@pytest.fixture(scope="module")
def binary():
    return codex()


@pytest.fixture
def client_key(admin, fake):
    return cli_client_key(admin, fake, SECRET, "codex")


def run(binary, server, key: str, tmp_path, prompt: str):
    home, work = folders(tmp_path)
    command = codex_exec(binary, f"{server.url}/v1", "KEYRELAY_KEY", "gpt-4o-mini", prompt)
    return run_cli(command, home, work, KEYRELAY_KEY=key)


def test_codex_prints_the_upstream_answer(binary, server, client_key, fake, admin, tmp_path):
    done = run(binary, server, client_key["key"], tmp_path, "Say hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Hello from the fake upstream"
    (sent,) = fake.requests
    assert sent.path == "/v1/chat/completions" and sent.body["stream"] is True
    names = {tool["function"]["name"] for tool in sent.body["tools"]}
    assert "exec_command" in names
    server.app.extensions["keyrelay"].books.flush()
    (row,) = admin.logs()
    assert row["endpoint"] == "responses" and row["status_code"] == 200
    assert row["client_key_id"] == client_key["id"]


def test_codex_runs_a_command_and_sends_the_output_back(binary, server, client_key, fake, tmp_path):
    fake.script(
        SECRET,
        [
            Behaviour.tool_call("exec_command", {"cmd": "echo hello-from-codex"}),
            Behaviour.ok("Codex saw hello-from-codex."),
        ],
    )
    done = run(binary, server, client_key["key"], tmp_path, "Run echo hello-from-codex")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Codex saw hello-from-codex."
    assert len(fake.requests) == 2
    messages = fake.requests[1].body["messages"]
    calls = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    assert calls[-1]["tool_calls"][0]["function"]["name"] == "exec_command"
    (result,) = [m for m in messages if m["role"] == "tool"]
    assert result["tool_call_id"] == calls[-1]["tool_calls"][0]["id"]
    assert "hello-from-codex" in result["content"]
