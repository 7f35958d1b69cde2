"""The `gemini` provider: Google AI Studio's native API (`generateContent`,
`streamGenerateContent?alt=sse`, `embedContent` / `batchEmbedContents`, `x-goog-api-key`).

The gateway's request (OpenAI chat) is translated into a generateContent request and the
answer decoded once into the internal language (gateway/codecs/gemini; stream events:
gemini_sse.py) that every client dialect renders. Usage comes from `usageMetadata`
(thoughts count as output, cached content as cache reads). Google's errors are
normalized for the retry decision: a bad key (400 `API_KEY_INVALID`) is an auth failure,
and a 429's `RetryInfo.retryDelay` sets the key's cooldown like a `Retry-After` header.
"""

from __future__ import annotations

import base64
import mimetypes
import re
import struct
from urllib.parse import quote

import orjson

from gateway import tokens
from gateway.codecs.gemini.reply import decode
from gateway.codecs.openai_chat import reply as chat_codec
from gateway.codecs.openai_chat.stream import Encoder as ChatEncoder
from gateway.codecs.reply import calls_of, text_of
from gateway.codecs.usage import booked
from gateway.codecs.wire import INTERNAL, Encoded
from gateway.policy import Outcome
from gateway.providers import carry
from gateway.providers.base import (
    ProviderAdapter,
    Target,
    Timeouts,
    TransportError,
    UpstreamReply,
    context_overflow,
    model_missing,
)
from gateway.providers.carry import (
    CARRIED,
    EMULATED,
    IGNORED,
    FunctionCallStream,
    Unsupported,
    as_function_call,
    legacy_functions,
)
from gateway.providers.gemini_sse import SIGNATURES, GeminiStream, usage_of
from gateway.providers.reading import image_url, list_of, part_text, strings

FORMAT = "gemini"
# Model list pages read at most for a key test (1000 models a page).
MAX_MODEL_PAGES = 10
# What this adapter calls; models that offer none of these are left out of discovery.
SERVED_METHODS = {"generateContent", "streamGenerateContent", "embedContent"}
THINKING_BUDGETS = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
# Google's documented stand-in for a thought signature lost on the way (the call came
# from another worker, or before a restart): Gemini 3 takes it instead of refusing.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_MAJOR = re.compile(r"gemini-(\d+)")
KEY_REJECTED = ("API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED")


