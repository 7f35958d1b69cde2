"""The dashboard's pages (F51–F57): overview, provider keys, profiles, request log, usage,
audit log and users. Server-rendered; htmx only swaps parts of them."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select

from blueprints import charts, formatting
from blueprints.common import (
    client_key_defaults,
    gateway,
    key_health,
    utcnow,
)
from blueprints.web import (
    admin,
    carried,
    carry,
    guard,
    htmx,
    no_cache,
    refuse,
    register_csrf_error,
)
from extensions import db
from gateway import periods, routes, validation
from gateway.admin import client_keys as client_key_commands
from gateway.admin import config as config_commands
from gateway.admin import configfiles, provider_keys
from gateway.admin import prices as price_commands
from gateway.admin import profiles as route_commands
from gateway.admin import users as user_commands
from gateway.admin.errors import InputError, Problems
from gateway.keys import catalog, selection
from gateway.keys import client_keys as clientkeys
from gateway.keys import provider_keys as keyring
from gateway.keys.messages import upstream_message
from gateway.ledger import pricing, reports
from gateway.limits import budgets
from gateway.providers import ADAPTERS
from models import (
    AuditEntry,
    ClientKey,
    PriceOverride,
    Profile,
    ProviderKey,
    RequestLog,
    Route,
    UsageDaily,
    User,
)
from models.types import usd
from models.users import MEMBER, ROLES

bp = Blueprint("dashboard", __name__)


@bp.app_template_global()
def upstream_circuit(base_url: str) -> dict | None:
    """This worker's circuit for a key's upstream (None while closed), for the key rows."""
    return gateway().breaker.state(base_url)


bp.before_request(guard)
bp.after_request(no_cache)
register_csrf_error(bp)

# Limits on the key form (F30); empty means "no limit".
LIMIT_FORM_FIELDS = (
    "rpm_limit",
    "tpm_limit",
    "daily_token_limit",
    "monthly_token_limit",
    "daily_cost_limit",
    "monthly_cost_limit",
    "total_cost_limit",
    "expires_at",
    "weight",
    "priority",
    "model_limits",
)
KEY_FIELDS = (
    "name",
    "provider",
    "profile",
    "secret",
    "base_url",
    "models",
    "responses_api",
    *LIMIT_FORM_FIELDS,
)
PAGE = 50
MAX_ID = validation.MAX_SQL_INT
PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "per_request")


def _key_or_404(key_id: int) -> ProviderKey:
    key = db.session.get(ProviderKey, key_id)
    if key is None:
        abort(404)
    return key


@bp.app_context_processor
def _globals() -> dict:
    return {
        "refresh_seconds": current_app.config["DASHBOARD_REFRESH"],
        "providers": sorted(ADAPTERS),
        "strategies": selection.STRATEGIES,
        "zone_name": periods.zone_name(),
    }


@bp.app_template_filter("num")
def _num(value) -> str:
    return f"{int(value or 0):,}"


@bp.app_template_filter("pct")
def _pct(value) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


formatting.register(bp)
_usd = formatting.usd  # money for people (blueprints/formatting.py)


# -- overview (F51) -------------------------------------------------------------------


@bp.get("/")
def overview():
    """Stat cards, quota bars per key and profile, key health, recent errors."""
    gateway().books.flush()
    now = utcnow()
    keys = key_health(now)
    return render_template(
        "overview.html",
        cards=reports.overview_cards(db.session, periods.local_day(now)),
        keys=keys,
        profiles=reports.profile_usage(db.session, keys),
        errors=reports.recent_errors(db.session, kind="provider"),
        key_names=reports.names(db.session, ProviderKey),
        budgets=reports.client_budgets(db.session, gateway().limiter, now, active_only=True),
        now=now,
    )


# -- provider keys (F52) --------------------------------------------------------------


# Key states a filter can pick: the effective statuses, and `auto_disabled` (disabled by
# KeyRelay after failures, not by an admin).
STATE_CHOICES = (
    "active",
    "cooling_down",
    "limit_reached",
    "disabled",
    "auto_disabled",
    "auth_failed",
    "expired",
    "secret_unreadable",
    "secret_insecure",
)


def _matches(key, q: str, state: str, profile: str) -> bool:
    """Whether a key row passes the keys page's search box and filters."""
    auto = key.status == "disabled" and key.state.by == "system"
    if state and not (key.status == state or (state == "auto_disabled" and auto)):
        return False
    if profile and key.profile != profile:
        return False
    if not q:
        return True
    haystack = " ".join(
        [f"#{key.id}", key.name, key.secret, key.provider, key.profile, *key.models]
    ).lower()
    return all(word in haystack for word in q.lower().split())


def _keys_page(report=None, status=200):
    gateway().books.flush()  # usage this process has answered counts against the limits
    now = utcnow()
    search = {f: (request.values.get(f) or "").strip()[:128] for f in ("q", "state", "profile")}
    rows = key_health(now)
    shown = [k for k in rows if _matches(k, search["q"], search["state"], search["profile"])]
    page = render_template(
        "keys.html",
        keys=shown,
        all_count=len(rows),
        search=search,
        state_choices=STATE_CHOICES,
        profile_names=_profile_names(),
        report=report,
        now=now,
    )
    return page, status


