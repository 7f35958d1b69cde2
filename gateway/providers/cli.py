"""The `cli` providers (F14): a request routed to such a key runs a coding-agent CLI
non-interactively, `claude_code` (Claude Code: `claude -p --output-format stream-json`)
or `codex_cli` (Codex: `codex exec --json`), in an empty temporary working directory with
its tools switched off, the conversation as its input on stdin.

The CLI's JSON events come back as OpenAI chat (a whole completion, or chunks as they
arrive), so every client dialect reaches it; usage is the CLI's own report. The key's
secret is what the CLI needs to reach its model: an API key, or `dir:<path>` of a config
directory the CLI is logged in with. Settings (`options`): `command`, `max_concurrency`,
`timeout_seconds`, `upstream_base_url` (the API the CLI itself calls).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import orjson

from gateway.admin.apischema import NOT_BLANK, SPACE, url_pattern
from gateway.codecs import events as ev
from gateway.codecs.openai_chat import request as chat_request
from gateway.codecs.reply import Choice, Reply, Text
from gateway.codecs.request import Request
from gateway.codecs.transcript import FIXED, Line, lines, text_of
from gateway.codecs.usage import of_booked
from gateway.codecs.wire import INTERNAL, InternalStream, framed
from gateway.errors import GatewayError
from gateway.ledger.usage import Usage
from gateway.policy import Outcome
from gateway.providers.anthropic import usage_of as anthropic_usage
from gateway.providers.base import (
    ProviderAdapter,
    Target,
    Timeouts,
    TransportError,
    UpstreamReply,
)
from gateway.providers.carry import IGNORED
from gateway.providers.cli_run import CliRun

DEFAULT_CONCURRENCY = 2
DEFAULT_TIMEOUT = 300
CONFIG_DIR = "dir:"
_STATUS = re.compile(r"\bstatus:? (\d{3})\b")
ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


class CliAdapter(ProviderAdapter):
    """What both CLIs share: options, the prompt, the run, events → OpenAI chat."""

    url_schemes = ("cli",)
    binary = ""
    # A CLI takes the conversation's text and nothing else (its tools are switched off);
    # hints no answer depends on are left out.
    carries = {
        "parallel_tool_calls: false": IGNORED,  # it makes no tool calls at all
        "user": IGNORED,
        "prompt_cache_key": IGNORED,
        "cache_control": IGNORED,  # a hint: the answer does not depend on it
        "store, metadata, service_tier, safety_identifier": IGNORED,
    }
    # A CLI runs whatever model it is asked for and has no model list to discover.
    default_models = ("*",)
    # Its prompt is read from the internal request (an OpenAI chat client's decoded).
    takes_typed = True

    @classmethod
    def options_schema(cls) -> dict:
        return {
            "type": "object",
            "properties": {
                "command": {
                    "type": "string",
                    "maxLength": 1024,
                    "pattern": rf"^[^\x00]*{NOT_BLANK}[^\x00]*$",
                },
                "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 64},
                "timeout_seconds": {"type": "number", "minimum": 1, "maximum": 3600},
                # no quote, backslash or space: it goes into the CLI's configuration
                "upstream_base_url": {
                    "type": "string",
                    "pattern": url_pattern(("http", "https"), r"[!#-\[\]-~]").replace(SPACE, ""),
                },
            },
            "additionalProperties": False,
        }

    @classmethod
    def check_options(cls, options: dict) -> dict:
        checked = {}
        for field, value in options.items():
            check = _CHECKS.get(field)
            if check is None:
                known = ", ".join(sorted(_CHECKS))
                raise ValueError(
                    f"options.{field}", f"Provider '{cls.name}' takes no option '{field}' "
                    f"(it takes: {known})."
                )  # fmt: skip
            checked[field] = check(f"options.{field}", value)
        return checked

    @classmethod
    def max_concurrency(cls, options: dict) -> int | None:
        return options.get("max_concurrency") or DEFAULT_CONCURRENCY

    # -- the calls ------------------------------------------------------------------------

    def chat(
        self, target: Target, body: dict, timeouts: Timeouts, native=None, typed=None
    ) -> UpstreamReply:
        request = typed or chat_request.decode(body)
        run, events = self._start(target, request)
        try:
            parser = self.events()
            text = []
            for event in events:
                text.append(parser.read(event))
                if parser.finished:
                    break
            if not parser.finished:
                raise run.broke(self.name)
        finally:
            run.close()
        if parser.error is not None:
            return error_reply(*parser.error, run)
        answer = "".join(text)
        usage = parser.usage
        internal = Reply(
            id="chatcmpl-" + uuid.uuid4().hex[:24],
            model=parser.model or request.model,
            created=int(time.time()),
            choices=[Choice(0, [Text(answer)] if answer else [], "end", "stop")],
            usage=of_booked(usage),  # cache reads and writes too
        )
        return UpstreamReply(200, {}, usage=usage, text=answer, format=INTERNAL, reply=internal)

    def chat_stream(
        self,
        target: Target,
        body: dict,
        timeouts: Timeouts,
        wants_usage: bool,
        native=None,
        typed=None,
    ) -> UpstreamReply:
        request = typed or chat_request.decode(body)
        run, events = self._start(target, request)
        parser = self.events()
        try:
            # Read up to the first text (or the end): a CLI that fails before answering
            # is an attempt that failed, and the next key can serve.
            first = ""
            while not first and not parser.finished:
                event = next(events, None)
                if event is None:
                    raise run.broke(self.name)
                first = parser.read(event)
        except BaseException:
            run.close()
            raise
        if parser.error is not None:
            run.close()
            return error_reply(*parser.error, run)
        model = parser.model or request.model
        return UpstreamReply(
            200,
            {},
            chunks=self._events(run, events, parser, first, model),
            _release=run.close,
            stream=InternalStream(),
            format=INTERNAL,
        )

    def _events(self, run: CliRun, events, parser, first: str, model: str):
        """The run's answer as internal events (framed: gateway/codecs/wire.py), ending
        with its usage, cache writes too; the run closed however it ends."""
        try:
            yield framed([ev.Start("chatcmpl-" + uuid.uuid4().hex[:24], model)])
            if first:
                yield framed([ev.PartStart(0, "text"), ev.TextDelta(0, first)])
            while not parser.finished:
                event = next(events, None)
                if event is None:
                    raise run.broke(self.name)
                text = parser.read(event)
                if text:
                    opened = [] if first else [ev.PartStart(0, "text")]
                    first = first or text
                    yield framed([*opened, ev.TextDelta(0, text)])
            if parser.error is not None:
                raise TransportError(Outcome.SERVER_ERROR, run.scrub(parser.error[1]))
            ending = [ev.PartStop(0)] if first else []
            ending.append(ev.Stop("end", "stop"))
            if parser.usage is not None:
                ending.append(ev.UsageEvent(of_booked(parser.usage)))
            yield framed([*ending, ev.End()])
        finally:
            run.close()

    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        """The key test: the command runs (`--version`); no model list to discover."""
        run = CliRun([self._command(target), "--version"], self.env(target), "", 30, target.secret)
        try:
            output = b"".join(run.proc.stdout)[:200].decode("utf-8", "replace")
            code = run.proc.wait(timeout=30)
        finally:
            run.close()
        if code != 0:
            detail = run.scrub(output.strip()) or f"exit status {code}"
            return UpstreamReply(502, {}, detail.encode(), error=detail)
        return UpstreamReply(200, {}, run.scrub(output.strip()).encode())

    def model_ids(self, reply: UpstreamReply) -> list[str] | None:
        return None

    # -- what each CLI says differently ---------------------------------------------------

    def argv(self, target: Target, request: Request, system: str) -> list[str]:
        """The command line after the binary."""
        raise NotImplementedError

    def env(self, target: Target) -> dict[str, str]:
        """The CLI's environment: its credentials and where its API is."""
        raise NotImplementedError

    def events(self):
        """A fresh reader of this CLI's JSON events."""
        raise NotImplementedError

    def stdin(self, request: Request) -> tuple[str, str]:
        """(system prompt for a CLI that takes one apart, the text on stdin)."""
        return "", conversation(lines(request), with_system=True)

    def _command(self, target: Target) -> str:
        return target.options.get("command") or self.binary

    def _start(self, target: Target, request: Request) -> tuple[CliRun, Iterator[dict]]:
        self.refuse_uncarried_typed(request)
        system, text = self.stdin(request)
        refuse_bad_input(self.name, request.model, system, text)
        argv = [self._command(target), *self.argv(target, request, system)]
        timeout = target.options.get("timeout_seconds") or DEFAULT_TIMEOUT
        run = CliRun(argv, self.env(target), text, timeout, target.secret, self.files(target))
        return run, run.events()

    def files(self, target: Target) -> dict[str, bytes]:
        """Files the run needs beside its working directory (`../name` from the CLI)."""
        return {}


