"""The `gemini` provider: Google AI Studio's native API (`generateContent`,
`streamGenerateContent?alt=sse`, `embedContent` / `batchEmbedContents`, `x-goog-api-key`).

The request is encoded as a generateContent request from the internal request
(gateway/codecs: the client's own body decoded, or the gateway's chat body), and the
answer decoded once into the internal language (gateway/codecs/gemini; stream events:
gemini_sse.py) that every client dialect renders. Usage comes from `usageMetadata`
(thoughts count as output, cached content as cache reads). Google's errors are
normalized for the retry decision: a bad key (400 `API_KEY_INVALID`) is an auth failure,
and a 429's `RetryInfo.retryDelay` sets the key's cooldown like a `Retry-After` header.
"""

from __future__ import annotations

import base64
import struct
from urllib.parse import quote

import orjson

from gateway import tokens
from gateway.codecs.gemini import request as gemini_request
from gateway.codecs.gemini.reply import decode
from gateway.codecs.openai_chat import reply as chat_codec
from gateway.codecs.openai_chat import request as openai_chat_request
from gateway.codecs.openai_chat.stream import Encoder as ChatEncoder
from gateway.codecs.reply import calls_of, text_of
from gateway.codecs.request import Request
from gateway.codecs.usage import booked
from gateway.codecs.wire import INTERNAL, Encoded
from gateway.policy import Outcome
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

FORMAT = "gemini"
# Model list pages read at most for a key test (1000 models a page).
MAX_MODEL_PAGES = 10
# What this adapter calls; models that offer none of these are left out of discovery.
SERVED_METHODS = {"generateContent", "streamGenerateContent", "embedContent"}
KEY_REJECTED = ("API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED")


class GeminiAdapter(ProviderAdapter):
    name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"
    price_provider = "google"
    # generateContent has candidates, log probabilities, a response schema, penalties and
    # a seed; no token biases, no spoken answer, and no switch for parallel calls (the
    # first call of a turn is kept when the client asks for one at a time).
    takes_typed = True
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
        "top_k": CARRIED,
        "seed": CARRIED,
        "presence_penalty": CARRIED,
        "frequency_penalty": CARRIED,
        "reasoning_effort": CARRIED,
        "user": IGNORED,
        "prompt_cache_key": IGNORED,
        "cache_control": IGNORED,  # Gemini caches a repeated prompt by itself
        "store, metadata, service_tier, safety_identifier": IGNORED,
    }

    def _headers(self, target: Target) -> dict[str, str]:
        return {"x-goog-api-key": target.secret, "Content-Type": "application/json"}

    def _post(self, target: Target, model: str, method: str, payload: dict, timeouts: Timeouts):
        url = f"{target.base_url}/models/{model_path(model)}:{method}"
        return self.http.request(
            "POST", url, self._headers(target), timeouts, orjson.dumps(payload)
        )

    def chat(
        self, target: Target, body: dict, timeouts: Timeouts, native=None, typed=None
    ) -> UpstreamReply:
        payload = self._payload(body, typed)
        response = self._post(target, body["model"], "generateContent", payload, timeouts)
        raw = response.read()
        if response.status >= 300:
            return error_reply(response.status, response.headers, raw)
        answer = _json_object(raw)
        if answer is None:
            raise TransportError(Outcome.BAD_RESPONSE, "upstream answered 2xx without JSON")
        internal = decode(answer, body["model"], one_call(body, typed))
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
        self,
        target: Target,
        body: dict,
        timeouts: Timeouts,
        wants_usage: bool,
        native=None,
        typed=None,
    ) -> UpstreamReply:
        payload = self._payload(body, typed)
        response = self._post(
            target, body["model"], "streamGenerateContent?alt=sse", payload, timeouts
        )
        if response.status >= 300:
            return error_reply(response.status, response.headers, response.read())
        reader = GeminiStream(body["model"], one_call(body, typed))
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

    def _payload(self, body: dict, typed: Request | None) -> dict:
        """The generateContent body, encoded from the internal request: the client's own
        (Anthropic → internal → Gemini), else the chat body's; a field Gemini cannot carry
        refused first."""
        if typed is not None:
            self.refuse_uncarried_typed(typed)
            return gemini_request.encode(typed)
        self.refuse_uncarried(body)
        return gemini_request.encode(openai_chat_request.decode(body))

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


def one_call(body: dict, typed: Request | None = None) -> bool:
    """Whether the client asked for one tool call at a time (Gemini has no such switch:
    the first call of a turn is kept); `typed`: the request of a client of another format."""
    if typed is not None and typed.source != "openai":
        return typed.tool_choice is not None and typed.tool_choice.parallel is False
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