@bp.get("/keys")
def keys():
    return _keys_page()


def _test_keys(ids: list[int]) -> list[dict]:
    """Test each key with a real call (no database connection held meanwhile); one audit
    entry per key, with its result and response time."""
    names = reports.names(db.session, ProviderKey)
    rows = []
    for key_id in ids:
        result = provider_keys.test(admin(), key_id)
        rows.append({"id": key_id, "name": names.get(key_id, ""), **result})
    return rows


@bp.post("/keys/test-all")
def test_all_keys():
    """Test every key (or those the page's filters show) and report response times."""
    ids = list(db.session.scalars(select(ProviderKey.id).order_by(ProviderKey.id)))
    rows = _test_keys(ids)
    passed = sum(1 for r in rows if r["result"] == "ok")
    title = f"Tested {len(rows)} keys: {passed} passed, {len(rows) - passed} failed"
    report = {"title": title, "rows": rows, "empty": "No keys to test."}
    return _keys_page(report)


@bp.post("/keys/restore")
def restore_keys():
    """Re-test auth-failed and automatically disabled keys; those that answer come back."""
    outcome = provider_keys.restore(admin(), current_app.config)
    db.session.expire_all()
    names = reports.names(db.session, ProviderKey)
    rows = [
        {"id": i, "name": names.get(i, ""), "result": "ok", "restored": True, "latency_ms": None}
        for i in outcome["restored"]
    ]
    for key_id, result in sorted(outcome["still_failing"].items()):
        key = db.session.get(ProviderKey, key_id)
        message = upstream_message(key.last_error if key else None)
        rows.append(
            {"id": key_id, "name": names.get(key_id, ""), "result": result, "message": message}
        )
        rows[-1]["latency_ms"] = None
    title = (
        f"Re-tested {outcome['tested']} invalid keys: {len(outcome['restored'])} back in the "
        f"pool, {len(outcome['still_failing'])} still failing"
    )
    empty = "No auth-failed or automatically disabled key to re-test."
    return _keys_page({"title": title, "rows": rows, "empty": empty})


BATCH_ACTIONS = ("enable", "disable", "delete", "test")


@bp.post("/keys/batch")
def batch_keys():
    """Enable, disable, test or delete the selected keys at once (delete asks to confirm)."""
    action = request.form.get("action", "")
    ids = sorted({i for i in request.form.getlist("ids", type=int) if 0 < i <= MAX_ID})
    if action not in BATCH_ACTIONS:
        return refuse("Pick enable, disable, test or delete.", 422)
    # In id order: PostgreSQL returns rows without ORDER BY in whatever order its plan
    # gives (SQLite: by rowid), and the message and tests list them in this order.
    query = select(ProviderKey).where(ProviderKey.id.in_(ids)).order_by(ProviderKey.id)
    selected = list(db.session.scalars(query))
    if not selected:
        flash("Select at least one key first.", "error")
        return redirect(url_for("dashboard.keys"))
    if action == "test":
        rows = _test_keys([k.id for k in selected])
        passed = sum(1 for r in rows if r["result"] == "ok")
        title = f"Tested {len(rows)} selected keys: {passed} passed"
        return _keys_page({"title": title, "rows": rows, "empty": ""})
    if action == "delete" and request.form.get("confirm") != "yes":
        flash("Tick “yes, delete them” to delete the selected keys.", "error")
        return redirect(url_for("dashboard.keys"))
    labels = ", ".join(f"#{k.id}" for k in selected)
    if action == "delete":
        provider_keys.delete_many(admin(), selected)
    else:
        provider_keys.set_enabled_many(admin(), selected, action == "enable")
    flash(f"{action.capitalize()}d {len(selected)} keys: {labels}.", "ok")
    return redirect(url_for("dashboard.keys"))


def _profile_names() -> list[str]:
    return list(db.session.scalars(select(Profile.name).order_by(Profile.name)))


def _key_form(key=None, values=None, errors=None, status=200):
    values = values or {}
    if key is not None and not values:
        values = {
            "name": key.name,
            "provider": key.provider,
            "profile": key.profile.name,
            "base_url": key.base_url,
            "models": ", ".join(key.models),
            **_limit_form_values(key),
        }
    values.pop("secret", None)  # a typed secret is never sent back, not even on error
    page = render_template(
        "key_form.html",
        key=key,
        values=values,
        errors=errors or {},
        profile_names=_profile_names(),
        serves=catalog.explain(key) if key is not None else None,
    )
    return page, status


def _form_values() -> dict:
    return {field: (request.form.get(field) or "").strip() for field in KEY_FIELDS}


def _limit_form_values(key) -> dict:
    """A key's limits as the form shows them: plain numbers, local time, one model a line."""
    limits = keyring.limits_of(key)
    values = {f: "" if limits[f] is None else str(limits[f]) for f in LIMIT_FORM_FIELDS}
    for field in ("daily_cost_limit", "monthly_cost_limit", "total_cost_limit"):
        if values[field]:
            values[field] = values[field].rstrip("0").rstrip(".")
    if key.expires_at is not None:
        values["expires_at"] = key.expires_at.astimezone(periods.zone()).strftime("%Y-%m-%dT%H:%M")
    values["model_limits"] = "\n".join(
        " ".join([model, *(f"{k}={v}" for k, v in sorted(limits.items()))])
        for model, limits in sorted((key.model_limits or {}).items())
    )
    values["responses_api"] = "on" if key.responses_api else ""
    return values