class ClaudeCodeAdapter(CliAdapter):
    name = "claude_code"
    default_base_url = "cli://claude-code"
    price_provider = "anthropic"
    binary = "claude"

    def stdin(self, request: Request) -> tuple[str, str]:
        said = lines(request)
        system = "\n\n".join(text_of(m.content, "") for m in said if m.role in FIXED)
        return system, conversation(said, with_system=False)

    def argv(self, target: Target, request: Request, system: str) -> list[str]:
        argv = ["-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--include-partial-messages", "--no-session-persistence"]
        # No built-in tool, and none from MCP servers a config directory (`dir:`) lists.
        argv += ["--tools", "", "--strict-mcp-config", "--disable-slash-commands"]
        argv += ["--model", request.model]
        # The client's system prompt replaces Claude Code's own (an agent's, for its tools).
        argv += ["--system-prompt", system or "You are a helpful assistant."]
        if not target.secret.startswith(CONFIG_DIR):
            argv.append("--bare")  # no hooks, plugins, CLAUDE.md; the API key only
        return argv

    def env(self, target: Target) -> dict[str, str]:
        env = {
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",  # failing over is the gateway's job
        }
        if target.secret.startswith(CONFIG_DIR):
            env["CLAUDE_CONFIG_DIR"] = target.secret[len(CONFIG_DIR) :]
        else:
            env["ANTHROPIC_API_KEY"] = target.secret
        base = target.options.get("upstream_base_url")
        if base:  # Claude Code adds /v1/messages itself
            env["ANTHROPIC_BASE_URL"] = base.rstrip("/").removesuffix("/v1")
        return env

    def events(self):
        return ClaudeEvents()


