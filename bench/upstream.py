"""Fast fake OpenAI upstream: nginx answering fixed bodies, plus process helpers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
MODEL = "gpt-4o-mini"

CHAT_USAGE = {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}
STREAM_USAGE = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}
STREAM_PIECES = ["Hello", "!", " How", " can", " I", " help", "?"]

_CHILDREN: list[subprocess.Popen] = []


def chat_body() -> str:
    """Return the fixed non-streaming chat.completion JSON."""
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help?"},
                "finish_reason": "stop",
            }
        ],
        "usage": CHAT_USAGE,
    }
    return json.dumps(body, separators=(",", ":"))


def _chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
    """Return one SSE event carrying a chat.completion.chunk."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    return "data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n"


def stream_body() -> str:
    """Return the fixed SSE body: role, content pieces, finish, usage chunk, [DONE]."""
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": piece}) for piece in STREAM_PIECES]
    events.append(_chunk({}, finish="stop"))
    events.append(_chunk(None, usage=STREAM_USAGE))
    events.append("data: [DONE]\n\n")
    return "".join(events)


ANTHROPIC_USAGE = {"input_tokens": 9, "output_tokens": 9}


def messages_body() -> str:
    """The fixed Anthropic Messages answer (for `anthropic` provider keys)."""
    body = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hello! How can I help?"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }
    return json.dumps(body, separators=(",", ":"))


def messages_stream_body() -> str:
    """The fixed Anthropic Messages stream: the event sequence of one text block."""

    def event(name: str, data: dict) -> str:
        return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    start = json.loads(messages_body())
    start.update(content=[], stop_reason=None, usage={"input_tokens": 9, "output_tokens": 1})
    events = [event("message_start", {"type": "message_start", "message": start})]
    block = {"type": "text", "text": ""}
    events.append(event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": block}))  # fmt: skip
    for piece in STREAM_PIECES:
        delta = {"type": "text_delta", "text": piece}
        events.append(event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": delta}))  # fmt: skip
    events.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    final = {"stop_reason": "end_turn", "stop_sequence": None}
    events.append(event("message_delta", {"type": "message_delta", "delta": final,
                                          "usage": {"output_tokens": 7}}))  # fmt: skip
    events.append(event("message_stop", {"type": "message_stop"}))
    return "".join(events)


GEMINI_USAGE = {"promptTokenCount": 9, "candidatesTokenCount": 9, "totalTokenCount": 18}


def gemini_body() -> str:
    """The fixed Gemini generateContent answer (for `gemini` provider keys)."""
    body = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hello! How can I help?"}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": GEMINI_USAGE,
        "modelVersion": MODEL,
        "responseId": "gemini-bench",
    }
    return json.dumps(body, separators=(",", ":"))


def gemini_stream_body() -> str:
    """The fixed streamGenerateContent?alt=sse answer: one candidate chunk per piece, the
    last with its finish reason and usage (Google ends each event with CRLF CRLF)."""
    events = []
    for number, piece in enumerate(STREAM_PIECES, 1):
        last = number == len(STREAM_PIECES)
        candidate = {"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        usage = {"promptTokenCount": 9}
        if last:
            usage = {"promptTokenCount": 9, "candidatesTokenCount": 7, "totalTokenCount": 16}
        chunk = {"candidates": [candidate], "usageMetadata": usage, "modelVersion": MODEL}
        events.append("data: " + json.dumps(chunk, separators=(",", ":")) + "\r\n\r\n")
    return "".join(events)


def models_body() -> str:
    """Return the fixed /v1/models list."""
    data = [{"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "bench"}]
    return json.dumps({"object": "list", "data": data}, separators=(",", ":"))


def _nginx_quote(text: str) -> str:
    """Quote text as a single-quoted nginx string for `return`."""
    if "$" in text:
        raise ValueError("nginx would expand '$' in a return body")
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    escaped = escaped.replace("\r", "\\r")
    return "'" + escaped + "'"


def nginx_conf(port: int, prefix: Path) -> str:
    """Return an nginx config serving the fixed bodies on 127.0.0.1:port."""
    return f"""daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 {_nginx_quote(chat_body())};
        }}
        location = /stream/v1/chat/completions {{
            default_type text/event-stream;
            return 200 {_nginx_quote(stream_body())};
        }}
        location = /v1/messages {{
            default_type application/json;
            return 200 {_nginx_quote(messages_body())};
        }}
        location = /stream/v1/messages {{
            default_type text/event-stream;
            return 200 {_nginx_quote(messages_stream_body())};
        }}
        location = /v1beta/models/{MODEL}:generateContent {{
            default_type application/json;
            return 200 {_nginx_quote(gemini_body())};
        }}
        location = /v1beta/models/{MODEL}:streamGenerateContent {{
            default_type text/event-stream;
            return 200 {_nginx_quote(gemini_stream_body())};
        }}
        location = /v1/models {{
            default_type application/json;
            return 200 {_nginx_quote(models_body())};
        }}
        location = /nginx_status {{ stub_status; }}
        location / {{ return 404; }}
    }}
}}
"""


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_tool(binary: str, package: str) -> str:
    """Return the path of binary, installing the Debian package if it is missing."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if not found:
        raise RuntimeError(f"{binary} not found after installing {package}")
    return found


def spawn(cmd: list[str], log: Path, env: dict | None = None, cwd: Path = REPO_DIR):
    """Start cmd in its own process group, logging to log; it is stopped by stop_all()."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop proc's whole process group: SIGTERM, then SIGKILL after grace seconds."""
    if proc in _CHILDREN:
        _CHILDREN.remove(proc)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Reap stragglers left in the group after the leader exited.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_all() -> None:
    """Stop every process started by spawn(), newest first."""
    for proc in reversed(list(_CHILDREN)):
        stop(proc)


def http_status(url: str, timeout: float = 2.0) -> int:
    """Return the HTTP status of GET url, or 0 when it cannot connect."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait until GET url answers 200, failing early if proc exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        if http_status(url) == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s")


def start_nginx(port: int | None = None) -> tuple[subprocess.Popen, int]:
    """Start the fake upstream nginx in the foreground; return (process, port)."""
    binary = ensure_tool("nginx", "nginx")
    port = port or free_port()
    prefix = OUT_DIR / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(port, prefix))
    proc = spawn(
        [binary, "-e", str(prefix / "error.log"), "-c", str(conf), "-p", str(prefix)],
        prefix / "stdout.log",
    )
    wait_ready(f"http://127.0.0.1:{port}/v1/models", proc)
    return proc, port
