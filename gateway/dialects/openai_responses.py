"""OpenAI Responses (`POST /v1/responses`): what `responses.create` and the Codex CLI send.

Checked here (a 400 naming the field) and decoded into the gateway's internal request
(gateway/codecs/openai_responses), which a key without the Responses API is sent encoded:
`instructions`, `input` as text or items (messages, `function_call`,
`function_call_output`), function tools, `tool_choice`, `max_output_tokens`, sampling,
`reasoning`, `text.format`. The answer comes back as a `response`
object, or streamed as the Responses event sequence (`response.created`,
`response.output_item.added`, `response.output_text.delta`,
`response.function_call_arguments.delta`, …, `response.completed` with usage), each event
numbered. With `store` (the default) the response is kept for `previous_response_id` and
`GET /v1/responses/{id}`.
"""

from __future__ import annotations

import time
import uuid

import msgspec
import orjson

from gateway.codecs.openai_chat import request as chat_request
from gateway.codecs.openai_responses import reply as codec
from gateway.codecs.openai_responses import request as responses_request
from gateway.codecs.openai_responses.stream import Encoder
from gateway.codecs.reply import Usage
from gateway.codecs.request import Request, Thinking, Turn
from gateway.codecs.wire import reply_of
from gateway.dialects.base import ProxyRequest
from gateway.dialects.openai_chat import OpenAIChat
from gateway.errors import GatewayError, invalid_request
from gateway.providers.base import UpstreamReply
from gateway.responses_store import ResponseStore
from gateway.validation import MAX_ANSWER_TOKENS, is_number, refuse

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
        _check_input(body.get("input"))
        _check_options(body)
        if body.get("tools") is not None and not isinstance(body["tools"], list):
            raise invalid_request("'tools' must be an array.", "tools")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise invalid_request("'instructions' must be a string.", "instructions")
        typed = responses_request.decode(body)
        request = ProxyRequest(
            self.endpoint,
            model,
            typed.stream,
            {"model": model},  # the request is `typed` (and `native`), no chat body
            wants_usage=True,  # read by the translator, never shown as a chat chunk
            answer_tokens=answer,
            native=("openai_responses", body),  # for an upstream with the Responses API
            typed=typed,  # what a key without it encodes its body from
        )
        instructed = 1 if instructions else 0  # the instructions are the first turn
        effort = (body.get("reasoning") or {}).get("effort")
        request.extra = {
            "id": "resp_" + uuid.uuid4().hex,
            "created_at": int(time.time()),
            "instructions": instructions,
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store") is not False,
            "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice") or "auto",
            "instructed": instructed,
            "new_turns": typed.turns[instructed:],  # this request's input, kept if stored
            "text": {"format": fmt_echo(body.get("text"))},
            # What the response echoes of the request's settings.
            "echo": {
                "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
                "reasoning_effort": effort if isinstance(effort, str) else None,
                "temperature": body.get("temperature"),
                "top_p": body.get("top_p"),
                "user": body.get("user"),
            },
            "names": {**NAMES, **typed.names},  # a refusal names the client's field
        }
        ignored = _built_in_tools(body.get("tools"))
        if ignored:  # told in a header when a translating key serves (relay.py)
            request.extra["ignored"] = ignored
        uncarried = _uncarried(body)
        if uncarried is not None:  # only an upstream with the Responses API carries it
            request.extra["uncarried"] = uncarried
        return request

    def prepare(self, request: ProxyRequest, client_key_id: int | None) -> None:
        """Put the earlier conversation (`previous_response_id`) after the instructions,
        in front of this request's input."""
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
        if history:
            request.typed = _with_history(request.typed, history, extra["instructed"])
        if not any(_says(turn) for turn in request.typed.turns) and "unresolved" not in extra:
            # No `input` (a stored `prompt`, a `conversation`): valid, but only an upstream
            # with the Responses API knows what it stands for.
            extra["unresolved"] = invalid_request(
                "'input' is required unless the request is served by a key with the "
                "Responses API (its 'prompt' or 'conversation' holds the input).",
                "input",
            )
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
        echo = extra["echo"]
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
            "parallel_tool_calls": echo["parallel_tool_calls"],
            "previous_response_id": extra["previous_response_id"],
            "reasoning": {"effort": echo["reasoning_effort"], "summary": None},
            "store": extra["store"],
            "temperature": echo["temperature"],
            "text": extra.get("text") or {"format": {"type": "text"}},
            "tool_choice": extra["tool_choice"],
            "tools": [_echo_tool(tool) for tool in extra["tools"]],
            "top_p": echo["top_p"],
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
        if isinstance(echo["user"], str):  # a string or absent, never null
            response["user"] = echo["user"]
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
        said = [turn for turn in extra["new_turns"] if _says(turn)]  # not reasoning alone
        asked = chat_request.encode(Request(request.model, turns=said))["messages"]
        conversation = extra["history"] + asked + _as_messages(output)
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