def _form_model_limits(text: str) -> dict | None:
    """`gpt-4o rpm=10 tpm=30000`, one model a line → {"gpt-4o": {"rpm": 10, ...}}."""
    result = {}
    for number, line in enumerate(text.splitlines(), start=1):
        model, *pairs = line.split()
        if not pairs or not all(p.count("=") == 1 for p in pairs):
            raise InputError(
                "model_limits", f"Line {number}: write a model then rpm=N and/or tpm=N."
            )
        result[model] = dict(p.split("=") for p in pairs)
    return result or None


def _form_time(text: str) -> str | None:
    """A datetime-local value (in KEYRELAY_TIMEZONE) as ISO 8601 with the zone."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError("expires_at", "Give a date and time like 2027-01-31 18:00.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=periods.zone())
    return moment.isoformat()


def _key_input(values: dict, creating: bool) -> keyring.KeyInput:
    """The form's key, checked; InputError carries every bad field (the form's own
    fields and the parser's)."""
    problems = Problems()
    data = {k: v for k, v in values.items() if v != "" and k not in LIMIT_FORM_FIELDS}
    for field in LIMIT_FORM_FIELDS:
        data[field] = values[field] or None
    lines = [line for line in values["model_limits"].splitlines() if line.strip()]
    with problems.field():
        data["model_limits"] = _form_model_limits("\n".join(lines))
    with problems.field():
        data["expires_at"] = _form_time(values["expires_at"])
    data["responses_api"] = values.get("responses_api") == "on"
    if not creating and "models" in request.form and not values["models"]:
        data["models"] = []  # emptied: none declared, it serves what its test discovers
    if not creating and not values["secret"]:
        data.pop("secret", None)
    bad = {error.field for error in problems.found}
    try:
        parsed = keyring.parse_key_input({k: v for k, v in data.items() if k not in bad}, creating)
    except InputError as exc:
        for field, message in exc.errors:
            problems.add(InputError(field, message, exc.status))
    problems.check()
    return parsed


@bp.get("/keys/new")
def new_key():
    return _key_form(values={"provider": "openai", "profile": "default"})


@bp.post("/keys")
def create_key():
    """Save a new key, then test it at once (unless asked not to) and say how that went."""
    values = _form_values()
    values["skip_test"] = "on" if request.form.get("skip_test") == "on" else ""
    try:
        key = provider_keys.create(admin(), _key_input(values, creating=True))
    except InputError as exc:
        db.session.rollback()
        return _key_form(values=values, errors=exc.by_field(), status=422)
    key_id, label = key.id, f"#{key.id} {key.name} ({key.secret_masked})"
    if values["skip_test"]:
        flash(f"Added key {label} (not tested).", "ok")
    else:
        _flash_test(f"Added key {label}.", gateway().tester.test(key_id))
    return redirect(url_for("dashboard.keys"))


def _flash_test(prefix: str, result: dict) -> None:
    outcome = result["result"]
    if outcome == "ok":
        models = result.get("models") or []
        passed = f"{prefix} Test passed: the provider answered ({len(models)} models)."
        flash(f"{passed} {result['note']}" if result.get("note") else passed, "ok")
    else:
        flash(f"{prefix} Test: {outcome.replace('_', ' ')} — {result['message']}", "error")


@bp.get("/keys/<int:key_id>/edit")
def edit_key(key_id: int):
    return _key_form(key=_key_or_404(key_id))


@bp.post("/keys/<int:key_id>/edit")
def update_key(key_id: int):
    key = _key_or_404(key_id)
    values = _form_values()
    values["skip_test"] = "on" if request.form.get("skip_test") == "on" else ""
    changed = sorted(k for k, v in values.items() if v and k not in ("secret", "skip_test"))
    try:
        data = _key_input(values, creating=False)
        moved = provider_keys.update(admin(), key, data, changed)
    except InputError as exc:
        db.session.rollback()
        return _key_form(key=_key_or_404(key_id), values=values, errors=exc.by_field(), status=422)
    label = f"#{key_id} {key.name}"
    if moved and values["skip_test"]:
        flash(f"Saved key {label} (not tested).", "ok")
    elif moved:  # another upstream: its models are learnt again
        _flash_test(f"Saved key {label}.", gateway().tester.test(key_id))
    else:
        flash(f"Saved key {label}.", "ok")
    return redirect(url_for("dashboard.keys"))


@bp.get("/keys/<int:key_id>/delete")
def confirm_delete_key(key_id: int):
    return render_template("key_delete.html", key=_key_or_404(key_id))


@bp.post("/keys/<int:key_id>/delete")
def delete_key(key_id: int):
    key = _key_or_404(key_id)
    name = key.name
    provider_keys.delete(admin(), key)
    flash(f"Deleted key #{key_id} {name}. Its request log and usage stay.", "ok")
    return redirect(url_for("dashboard.keys"))


