"""The admin API's OpenAPI 3.0 document, built from the validators' own schemas (request
bodies) and the answers' shapes below (tested against real answers by schemathesis)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway import routes
from gateway.admin import apischema as s
from gateway.keys import client_keys as clientkeys
from gateway.keys import provider_keys as keyring
from gateway.keys import rovodev_accounts
from gateway.ledger import reports
from gateway.limits import budgets
from gateway.validation import MAX_SQL_INT

STR, INT, NUM, BOOL, ANY = (
    {"type": "string"},
    {"type": "integer"},
    {"type": "number"},
    s.BOOLEAN,
    {},
)
N_STR, N_INT, N_NUM = s.nullable(STR), s.nullable(INT), s.nullable(NUM)
MONEY = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{6}$", "example": "0.000020"}
N_MONEY = s.nullable(MONEY)


def _closed(properties: dict, optional: tuple = ()) -> dict:
    """An answer object: every property always there (but `optional`), none other."""
    required = [name for name in properties if name not in optional]
    return s.obj(properties, required=required)


def _list(item: dict, **extra: dict) -> dict:
    return _closed({"data": {"type": "array", "items": item}, **extra})


_FIELD_ERROR = _closed({"param": STR, "message": STR})
ERROR = _closed(
    {
        "error": _closed(
            {
                "message": STR,
                "type": STR,
                "code": N_STR,
                "param": N_STR,
                # Several bad fields: each of them (the first is also the error's own).
                "errors": {"type": "array", "items": _FIELD_ERROR},
            },
            optional=("errors",),
        )
    }
)
_CIRCUIT = s.nullable(
    _closed({"state": {"type": "string", "enum": ["open", "half_open"]}, "until": STR})
)
PROVIDER_KEY = _closed(
    {
        "id": INT,
        "profile": STR,
        "provider": STR,
        "name": STR,
        "secret": {**STR, "description": "masked"},
        "is_default": BOOL,
        "base_url": STR,
        "models": {"type": "array", "items": STR},
        "discovered_models": s.nullable({"type": "array", "items": STR}),
        "served_models": {
            "type": "array",
            "items": STR,
            "description": 'The models the key serves (["*"]: any)',
        },
        "models_source": {
            "type": "string",
            "enum": ["declared", "discovered", "provider", "unknown"],
            "description": "Where served_models comes from: the declared models, the key "
            "test's discovery, the provider's own list, or none yet (serves no model)",
        },
        "unserved_models": {"type": "array", "items": STR},
        "options": {"type": "object"},
        "remaining_tokens": N_INT,
        "remaining_credit": N_MONEY,
        "synced_at": N_STR,
        **keyring.LIMIT_SCHEMAS,
        "expires_at": N_STR,
        "used_today": INT,
        "remaining_today": N_INT,
        "used_month": INT,
        "cost_today": MONEY,
        "cost_month": MONEY,
        "cost_total": MONEY,
        "status": STR,
        "limit_reached": N_STR,
        "available_at": N_STR,
        "cooldown_until": N_STR,
        "consecutive_failures": INT,
        "last_used_at": N_STR,
        "last_error": N_STR,
        "status_reason": N_STR,
        "disabled_by": N_STR,
        "disabled_at": N_STR,
        "last_error_message": N_STR,
        "created_at": STR,
        "updated_at": STR,
        "upstream_circuit": _CIRCUIT,
    },
    optional=("upstream_circuit",),
)
CLIENT_KEY = _closed(
    {
        "id": INT,
        "name": STR,
        "profile": STR,
        "key_hint": STR,
        "models": s.nullable({"type": "array", "items": STR}),
        "rpm_limit": N_INT,
        "tpm_limit": N_INT,
        "max_parallel_requests": N_INT,
        "max_budget": N_MONEY,
        "budget_duration": N_STR,
        "expires_at": N_STR,
        "revoked_at": N_STR,
        "status": STR,
        "created_by": N_STR,
        "member_id": {**N_INT, "description": "the member who owns the key; null: an admin's"},
        "created_at": STR,
        "updated_at": STR,
        "key": {**STR, "description": "the key itself: only in the answer that creates it"},
    },
    optional=("key",),
)
MEMBER = _closed(
    {
        "id": INT,
        "email": N_STR,
        "username": STR,
        "balance": MONEY,
        "budget": N_MONEY,
        "budget_period": N_STR,
        "rpm_limit": N_INT,
        "tpm_limit": N_INT,
        "max_keys": INT,
        "profile": STR,
        "status": {"type": "string", "enum": ["active", "suspended"]},
        "suspended_at": N_STR,
        "created_at": STR,
        "last_login_at": N_STR,
        "spend": {**MONEY, "description": "what the member's keys have spent in all"},
        "keys": {**INT, "description": "the member's keys not revoked"},
    }
)
INVITE = _closed({"url": STR, "email": N_STR, "expires_at": STR})
ROUTE = _closed({"id": INT, **routes.SCHEMA, "target": N_STR, "on_context_overflow": STR})
PROFILE = _closed({"id": INT, "name": STR, **keyring.profile_settings_schema()["properties"]})
PRICE = _closed(
    {
        "model": STR,
        "source": N_STR,
        "matched_model": N_STR,
        "input_per_mtok": N_STR,
        "output_per_mtok": N_STR,
        "per_request": N_STR,
        "tiered": BOOL,
    },
    optional=("matched_model", "tiered"),
)
_ATTEMPT = _closed(
    {
        "number": INT,
        "provider_key_id": N_INT,
        "outcome": STR,
        "status_code": N_INT,
        "latency_ms": N_INT,
        "error": N_STR,
    }
)
LOG_ROW = s.obj(
    {
        "request_id": STR,
        "created_at": STR,
        "model": N_STR,
        "status_code": N_INT,
        "cost_usd": MONEY,
        "attempts": {"type": "array", "items": _ATTEMPT},
    },
    required=("request_id", "created_at", "status_code", "cost_usd", "attempts"),
    additional=True,
)
_TOTALS = {
    **dict.fromkeys(reports.STAT_FIELDS[:-1], INT),
    "success_rate": N_NUM,
    "cost_usd": MONEY,
}
STATS = _closed(
    {
        "profile": N_STR,
        "all_time": s.obj(_TOTALS, required=list(_TOTALS), additional=True),
        "today": s.obj({"day": STR, **_TOTALS}, required=["day", *_TOTALS], additional=True),
    }
)
STATISTICS = _closed(
    {
        "group": {"type": "string", "enum": list(reports.GROUPS)},
        "period": {"type": "string", "enum": list(reports.PERIODS)},
        "from": STR,
        "to": STR,
        "data": {
            "type": "array",
            "items": s.obj({"period": STR, "cost_usd": MONEY}, ["period"], additional=True),
        },
    }
)
KEY_STATISTICS = _closed(
    {
        "totalKeys": INT,
        "activeKeys": INT,
        "totalCost": MONEY,
        "totalRequests": INT,
        "successfulRequests": INT,
        "dailyCost": MONEY,
        "dailyLimit": N_MONEY,
        "dailyBudgetUsed": N_NUM,
        "monthlyCost": MONEY,
        "monthlyLimit": N_MONEY,
        "monthlyBudgetUsed": N_NUM,
    }
)
_SYNCED = s.obj({"id": INT, "name": STR, "result": STR}, ["id", "result"], additional=True)
SYNC = _closed({"synced": INT, "failed": INT, "keys": {"type": "array", "items": _SYNCED}})
KEY_TEST = s.obj(
    {
        "result": STR,
        "status_code": N_INT,
        "latency_ms": N_INT,
        "message": N_STR,
        # A passing test of a cooling key: the cooldown it leaves as the upstream set it.
        "note": N_STR,
        "key": PROVIDER_KEY,
    },
    required=("result", "status_code", "latency_ms", "key"),
    additional=True,
)
# A new key, with its test's result when it was tested on creation.
CREATED_KEY = _closed(
    {
        **PROVIDER_KEY["properties"],
        "test": s.obj(
            {
                "result": STR,
                "status_code": N_INT,
                "latency_ms": N_INT,
                "message": N_STR,
                "models": s.nullable({"type": "array", "items": STR}),
            },
            required=("result", "status_code", "latency_ms", "message"),
            additional=True,
        ),
    },
    optional=("test",),
)
JOBS = _closed(
    {
        "enabled": BOOL,
        "timezone": STR,
        "leader_pid": N_INT,
        "leader": N_STR,  # the Redis lease's holder (host:pid:token) with KEYRELAY_REDIS_URL
        "data": {
            "type": "array",
            "items": s.obj({"name": STR, "schedule": STR, "next_run_at": N_STR}, ["name"], True),
        },
    }
)
PROVIDER_KIND = _closed(
    {"provider": STR, "default_base_url": N_STR, "price_provider": N_STR, "wire_format": STR}
)
ACCOUNT = s.obj(
    {
        "id": INT,
        "profile": STR,
        "name": STR,
        "email": STR,
        "apiToken": STR,
        "status": STR,
        "dailyTokensUsed": INT,
        "dailyTokenLimit": N_INT,
        "remainingTokens": N_INT,
        "requestCount": INT,
    },
    required=("id", "profile", "name", "apiToken", "status"),
    additional=True,
)
ACCOUNT_TEST = _closed(
    {"success": BOOL, "result": STR, "statusCode": N_INT, "error": N_STR, "key": ACCOUNT}
)
ACCOUNT_STATS = s.obj(
    {"profile": STR, "totalKeys": INT, "keys": {"type": "array", "items": ACCOUNT}},
    required=("profile", "totalKeys", "keys"),
    additional=True,
)
OPENAPI = {"type": "object", "required": ["openapi", "paths"]}
HTML = {"type": "string", "format": "html"}

# -- bodies the routes take that no validator table covers ------------------------------

_TOGGLE = s.obj({"active": BOOL})
_SYNC_BODY = s.obj({"profile": s.text(64), "provider": s.text(32)})
_PER_MTOK = {
    "anyOf": [
        {
            "type": "string",
            "pattern": r"^(?:(?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,6})?|1000000(?:\.0{1,6})?)$",
            "x-expected": 'be USD per million tokens such as "2.50", from 0 to 1000000',
        },
        {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    ],
    "x-rule": 'must be USD per million tokens such as "2.50", from 0 to 1000000',
}
_PER_REQUEST = {
    "anyOf": [
        {**_PER_MTOK["anyOf"][0], "x-expected": 'be USD per request such as "0.01", up to 1000000'},
        _PER_MTOK["anyOf"][1],
    ],
    "x-rule": 'must be USD per request such as "0.01", from 0 to 1000000',
}
# Token prices are required unless a flat price per request is given.
_PRICE_BODY = {
    **s.obj(
        {"input_per_mtok": _PER_MTOK, "output_per_mtok": _PER_MTOK, "per_request": _PER_REQUEST}
    ),
    "anyOf": [{"required": ["input_per_mtok", "output_per_mtok"]}, {"required": ["per_request"]}],
}
_TOPUP = s.obj({"amount": s.POSITIVE_USD}, ("amount",))
_EMAIL = {"type": "string", "maxLength": 254, "pattern": s.EMAIL}
_PROFILE_NAME = s.text(64, pattern=keyring.PROFILE_NAME.pattern)
_NEW_MEMBER = s.obj({"email": _EMAIL, "password": s.text(1024) | {"minLength": 8}}, ("email",))
_MEMBER_CHANGES = s.obj(
    {
        "budget": s.nullable(s.USD),
        "budget_period": s.nullable({"type": "string", "enum": list(budgets.DURATIONS)}),
        "rpm_limit": s.nullable(s.integer(1, 10**9)),
        "tpm_limit": s.nullable(s.integer(1, 10**9)),
        "max_keys": s.integer(0, 10**9),
        "profile": _PROFILE_NAME,
        "suspended": BOOL,
    }
)
_SIGNED_USD = {
    "anyOf": [
        {
            "type": "string",
            "pattern": "^-?" + s.POSITIVE_USD["anyOf"][0]["pattern"][1:],
            "x-expected": 'be a non-zero amount in USD such as "5.00" or "-2.50"',
        },
        {"type": "integer", "minimum": 1, "maximum": 10**9},
        {"type": "integer", "minimum": -(10**9), "maximum": -1},
    ],
    "x-rule": 'must be a non-zero amount in USD such as "5.00" or "-2.50"',
}
_BALANCE = s.obj({"amount": _SIGNED_USD, "reason": s.text(500)}, ("amount", "reason"))
_INVITE_BODY = s.obj({"email": _EMAIL})

# -- query parameters ------------------------------------------------------------------


def _query(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


_PROFILE_Q = _query("profile", s.text(64), "only this profile")
_DATE = s.DAY

# endpoint → (request body schema, (status, answer schema), other statuses, query parameters)
# The document lists every rule of the app's url_map under /api/admin (tests check it).
OPERATIONS: dict[str, tuple] = {
    "admin_api.list_providers": (None, (200, _list(PROVIDER_KIND)), (), ()),
    "admin_api.list_keys": (None, (200, _list(PROVIDER_KEY)), (), (_PROFILE_Q,)),
    "admin_api.create_key": (keyring.key_input_schema(True), (201, CREATED_KEY), (409,), ()),
    "admin_api.get_key": (None, (200, PROVIDER_KEY), (), ()),
    "admin_api.update_key": (keyring.key_input_schema(False), (200, PROVIDER_KEY), (409,), ()),
    "admin_api.delete_key": (None, (204, None), (), ()),
    "admin_api.set_default_key": (None, (200, PROVIDER_KEY), (), ()),
    "admin_api.test_key": (None, (200, KEY_TEST), (), ()),
    "admin_api.sync_keys": (
        _SYNC_BODY,
        (200, SYNC),
        (),
        (_PROFILE_Q, _query("provider", s.text(32))),
    ),
    "admin_api.toggle_key": (_TOGGLE, (200, PROVIDER_KEY), (), ()),
    "admin_api.list_logs": (
        None,
        (200, _list(LOG_ROW, limit=INT, offset=INT)),
        (),
        (_PROFILE_Q, _query("limit", s.integer(1, 500)), _query("offset", s.integer(0, 10**9))),
    ),
    "admin_api.stats": (None, (200, STATS), (), (_PROFILE_Q,)),
    "admin_api.create_client_key": (clientkeys.input_schema(True), (201, CLIENT_KEY), (), ()),
    "admin_api.list_client_keys": (None, (200, _list(CLIENT_KEY)), (), (_PROFILE_Q,)),
    "admin_api.get_client_key": (None, (200, CLIENT_KEY), (), ()),
    "admin_api.update_client_key": (clientkeys.input_schema(False), (200, CLIENT_KEY), (), ()),
    "admin_api.revoke_client_key": (None, (200, CLIENT_KEY), (), ()),
    "admin_api.delete_client_key": (None, (204, None), (), ()),
    # 409: the key has no budget (max_budget null) to top up.
    "admin_api.top_up_client_key": (_TOPUP, (200, CLIENT_KEY), (409,), ()),
    "admin_api.list_prices": (None, (200, _list(PRICE)), (), ()),
    "admin_api.get_price": (None, (200, PRICE), (), ()),
    "admin_api.set_price": (_PRICE_BODY, (200, PRICE), (), ()),
    "admin_api.delete_price": (None, (204, None), (), ()),
    "admin_api.statistics": (
        None,
        (200, STATISTICS),
        (),
        (
            _query("group", {"type": "string", "enum": list(reports.GROUPS)}),
            _query("period", {"type": "string", "enum": list(reports.PERIODS)}),
            _query("from", _DATE),
            _query("to", _DATE),
            _query("format", {"type": "string", "enum": ["json", "csv"]}, "csv: text/csv"),
        ),
    ),
    "admin_api.key_statistics": (None, (200, KEY_STATISTICS), (), ()),
    "admin_api.list_routes": (None, (200, _list(ROUTE)), (), ()),
    "admin_api.create_route": (routes.input_schema(True), (201, ROUTE), (409,), ()),
    "admin_api.get_route": (None, (200, ROUTE), (), ()),
    "admin_api.update_route": (routes.input_schema(False), (200, ROUTE), (409,), ()),
    "admin_api.delete_route": (None, (204, None), (), ()),
    "admin_api.list_profiles": (None, (200, _list(PROFILE)), (), ()),
    "admin_api.put_profile": (keyring.profile_settings_schema(), (200, PROFILE), (), ()),
    "admin_api.active_key": (
        None,
        (200, PROVIDER_KEY),
        (),
        (_query("profile", s.text(64)), _query("model", s.text(128))),
    ),
    "admin_api.list_jobs": (None, (200, JOBS), (), ()),
    "admin_api.list_members": (None, (200, _list(MEMBER)), (), ()),
    # 409: an account for that email exists.
    "admin_api.create_member": (_NEW_MEMBER, (201, MEMBER), (409,), ()),
    "admin_api.get_member": (None, (200, MEMBER), (), ()),
    "admin_api.update_member": (_MEMBER_CHANGES, (200, MEMBER), (), ()),
    # 409: the balance would go below 0 or above 1000000000 USD.
    "admin_api.adjust_balance": (_BALANCE, (200, MEMBER), (409,), ()),
    "admin_api.delete_member": (None, (204, None), (), ()),
    # 409: sign-up is off (KEYRELAY_SIGNUP=off).
    "admin_api.create_invite": (_INVITE_BODY, (201, INVITE), (409,), ()),
    "rovodev_api.list_accounts": (None, (200, _list(ACCOUNT)), (), (_PROFILE_Q,)),
    "rovodev_api.create_account": (
        rovodev_accounts.input_schema(True),
        (201, ACCOUNT),
        (409,),
        (),
    ),
    "rovodev_api.update_account": (
        rovodev_accounts.input_schema(False),
        (200, ACCOUNT),
        (409,),
        (),
    ),
    "rovodev_api.delete_account": (None, (204, None), (), ()),
    "rovodev_api.test_account": (None, (200, ACCOUNT_TEST), (), ()),
    "rovodev_api.sync_accounts": (s.obj({"profile": s.text(64)}), (200, SYNC), (), (_PROFILE_Q,)),
    "rovodev_api.profile_stats": (None, (200, ACCOUNT_STATS), (), ()),
    "openapi.document": (None, (200, OPENAPI), (), ()),
    "openapi.docs_page": (None, (200, HTML), (), ()),
}
PUBLIC = {"openapi.document", "openapi.docs_page"}
# Bodies that may be left out (a toggle flips, a sync covers everything); every other
# operation with a body needs one.
OPTIONAL_BODY = {
    "admin_api.toggle_key",
    "admin_api.sync_keys",
    "rovodev_api.sync_accounts",
    "admin_api.create_invite",
}
_CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_PATH_TYPES = {"int": s.integer(0, MAX_SQL_INT), "path": {"type": "string", "minLength": 1}}
# Path parameters by name where the view takes less than any text.
_PATH_NAMES = {
    "name": s.text(64, pattern=keyring.PROFILE_NAME.pattern),  # a profile's
    "profile": s.text(64, pattern=keyring.PROFILE_NAME.pattern),
    "model": {"type": "string", "minLength": 1, "maxLength": 128},
}


def path_of(rule: str) -> tuple[str, list[dict]]:
    """A Flask rule as an OpenAPI path, with its path parameters."""
    parameters = []
    for converter, name in _CONVERTER.findall(rule):
        schema = _PATH_NAMES.get(name) or _PATH_TYPES.get(converter)
        schema = schema or {"type": "string", "minLength": 1}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _CONVERTER.sub(r"{\2}", rule), parameters


def _responses(endpoint: str, answer: tuple, statuses: tuple, has_body: bool) -> dict:
    status, schema = answer
    ok: dict = {"description": "Done." if schema else "Done; no content."}
    if schema is not None:
        kind = "text/html" if schema is HTML else "application/json"
        ok["content"] = {kind: {"schema": schema}}
    if endpoint == "admin_api.statistics":
        ok["content"]["text/csv"] = {"schema": {"type": "string"}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    found = {str(status): ok, "400": {"description": "Bad input.", **error}}
    if endpoint not in PUBLIC:
        found["401"] = {"description": "No or a wrong master key.", **error}
        found["403"] = {"description": "A dashboard viewer tried a change.", **error}
        found["404"] = {"description": "No such object.", **error}
        found["503"] = {"description": "The database is busy; retry.", **error}
    for extra in statuses:
        found[str(extra)] = {"description": "Conflicts with a saved object.", **error}
    found["405"] = {"description": "Method not allowed here.", **error}
    if has_body:
        found["413"] = {"description": "Body too large.", **error}
    return found


def operation(endpoint: str, method: str, summary: str, parameters: list[dict]) -> dict:
    """One operation of the document."""
    body, answer, statuses, query = OPERATIONS[endpoint]
    found = {
        "operationId": endpoint.replace(".", "_") + ("" if method != "head" else "_head"),
        "summary": summary.splitlines()[0] if summary else endpoint,
        "description": summary,
        "tags": [endpoint.split(".")[0]],
        "parameters": [*parameters, *query],
        "responses": _responses(endpoint, answer, statuses, body is not None),
    }
    if body is not None:
        found["requestBody"] = {
            "required": endpoint not in OPTIONAL_BODY,
            "content": {"application/json": {"schema": body}},
        }
    if endpoint in PUBLIC:
        found["security"] = []
    return found


def _link_created(paths: dict) -> None:
    """Links from each 201 (a created object) to the operations on that object by id, so
    generated calls (schemathesis's stateful phase) reach real objects."""
    for path, methods in paths.items():
        created = methods.get("post", {}).get("responses", {}).get("201")
        if created is None:
            continue
        links = {}
        for other, operations in paths.items():
            ids = re.findall(r"\{(\w+)\}", other)
            if not other.startswith(path + "/") or len(ids) != 1 or not ids[0].endswith("_id"):
                continue
            for operation in operations.values():
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {ids[0]: "$response.body#/id"},
                }
        if links:
            created["links"] = links