class GeminiAdapter(ProviderAdapter):
    name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"
    price_provider = "google"
    # generateContent has candidates, log probabilities, a response schema, penalties and
    # a seed; no token biases, no spoken answer, and no switch for parallel calls (the
    # first call of a turn is kept when the client asks for one at a time).
    carries = {
        "n": CARRIED,
        "logprobs": CARRIED,
        "response_format: json_object": CARRIED,
        "response_format: json_schema": CARRIED,
        "tools": CARRIED,
        "tool_choice: allowed_tools": EMULATED,
        "parallel_tool_calls: false": EMULATED,
        "functions": EMULATED,
        "function_call": EMULATED,
        "content part: image_url": CARRIED,
        "content part: file": CARRIED,
        "content part: input_audio": CARRIED,
        "temperature, top_p, stop": CARRIED,
        "seed": CARRIED,
        "presence_penalty": CARRIED,
        "frequency_penalty": CARRIED,
        "reasoning_effort": CARRIED,
        "user": IGNORED,
        "prompt_cache_key": IGNORED,
        "store, metadata, service_tier, safety_identifier": IGNORED,
    }

    def _headers(self, target: Target) -> dict[str, str]:
        return {"x-goog-api-key": target.secret, "Content-Type": "application/json"}

    def _post(self, target: Target, model: str, method: str, payload: dict, timeouts: Timeouts):
        url = f"{target.base_url}/models/{model_path(model)}:{method}"
        return self.http.request(
            "POST", url, self._headers(target), timeouts, orjson.dumps(payload)
        )

    def chat(self, target: Target, body: dict, timeouts: Timeouts, native=None) -> UpstreamReply:
        self.refuse_uncarried(body)
        response = self._post(target, body["model"], "generateContent", to_gemini(body), timeouts)
        raw = response.read()
        if response.status >= 300:
            return error_reply(response.status, response.headers, raw)
        answer = _json_object(raw)
        if answer is None:
            raise TransportError(Outcome.BAD_RESPONSE, "upstream answered 2xx without JSON")
        internal = decode(answer, body["model"], one_call(body))
        for choice in internal.choices:
            for call in calls_of(choice):  # handed back with the call when it returns
                if call.signature:
                    SIGNATURES.keep(call.id, call.signature)
        reply = UpstreamReply(
            response.status, response.headers, raw, usage=booked(internal.usage),
            text="".join(text_of(choice) for choice in internal.choices),
            model=internal.model, format=INTERNAL, reply=internal,
        )  # fmt: skip
        if legacy_functions(body):  # a client of legacy functions: OpenAI chat's own shape
            reply.body = orjson.dumps(as_function_call(chat_codec.encode(internal)))
            reply.format, reply.reply = "openai", None
        return reply

    def chat_stream(
        self, target: Target, body: dict, timeouts: Timeouts, wants_usage: bool, native=None
    ) -> UpstreamReply:
        self.refuse_uncarried(body)
        response = self._post(
            target, body["model"], "streamGenerateContent?alt=sse", to_gemini(body), timeouts
        )
        if response.status >= 300:
            return error_reply(response.status, response.headers, response.read())
        reader = GeminiStream(body["model"], one_call(body))
        stream_format = INTERNAL
        if legacy_functions(body):  # a client of legacy functions: OpenAI chat's own chunks
            reader = FunctionCallStream(Encoded(reader, ChatEncoder(body["model"], wants_usage)))
            stream_format = "openai"
        return UpstreamReply(
            response.status,
            response.headers,
            chunks=response.chunks(),
            _release=response.abandon,
            stream=reader,
            format=stream_format,
        )

    def embeddings(self, target: Target, body: dict, timeouts: Timeouts) -> UpstreamReply:
        model, inputs = body["model"], body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not all(isinstance(item, str) for item in inputs):
            raise Unsupported(
                "Provider 'gemini' embeds text only; send 'input' as a string or strings, "
                "not token ids.",
                "input",
            )
        one = len(inputs) == 1
        payload = _embed_request(model, inputs[0], body) if one else {
            "requests": [_embed_request(model, text, body) for text in inputs]
        }  # fmt: skip
        method = "embedContent" if one else "batchEmbedContents"
        response = self._post(target, model, method, payload, timeouts)
        raw = response.read()
        if response.status >= 300:
            return error_reply(response.status, response.headers, raw)
        answer = _json_object(raw) or {}
        found = [answer.get("embedding")] if one else answer.get("embeddings")
        vectors = [e.get("values") for e in found or () if isinstance(e, dict)]
        if len(vectors) != len(inputs) or not all(isinstance(v, list) for v in vectors):
            raise TransportError(Outcome.BAD_RESPONSE, "upstream answered 2xx without embeddings")
        usage = usage_of(answer.get("usageMetadata"))
        if usage is None:  # Google does not count an embedding's tokens: count them here
            usage = usage_of({"promptTokenCount": sum(map(tokens.count_text, inputs))})
            usage.estimated = True
        listing = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encoded(v, body)}
                for i, v in enumerate(vectors)
            ],
            "model": model,
            "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
        }
        return UpstreamReply(response.status, response.headers, orjson.dumps(listing), usage=usage)

    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        """Every page of `GET models` (followed by `nextPageToken`), as one listing."""
        models: list = []
        token = ""
        for _ in range(MAX_MODEL_PAGES):
            url = f"{target.base_url}/models?pageSize=1000"
            if token:
                url += "&pageToken=" + quote(token, safe="")
            response = self.http.request("GET", url, self._headers(target), timeouts)
            raw = response.read()
            if response.status >= 300:
                return error_reply(response.status, response.headers, raw)
            page = _json_object(raw) or {}
            models += page.get("models") or []
            token = page.get("nextPageToken")
            if not isinstance(token, str) or not token:
                break
        return UpstreamReply(
            response.status, response.headers, orjson.dumps({"models": models}), format=FORMAT
        )

    def model_ids(self, reply: UpstreamReply) -> list[str] | None:
        models = (_json_object(reply.body) or {}).get("models")
        if not isinstance(models, list):
            return None
        ids = set()
        for model in models:
            if not isinstance(model, dict) or not isinstance(model.get("name"), str):
                continue
            methods = model.get("supportedGenerationMethods")
            if isinstance(methods, list) and not SERVED_METHODS.intersection(methods):
                continue
            ids.add(model["name"].removeprefix("models/"))
        return sorted(ids)