class CodexCliAdapter(CliAdapter):
    name = "codex_cli"
    default_base_url = "cli://codex"
    price_provider = "openai"
    binary = "codex"
    # Codex's tools that can be switched off in 0.171 (the shell among them); view_image
    # would read any image this user can read and send it upstream.
    DISABLED = (
        "shell_tool", "multi_agent", "goals", "apps", "plugins", "skill_search", "hooks",
        "view_image",
    )  # fmt: skip
    # The rest come with the model: its catalog entry offers apply_patch and experimental
    # tools. The run gets Codex's own catalog with those taken out (codex_catalog).
    CATALOG = "codex-models.json"

    def argv(self, target: Target, request: Request, system: str) -> list[str]:
        argv = ["exec", "--json", "--skip-git-repo-check", "--ephemeral"]
        argv += ["--ignore-user-config", "--ignore-rules", "--sandbox", "read-only"]
        argv += ["-c", 'approval_policy="never"', "-c", 'web_search="disabled"']
        argv += ["-c", "tools.experimental_request_user_input.enabled=false"]
        argv += ["-c", f'model_catalog_json="../{self.CATALOG}"']  # relative to the cwd
        for feature in self.DISABLED:
            argv += ["--disable", feature]
        base = target.options.get("upstream_base_url")
        if not target.secret.startswith(CONFIG_DIR) or base:
            provider = {
                "name": "KeyRelay upstream",
                "base_url": base or "https://api.openai.com/v1",
                "wire_api": "responses",
                "request_max_retries": 0,  # failing over is the gateway's job
                "stream_max_retries": 0,
            }
            if not target.secret.startswith(CONFIG_DIR):
                provider["env_key"] = "OPENAI_API_KEY"
            else:
                provider["requires_openai_auth"] = True
            fields = ", ".join(f"{k}={json.dumps(v)}" for k, v in provider.items())
            argv += [
                "-c",
                f"model_providers.keyrelay={{{fields}}}",
                "-c",
                "model_provider=keyrelay",
            ]
        return [*argv, "-m", request.model, "-"]

    def files(self, target: Target) -> dict[str, bytes]:
        return {self.CATALOG: codex_catalog(self._command(target))}

    def env(self, target: Target) -> dict[str, str]:
        if target.secret.startswith(CONFIG_DIR):
            return {"CODEX_HOME": target.secret[len(CONFIG_DIR) :]}
        return {"OPENAI_API_KEY": target.secret}

    def events(self):
        return CodexEvents()


