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


# -- valid requests built from the document -----------------------------------------------

MAX_VARIANTS = 8  # of one property: its alternatives, enough to meet each kind once


def resolve(schema: dict) -> dict:
    """The schema a `$ref` points at (itself when it is none)."""
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document()["components"]["schemas"][name]
    return schema


def requests(name: str) -> list[dict]:
    """Valid bodies of request schema `name`: the smallest, then one per alternative of
    each property (each branch of its anyOf/oneOf, each enum value, null where allowed),
    two levels deep. Only those the schema accepts are returned."""
    schema = _merged(resolve({"$ref": f"#/components/schemas/{name}"}))
    base = smallest(schema)
    out = [base]
    for prop, sub in schema.get("properties", {}).items():
        for value in variants(sub, depth=2)[:MAX_VARIANTS]:
            out.append({**base, prop: value})
    seen, valid = set(), []
    for body in out:
        key = json.dumps(body, sort_keys=True)
        if key not in seen and not errors(name, body):
            seen.add(key)
            valid.append(body)
    return valid


def _merged(schema: dict) -> dict:
    """An allOf's parts as one object schema."""
    schema = resolve(schema)
    if "allOf" not in schema:
        return schema
    merged: dict = {"type": "object", "properties": {}, "required": []}
    for part in schema["allOf"]:
        part = _merged(part)
        merged["properties"].update(part.get("properties", {}))
        merged["required"] += part.get("required", [])
    for key, value in schema.items():
        if key not in ("allOf", "properties", "required"):
            merged[key] = value
    return merged


def _branches(schema: dict) -> list[dict]:
    return schema.get("anyOf") or schema.get("oneOf") or []


def smallest(schema: dict, depth: int = 0) -> object:
    """A small value of `schema`: its required fields only, the first branch of a choice
    that is not null, an enum's first value, the document's default when it has one."""
    schema = _merged(schema)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["default"] if schema.get("default") in schema["enum"] else schema["enum"][0]
    branches = [b for b in _branches(schema) if resolve(b).get("type") != "null"]
    if branches:
        return smallest(branches[0], depth + 1)
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {p: smallest(props.get(p, {}), depth + 1) for p in schema.get("required", [])}
    if kind == "array":
        items = schema.get("items", {})
        return [smallest(items, depth + 1) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind in ("integer", "number"):
        value = schema.get("default")
        if isinstance(value, bool) or not isinstance(value, int | float):
            value = max(schema.get("minimum", 1), -(2**63))  # the document's is past int64
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return schema.get("default", False)
    if kind == "string":
        default = schema.get("default")
        return default if isinstance(default, str) else "x" * max(1, schema.get("minLength", 1))
    return {}


def variants(schema: dict, depth: int) -> list:
    """Values of `schema` that differ in kind: each branch, each enum value, each item kind
    of an array, each optional property of an object (while `depth` lasts)."""
    schema = _merged(schema)
    if "enum" in schema:
        return list(schema["enum"])
    branches = _branches(schema)
    if branches:
        out = []
        for branch in branches:
            if resolve(branch).get("type") == "null":
                out.append(None)
            else:
                out += variants(branch, depth - 1) if depth > 0 else [smallest(branch)]
        return out
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        out = [v for k in kinds for v in variants({**schema, "type": k}, depth)]
        return out + [None] * ("null" in kind)
    if kind == "boolean":
        return [True, False]
    if kind == "array" and depth > 0:
        return [[value] for value in variants(schema.get("items", {}), depth - 1)]
    if (kind == "object" or "properties" in schema) and depth > 0:
        base = smallest(schema)
        out = [base]
        for prop, sub in schema.get("properties", {}).items():
            out += [{**base, prop: v} for v in variants(sub, depth - 1)[:MAX_VARIANTS]]
        return out
    return [smallest(schema)]
