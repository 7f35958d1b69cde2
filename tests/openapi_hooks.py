"""The admin API's rules that JSON Schema cannot state, for schemathesis: they depend on
the clock, compare two query values, or name a map's keys (OpenAPI 3.0 has no
propertyNames). Each is in its operation's description in the
document, with the 400 listed there; a schema-valid request refused for breaking one is
not a "valid request refused" (ST202, positive_data_acceptance). Only that answer to that
operation is let through: same operation, status 400, the rule's field and words.

Rules between body fields are in the document itself (anyOf forms), not here; a clash
with the saved object is a 409, which schemathesis already accepts for valid data.

Imported by tests/admin/test_openapi.py (which registers the hook); for the CLI, from the
repository's root: `SCHEMATHESIS_HOOKS=tests.openapi_hooks st run …`.
"""

from __future__ import annotations

import json

import schemathesis

# (method, path) → (field, words of its message) of each rule no schema can state.
_MODEL_IDS = ("model_limits", "must map model ids")
RULES = {
    ("POST", "/api/admin/client-keys"): [("expires_at", "is in the past")],
    ("GET", "/api/admin/statistics"): [("from", "'from' is after 'to'")],
    ("POST", "/api/admin/keys"): [_MODEL_IDS],
    ("PUT", "/api/admin/keys/{key_id}"): [_MODEL_IDS],
}


def broke_a_stated_rule(case, response) -> bool:
    """Whether the answer is the 400 of the operation's rule that no schema states."""
    rules = RULES.get((case.operation.method.upper(), case.operation.path), ())
    if not rules or response.status_code != 400:
        return False
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    said = (error.get("param"), str(error.get("message")))
    return any(said[0] == field and words in said[1] for field, words in rules)


@schemathesis.hook("filter_failure")
def not_a_stated_rule(context, failure, case, response) -> bool:
    """Keep every failure but a valid request refused for a rule of RULES."""
    refused_valid = "positive_data_acceptance" in getattr(failure, "checks", ())
    return not (refused_valid and broke_a_stated_rule(case, response))
