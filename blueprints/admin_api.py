"""The admin JSON API (master key): provider keys, request log, statistics."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask_login import current_user
from sqlalchemy import func, select

from blueprints.common import (
    bearer_token,
    client_key_defaults,
    gateway,
    require_master_key,
    utcnow,
)
from blueprints.web import SAFE_METHODS, admin
from extensions import csrf, db
from gateway import periods, routes, validation
from gateway.admin import apischema, client_keys, openapi, provider_keys
from gateway.admin import prices as price_commands
from gateway.admin import profiles as route_commands
from gateway.admin.errors import InputError
from gateway.errors import GatewayError
from gateway.jobs import scheduler
from gateway.keys import client_keys as clientkeys
from gateway.keys import provider_keys as keyring
from gateway.keys import selection
from gateway.ledger import pricing, reports
from models import (
    ClientKey,
    PriceOverride,
    Profile,
    ProviderKey,
    RequestLog,
    Route,
    UsageDaily,
)
from models.types import usd

bp = Blueprint("admin_api", __name__)


@bp.before_request
def authenticate() -> None:
    """The master key, or a dashboard session (changes: an admin, with the CSRF token).
    Every call sees every request this process has booked."""
    if bearer_token() is None and current_user.is_authenticated:
        if current_user.is_member:
            raise GatewayError(
                403,
                "The admin API is for KeyRelay's admins; members use /api/keys/manage.",
                type="permission_error",
                code="forbidden",
            )
        if request.method not in SAFE_METHODS:
            if not current_user.is_admin:
                raise GatewayError(
                    403,
                    "Viewers can read but not change anything.",
                    type="permission_error",
                    code="forbidden",
                )
            csrf.protect()
    else:
        require_master_key()
    if request.method not in SAFE_METHODS:
        _json()  # any change's body is checked, even where the route ignores it
    # The query and path as the OpenAPI document allows them (the body: contract()).
    _on_document(lambda: openapi.check_query(request.endpoint, request.args))
    if request.url_rule is not None:
        _on_document(lambda: openapi.check_path(request.url_rule.rule, request.view_args or {}))
    gateway().books.flush()


def contract() -> None:
    """A 400 naming the field when the body is not one the OpenAPI document allows. Views
    call it after their own parser, whose messages say more about its rules; what that
    parser tolerates (it also reads forms and YAML) but the document does not ends here."""
    sent = request.is_json and bool(request.get_data(cache=True))  # blank is no JSON
    _on_document(lambda: openapi.check_body(request.endpoint, _json(), sent))


def _on_document(check) -> None:
    """Run a check of gateway.admin.openapi; what it refuses is a 400 naming the field."""
    try:
        check()
    except apischema.SchemaError as exc:
        raise GatewayError(400, str(exc), param=exc.path) from None


@bp.errorhandler(InputError)
def bad_input(error: InputError):
    """A field that cannot be saved: its name and what to fix."""
    db.session.rollback()
    body = GatewayError(error.status, str(error), param=error.field).body()
    if len(error.errors) > 1:  # every bad field, the first one also as the error itself
        body["error"]["errors"] = [{"param": f, "message": m} for f, m in error.errors]
    return jsonify(body), error.status


def _key_or_404(key_id: int) -> ProviderKey:
    key = db.session.get(ProviderKey, key_id)
    if key is None:
        raise GatewayError(404, f"No provider key with id {key_id}.", code="key_not_found")
    return key


def _describe(key: ProviderKey) -> dict:
    now = utcnow()
    described = keyring.describe(
        key, keyring.key_usage(db.session, periods.local_day(now)).get(key.id), now
    )
    # This worker's circuit for the key's upstream (None: closed).
    described["upstream_circuit"] = gateway().breaker.state(key.base_url)
    return described


def _json() -> object:
    """The JSON body (None when there is none, or it is not sent as JSON), checked once:
    valid JSON, not nested too deep, no integer a database column cannot hold (a 400
    naming the field)."""
    if "admin_body" not in g:
        g.admin_body = _parse_body()
    return g.admin_body


def _parse_body() -> object:
    if not request.is_json:
        return None
    raw = request.get_data(cache=True)
    if not raw.strip():
        return None
    body = validation.load_json(raw, param="body")
    path = validation.out_of_range_int(body)
    if path is not None:
        field = path.split(".")[0].split("[")[0] or "body"
        raise GatewayError(
            400,
            f"'{path}' is out of range: numbers here go from -{validation.MAX_SQL_INT + 1} "
            f"to {validation.MAX_SQL_INT}.",
            code="number_out_of_range",
            param=field,
        )
    return body


@bp.get("/providers")
def list_providers():
    """The provider kinds a key may have: default base URL and price-table id of each."""
    from gateway.providers import ADAPTERS

    kinds = [
        {
            "provider": name,
            "default_base_url": cls.default_base_url,
            "price_provider": cls.price_provider,
            "wire_format": "anthropic" if name == "anthropic" else "openai",
        }
        for name, cls in sorted(ADAPTERS.items())
    ]
    return jsonify({"data": kinds})


@bp.get("/keys")
def list_keys():
    """Every provider key (masked), optionally of one profile."""
    query = select(ProviderKey).order_by(ProviderKey.id)
    if profile := request.args.get("profile"):
        query = query.join(Profile).where(Profile.name == profile)
    now = utcnow()
    used = keyring.key_usage(db.session, periods.local_day(now))
    keys = db.session.scalars(query).all()
    return jsonify({"data": [keyring.describe(k, used.get(k.id), now) for k in keys]})


@bp.post("/keys")
def create_key():
    """Add a provider key; the secret is stored encrypted and answered masked. The key
    is tested at once (unless `"test": false`): its answer says how, and a key that failed
    its test is kept, its status saying why."""
    data = keyring.parse_key_input(_json(), creating=True)
    contract()
    key = provider_keys.create(admin(), data)
    if not keyring.wants_test(_json()):
        return jsonify(_describe(key)), 201
    key_id = key.id
    db.session.remove()
    result = gateway().tester.test(key_id)
    return jsonify({**_describe(_key_or_404(key_id)), "test": result}), 201


@bp.get("/keys/<int:key_id>")
def get_key(key_id: int):
    """One provider key."""
    return jsonify(_describe(_key_or_404(key_id)))


@bp.put("/keys/<int:key_id>")
def update_key(key_id: int):
    """Change a key's fields (any subset; a new secret replaces the old). A base_url or
    options that do not suit the saved provider (or the reverse) are a 409. A key whose
    provider, base_url or secret changed is tested again (unless `"test": false`)."""
    key = _key_or_404(key_id)
    data = keyring.parse_key_input(_json(), creating=False)
    contract()
    fields = sorted(k for k in (_json() or {}) if k != "secret")
    moved = provider_keys.update(admin(), key, data, fields)
    if moved and keyring.wants_test(_json()):  # another upstream: its models learnt again
        db.session.remove()
        gateway().tester.test(key_id)
        key = _key_or_404(key_id)
    return jsonify(_describe(key))


@bp.delete("/keys/<int:key_id>")
def delete_key(key_id: int):
    """Remove a key; its log rows and usage stay."""
    provider_keys.delete(admin(), _key_or_404(key_id))
    return "", 204


@bp.post("/keys/<int:key_id>/set-default")
def set_default_key(key_id: int):
    """The profile's default key: tried first, whatever the strategy, while it is usable."""
    key = _key_or_404(key_id)
    provider_keys.set_default(admin(), key)
    return jsonify(_describe(key))


