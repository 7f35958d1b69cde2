"""OpenAI Responses (`POST /v1/responses`): what `responses.create` and the Codex CLI send.

Translated to the gateway's chat form: `instructions`, `input` as text or items (messages,
`function_call`, `function_call_output`), function tools, `tool_choice`,
`max_output_tokens`, sampling, `reasoning.effort`. The answer comes back as a `response`
object, or streamed as the Responses event sequence (`response.created`,
`response.output_item.added`, `response.output_text.delta`,
`response.function_call_arguments.delta`, …, `response.completed` with usage), each event
numbered. With `store` (the default) the response is kept for `previous_response_id` and
`GET /v1/responses/{id}`.
"""

from __future__ import annotations

import time
import uuid

import orjson

from gateway.codecs.openai_responses import reply as codec
from gateway.codecs.openai_responses import request as responses_request
from gateway.codecs.openai_responses.stream import Encoder
from gateway.codecs.reply import Usage
from gateway.codecs.wire import reply_of
from gateway.dialects.base import ProxyRequest
from gateway.dialects.openai_chat import OpenAIChat
from gateway.errors import GatewayError, invalid_request
from gateway.providers.base import UpstreamReply
from gateway.responses_store import ResponseStore
from gateway.validation import (
    MAX_ANSWER_TOKENS,
    check_chat_messages,
    check_chat_options,
    is_number,
    refuse,
)

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


# The chat body's fields as a Responses client writes them.
NAMES = {**responses_request.NAMES, "max_tokens": "max_output_tokens"}


