"""OpenAI's published OpenAPI document (tests/openapi/openai.json, trimmed to the /v1
endpoints KeyRelay serves) as JSON Schema validators: what an answer, an SSE event or a
request must be to conform."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012

DOCUMENT_PATH = Path(__file__).parent / "openapi" / "openai.json"
URI = "urn:openai-openapi"


@functools.cache
def document() -> dict:
    """The vendored document, its OpenAPI 3.0 `nullable: true` (35 are left in this 3.1
    document) read as JSON Schema's null, as the document means them."""
    return _nullable(json.loads(DOCUMENT_PATH.read_text()))


def _nullable(node: object) -> object:
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False) is not True:
        return node
    if "$ref" in node or "type" not in node:  # a $ref's siblings cannot widen it
        return {"anyOf": [node, {"type": "null"}]}
    kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
    node["type"] = [*kinds, "null"]
    if "enum" in node:
        node["enum"] = [*node["enum"], None]
    return node


@functools.cache
def _registry() -> referencing.Registry:
    resource = referencing.Resource(contents=document(), specification=DRAFT202012)
    return referencing.Registry().with_resource(URI, resource)


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for `#/components/schemas/<name>`."""
    schema = {"$ref": f"{URI}#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def errors(name: str, instance: object) -> list[str]:
    """Where `instance` breaks schema `name` (empty: it conforms), the deepest reasons
    first, each with its JSON path."""
    found = []
    for error in validator(name).iter_errors(instance):
        leaves = _leaves(error)
        found += [f"{leaf.json_path}: {leaf.message[:300]}" for leaf in leaves]
    return found


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For a oneOf/anyOf miss, the reasons of the branch that came closest (one whose
    `type` matched, with the fewest errors), not the whole list of branches."""
    if not error.context:
        return [error]
    branches: dict = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    closest = min(branches.values(), key=lambda subs: (_wrong_kind(subs), len(subs)))
    return [leaf for sub in closest for leaf in _leaves(sub)]


def _wrong_kind(subs: list[jsonschema.ValidationError]) -> bool:
    """Whether a branch failed on its discriminating `type` (another kind of object)."""
    return any(list(sub.relative_path) == ["type"] for sub in subs)


def assert_conforms(name: str, instance: object) -> None:
    """Fail naming every place `instance` breaks schema `name`."""
    found = errors(name, instance)
    assert not found, f"{name} broken:\n" + "\n".join(found) + "\n" + json.dumps(instance)[:3000]


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """A text/event-stream body as (event name, data) pairs, in order."""
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data:
            out.append((name, b"\n".join(data)))
    return out
