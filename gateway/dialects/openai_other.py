"""OpenAI's embeddings (`POST /v1/embeddings`) and legacy text completions
(`POST /v1/completions`): the same key pool, limits, budgets and accounting as chat; an
OpenAI-format upstream's answer and stream are relayed as they came."""

from __future__ import annotations

from gateway.dialects.base import ProxyRequest
from gateway.dialects.openai_chat import OpenAIChat
from gateway.errors import invalid_request
from gateway.validation import MAX_ANSWER_TOKENS, MAX_CHOICES

MAX_INPUTS = 2048  # OpenAI's own limit of inputs per embeddings request
MAX_DIMENSIONS = 65536


def _model(body: object) -> str:
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if model is None:
        raise invalid_request("Missing required parameter: 'model'.", "model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("'model' must be a non-empty string.", "model")
    return model


def _positive(body: dict, name: str, cap: int, least: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= cap:
        what = "a positive integer" if least == 1 else f"an integer of at least {least}"
        raise invalid_request(f"'{name}' must be {what} of at most {cap:,}.", name)
    return value


def _is_tokens(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    )


class OpenAIEmbeddings(OpenAIChat):
    name = "openai_embeddings"
    endpoint = "embeddings"

    def parse(self, body: object) -> ProxyRequest:
        model = _model(body)
        given = body.get("input")
        if isinstance(given, str) or _is_tokens(given):
            inputs = [given]
        elif isinstance(given, list) and all(isinstance(i, str) or _is_tokens(i) for i in given):
            inputs = given
        else:
            raise invalid_request(
                "'input' must be a string, an array of strings, an array of token ids or an "
                "array of such arrays.",
                "input",
            )
        # An empty string is a valid input (OpenAI's document allows it); no input is not.
        if not inputs or any(isinstance(item, list) and not item for item in inputs):
            raise invalid_request("'input' must not be empty.", "input")
        if len(inputs) > MAX_INPUTS:
            raise invalid_request(f"'input' may hold at most {MAX_INPUTS} items.", "input")
        if body.get("encoding_format") not in (None, "float", "base64"):
            raise invalid_request(
                "'encoding_format' must be 'float' or 'base64'.", "encoding_format"
            )
        _positive(body, "dimensions", MAX_DIMENSIONS)
        texts = [{"role": "user", "content": i} for i in inputs if isinstance(i, str)]
        return ProxyRequest(
            self.endpoint,
            model,
            False,
            body,
            operation="embeddings",
            answer_tokens=None,
            messages=texts,
            prompt_tokens=sum(len(i) for i in inputs if isinstance(i, list)),
            answers=False,
        )


class OpenAICompletions(OpenAIChat):
    name = "openai_completions"
    endpoint = "completions"

    def parse(self, body: object) -> ProxyRequest:
        model = _model(body)
        prompt = body.get("prompt")
        if prompt is None:  # the document's default: the upstream starts a new document
            prompts = []
        elif isinstance(prompt, str) or _is_tokens(prompt):
            prompts = [prompt]
        elif isinstance(prompt, list) and all(isinstance(p, str) or _is_tokens(p) for p in prompt):
            prompts = prompt
        else:
            raise invalid_request(
                "'prompt' must be a string, an array of strings or of token ids.", "prompt"
            )
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise invalid_request("'stream' must be a boolean.", "stream")
        # 0 is valid: with `echo`, the prompt's own logprobs and no answer.
        answer = _positive(body, "max_tokens", MAX_ANSWER_TOKENS, least=0)
        choices = _positive(body, "n", MAX_CHOICES) or 1
        asked = body.get("stream_options") or {}
        if not isinstance(asked, dict):
            raise invalid_request("'stream_options' must be an object.", "stream_options")
        texts = [{"role": "user", "content": p} for p in prompts if isinstance(p, str)]
        return ProxyRequest(
            self.endpoint,
            model,
            stream is True,
            body,
            operation="completions",
            wants_usage=bool(asked.get("include_usage")),
            answer_tokens=16 if answer is None else answer,  # OpenAI's default is 16
            choices=choices * max(1, len(prompts)),
            messages=texts,
            prompt_tokens=sum(len(p) for p in prompts if isinstance(p, list)),
        )