_catalogs: dict[str, bytes] = {}
_catalog_lock = threading.Lock()


def codex_catalog(command: str) -> bytes:
    """Codex's model catalog (`codex debug models`) with no model offering a tool of its
    own (apply_patch, experimental ones); read once per binary in this process."""
    with _catalog_lock:
        if command not in _catalogs:
            _catalogs[command] = _stripped_catalog(command)
        return _catalogs[command]


def _stripped_catalog(command: str) -> bytes:
    run = CliRun([command, "debug", "models"], {}, "", 30, "")
    try:
        output = b"".join(run.proc.stdout)
        code = run.proc.wait(timeout=30)
    finally:
        run.close()
    try:
        catalog = orjson.loads(output)
        models = catalog["models"]
        for model in models:
            model["apply_patch_tool_type"] = None
            model["experimental_supported_tools"] = []
    except (orjson.JSONDecodeError, KeyError, TypeError):
        models = None
    if code != 0 or not models:
        # Without it a model could be offered apply_patch: no run rather than that.
        raise TransportError(
            Outcome.CONNECTION_ERROR,
            f"{command} debug models gave no model catalog (exit status {code})",
        )
    return orjson.dumps(catalog)


# -- reading the CLIs' events ---------------------------------------------------------------


class ClaudeEvents:
    """Claude Code's stream-json: text deltas of the model's message, then `result`."""

    def __init__(self) -> None:
        self.finished, self.streamed = False, False
        self.usage: Usage | None = None
        self.error: tuple[int, str] | None = None
        self.model: str | None = None

    def read(self, event: dict) -> str:
        """The answer's text this event adds (often none)."""
        kind = event.get("type")
        if kind == "stream_event" and event.get("parent_tool_use_id") is None:
            inner = event.get("event") or {}
            if inner.get("type") == "message_start":
                self.model = (inner.get("message") or {}).get("model") or self.model
            delta = inner.get("delta") or {}
            if inner.get("type") == "content_block_delta" and delta.get("type") == "text_delta":
                self.streamed = True
                return str(delta.get("text", ""))
        elif kind == "result":
            self.finished = True
            message = str(event.get("result") or event.get("subtype") or "failed")
            if event.get("is_error") or event.get("subtype") != "success":
                self.error = (_status(event.get("api_error_status"), message), message)
                return ""
            self.usage = anthropic_usage(event.get("usage"))
            if not self.streamed:
                return message
        return ""


class CodexEvents:
    """Codex's exec JSON lines: agent messages, then `turn.completed` (or `turn.failed`)."""

    def __init__(self) -> None:
        self.finished = False
        self.usage: Usage | None = None
        self.error: tuple[int, str] | None = None
        self.model: str | None = None
        self._messages = 0

    def read(self, event: dict) -> str:
        kind = event.get("type")
        if kind == "item.completed":
            item = event.get("item") or {}
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                self._messages += 1
                return ("\n\n" if self._messages > 1 else "") + item["text"]
        elif kind == "turn.completed":
            self.finished, self.error = True, None  # an error event it got over
            self.usage = codex_usage(event.get("usage"))
        elif kind == "turn.failed" or (kind == "error" and not self.finished):
            message = (event.get("error") or {}).get("message") or event.get("message")
            message = str(message or "Codex failed")
            self.error = (_status(None, message), message)
            self.finished = kind == "turn.failed" or self.finished
        return ""