def _key_row(key_id: int, message: tuple[str, str] | None = None):
    """The key's table row (htmx swaps it in place), or back to the list without htmx."""
    if not htmx():
        if message:
            flash(message[1], message[0])
        return redirect(url_for("dashboard.keys"))
    now = utcnow()
    row = next(k for k in key_health(now) if k.id == key_id)
    return render_template("partials/key_row.html", key=row, message=message, now=now)


@bp.post("/keys/<int:key_id>/toggle")
def toggle_key(key_id: int):
    key = _key_or_404(key_id)
    enable = key.status == "disabled"
    provider_keys.set_enabled(admin(), key, enable)
    return _key_row(key_id, ("ok", f"Key #{key_id} {'enabled' if enable else 'disabled'}."))


@bp.post("/keys/<int:key_id>/default")
def set_default_key(key_id: int):
    """Make the key its profile's default: tried first, whatever the strategy, while usable."""
    key = _key_or_404(key_id)
    provider_keys.set_default(admin(), key)
    # The whole page again (not the row): the profile's former default loses its mark.
    flash(f"Key #{key_id} {key.name} is now the default key of profile {key.profile.name}.", "ok")
    return redirect(url_for("dashboard.keys"))


@bp.post("/keys/<int:key_id>/test")
def test_key(key_id: int):
    _key_or_404(key_id)
    [result] = _test_keys([key_id])
    took = f" ({result['latency_ms']:,} ms)" if result["latency_ms"] is not None else ""
    if result["result"] == "ok":
        models = len(result["models"] or [])
        message = ("ok", f"Key #{key_id}: test passed ({models} models){took}.")
    else:
        outcome = result["result"].replace("_", " ")
        message = ("error", f"Key #{key_id}: {outcome} — {result['message']}{took}")
    return _key_row(key_id, message)


@bp.route("/keys/import", methods=["GET", "POST"])
def import_keys():
    """Paste many secrets, one a line, with shared provider/profile/limits; a report."""
    shared_fields = ("provider", "profile", "base_url", "models", "daily_token_limit")
    if request.method == "GET":
        values = {"provider": "openai", "profile": "default", "prefix": "imported"}
        return render_template(
            "keys_import.html",
            values=values,
            errors={},
            report=None,
            profile_names=_profile_names(),
        )
    values = {f: (request.form.get(f) or "").strip() for f in (*shared_fields, "prefix")}
    shared = {f: values[f] for f in shared_fields if values[f]}
    text = request.form.get("secrets") or ""
    errors = {}
    if not text.strip():
        errors["secrets"] = "Paste at least one key, one a line."
    if values["prefix"] and not keyring.PROFILE_NAME.match(values["prefix"]):
        errors["prefix"] = "Use letters, digits, '_', '.', '-'."
    report = None
    if not errors:
        try:
            report = provider_keys.import_many(admin(), text, shared, values["prefix"])
        except InputError as exc:
            db.session.rollback()
            errors[exc.field] = str(exc)
    if errors:
        page = render_template(
            "keys_import.html",
            values=values,
            errors=errors,
            report=None,
            profile_names=_profile_names(),
        )
        return page, 422
    values["skip_test"] = "on" if request.form.get("skip_test") == "on" else ""
    tests = {} if values["skip_test"] else _test_imported(report)
    return render_template(
        "keys_import.html",
        values=values,
        errors={},
        report=report,
        tests=tests,
        profile_names=_profile_names(),
    )


def _test_imported(report) -> dict[int, dict]:
    """Test each key an import added: {key id: its test's result}."""
    return gateway().tester.test_many([entry["id"] for entry in report.added])


# -- profiles (F53) -------------------------------------------------------------------


@bp.get("/profiles")
def profiles():
    now = utcnow()
    keys = key_health(now)
    return render_template(
        "profiles.html", profiles=reports.profile_usage(db.session, keys), errors={}, values={}
    )


PROFILE_FORM_FIELDS = ("strategy", "wait_for_key_seconds", "use_paid_models")
_PAID_CHOICES = {"default": None, "yes": True, "no": False}


def _profile_settings(form) -> dict:
    """The profile form's settings, checked like the JSON API's."""
    raw = {f: (form.get(f) or "").strip() for f in PROFILE_FORM_FIELDS if f in form}
    problems = Problems()
    if "use_paid_models" in raw:
        if raw["use_paid_models"] not in _PAID_CHOICES:
            problems.add(InputError("use_paid_models", "Pick default, yes or no."))
            del raw["use_paid_models"]  # said; the other settings are still checked
        else:
            raw["use_paid_models"] = _PAID_CHOICES[raw["use_paid_models"]]
    settings = {}
    with problems.field():
        settings = keyring.parse_profile_settings(raw)
    problems.check()
    return settings


def _profiles_page(values: dict, errors: dict, status: int = 200):
    keys = key_health(utcnow())
    page = render_template(
        "profiles.html",
        profiles=reports.profile_usage(db.session, keys),
        errors=errors,
        values=values,
    )
    return page, status


