"""Trim OpenAI's OpenAPI document to what KeyRelay answers:
`python tests/openapi/trim.py openapi.json tests/openapi/openai.json`."""

import json
import re
import sys

PATHS = {
    "/chat/completions": ["post"],
    "/responses": ["post"],
    "/embeddings": ["post"],
    "/completions": ["post"],
    "/models": ["get"],
    "/models/{model}": ["get"],
}
ROOTS = ["ResponseStreamEvent", "ErrorResponse", "ResponseErrorEvent", "ResponseFailedEvent"]
REF = re.compile(r'#/components/schemas/([^"]+)"')


def strip(node):
    """The node without code samples and examples (no property is named so)."""
    if isinstance(node, dict):
        drop = ("x-oaiMeta", "example", "examples")
        return {k: strip(v) for k, v in node.items() if k not in drop}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(source: str, target: str) -> None:
    with open(source) as file:
        doc = json.load(file)
    schemas = doc["components"]["schemas"]
    paths = {p: {m: doc["paths"][p][m] for m in ms} for p, ms in PATHS.items()}
    for path in paths.values():
        for operation in path.values():
            operation.pop("x-oaiMeta", None)
    stack, seen = REF.findall(json.dumps(paths)) + ROOTS, set()
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack += REF.findall(json.dumps(schemas[name]))
    trimmed = "the paths KeyRelay serves under /v1 and the schemas they reach"
    out = {
        "openapi": doc["openapi"],
        "info": {**doc["info"], "x-keyrelay-trimmed": trimmed},
        "paths": paths,
        "components": {
            "schemas": {k: strip(schemas[k]) for k in sorted(seen)},
            "responses": doc["components"]["responses"],
        },
    }
    with open(target, "w") as file:
        json.dump(out, file, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