@bp.post("/keys/<int:key_id>/test")
def test_key(key_id: int):
    """Test the key with a real cheap call; the result also updates its status."""
    _key_or_404(key_id)
    result = provider_keys.test(admin(), key_id)
    return jsonify({**result, "key": _describe(_key_or_404(key_id))})


@bp.post("/keys/sync")
def sync_keys():
    """Usage sync now: keys whose provider reports what is left (`profile`, `provider`
    from the query or the body narrow it)."""
    body = _json() if isinstance(_json(), dict) else {}
    profile = request.args.get("profile") or body.get("profile")
    provider = request.args.get("provider") or body.get("provider")
    for name, value in (("profile", profile), ("provider", provider)):
        if value is not None and not isinstance(value, str):
            raise GatewayError(400, f"'{name}' must be a string.", param=name)
    contract()
    return jsonify(provider_keys.sync(admin(), profile, provider))


@bp.post("/keys/<int:key_id>/toggle")
def toggle_key(key_id: int):
    """Enable or disable a key (`{"active": bool}`, or flip when no body)."""
    key = _key_or_404(key_id)
    body = _json() if isinstance(_json(), dict) else {}
    active = body.get("active", key.status == "disabled")
    if not isinstance(active, bool):
        raise InputError("active", "'active' must be true or false.")
    contract()
    provider_keys.set_enabled(admin(), key, active)
    return jsonify(_describe(key))


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise GatewayError(400, f"'{name}' must be an integer.", param=name) from None
    if not low <= value <= high:
        raise GatewayError(400, f"'{name}' must be between {low} and {high}.", param=name)
    return value