def codex_usage(usage: object) -> Usage | None:
    """Codex's turn usage: input counts cached tokens too, as OpenAI's does."""
    if not isinstance(usage, dict):
        return None
    prompt, output = usage.get("input_tokens"), usage.get("output_tokens")
    if not isinstance(prompt, int) or not isinstance(output, int):
        return None
    cached = usage.get("cached_input_tokens")
    written = usage.get("cache_write_input_tokens")
    return Usage(
        prompt,
        output,
        cache_read=cached if isinstance(cached, int) else 0,
        cache_write=written if isinstance(written, int) else 0,
    )


def _status(reported: object, message: str) -> int:
    """The upstream's HTTP status the CLI reported (so a 401 marks the key, a 429 cools it
    down); 502 when it gave none."""
    if isinstance(reported, int) and 400 <= reported < 600:
        return reported
    found = _STATUS.search(message)
    if found and 400 <= int(found.group(1)) < 600:
        return int(found.group(1))
    return 502


def error_reply(status: int, message: str, run: CliRun) -> UpstreamReply:
    message = run.scrub(message)[:1000]
    body = {"error": {"message": message, "type": "upstream_error", "code": None, "param": None}}
    return UpstreamReply(status, {}, orjson.dumps(body), error=message)


# -- the conversation as text -----------------------------------------------------------------


# A model name as the CLIs take it: no leading dash (it would read as a flag), no
# whitespace or control characters (a NUL cannot even be passed to a process).
_MODEL = re.compile(r"[^\s\x00-\x1f\x7f-][^\s\x00-\x1f\x7f]{0,255}")


def refuse_bad_input(provider: str, model: object, system: str, text: str) -> None:
    """What no run of the CLI could serve is the client's 400 before anything runs, so
    a client's own input never counts as a failure of the key (nor opens its circuit)."""
    if not isinstance(model, str) or not _MODEL.fullmatch(model):
        raise GatewayError(
            400,
            f"Provider '{provider}' cannot serve model {json.dumps(model)[:80]}: a model "
            "name must not start with '-' or contain spaces or control characters.",
            code="invalid_model",
            param="model",
        )
    if "\0" in system or "\0" in text:
        raise GatewayError(
            400, "Messages must not contain NUL characters.", code="invalid_value",
            param="messages",
        )  # fmt: skip
    if not text.strip():
        raise GatewayError(
            400,
            f"Provider '{provider}' needs text to answer: the messages have none.",
            code="invalid_value",
            param="messages",
        )


def conversation(said: list[Line], with_system: bool) -> str:
    """The turns as one text: a lone user message as it is; else a labelled transcript."""
    turns = [
        (ROLES.get(line.role, "User"), text_of(line.content, ""))
        for line in said
        if with_system or line.role not in FIXED
    ]
    if len(turns) == 1 and turns[0][0] == "User":
        return turns[0][1]
    return "\n\n".join(f"{role}: {text}" for role, text in turns)


# -- options ----------------------------------------------------------------------------------


def _command(field: str, value) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value or len(value) > 1024:
        raise ValueError(field, f"'{field}' must be the path or name of the CLI's binary.")
    return value.strip()


def _concurrency(field: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise ValueError(field, f"'{field}' must be a whole number from 1 to 64.")
    return value


def _timeout(field: str, value) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 3600:
        raise ValueError(field, f"'{field}' must be seconds from 1 to 3600.")
    return value


def _url(field: str, value) -> str:
    parsed = urlparse(value) if isinstance(value, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(field, f"'{field}' must be an http(s) URL (the API the CLI calls).")
    if any(ch in value for ch in '"\\ \n'):
        raise ValueError(field, f"'{field}' must not contain quotes, spaces or backslashes.")
    return value.rstrip("/")


_CHECKS = {
    "command": _command,
    "max_concurrency": _concurrency,
    "timeout_seconds": _timeout,
    "upstream_base_url": _url,
}