def one_call(body: dict) -> bool:
    """Whether the client asked for one tool call at a time (Gemini has no such switch:
    the first call of a turn is kept)."""
    return body.get("parallel_tool_calls") is False or legacy_functions(body)


def model_path(model: str) -> str:
    """The model as a path segment (`models/` is ours to add; nothing may escape it)."""
    return quote(model.removeprefix("models/"), safe="-._~")


def _json_object(data: bytes) -> dict | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _embed_request(model: str, text: str, body: dict) -> dict:
    request = {"model": "models/" + model.removeprefix("models/"),
               "content": {"parts": [{"text": text}]}}  # fmt: skip
    if isinstance(body.get("dimensions"), int):
        request["outputDimensionality"] = body["dimensions"]
    return request


def _encoded(values: list, body: dict):
    """A vector as the client asked: floats, or base64 of little-endian float32 (what
    the OpenAI SDK asks for by default)."""
    if body.get("encoding_format") != "base64":
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


# -- errors -------------------------------------------------------------------------------


def error_reply(status: int, headers: dict[str, str], body: bytes) -> UpstreamReply:
    """Google's `{"error": {code, message, status, details}}`, normalized: a rejected key
    is a 401 whatever Google's status, and `RetryInfo.retryDelay` a `retry-after`."""
    error = (_json_object(body) or {}).get("error")
    error = error if isinstance(error, dict) else {}
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = body[:500].decode("utf-8", "replace") or f"upstream answered {status}"
    if error.get("status"):
        message = f"{error['status']}: {message}"
    headers = dict(headers)
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    if any(d.get("reason") in KEY_REJECTED for d in details):
        status = 401  # Google answers a bad key with 400; it is the key, not the request
    delay = _retry_delay(details)
    if delay is not None and "retry-after" not in headers:
        headers["retry-after"] = f"{delay:g}"
    overflow = context_overflow(status, error.get("status"), message)
    missing = model_missing(status, None, error.get("message"))
    return UpstreamReply(
        status,
        headers,
        body,
        error=message,
        format=FORMAT,
        overflow=overflow,
        model_missing=missing,
    )


def _retry_delay(details: list[dict]) -> float | None:
    """Seconds of a `google.rpc.RetryInfo` detail (`"37s"`, `"1.5s"`)."""
    for detail in details:
        if not str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            continue
        delay = detail.get("retryDelay")
        try:
            return max(0.0, float(str(delay).removesuffix("s")))
        except ValueError:
            return None
    return None


# -- OpenAI chat → generateContent --------------------------------------------------------


def to_gemini(body: dict) -> dict:
    """The gateway's OpenAI chat request as a generateContent request."""
    body = carry.as_tools(body)
    system: list[str] = []
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool call id → function name, for the tool results
    signed = _signs_calls(body["model"])
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text(message.get("content"))
            if text:
                system.append(text)
        elif role == "assistant":
            _append(contents, "model", _model_parts(message, names, signed))
        elif role == "tool":
            call_id = str(message.get("tool_call_id", ""))
            response = {
                "name": names.get(call_id) or message.get("name") or "",
                "response": _result(message.get("content")),
            }
            _append(contents, "user", [{"functionResponse": response}])
        else:
            _append(contents, "user", _user_parts(message.get("content")))
    out: dict = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    declarations = [_declaration(t) for t in body.get("tools") or () if isinstance(t, dict)]
    declarations = [d for d in declarations if d is not None]
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        choice = _tool_config(body.get("tool_choice"))
        if choice is not None:
            out["toolConfig"] = {"functionCallingConfig": choice}
    return out