@bp.get("/logs")
def list_logs():
    """Newest request-log rows first with their attempts; `profile`, `limit`, `offset`."""
    limit = _int_arg("limit", 50, 1, 500)
    offset = _int_arg("offset", 0, 0, 10**9)
    query = select(RequestLog).order_by(RequestLog.id.desc()).limit(limit).offset(offset)
    if profile := request.args.get("profile"):
        query = query.join(Profile, Profile.id == RequestLog.profile_id).where(
            Profile.name == profile
        )
    rows = db.session.scalars(query).all()
    return jsonify({"data": [row.to_dict() for row in rows], "limit": limit, "offset": offset})


_SUMS = (
    "requests",
    "successes",
    "failures",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "estimated_tokens",
    "cost_micros",
)


def _totals(query) -> dict:
    row = db.session.execute(query).one()
    totals = {name: int(value or 0) for name, value in zip(_SUMS, row, strict=True)}
    totals["success_rate"] = (
        round(totals["successes"] / totals["requests"], 4) if totals["requests"] else None
    )
    totals["cost_usd"] = usd(totals.pop("cost_micros"))
    return totals


@bp.get("/stats")
def stats():
    """Totals all-time and today, globally or for `?profile=`, from the daily roll-ups."""
    query = select(*(func.sum(getattr(UsageDaily, name)) for name in _SUMS))
    scope = {"profile": None}
    if name := request.args.get("profile"):
        profile = db.session.scalar(select(Profile).where(Profile.name == name))
        if profile is None:
            raise GatewayError(404, f"Profile '{name}' does not exist.", code="profile_not_found")
        query = query.where(UsageDaily.profile_id == profile.id)
        scope["profile"] = name
    today = periods.local_day(utcnow())
    return jsonify(
        {
            **scope,
            "all_time": _totals(query),
            "today": {"day": today.isoformat(), **_totals(query.where(UsageDaily.day == today))},
        }
    )


# -- client keys (F31) -----------------------------------------------------------------


def _client_key_or_404(key_id: int) -> ClientKey:
    row = db.session.get(ClientKey, key_id)
    if row is None:
        raise GatewayError(404, f"No client key with id {key_id}.", code="client_key_not_found")
    return row


@bp.post("/client-keys")
def create_client_key():
    """A key for an app, bound to a profile. The answer holds the key itself, once.
    An `expires_at` must be in the future."""
    data = clientkeys.parse(_json(), creating=True)
    contract()
    row, key = client_keys.create(admin(), data, defaults=client_key_defaults())
    return jsonify({**row.to_dict(utcnow()), "key": key}), 201


@bp.get("/client-keys")
def list_client_keys():
    """Every client key (never the key, only its hint), optionally of one profile."""
    query = select(ClientKey).order_by(ClientKey.id)
    if profile := request.args.get("profile"):
        query = query.join(Profile).where(Profile.name == profile)
    now = utcnow()
    return jsonify({"data": [row.to_dict(now) for row in db.session.scalars(query)]})


@bp.get("/client-keys/<int:key_id>")
def get_client_key(key_id: int):
    return jsonify(_client_key_or_404(key_id).to_dict(utcnow()))


@bp.put("/client-keys/<int:key_id>")
def update_client_key(key_id: int):
    """Change name, profile, models or expiry (the key itself never changes)."""
    row = _client_key_or_404(key_id)
    data = clientkeys.parse(_json(), creating=False)
    contract()
    client_keys.update(admin(), row, data, sorted(_json()))
    return jsonify(row.to_dict(utcnow()))


@bp.post("/client-keys/<int:key_id>/revoke")
def revoke_client_key(key_id: int):
    """Revoke for good: the key answers 401 from now on."""
    row = _client_key_or_404(key_id)
    client_keys.revoke(admin(), row)
    return jsonify(row.to_dict(utcnow()))


@bp.delete("/client-keys/<int:key_id>")
def delete_client_key(key_id: int):
    """Remove the key and its stored responses; its request-log rows keep its id."""
    client_keys.delete(admin(), _client_key_or_404(key_id))
    return "", 204


# -- prices (F42) -------------------------------------------------------------------------