def fmt_echo(text: object) -> dict:
    """The `text.format` a response echoes: what the request asked (plain text if nothing)."""
    fmt = text.get("format") if isinstance(text, dict) else None
    return fmt if isinstance(fmt, dict) else {"type": "text"}


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


def _check_input(given: object) -> None:
    """`input`: absent, a non-empty string, or a non-empty array of items, each of the
    right shape (a 400 naming the first that is not)."""
    if given is None:
        return
    if isinstance(given, str):
        if not given:
            raise invalid_request("'input' must not be empty.", "input")
        return
    if not isinstance(given, list) or not given:
        raise invalid_request("'input' must be a string or a non-empty array of items.", "input")
    for number, item in enumerate(given):
        where = f"input[{number}]"
        if not isinstance(item, dict):
            raise invalid_request(f"{where}: an object.", where)
        reference = "id" in item and "role" not in item  # an item_reference may omit its type
        kind = item.get("type") or ("item_reference" if reference else "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in ROLES:
                raise refuse(f"{where}.role", "user, assistant, system or developer")
            _check_content(item.get("content"), where)
        elif kind == "function_call":
            for name in ("name", "arguments", "call_id"):
                if item.get(name) is not None and not isinstance(item[name], str):
                    raise refuse(f"{where}.{name}", "a string")
        elif (
            kind == "function_call_output"
            and item.get("call_id") is not None
            and not isinstance(item["call_id"], str)
        ):
            raise refuse(f"{where}.call_id", "a string")
        # reasoning items, item references and other tools' items carry nothing a chat
        # upstream takes (an input of only those: see `prepare`)


def _check_content(content: object, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise refuse(f"{where}.content", "a string or an array of parts")
    for number, part in enumerate(content):
        here = f"{where}.content[{number}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise refuse(here, "an object with a string 'type'")
        kind = part["type"]
        if kind in ("input_text", "output_text", "text") and not isinstance(part.get("text"), str):
            raise refuse(f"{here}.text", "a string")
        image = part.get("image_url") if kind == "input_image" else None
        if image is not None and (not isinstance(image, str) or not image):
            raise refuse(f"{here}.image_url", "a non-empty string (a URL)")


def _with_history(typed: Request, history: list[dict], at: int) -> Request:
    """The request with the stored conversation's turns (chat messages) put at `at`
    (after the instructions); the client's item names shifted along."""
    earlier = chat_request.decode({"messages": history}).turns
    names = {}
    for name, client in typed.names.items():
        number = _turn_number(name)
        if number is not None and number >= at:
            name = f"messages[{number + len(earlier)}]"
        names[name] = client
    turns = [*typed.turns[:at], *earlier, *typed.turns[at:]]
    return msgspec.structs.replace(typed, turns=turns, names=names)


def _turn_number(name: str) -> int | None:
    """`messages[3]` → 3; None for another field's name."""
    if name.startswith("messages[") and name.endswith("]") and name[9:-1].isdigit():
        return int(name[9:-1])
    return None


def _says(turn: Turn) -> bool:
    """Whether a turn says something a chat upstream takes (a reasoning item alone does not)."""
    return any(not isinstance(part, Thinking) for part in turn.content)


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