@bp.post("/profiles")
def create_profile():
    values = {f: (request.form.get(f) or "").strip() for f in ("name", *PROFILE_FORM_FIELDS)}
    problems, settings = Problems(), {}
    with problems.field():
        route_commands.check_new_name(admin(), values["name"])
    with problems.field():
        settings = _profile_settings(request.form)
    try:
        problems.check()  # every bad field at once
        route_commands.create_profile(admin(), values["name"], settings)
    except InputError as exc:
        db.session.rollback()
        return _profiles_page(values, exc.by_field(), 422)
    flash(f"Created profile {values['name']}.", "ok")
    return redirect(url_for("dashboard.profiles"))


@bp.post("/profiles/<int:profile_id>")
def update_profile(profile_id: int):
    profile = db.session.get(Profile, profile_id) or abort(404)
    try:
        settings = _profile_settings(request.form)
    except InputError as exc:
        return refuse(exc.sentence(), 422)
    route_commands.update_profile(admin(), profile, settings)
    wait = (
        f", waits up to {profile.wait_for_key_seconds} s for a key"
        if profile.wait_for_key_seconds
        else ""
    )
    flash(
        f"Profile {profile.name} now uses {profile.strategy or 'the default'} strategy{wait}.", "ok"
    )
    return redirect(url_for("dashboard.profiles"))


# -- request log (F54) ----------------------------------------------------------------


def _cursor() -> int | None:
    """`?before=<id>` of a paged list; anything but an id a row can have: the first page."""
    before = request.args.get("before", type=int)
    return before if before is not None and 0 < before <= validation.MAX_SQL_INT else None


def _log_labels() -> dict:
    """Names the log and the detail page show for ids: keys, profiles, client keys."""
    return {
        "key_names": reports.names(db.session, ProviderKey),
        "profile_names": reports.names(db.session, Profile),
        "client_names": reports.names(db.session, ClientKey),
    }


@bp.get("/logs")
def logs():
    gateway().books.flush()
    filters = reports.LogFilter.from_args(request.args)
    before = _cursor()
    errors, rows, cursor = {}, [], None
    try:
        rows, cursor = reports.search_logs(db.session, filters, before, PAGE)
    except InputError as exc:
        errors[exc.field] = str(exc)
    page = render_template(
        "logs.html",
        rows=rows,
        cursor=cursor,
        before=before,
        filters=filters,
        errors=errors,
        choices=reports.log_choices(db.session),
        error_kind=reports.error_kind,
        **_log_labels(),
    )
    return page, (422 if errors else 200)


@bp.get("/requests")
def find_request():
    """Search by request id (`x-keyrelay-request-id`, its beginning, or its end): its page
    when one request matches, else the log filtered by it."""
    wanted = (request.args.get("id") or "").strip().lower()
    if not wanted:
        return redirect(url_for("dashboard.logs"))
    gateway().books.flush()
    try:
        found, _ = reports.search_logs(db.session, reports.LogFilter(request=wanted), None, 2)
        if not found:  # not a beginning: perhaps the id's end (its random part)
            by_end = reports.LogFilter(request=wanted, request_end=True)
            found, _ = reports.search_logs(db.session, by_end, None, 2)
    except InputError:
        found = []
    if len(found) == 1:
        return redirect(url_for("dashboard.request_detail", request_id=found[0].request_id))
    return redirect(url_for("dashboard.logs", request=wanted))


@bp.get("/requests/<request_id>")
def request_detail(request_id: str):
    """Everything about one request: attempts, keys, statuses, timings, tokens, cost, who
    asked, in which dialect, asked vs served model, what the upstream said."""
    gateway().books.flush()
    row = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id))
    if row is None:
        abort(404)
    return render_template(
        "request.html", row=row, error_kind=reports.error_kind(row), **_log_labels()
    )


@bp.get("/logs/<int:log_id>/attempts")
def log_attempts(log_id: int):
    row = db.session.get(RequestLog, log_id) or abort(404)
    return render_template("partials/attempts.html", row=row, **_log_labels())


# -- usage charts (F55) ---------------------------------------------------------------


@bp.get("/usage")
def usage():
    gateway().books.flush()
    by = "key" if request.args.get("by") == "key" else "model"
    today = periods.local_day(utcnow())
    series = reports.daily_series(db.session, today, by)
    return render_template(
        "usage.html",
        by=by,
        month_start=(today.replace(day=1) - timedelta(days=365)).replace(day=1).isoformat(),
        tokens=charts.stacked(series.days, series.tokens, "tokens"),
        requests=charts.stacked(series.days, series.requests, "requests"),
        cost=charts.stacked(series.days, series.cost_micros, "USD", fmt=_usd),
    )


# -- audit log (F57) ------------------------------------------------------------------


AUDIT_FILTERS = ("actor", "action", "target")