def _models_seen() -> list[str]:
    return list(
        db.session.scalars(select(UsageDaily.model).distinct().where(UsageDaily.model != ""))
    )


@bp.get("/prices")
def list_prices():
    """The effective price of every model used so far and of every override."""
    prices = gateway().prices
    overrides = list(db.session.scalars(select(PriceOverride.model)))
    models = sorted(set(_models_seen()) | set(overrides))
    served = pricing.served_by(db.session)
    data = [pricing.describe(m, prices.effective(m, served.get(m, ()))) for m in models]
    return jsonify({"data": data})


@bp.get("/prices/<path:model>")
def get_price(model: str):
    served = pricing.served_by(db.session).get(model, ())
    return jsonify(pricing.describe(model, gateway().prices.effective(model, served)))


@bp.put("/prices/<path:model>")
def set_price(model: str):
    """Override a model's price: `{"input_per_mtok": "0.15", "output_per_mtok": "0.6"}`,
    and/or a flat `"per_request": "0.002"` USD added to each request."""
    price_commands.set_price(admin(contract), model, _json())
    return jsonify(pricing.describe(model, gateway().prices.price(None, model)))


@bp.delete("/prices/<path:model>")
def delete_price(model: str):
    """Drop the override: the model's price comes from genai-prices again."""
    if not price_commands.delete_price(admin(), model):
        raise GatewayError(404, f"No price override for '{model}'.", code="price_not_found")
    return "", 204


@bp.post("/client-keys/<int:key_id>/topup")
def top_up_client_key(key_id: int):
    """Raise a key's budget: `{"amount": "5.00"}` USD is added to its max_budget (a key
    without one, max_budget null, is a 409)."""
    row = _client_key_or_404(key_id)
    body = _json() if isinstance(_json(), dict) else {}
    client_keys.top_up(admin(contract), row, body.get("amount"))
    return jsonify(row.to_dict(utcnow()))


# -- statistics and export (F44) ----------------------------------------------------------


def _day_arg(name: str, default):
    raw = request.args.get(name)
    if not raw:
        return default
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise GatewayError(400, f"'{name}' must be a date like 2026-11-23.", param=name) from None
    if not validation.FIRST_DAY <= day <= validation.LAST_DAY:
        raise GatewayError(
            400,
            f"'{name}' must be a date from {validation.FIRST_DAY} to {validation.LAST_DAY}.",
            param=name,
        )
    return day


def _choice_arg(name: str, choices: tuple, default: str) -> str:
    value = request.args.get(name) or default
    if value not in choices:
        raise GatewayError(400, f"'{name}' must be one of: {', '.join(choices)}.", param=name)
    return value