class OpenAIResponses(OpenAIChat):
    name = "openai_responses"
    endpoint = "responses"
    format = "openai_responses"  # relayed as it is from a key with `responses_api`

    def __init__(self, store: ResponseStore, clock) -> None:
        self.store, self.clock = store, clock

    # -- the request ------------------------------------------------------------------

    def parse(self, body: object) -> ProxyRequest:
        if not isinstance(body, dict):
            raise invalid_request("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise invalid_request("'model' must be a non-empty string.", "model")
        answer = body.get("max_output_tokens")
        if answer is not None and (
            isinstance(answer, bool)
            or not isinstance(answer, int)
            or not 1 <= answer <= MAX_ANSWER_TOKENS
        ):
            raise invalid_request(
                f"'max_output_tokens' must be a positive integer of at most {MAX_ANSWER_TOKENS:,}.",
                "max_output_tokens",
            )
        stream = body.get("stream") is True
        messages = _input_messages(body.get("input"))
        chat: dict = {"model": model, "messages": messages}
        if answer:
            chat["max_tokens"] = answer
        if stream:
            chat["stream"] = True
        _check_options(body)
        for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
            if body.get(name) is not None:
                chat[name] = body[name]
        effort = (body.get("reasoning") or {}).get("effort")
        if isinstance(effort, str):
            chat["reasoning_effort"] = effort
        tools = _tools(body.get("tools"))
        if tools:
            chat["tools"] = tools
            choice = _tool_choice(body.get("tool_choice"))
            if choice is not None:
                chat["tool_choice"] = choice
            _allowed_tools(chat, body.get("tool_choice"))
        fmt = _response_format(body.get("text"))
        if fmt is not None:
            chat["response_format"] = fmt
        if isinstance(body.get("prompt_cache_key"), str):
            chat["prompt_cache_key"] = body["prompt_cache_key"]
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise invalid_request("'instructions' must be a string.", "instructions")
        # What the translation made is what every adapter reads: the chat checks too.
        check_chat_messages(messages, "input")
        check_chat_options(chat)
        request = ProxyRequest(
            self.endpoint,
            model,
            stream,
            chat,
            wants_usage=True,  # read by the translator, never shown as a chat chunk
            answer_tokens=answer,
            messages=messages,
            native=("openai_responses", body),  # for an upstream with the Responses API
            typed=responses_request.decode(body),  # what a Gemini key encodes its body from
        )
        request.extra = {
            "id": "resp_" + uuid.uuid4().hex,
            "created_at": int(time.time()),
            "instructions": instructions,
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store") is not False,
            "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice") or "auto",
            "new_messages": messages,
            "text": {"format": fmt_echo(body.get("text"))},
            "names": NAMES,  # a refusal names the client's field, not the chat body's
        }
        ignored = _built_in_tools(body.get("tools"))
        if ignored:  # told in a header when a translating key serves (relay.py)
            request.extra["ignored"] = ignored
        uncarried = _uncarried(body)
        if uncarried is not None:  # only an upstream with the Responses API carries it
            request.extra["uncarried"] = uncarried
        return request

    def prepare(self, request: ProxyRequest, client_key_id: int | None) -> None:
        """Put the earlier conversation (`previous_response_id`) and the instructions in
        front of this request's input."""
        extra = request.extra
        history: list[dict] = []
        if extra["previous_response_id"] is not None:
            try:
                history, _ = self.store.load(extra["previous_response_id"], client_key_id)
                # KeyRelay holds it: no upstream does, so every key is sent the translation.
                request.native = None
            except GatewayError as missing:
                # Perhaps the upstream's own: only a passthrough key may serve it.
                extra["unresolved"] = missing
        system = (
            [{"role": "system", "content": extra["instructions"]}] if extra["instructions"] else []
        )
        messages = system + history + extra["new_messages"]
        if not messages and "unresolved" not in extra:
            # No `input` (a stored `prompt`, a `conversation`): valid, but only an upstream
            # with the Responses API knows what it stands for.
            extra["unresolved"] = invalid_request(
                "'input' is required unless the request is served by a key with the "
                "Responses API (its 'prompt' or 'conversation' holds the input).",
                "input",
            )
        request.body["messages"] = request.messages = messages
        extra["client_key_id"] = client_key_id
        extra["history"] = history

    # -- the answer -------------------------------------------------------------------

    def render(self, reply: UpstreamReply, request: ProxyRequest | None = None) -> bytes:
        if reply.format == self.format and (reply.status < 300 or reply.error_shaped):
            return reply.body  # an upstream with the Responses API: passthrough
        if reply.status >= 300 or request is None:
            return super().render(reply)
        internal = reply_of(reply)
        output = codec.encode_output(internal)
        usage = internal.usage or Usage()
        response = self.response_object(
            request,
            "incomplete" if codec.incomplete(internal) else "completed",
            output,
            usage.input,
            usage.output,
            internal.model or None,
            cached=usage.cache_read,
            cache_write=usage.cache_write,
            reasoning=usage.reasoning,
        )
        self.keep(request, output, response)
        return orjson.dumps(response)

    def response_object(
        self, request, status, output, prompt, completion, model=None, **details
    ) -> dict:
        """The `response` object; `details` are the usage's cached, cache_write and
        reasoning tokens."""
        extra = request.extra
        response = {
            "id": extra["id"],
            "object": "response",
            "created_at": extra["created_at"],
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": extra["instructions"],
            "max_output_tokens": request.answer_tokens,
            "model": model or request.model,
            "output": output,
            "parallel_tool_calls": request.body.get("parallel_tool_calls", True),
            "previous_response_id": extra["previous_response_id"],
            "reasoning": {"effort": request.body.get("reasoning_effort"), "summary": None},
            "store": extra["store"],
            "temperature": request.body.get("temperature"),
            "text": extra.get("text") or {"format": {"type": "text"}},
            "tool_choice": extra["tool_choice"],
            "tools": [_echo_tool(tool) for tool in extra["tools"]],
            "top_p": request.body.get("top_p"),
            "truncation": "disabled",
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {
                    "cached_tokens": details.get("cached", 0),
                    "cache_write_tokens": details.get("cache_write", 0),
                },
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": details.get("reasoning", 0)},
                "total_tokens": prompt + completion,
            },
            "metadata": {},
        }
        if isinstance(request.body.get("user"), str):  # a string or absent, never null
            response["user"] = request.body["user"]
        return response

    def stream_error(self, message: str, code: str, request=None, progress=None) -> bytes:
        """A broken stream's end as the Responses API ends one: an `error` event, then
        `response.failed` with what was answered so far. `progress` is the stream's
        translator, or the reader of a relayed Responses stream: it knows the next
        sequence number."""
        if request is None or not request.extra:
            return super().stream_error(message, code)
        number = getattr(progress, "sequence", 0)
        model = getattr(progress, "model", None)
        response = self.response_object(
            request, "failed", list(getattr(progress, "items", ())), 0, 0, model
        )
        started = getattr(progress, "response", None)  # a relayed stream's own response
        if isinstance(started, dict):
            for name in ("id", "created_at", "model"):
                if started.get(name) is not None:
                    response[name] = started[name]
        del response["usage"]  # the tokens sent so far are booked, not known here
        response["error"] = {"code": "server_error", "message": message}
        error = {"code": code, "message": message, "param": None}
        return _named_event("error", number, error) + _named_event(
            "response.failed", number + 1, {"response": response}
        )

    def keep(self, request: ProxyRequest, output: list[dict], response: dict) -> None:
        """Store the response and its conversation, unless the request said `store: false`."""
        extra = request.extra
        if not extra["store"]:
            return
        conversation = extra["history"] + extra["new_messages"] + _as_messages(output)
        self.store.save(
            extra["id"], extra.get("client_key_id"), conversation, response, self.clock.now()
        )

    def stream_translator(self, request: ProxyRequest):
        return Encoder(self, request)