@bp.get("/audit")
def audit_log():
    """The audit log, newest first, filtered by actor, action (or its start: `key.`) and
    target (`key:3`)."""
    before = _cursor()
    filters = {f: (request.args.get(f) or "").strip()[:160] for f in AUDIT_FILTERS}
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(PAGE + 1)
    if filters["actor"]:
        query = query.where(AuditEntry.actor == filters["actor"])
    if filters["action"]:
        action = filters["action"]
        exact = AuditEntry.action == action
        # Actions are lower case; a typed beginning matches whatever its case, on PostgreSQL
        # too (its LIKE is case-sensitive, SQLite's is not), and the index stays usable.
        begins = AuditEntry.action.startswith(action.lower(), autoescape=True)
        query = query.where(begins if action.endswith(".") else exact)
    if filters["target"]:
        query = query.where(AuditEntry.target == filters["target"])
    if before:
        query = query.where(AuditEntry.id < before)
    entries = list(db.session.scalars(query))
    cursor = entries[PAGE - 1].id if len(entries) > PAGE else None
    choices = {
        "actor": list(db.session.scalars(select(AuditEntry.actor).distinct().order_by("actor"))),
        "action": list(db.session.scalars(select(AuditEntry.action).distinct().order_by("action"))),
    }
    return render_template(
        "audit.html",
        entries=entries[:PAGE],
        cursor=cursor,
        before=before,
        filters=filters,
        query={k: v for k, v in filters.items() if v},
        choices=choices,
    )


# -- users (F50) ----------------------------------------------------------------------


def _admins_only():
    if not current_user.is_admin:
        return refuse("Only admins manage users.", 403)
    return None


@bp.get("/users")
def users():
    return _admins_only() or _users_page({}, {"role": "viewer"})


def _users_page(errors: dict, values: dict, status: int = 200):
    # Members are on the Members page.
    query = select(User).where(User.role != MEMBER).order_by(User.username)
    listing = db.session.scalars(query).all()
    page = render_template("users.html", users=listing, errors=errors, values=values, roles=ROLES)
    return page, status


@bp.post("/users")
def create_user():
    values = {f: (request.form.get(f) or "").strip() for f in ("username", "role")}
    password = request.form.get("password") or ""
    try:
        user = user_commands.create(admin(), values["username"], password, values["role"])
    except InputError as exc:
        db.session.rollback()
        return _users_page(exc.by_field(), values, 422)
    flash(f"Created {user.role} {user.username}.", "ok")
    return redirect(url_for("dashboard.users"))


@bp.post("/users/<int:user_id>/delete")
def delete_user(user_id: int):
    user = db.session.get(User, user_id) or abort(404)
    try:
        user_commands.delete(admin(), user, by=current_user)
    except InputError as exc:
        return refuse(str(exc), 400)
    flash(f"Removed user {user.username}.", "ok")
    return redirect(url_for("dashboard.users"))


# -- client keys (F53) ----------------------------------------------------------------


CREATED_CLIENT_KEY = "dashboard_new_client_key"
CLIENT_KEY_FORM = ("name", "profile", "models", "expires_at", *clientkeys.LIMITS)
CLIENT_KEY_FORM += clientkeys.BUDGET


def _client_keys_page(errors=None, values=None, status=200):
    gateway().books.flush()
    now = utcnow()
    rows = db.session.scalars(select(ClientKey).order_by(ClientKey.id.desc())).all()
    page = render_template(
        "client_keys.html",
        rows=rows,
        budget_use={b.id: b for b in reports.client_budgets(db.session, gateway().limiter, now)},
        durations=budgets.DURATIONS,
        now=now,
        errors=errors or {},
        values=values or {"profile": "default", "models": "*", **_limit_defaults()},
        created=carried(CREATED_CLIENT_KEY),  # the new key, on the page after its form, once
        profile_names=_profile_names(),
    )
    return page, status


def _limit_defaults() -> dict[str, str]:
    return {k: ("" if v is None else str(v)) for k, v in client_key_defaults().items()}


@bp.get("/client-keys")
def client_keys():
    return _client_keys_page()


def _client_key_form(creating: bool) -> tuple[dict, clientkeys.ClientKeyInput | None, dict]:
    """The client-key form as typed, its parsed input, and {field: message} of every bad
    field (create and edit check alike)."""
    values = {f: (request.form.get(f) or "").strip() for f in CLIENT_KEY_FORM}
    data = {k: v for k, v in values.items() if v}
    for name in clientkeys.LIMITS:  # an empty limit field means "unlimited"
        data.setdefault(name, None)
    if not creating:  # every field of the edit form is given: empty clears it
        data.setdefault("models", "*")
        for name in ("expires_at", *clientkeys.BUDGET):
            data.setdefault(name, None)
    problems = Problems()
    if data.get("expires_at") and len(data["expires_at"]) == 16:  # <input type=datetime-local>
        with problems.field():
            data["expires_at"] = _form_time(data["expires_at"])  # in KEYRELAY_TIMEZONE
        if problems.found:
            del data["expires_at"]  # its error is kept; the other fields are still checked
    parsed = None
    with problems.field():
        parsed = clientkeys.parse(data, creating=creating)
    return values, (None if problems.found else parsed), problems.by_field()