def _append(contents: list[dict], role: str, parts: list[dict]) -> None:
    """Add parts, merging into the last turn of the same role (turns alternate, and the
    results of parallel calls go back in one turn)."""
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"] += parts
    else:
        contents.append({"role": role, "parts": list(parts)})


def _text(content) -> str:
    if isinstance(content, str):
        return content
    texts = (part_text(part) for part in list_of(content))
    return "".join(text for text in texts if text is not None)


def _user_parts(content) -> list[dict]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for part in list_of(content):
        text = part_text(part)
        if text is not None:
            parts.append({"text": text})
        elif isinstance(part, dict) and part.get("type") == "image_url":
            url = image_url(part)
            if url is not None:
                parts.append(_image(url))
        elif isinstance(part, dict) and part.get("type") == "file":
            media, data = part["file"]["file_data"][5:].split(";base64,", 1)  # carry.check
            parts.append({"inlineData": {"mimeType": media, "data": data}})
        elif isinstance(part, dict) and part.get("type") == "input_audio":
            audio = part.get("input_audio") or {}
            media = "audio/" + str(audio.get("format") or "wav")
            parts.append({"inlineData": {"mimeType": media, "data": str(audio.get("data", ""))}})
    return parts


def _image(url: str) -> dict:
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"inlineData": {"mimeType": media, "data": data}}
    media = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": media, "fileUri": url}}


def _signs_calls(model: str) -> bool:
    """Whether the model wants its function calls' thought signatures back (Gemini 3+)."""
    found = _MAJOR.match(model.removeprefix("models/"))
    return found is not None and int(found.group(1)) >= 3


def _model_parts(message: dict, names: dict[str, str], signed: bool) -> list[dict]:
    parts = []
    text = _text(message.get("content"))
    if text:
        parts.append({"text": text})
    first = True
    for call in list_of(message.get("tool_calls")):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue  # refused at the edge; never a crash here
        name, call_id = str(function.get("name", "")), str(call.get("id", ""))
        names[call_id] = name
        part: dict = {"functionCall": {"name": name, "args": _object(function.get("arguments"))}}
        signature = SIGNATURES.get(call_id)
        if signature is None and signed and first:  # only a turn's first call carries one
            signature = SKIP_SIGNATURE
        if signature is not None:
            part["thoughtSignature"] = signature
        first = False
        parts.append(part)
    return parts


def _object(arguments) -> dict:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _result(content) -> dict:
    """A tool's output as functionResponse.response, which must be an object: a JSON
    object as it is, anything else under `result`."""
    text = _text(content)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def _generation_config(body: dict) -> dict:
    config: dict = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    answer = body.get("max_completion_tokens") or body.get("max_tokens")
    if answer:
        config["maxOutputTokens"] = answer
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else strings(stop)
    if isinstance(body.get("n"), int) and body["n"] > 1:
        config["candidateCount"] = body["n"]
    config.update(_response_format(body.get("response_format")))
    if body.get("logprobs") is True or body.get("top_logprobs"):
        config["responseLogprobs"] = True
        if body.get("top_logprobs"):
            config["logprobs"] = body["top_logprobs"]
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in THINKING_BUDGETS:
        config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGETS[effort]}
    return config


def _response_format(fmt) -> dict:
    if not isinstance(fmt, dict):
        return {}
    if fmt.get("type") == "json_object":
        return {"responseMimeType": "application/json"}
    wanted = fmt.get("json_schema")
    schema = wanted.get("schema") if isinstance(wanted, dict) else None
    if fmt.get("type") == "json_schema" and isinstance(schema, dict):
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    return {}


def _declaration(tool: dict) -> dict | None:
    """An OpenAI function tool as a function declaration; its JSON schema goes as
    `parametersJsonSchema`, which takes JSON Schema whole (`parameters` takes only an
    OpenAPI subset and refuses keys such as `additionalProperties`)."""
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        return None
    out: dict = {"name": function.get("name", "")}
    if function.get("description"):
        out["description"] = function["description"]
    if isinstance(function.get("parameters"), dict):
        out["parametersJsonSchema"] = function["parameters"]
    return out


def _tool_config(choice) -> dict | None:
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "required":
        return {"mode": "ANY"}
    if choice == "none":
        return {"mode": "NONE"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name", "")]}
    return None