def _check_options(body: dict) -> None:
    """The fields copied or read as they come: a 400 naming the one of the wrong type."""
    for name in ("temperature", "top_p"):
        if body.get(name) is not None and not is_number(body[name]):
            raise refuse(name, "a number")
    for name, kind, what in (
        ("parallel_tool_calls", bool, "a boolean"),
        ("user", str, "a string"),
        ("previous_response_id", str, "a string"),
        ("reasoning", dict, 'an object, e.g. {"effort": "low"}'),
        ("tool_choice", str | dict, "a string or an object"),
        ("text", dict, 'an object, e.g. {"format": {"type": "text"}}'),
        ("include", list, "an array of strings"),
        ("prompt_cache_key", str, "a string"),
    ):
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise refuse(name, what)
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None and not isinstance(effort, str):
        raise refuse("reasoning.effort", "a string: low, medium or high")
    _check_text(body.get("text"))
    for number, value in enumerate(body.get("include") or ()):
        if not isinstance(value, str):
            raise refuse(f"include[{number}]", "a string")
    tools = body.get("tools")
    for number, tool in enumerate(tools if isinstance(tools, list) else ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise refuse(f"tools[{number}]", "an object with a string 'type'")
        if tool["type"] == "function":
            if not isinstance(tool.get("name"), str):
                raise refuse(f"tools[{number}].name", "a string")
            if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
                raise refuse(f"tools[{number}].parameters", "an object (a JSON schema)")
            if tool.get("description") is not None and not isinstance(tool["description"], str):
                raise refuse(f"tools[{number}].description", "a string")


# `include` values a translated response honours: it has no reasoning items whose
# encrypted content could be included (so that one is met as it is).
HONOURED_INCLUDES = ("reasoning.encrypted_content",)


def _uncarried(body: dict) -> tuple[str, str] | None:
    """(field, what it asks) of the first field only the Responses API itself carries, or
    None: a key that translates to chat refuses it by name; a passthrough key sends it."""
    if body.get("conversation") is not None:
        return "conversation", "a conversation kept by the upstream"
    for number, value in enumerate(body.get("include") or ()):
        if value not in HONOURED_INCLUDES:
            return f"include[{number}]", f"including {value}"
    return None


def _response_format(text: object) -> dict | None:
    """`text.format` as chat's `response_format` (None for plain text)."""
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema = {"name": fmt.get("name") or "answer", "schema": fmt.get("schema") or {}}
    for name in ("description", "strict"):
        if fmt.get(name) is not None:
            schema[name] = fmt[name]
    return {"type": "json_schema", "json_schema": schema}


def fmt_echo(text: object) -> dict:
    """The `text.format` a response echoes: what the request asked (plain text if nothing)."""
    fmt = text.get("format") if isinstance(text, dict) else None
    return fmt if isinstance(fmt, dict) else {"type": "text"}


def _allowed_tools(chat: dict, choice: object) -> None:
    """`tool_choice: allowed_tools`: only the tools it names are offered, in its mode."""
    if not isinstance(choice, dict) or choice.get("type") != "allowed_tools":
        return
    names = {t.get("name") for t in choice.get("tools") or () if isinstance(t, dict)}
    chat["tools"] = [t for t in chat["tools"] if t["function"]["name"] in names]
    chat["tool_choice"] = "required" if choice.get("mode") == "required" else "auto"
    if not chat["tools"]:
        del chat["tools"], chat["tool_choice"]


def _check_text(text: object) -> None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise refuse("text.format", "an object of type text, json_object or json_schema")
    if fmt["type"] == "json_schema" and not isinstance(fmt.get("schema"), dict):
        raise refuse("text.format.schema", "an object (a JSON schema)")
    if fmt["type"] == "json_schema" and not isinstance(fmt.get("name"), str):
        raise refuse("text.format.name", "a string")


def _input_messages(given: object) -> list[dict]:
    """`input` (a string, or items) as chat messages; none when it is absent."""
    if given is None:
        return []
    if isinstance(given, str):
        if not given:
            raise invalid_request("'input' must not be empty.", "input")
        return [{"role": "user", "content": given}]
    if not isinstance(given, list) or not given:
        raise invalid_request("'input' must be a string or a non-empty array of items.", "input")
    out: list[dict] = []
    for number, item in enumerate(given):
        where = f"input[{number}]"
        if not isinstance(item, dict):
            raise invalid_request(f"{where}: an object.", where)
        reference = "id" in item and "role" not in item  # an item_reference may omit its type
        kind = item.get("type") or ("item_reference" if reference else "message")
        if kind == "message":
            role = item.get("role")
            role = ROLES.get(role) if isinstance(role, str) else None
            if role is None:
                raise refuse(f"{where}.role", "user, assistant, system or developer")
            content = _content(item.get("content"), where)
            if (
                role == "assistant"
                and out
                and out[-1]["role"] == "assistant"
                and not out[-1].get("content")
            ):
                out[-1]["content"] = content  # text of a turn whose calls came first
            else:
                out.append({"role": role, "content": content})
        elif kind == "function_call":
            for name in ("name", "arguments", "call_id"):
                if item.get(name) is not None and not isinstance(item[name], str):
                    raise refuse(f"{where}.{name}", "a string")
            call = {
                "id": str(item.get("call_id") or item.get("id") or ""),
                "type": "function",
                "function": {
                    "name": str(item.get("name", "")),
                    "arguments": str(item.get("arguments") or "{}"),
                },
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if item.get("call_id") is not None and not isinstance(item["call_id"], str):
                raise refuse(f"{where}.call_id", "a string")
            output = item.get("output")
            if not isinstance(output, str):
                output = orjson.dumps(output).decode()
            out.append(
                {"role": "tool", "tool_call_id": str(item.get("call_id", "")), "content": output}
            )
        # reasoning items, item references and other tools' items carry nothing a chat
        # upstream takes (an input of only those: see `prepare`)
    return out


def _content(content: object, where: str):
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise refuse(f"{where}.content", "a string or an array of parts")
    parts = []
    for number, part in enumerate(content):
        here = f"{where}.content[{number}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise refuse(here, "an object with a string 'type'")
        kind = part["type"]
        if kind in ("input_text", "output_text", "text"):
            if not isinstance(part.get("text"), str):
                raise refuse(f"{here}.text", "a string")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and part.get("image_url") is not None:
            if not isinstance(part["image_url"], str) or not part["image_url"]:
                raise refuse(f"{here}.image_url", "a non-empty string (a URL)")
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _tools(tools: object) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid_request("'tools' must be an array.", "tools")
    out = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function" and tool.get("name"):
            function = {
                "name": tool["name"],
                "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
            }
            if tool.get("description"):
                function["description"] = tool["description"]
            out.append({"type": "function", "function": function})
        # built-in tools (web search, …) and namespaces have no chat-completions form
    return out


def _built_in_tools(tools: object) -> str:
    """The built-in tools (web search, file search, …) a translated request goes without,
    as `x-keyrelay-ignored` names them: `tools[2] (web_search)`. Refusing them would stop
    clients such as Codex, which offer them on every request."""
    found = [
        f"tools[{number}] ({tool.get('type')})"
        for number, tool in enumerate(tools if isinstance(tools, list) else ())
        if isinstance(tool, dict) and tool.get("type") != "function"
        and isinstance(tool.get("type"), str)
    ]  # fmt: skip
    return ", ".join(found)


def _tool_choice(choice: object):
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    return None


def _echo_tool(tool: object) -> object:
    """A function tool as the response echoes it: `strict` and `parameters` always there
    (null when the request left them out), as the document requires."""
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {**tool, "strict": tool.get("strict"), "parameters": tool.get("parameters")}
    return tool


def _named_event(kind: str, number: int, body: dict) -> bytes:
    body = {"type": kind, "sequence_number": number, **body}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


def _as_messages(output: list[dict]) -> list[dict]:
    """Output items as the chat messages a next turn continues from."""
    message: dict = {"role": "assistant", "content": None}
    for item in output:
        if item["type"] == "message":
            message["content"] = item["content"][0]["text"]
        elif item["type"] == "function_call":
            message.setdefault("tool_calls", []).append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }
            )
    return [message]