def document(rules: list[tuple[str, str, list[str], str]], version: str) -> dict:
    """The document for (rule, endpoint, methods, docstring) of every admin route."""
    paths: dict = {}
    for rule, endpoint, methods, summary in rules:
        path, parameters = path_of(rule)
        for method in methods:
            paths.setdefault(path, {})[method.lower()] = operation(
                endpoint, method.lower(), summary, parameters
            )
    _link_created(paths)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "KeyRelay admin API",
            "version": version,
            "description": "Provider keys, client keys, routes, profiles, prices, the "
            "request log and statistics. Authenticate with the master key: "
            "`Authorization: Bearer <KEYRELAY_MASTER_KEY>`. Errors are "
            '`{"error": {"message", "type", "code", "param"}}`, with `errors` (each bad field\'s '
            "`param` and `message`) when several fields are bad.",
        },
        "servers": [{"url": "/"}],
        "security": [{"masterKey": []}],
        "components": {
            "securitySchemes": {"masterKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR},
        },
        "paths": dict(sorted(paths.items())),
    }


def check_query(endpoint: str | None, query: Mapping[str, str]) -> None:
    """SchemaError for a query value the document does not allow."""
    for parameter in OPERATIONS[endpoint][3] if endpoint in OPERATIONS else ():
        name = parameter["name"]
        if name in query:
            s.check(parameter["schema"], _typed(parameter["schema"], query[name]), name)


def check_path(rule: str, values: Mapping[str, object]) -> None:
    """SchemaError for a path parameter (`/prices/<model>`) the document does not allow."""
    for parameter in path_of(rule)[1]:
        if parameter["name"] in values:
            s.check(parameter["schema"], values[parameter["name"]], parameter["name"])


def check_body(endpoint: str | None, body: object, sent: bool) -> None:
    """SchemaError for a JSON body (`sent`: there is one, maybe `null`) the document does
    not allow: the document is the admin API's contract, checked at its edge."""
    schema = OPERATIONS[endpoint][0] if endpoint in OPERATIONS else None
    if schema is None or (not sent and endpoint in OPTIONAL_BODY):
        return
    if not isinstance(body, dict):
        raise s.SchemaError("body", "The request body must be a JSON object.")
    s.check(schema, body)


def _typed(schema: dict, raw: str) -> object:
    """A query value as the schema's type reads it ("12" is an integer)."""
    if schema.get("type") == "integer" and re.fullmatch(r"-?[0-9]{1,19}", raw):
        return int(raw)
    return raw
