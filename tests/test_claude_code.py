"""Claude Code itself (npm `@anthropic-ai/claude-code`, its native binary) pointed at
KeyRelay by ANTHROPIC_BASE_URL, with a client key, while the pool holds only an
OpenAI-format upstream: it prints the upstream's answer, and runs a tool the model asks
for and sends its result back through KeyRelay."""

from __future__ import annotations

import pytest

from tests.cli_clients import claude_code_env, cli_client_key, folders, run_cli
from tests.fake_upstream import Behaviour
from tests.npm_tools import claude_code

SECRET = "sk-claude-code-aaaaaaaaaaaaaa"


@pytest.fixture(scope="module")
def claude():
    return claude_code()


@pytest.fixture
def client_key(admin, fake):
    return cli_client_key(admin, fake, SECRET, "claude-code")


def run(claude, server, key: str, tmp_path, prompt: str, *flags: str):
    home, work = folders(tmp_path)
    env = claude_code_env(server.url, ANTHROPIC_AUTH_TOKEN=key)
    return run_cli([claude, "-p", prompt, "--model", "gpt-4o-mini", *flags], home, work, **env)


def test_claude_code_prints_the_upstream_answer(claude, server, client_key, fake, admin, tmp_path):
    done = run(claude, server, client_key["key"], tmp_path, "Say hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Hello from the fake upstream"
    (sent,) = fake.requests
    assert sent.secret == SECRET and sent.path == "/v1/chat/completions"
    assert sent.body["stream"] is True
    assert len(sent.body["tools"]) >= 10  # Claude Code's tools, as OpenAI functions
    assert all(tool["type"] == "function" for tool in sent.body["tools"])
    assert sent.body["messages"][0]["role"] == "system"
    server.app.extensions["keyrelay"].books.flush()
    (row,) = admin.logs()
    assert row["endpoint"] == "messages" and row["status_code"] == 200
    assert row["client_key_id"] == client_key["id"]
    assert row["total_tokens"] == fake.usage_reported[0]["total_tokens"]


def test_claude_code_runs_a_tool_and_sends_the_result_back(
    claude, server, client_key, fake, tmp_path
):
    fake.script(
        SECRET,
        [
            Behaviour.tool_call(
                "Bash", {"command": "echo hello-from-tool", "description": "Print a greeting"}
            ),
            Behaviour.ok("The command printed hello-from-tool."),
        ],
    )
    done = run(
        claude,
        server,
        client_key["key"],
        tmp_path,
        "Run echo hello-from-tool",
        "--allowedTools",
        "Bash",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "The command printed hello-from-tool."
    assert len(fake.requests) == 2
    messages = fake.requests[1].body["messages"]
    calls = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    assert calls[-1]["tool_calls"][0]["function"]["name"] == "Bash"
    (result,) = [m for m in messages if m["role"] == "tool"]
    assert result["tool_call_id"] == calls[-1]["tool_calls"][0]["id"]
    assert "hello-from-tool" in result["content"]  # Claude Code ran it and sent the output


def test_claude_code_through_an_anthropic_key_is_passed_through(claude, server, admin, tmp_path):
    """With an `anthropic` provider key the Messages body goes up as Claude Code sent it."""
    from tests.fake_anthropic import DEFAULT_TEXT, FakeAnthropic

    secret = "sk-ant-api03-claudecodeaaaaaaaaaaaa"
    with FakeAnthropic([secret]) as upstream:
        admin.add_key(secret, upstream.base_url, provider="anthropic", name="claude")
        made = admin.call("POST", "/client-keys", {"name": "cc", "rpm_limit": 50}).json()
        done = run(claude, server, made["key"], tmp_path, "Say hello")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == DEFAULT_TEXT
        (sent,) = upstream.messages_requests
        assert sent.key == secret and sent.body["stream"] is True
        assert sent.body["model"] == "gpt-4o-mini"  # the model Claude Code asked for
        assert isinstance(sent.body["system"], list)  # Anthropic's own shape, untranslated
        assert any(tool["name"] == "Bash" for tool in sent.body["tools"])


def test_claude_code_runs_a_tool_when_the_upstream_says_stop(
    claude, server, client_key, fake, tmp_path
):
    """LiteLLM and other OpenAI-compatible servers end a tool call with finish_reason
    `stop`: Claude Code still gets `tool_use` and runs the tool."""
    fake.script(
        SECRET,
        [
            Behaviour.tool_call(
                "Bash", {"command": "echo said-stop", "description": "Print"}, "Running it.", "stop"
            ),
            Behaviour.ok("The command printed said-stop."),
        ],
    )
    done = run(
        claude, server, client_key["key"], tmp_path, "Run echo said-stop", "--allowedTools", "Bash"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "The command printed said-stop."
    assert len(fake.requests) == 2
    (result,) = [m for m in fake.requests[1].body["messages"] if m["role"] == "tool"]
    assert "said-stop" in result["content"]  # Claude Code ran the tool