@bp.get("/statistics")
def statistics():
    """Totals by day or month, globally or per profile / provider key / client key / model,
    as JSON or CSV: `group`, `period`, `from`, `to` (dates, default the last 30 days),
    `format`. A `from` after `to` is a 400."""
    today = periods.local_day(utcnow())
    group = _choice_arg("group", reports.GROUPS, "global")
    period = _choice_arg("period", reports.PERIODS, "day")
    output = _choice_arg("format", ("json", "csv"), "json")
    # Defaults: the 30 days up to today, or up to `from` when that is later.
    first = _day_arg("from", None)
    last = _day_arg("to", today if first is None else max(today, first))
    first = first or last - timedelta(days=29)
    if first > last:
        raise GatewayError(400, "'from' is after 'to'.", param="from")
    rows = reports.statistics(db.session, group, period, first, last)
    for row in rows:
        row["cost_usd"] = usd(row.pop("cost_micros"))
    if output == "csv":
        buffer = io.StringIO()
        columns = list(rows[0]) if rows else ["period", *reports.STAT_FIELDS[:-1], "cost_usd"]
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        name = f"keyrelay-{group}-{period}-{first}-{last}.csv"
        return Response(
            buffer.getvalue(),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return jsonify(
        {"group": group, "period": period, "from": str(first), "to": str(last), "data": rows}
    )


@bp.get("/keys/statistics")
def key_statistics():
    """The seed's global figures (camelCase): keys, requests, cost today / month / total,
    and the provider keys' daily / monthly cost limits added up (null when no key has one)
    with the share used. Money is an exact decimal string."""
    today = periods.local_day(utcnow())
    keys = reports.key_health(db.session, utcnow())
    cards = reports.overview_cards(db.session, today)
    total = reports.totals(db.session, date.min, today)
    limits = db.session.execute(
        select(
            func.sum(ProviderKey.daily_cost_limit_micros),
            func.sum(ProviderKey.monthly_cost_limit_micros),
        )
    ).one()

    def share(cost: int, limit: int | None) -> float | None:
        return round(100 * cost / limit, 2) if limit else None

    return jsonify(
        {
            "totalKeys": len(keys),
            "activeKeys": sum(1 for k in keys if k.status == "active"),
            "totalCost": usd(total["cost_micros"]),
            "totalRequests": total["requests"],
            "successfulRequests": total["successes"],
            "dailyCost": usd(cards["today"]["cost_micros"]),
            "dailyLimit": None if limits[0] is None else usd(limits[0]),
            "dailyBudgetUsed": share(cards["today"]["cost_micros"], limits[0]),
            "monthlyCost": usd(cards["month"]["cost_micros"]),
            "monthlyLimit": None if limits[1] is None else usd(limits[1]),
            "monthlyBudgetUsed": share(cards["month"]["cost_micros"], limits[1]),
        }
    )


# -- routes (F20, F25) ------------------------------------------------------------------


def _route_or_404(route_id: int) -> Route:
    route = db.session.get(Route, route_id)
    if route is None:
        raise GatewayError(404, f"No route with id {route_id}.", code="route_not_found")
    return route


@bp.get("/routes")
def list_routes():
    """Every route: aliases, prefix patterns, fallback chains, paid flags."""
    rows = db.session.scalars(select(Route).order_by(Route.name))
    return jsonify({"data": [r.to_dict() for r in rows]})


@bp.post("/routes")
def create_route():
    """Add a route: `{"name": "smart", "target": "gpt-4o", "fallbacks": ["gpt-4o-mini"]}`."""
    values = routes.parse(_json(), creating=True)
    contract()
    route = route_commands.create_route(admin(), values)
    return jsonify(route.to_dict()), 201


@bp.get("/routes/<int:route_id>")
def get_route(route_id: int):
    return jsonify(_route_or_404(route_id).to_dict())


@bp.put("/routes/<int:route_id>")
def update_route(route_id: int):
    """Change the fields given. A target with '*' on a route that is not a pattern, or
    'fallback' on a route without fallbacks, clashing with the saved route: a 409."""
    route = _route_or_404(route_id)
    values = routes.parse(_json(), creating=False)
    contract()
    route_commands.update_route(admin(), route, values)
    return jsonify(route.to_dict())


@bp.delete("/routes/<int:route_id>")
def delete_route(route_id: int):
    route_commands.delete_route(admin(), _route_or_404(route_id))
    return "", 204


@bp.get("/profiles")
def list_profiles():
    """Every profile with its settings."""
    profiles = db.session.scalars(select(Profile).order_by(Profile.name))
    return jsonify({"data": [p.to_dict() for p in profiles]})


@bp.put("/profiles/<name>")
def put_profile(name: str):
    """Create a profile or change the settings given: strategy, wait_for_key_seconds
    (wait up to N s for a key instead of failing, F32), use_paid_models (F25)."""
    if not keyring.PROFILE_NAME.match(name):
        raise GatewayError(400, "A profile name may hold letters, digits, '_', '.', '-'.")
    values = keyring.parse_profile_settings(_json())
    contract()
    profile = route_commands.put_profile(admin(), name, values)
    return jsonify(profile.to_dict())


@bp.get("/keys/active")
def active_key():
    """The key the next request of a profile (and model) would go to first."""
    profile = request.args.get("profile") or "default"
    model = request.args.get("model")
    gw = gateway()
    profile_id, strategy = gw.profiles.resolve(profile)[:2]
    now = utcnow()
    keys = [
        k
        for k in gw.keys.keys(profile_id, periods.local_day(now))
        if model is None or k.serves(model)
    ]
    usable = [k for k in keys if selection.effective_status(k, now) == "active"]
    if not usable:
        raise GatewayError(
            404, f"No usable key in profile '{profile}' right now.", code="no_available_keys"
        )
    first = selection.order(usable, strategy or gw.settings.strategy, {})[0]
    return jsonify(_describe(_key_or_404(first.id)))


@bp.get("/jobs")
def list_jobs():
    """The scheduled jobs (F33): schedule, last run and its summary, next run, and the pid
    of the worker that runs them."""
    return jsonify(scheduler.describe(current_app))


# The members' routes (/members, /invites) are on this blueprint too.
from blueprints import admin_api_members  # noqa: E402, F401
