"""RovoDev accounts as the integration guide's admin API spells them (camelCase: `email`,
`apiToken`, `cloudId`, `dailyTokenLimit`), mapped onto provider keys of kind `rovodev`:
the token is the key's secret (encrypted, shown masked), email / cloud id / auth scheme
its options. The JSON API and the dashboard's RovoDev page both go through here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import periods
from gateway.admin import apischema
from gateway.admin.errors import InputError, Problems
from gateway.keys import catalog, selection
from gateway.keys import provider_keys as keyring
from gateway.keys.provider_keys import KeyInput, KeyUsage
from gateway.providers.rovodev import (
    AUTH_SCHEMES,
    CLOUD_ID,
    CLOUD_ID_MESSAGE,
    CLOUD_ID_PATTERN,
    RovodevAdapter,
    is_internal,
)
from models import ProviderKey, UsageDaily

PROVIDER = "rovodev"
# camelCase field → the key field it sets (options.* are the key's provider settings).
FIELDS = {
    "profile": "profile",
    "name": "name",
    "email": "options.email",
    "apiToken": "secret",
    "cloudId": "options.cloud_id",
    "authScheme": "options.auth_scheme",
    "dailyTokenLimit": "daily_token_limit",
    "baseUrl": "base_url",
    "models": "models",
}
_CAMEL = {inner: outer for outer, inner in FIELDS.items()}
_OPTIONS = {
    "options.email": {"type": "string", "maxLength": 254, "pattern": apischema.EMAIL},
    "options.cloud_id": apischema.nullable(
        {"type": "string", "maxLength": 128, "pattern": CLOUD_ID_PATTERN}
    ),
    "options.auth_scheme": apischema.nullable({"type": "string", "enum": list(AUTH_SCHEMES)}),
}


def input_schema(creating: bool) -> dict:
    """The body account_input accepts, as an OpenAPI schema: each camelCase field with
    the schema of the key field (or RovoDev option) it stands for."""
    inner = {**keyring.key_input_schema(False)["properties"], **_OPTIONS}
    inner["base_url"] = keyring.base_url_schema(RovodevAdapter.url_schemes)  # RovoDev: http(s)
    properties = {outer: inner[name] for outer, name in FIELDS.items()}
    properties["test"] = keyring.key_input_schema(True)["properties"]["test"]
    if not creating:
        properties["test"] = {
            **properties["test"],
            "description": "Test the account again once saved if its apiToken or baseUrl "
            "changed (the default). false saves it untested.",
        }
    return apischema.obj(properties, required=("email", "apiToken") if creating else ())


def account_input(body: object, key: ProviderKey | None = None) -> KeyInput:
    """A create (key None) or update of an account, checked; InputError names the
    camelCase field."""
    if not isinstance(body, dict):
        raise InputError("body", "The request body must be a JSON object.")
    unknown = sorted(set(body) - set(FIELDS) - {"test"})
    if unknown:
        known = ", ".join(FIELDS)
        raise InputError(unknown[0], f"Unknown field '{unknown[0]}'; known: {known}.")
    data = {"provider": PROVIDER} if key is None else {}
    options = dict(key.options or {}) if key is not None else {}
    for outer, inner in FIELDS.items():
        if outer not in body:
            continue
        if inner.startswith("options."):
            options[inner.removeprefix("options.")] = body[outer]
        else:
            data[inner] = body[outer]
    named_by_email = key is not None and key.name == _name_of((key.options or {}).get("email"))
    if named_by_email and "email" in body and "name" not in body:
        data["name"] = _name_of(body["email"])  # the account's name follows its email
    if key is None:
        if not isinstance(data.get("name"), str) and isinstance(options.get("email"), str):
            data["name"] = _name_of(options["email"]) or None
        data.setdefault("secret", None)
    if key is None or any(FIELDS.get(f, "").startswith("options.") for f in body):
        data["options"] = options
    # The account's email first: without it nothing else of the account makes sense. Then
    # every other bad field, all at once.
    problems = Problems()
    if "options" in data:
        with problems.field():
            keyring.check_options(PROVIDER, data["options"])
        with problems.field():
            check_cloud_id(data["options"].get("cloud_id"))
    parsed = None
    with problems.field():
        parsed = keyring.parse_key_input(data, creating=key is None)
    try:
        problems.check()
    except InputError as exc:
        raise camel_error(exc) from None
    return parsed


def check_cloud_id(cloud_id: object) -> None:
    """An Atlassian cloud id, when given, is the site's UUID."""
    if isinstance(cloud_id, str) and cloud_id.strip() and not CLOUD_ID.match(cloud_id.strip()):
        raise InputError("options.cloud_id", CLOUD_ID_MESSAGE)