@bp.post("/client-keys")
def create_client_key():
    """Create a key; it is shown once on the page the redirect leads to (a reload of that
    page shows nothing and creates nothing)."""
    values, data, errors = _client_key_form(creating=True)
    if data is not None:
        try:
            row, key = client_key_commands.create(admin(), data)
        except InputError as exc:
            errors = exc.by_field()
    if errors:
        # The form again with every bad field (a 422, not a redirect): sending it again
        # changes nothing while it is bad, so a reload is harmless.
        db.session.rollback()
        return _client_keys_page(errors, values, status=422)
    carry(CREATED_CLIENT_KEY, {"id": row.id, "name": row.name, "key": key})
    return redirect(url_for("dashboard.client_keys"))


def _client_key_or_404(key_id: int) -> ClientKey:
    return db.session.get(ClientKey, key_id) or abort(404)


def _client_key_values(row: ClientKey) -> dict[str, str]:
    """A key's settings as its edit form shows them (never the key itself)."""
    budget = ""
    if row.max_budget_micros is not None:
        budget = usd(row.max_budget_micros).rstrip("0").rstrip(".")
    expires = ""
    if row.expires_at is not None:
        expires = row.expires_at.astimezone(periods.zone()).strftime("%Y-%m-%dT%H:%M")
    limits = {n: "" if getattr(row, n) is None else str(getattr(row, n)) for n in clientkeys.LIMITS}
    return {
        "name": row.name,
        "profile": row.profile.name,
        "models": ", ".join(row.models) if row.models else "*",
        "expires_at": expires,
        "max_budget": budget,
        "budget_duration": row.budget_duration or "",
        **limits,
    }


def _client_key_edit_page(row: ClientKey, values=None, errors=None, status=200):
    page = render_template(
        "client_key_edit.html",
        row=row,
        values=values or _client_key_values(row),
        errors=errors or {},
        durations=budgets.DURATIONS,
        profile_names=_profile_names(),
    )
    return page, status


@bp.get("/client-keys/<int:key_id>/edit")
def edit_client_key(key_id: int):
    """The key's settings in a form: name, profile, models, limits, budget, expiry."""
    return _client_key_edit_page(_client_key_or_404(key_id))


@bp.post("/client-keys/<int:key_id>/edit")
def update_client_key(key_id: int):
    """Save the key's settings (the key itself never changes), checked as on create."""
    row = _client_key_or_404(key_id)
    values, data, errors = _client_key_form(creating=False)
    if data is not None:
        before = _client_key_values(row)
        changed = sorted(f for f in CLIENT_KEY_FORM if values.get(f, "") != before.get(f, ""))
        try:
            client_key_commands.update(admin(), row, data, changed)
        except InputError as exc:
            errors = exc.by_field()
    if errors:  # the form again, as typed (a 422: a reload changes nothing)
        db.session.rollback()
        return _client_key_edit_page(_client_key_or_404(key_id), values, errors, 422)
    flash(f"Saved client key #{row.id} {row.name}.", "ok")
    return redirect(url_for("dashboard.client_keys"))


@bp.post("/client-keys/<int:key_id>/topup")
def top_up_client_key(key_id: int):
    row = db.session.get(ClientKey, key_id) or abort(404)
    try:
        amount = client_key_commands.top_up(admin(), row, request.form.get("amount"))
    except InputError as exc:
        db.session.rollback()
        return refuse(str(exc), 422)
    flash(f"Added {_usd(amount)} to the budget of #{row.id} {row.name}.", "ok")
    return redirect(url_for("dashboard.client_keys"))


@bp.get("/client-keys/<int:key_id>/revoke")
def confirm_revoke_client_key(key_id: int):
    row = db.session.get(ClientKey, key_id) or abort(404)
    return render_template("client_key_revoke.html", row=row)


@bp.post("/client-keys/<int:key_id>/revoke")
def revoke_client_key(key_id: int):
    row = db.session.get(ClientKey, key_id) or abort(404)
    client_key_commands.revoke(admin(), row)
    flash(f"Revoked client key #{row.id} {row.name}: it is refused from now on.", "ok")
    return redirect(url_for("dashboard.client_keys"))


# -- prices (F42) ----------------------------------------------------------------------


def _prices_page(errors=None, values=None, status=200):
    gateway().books.flush()
    prices = gateway().prices
    seen = set(db.session.scalars(select(UsageDaily.model).distinct()))
    overrides = set(db.session.scalars(select(PriceOverride.model)))
    routes_by_name = {r.name: r for r in db.session.scalars(select(Route))}
    models = sorted((seen | overrides) - {""})
    served = pricing.served_by(db.session)
    rows = []
    for model in models:
        row = pricing.describe(model, prices.effective(model, served.get(model, ())))
        route = routes_by_name.get(model)
        if route is not None and model not in overrides:
            # A route alias is priced as the model that serves it, never "unknown".
            row = {**row, "route": route.target or "its fallbacks"}
        rows.append(row)
    unpriced = pricing.unpriced_asked(db.session, prices, set(routes_by_name))
    page = render_template(
        "prices.html",
        rows=rows,
        errors=errors or {},
        values=values or {},
        overrides=overrides,
        unpriced=unpriced,
    )
    return page, status


@bp.get("/prices")
def prices():
    return _prices_page()