def _name_of(email: object) -> object:
    """The name an account takes from its email: as long as a name may be."""
    if not isinstance(email, str):
        return email
    return email.strip()[: keyring.TEXT_FIELDS["name"]]


def camel_error(exc: InputError) -> InputError:
    """The same error with the field (and its name in the message) as the API spells it."""
    pairs = [_camel(field, message) for field, message in exc.errors]
    error = InputError(*pairs[0], exc.status)
    error.errors = pairs  # every bad field, each as the API spells it
    return error


def _camel(field: str, message: str) -> tuple[str, str]:
    camel = _CAMEL.get(field, field)
    return camel, message.replace(f"'{field.removeprefix('options.')}'", f"'{camel}'")


def requests_today(session: Session, today) -> dict[int, int]:
    """Requests per provider key this local day (from the roll-ups)."""
    u = UsageDaily
    query = select(u.provider_key_id, func.sum(u.requests)).where(u.day == today)
    return {key_id: int(n or 0) for key_id, n in session.execute(query.group_by(u.provider_key_id))}


def describe(key: ProviderKey, usage: KeyUsage | None, requests: int, now: datetime) -> dict:
    """An account as the guide's API shows it: the token only masked."""
    keyring.attach_usage(key, usage)
    status = selection.effective_status(key, now)
    hit = selection.limit_hit(key) if status == "limit_reached" else None
    options = key.options or {}
    email = options.get("email", "")
    limit = key.daily_token_limit
    synced = selection.synced_left(key)[0]
    left = selection.remaining_today(key)
    return {
        "id": key.id,
        "profile": key.profile.name,
        "name": key.name,
        "email": email,
        "apiToken": key.secret_masked,
        "cloudId": options.get("cloud_id"),
        "authScheme": options.get("auth_scheme", "bearer"),
        "isInternal": is_internal(email),
        "isActive": status == "active",
        "isDisabledByRateLimit": status in ("limit_reached", "cooling_down"),
        "status": status,
        "limitReached": hit[0] if hit else None,
        "baseUrl": key.base_url,
        "models": catalog.served(key),  # declared, discovered, else RovoDev's own
        "dailyTokensUsed": key.used_today,
        "dailyTokenLimit": limit,
        "remainingTokens": None if left == float("inf") else max(0, int(left)),
        "syncedRemainingTokens": None if synced is None else max(0, synced),
        "syncedAt": key.synced_at.isoformat() if key.synced_at else None,
        "requestCount": requests,
        "failureCount": key.consecutive_failures,
        "lastUsed": key.last_used_at.isoformat() if key.last_used_at else None,
        "lastResetDate": periods.local_day(now).isoformat(),
        "lastError": key.last_error,
        "createdAt": key.created_at.isoformat(),
        "updatedAt": key.updated_at.isoformat(),
    }


def profile_stats(profile: str, accounts: list[dict]) -> dict:
    """A profile's accounts added up (the guide's per-profile statistics)."""
    limits = [a["dailyTokenLimit"] for a in accounts if a["dailyTokenLimit"] is not None]
    used = sum(a["dailyTokensUsed"] for a in accounts)
    left = [a["remainingTokens"] for a in accounts if a["remainingTokens"] is not None]
    return {
        "profile": profile,
        "totalKeys": len(accounts),
        "activeKeys": sum(1 for a in accounts if a["isActive"]),
        "internalKeys": sum(1 for a in accounts if a["isInternal"]),
        "dailyTokensUsed": used,
        "dailyTokenLimit": sum(limits) if limits else None,
        "remainingTokens": sum(left) if left else None,
        "requestCount": sum(a["requestCount"] for a in accounts),
        "usagePercent": round(100 * used / sum(limits), 2) if limits and sum(limits) else None,
        "keys": accounts,
    }