@bp.post("/prices")
def set_price():
    values = {f: (request.form.get(f) or "").strip() for f in ("model", *PRICE_FIELDS)}
    try:
        if not values["model"]:
            raise InputError("model", "Give the model id, as clients send it.")
        price_commands.set_price(admin(), values["model"], values)
    except InputError as exc:
        errors: dict[str, str] = {}
        for field, message in exc.errors:  # every bad field; one the form lacks: by the model
            errors.setdefault(field if field in PRICE_FIELDS else "model", message)
        return _prices_page(errors, values, 422)
    flash(f"Price of {values['model']} set.", "ok")
    return redirect(url_for("dashboard.prices"))


@bp.post("/prices/delete")
def delete_price():
    model = (request.form.get("model") or "").strip()
    if not price_commands.delete_price(admin(), model):
        abort(404)
    flash(f"{model} is priced from genai-prices again.", "ok")
    return redirect(url_for("dashboard.prices"))


# -- routes and configuration files (F20, F58) ---------------------------------------------


def _routes_page(errors: dict | None = None, values: dict | None = None, status=200, report=None):
    rows = db.session.scalars(select(Route).order_by(Route.name)).all()
    page = render_template(
        "routes.html",
        routes=rows,
        errors=errors or {},
        values=values or {"kind": "models"},
        kinds=configfiles.KINDS,
        report=report,
        strategies=selection.STRATEGIES,
        overflow_modes=routes.OVERFLOW_MODES,
    )
    return page, status


@bp.get("/routes")
def routes_page():
    return _routes_page()


ROUTE_FORM = ("name", "target", "fallbacks", "strategy", "on_context_overflow", "context_window")


def _route_form() -> tuple[dict, dict]:
    """The route form as typed, and as routes.parse reads it (every field given)."""
    values = {f: (request.form.get(f) or "").strip() for f in ROUTE_FORM}
    return values, {**values, "paid": request.form.get("paid") == "on"}


@bp.post("/routes")
def create_route():
    values, data = _route_form()
    try:
        route = route_commands.create_route(admin(), routes.parse(data, creating=True))
    except InputError as exc:  # the form again with every bad field (a reload changes nothing)
        db.session.rollback()
        return _routes_page(exc.by_field(), {**data, "kind": "models"}, 422)
    flash(f"Route {route.name} added.", "ok")
    return redirect(url_for("dashboard.routes_page"))


def _route_edit_page(route: Route, values: dict | None = None, errors=None, status=200):
    if values is None:  # the route as saved
        values = {
            **{f: "" if getattr(route, f) is None else str(getattr(route, f)) for f in ROUTE_FORM},
            "fallbacks": ", ".join(route.fallbacks or []),
            "paid": route.paid,
        }
    page = render_template(
        "route_edit.html",
        route=route,
        values=values,
        errors=errors or {},
        strategies=selection.STRATEGIES,
        overflow_modes=routes.OVERFLOW_MODES,
    )
    return page, status


@bp.get("/routes/<int:route_id>/edit")
def edit_route(route_id: int):
    """The route in a form: name, target, fallbacks, paid, strategy, what a long prompt does."""
    return _route_edit_page(db.session.get(Route, route_id) or abort(404))


@bp.post("/routes/<int:route_id>/edit")
def update_route(route_id: int):
    """Save the route, checked as on create."""
    route = db.session.get(Route, route_id) or abort(404)
    values, data = _route_form()
    try:
        route_commands.update_route(admin(), route, routes.parse(data, creating=True))
    except InputError as exc:  # the form again, as typed (a reload changes nothing)
        db.session.rollback()
        route = db.session.get(Route, route_id) or abort(404)
        return _route_edit_page(route, data, exc.by_field(), 422)
    flash(f"Route {route.name} saved.", "ok")
    return redirect(url_for("dashboard.routes_page"))


@bp.post("/routes/<int:route_id>/delete")
def delete_route(route_id: int):
    route = db.session.get(Route, route_id) or abort(404)
    route_commands.delete_route(admin(), route)
    flash(f"Route {route.name} deleted.", "ok")
    return redirect(url_for("dashboard.routes_page"))


@bp.get("/config/<kind>.yaml")
def export_config(kind: str):
    if kind not in configfiles.KINDS:
        abort(404)
    text = configfiles.export(db.session, kind)
    headers = {"Content-Disposition": f'attachment; filename="{kind}.yaml"'}
    return Response(text, mimetype="application/yaml", headers=headers)


@bp.post("/config/import")
def import_config():
    values = {
        "kind": request.form.get("kind") or "",
        "text": request.form.get("text") or "",
        "replace": request.form.get("replace") == "on",
    }
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        values["text"] = upload.read().decode("utf-8", "replace")
    dry_run = request.form.get("action") == "check"
    try:
        report = config_commands.import_file(
            admin(), values["kind"], values["text"], values["replace"], dry_run
        )
    except configfiles.ConfigFileError as exc:
        return _routes_page({"text": str(exc)}, values, 422)
    if dry_run:  # a page, not a redirect: a check changes nothing, so sending it again is safe
        flash(f"{values['kind']}.yaml is valid; it would apply: {report.summary()}.", "ok")
        return _routes_page(values=values, report=report)
    flash(f"Imported {values['kind']}.yaml: {report.summary()}.", "ok")
    return redirect(url_for("dashboard.routes_page"))
