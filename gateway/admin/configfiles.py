"""Configuration as files (F58): routes as `models.yaml`, limits as `limits.yaml`.

Export writes what the database holds; import checks the whole file first and then
applies it in one transaction, so a file with one bad entry changes nothing. Entries
are matched by name (routes, profiles) or by id (provider keys, whose names need not be
unique; `name` and `profile` are checked against the key as a guard). Secrets never
appear in either file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import routes
from gateway.admin.errors import InputError
from gateway.keys import provider_keys as keyring
from gateway.validation import MAX_SQL_INT
from models import Profile, ProviderKey, Route

KINDS = ("models", "limits")


class ConfigFileError(InputError):
    """A file that cannot be imported: the admin InputError whose field, `where`, names the
    entry (`keys[2].rpm_limit`); the message starts with it, as a file has no form fields."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(where, f"{where}: {message}" if where else message)
        self.where = where


@dataclass
class ImportReport:
    """What an import did (or, with dry_run, would do)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{len(self.created)} created",
            f"{len(self.updated)} updated",
            f"{len(self.deleted)} deleted",
        ]
        return ", ".join(parts)


_HEADERS = {
    "models": (
        "# KeyRelay routes (models.yaml). name: the model a client asks for, or a prefix\n"
        "# pattern ending in '*'; target: the model sent upstream ('*' = what matched);\n"
        "# fallbacks: models tried in order; paid: skipped when paid models are off;\n"
        "# strategy: key selection (null: the profile's); on_context_overflow: error,\n"
        "# fallback (the next model) or prune (oldest turns); context_window: for prune.\n"
    ),
    "limits": (
        "# KeyRelay limits (limits.yaml). Keys are matched by id; costs are USD; days and\n"
        "# months follow KEYRELAY_TIMEZONE; null means no limit. Secrets are never here.\n"
    ),
}


def export(session: Session, kind: str) -> str:
    """The YAML text of `models` (routes) or `limits` (profiles' settings, keys' limits)."""
    if kind == "models":
        rows = session.scalars(select(Route).order_by(Route.name))
        data = {"routes": [_route_entry(r) for r in rows]}
    else:
        profiles = session.scalars(select(Profile).order_by(Profile.name))
        keys = session.scalars(select(ProviderKey).order_by(ProviderKey.id))
        data = {
            "profiles": {p.name: _profile_entry(p) for p in profiles},
            "keys": [_key_entry(k) for k in keys],
        }
    return _HEADERS[kind] + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# Route fields left out of models.yaml at their defaults (an entry without one gets it).
_ROUTE_DEFAULTS = {"strategy": None, "on_context_overflow": routes.ERROR, "context_window": None}


def _route_entry(route: Route) -> dict:
    entry = route.to_dict()
    entry.pop("id")
    for name, default in _ROUTE_DEFAULTS.items():
        if entry.get(name) == default:
            entry.pop(name)
    return entry


def _profile_entry(profile: Profile) -> dict:
    entry = profile.to_dict()
    for name in ("id", "name"):
        entry.pop(name)
    return entry


def _key_entry(key: ProviderKey) -> dict:
    return {"id": key.id, "name": key.name, "profile": key.profile.name, **keyring.limits_of(key)}


def _load(text: str, top: tuple[str, ...]) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigFileError(where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except (ValueError, OverflowError) as exc:  # a date YAML reads but Python has not
        raise ConfigFileError(
            "", f"a value is not valid ({exc}); write dates as YYYY-MM-DD, e.g. 2026-12-31"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict) or set(data) - set(top):
        raise ConfigFileError("", f"the file must be a mapping with: {', '.join(top)}")
    return data


def import_text(
    session: Session, kind: str, text: str, now: datetime, replace: bool = False
) -> ImportReport:
    """Apply a models.yaml or limits.yaml text; ConfigFileError names the first bad entry.

    With `replace`, routes missing from models.yaml are deleted (limits are never deleted:
    a key left out of limits.yaml keeps its limits). The caller commits.
    """
    if kind == "models":
        return _import_models(session, _load(text, ("routes",)), now, replace)
    return _import_limits(session, _load(text, ("profiles", "keys")), now)


def _import_models(session: Session, data: dict, now: datetime, replace: bool) -> ImportReport:
    entries = data.get("routes") or []
    if not isinstance(entries, list):
        raise ConfigFileError("routes", "must be a list of routes")
    parsed, names = [], set()
    for index, entry in enumerate(entries):
        where = f"routes[{index}]"
        try:
            values = routes.parse(entry, creating=True)
        except InputError as exc:
            raise ConfigFileError(f"{where}.{exc.field}", str(exc)) from None
        if values["name"] in names:
            raise ConfigFileError(f"{where}.name", f"'{values['name']}' is in the file twice")
        names.add(values["name"])
        values.setdefault("target", None)
        parsed.append(values)
    report = ImportReport()
    existing = {r.name: r for r in session.scalars(select(Route))}
    for index, values in enumerate(parsed):
        route = existing.get(values["name"])
        try:
            routes.save(session, values, now, route)
        except InputError as exc:
            raise ConfigFileError(f"routes[{index}].{exc.field}", str(exc)) from None
        (report.updated if route else report.created).append(f"route {values['name']}")
    if replace:
        for name, route in existing.items():
            if name not in names:
                session.delete(route)
                report.deleted.append(f"route {name}")
    session.flush()
    return report


def _import_limits(session: Session, data: dict, now: datetime) -> ImportReport:
    report = ImportReport()
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigFileError("profiles", "must map profile names to their settings")
    keys = data.get("keys") or []
    if not isinstance(keys, list):
        raise ConfigFileError("keys", "must be a list of keys with their limits")
    profile_values = {}
    for name, entry in profiles.items():
        where = f"profiles.{name}"
        if not isinstance(name, str) or not keyring.PROFILE_NAME.match(name):
            raise ConfigFileError(where, "not a valid profile name")
        try:
            profile_values[name] = keyring.parse_profile_settings(entry or {})
        except InputError as exc:
            raise ConfigFileError(f"{where}.{exc.field}", str(exc)) from None
    key_values = []
    for index, entry in enumerate(keys):
        where = f"keys[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int):
            raise ConfigFileError(where, "each key needs its numeric 'id' (see an export)")
        if not 0 < entry["id"] <= MAX_SQL_INT:
            raise ConfigFileError(f"{where}.id", f"no provider key with id {entry['id']}")
        key = session.get(ProviderKey, entry["id"])
        if key is None:
            raise ConfigFileError(f"{where}.id", f"no provider key with id {entry['id']}")
        for guard, actual in (("name", key.name), ("profile", key.profile.name)):
            if guard in entry and entry[guard] != actual:
                raise ConfigFileError(
                    f"{where}.{guard}", f"key {key.id} is '{actual}', not '{entry[guard]}'"
                )
        unknown = sorted(set(entry) - {"id", "name", "profile"} - set(keyring.LIMIT_FIELDS))
        if unknown:
            raise ConfigFileError(f"{where}.{unknown[0]}", "not a limit KeyRelay knows")
        limits = {k: v for k, v in entry.items() if k in keyring.LIMIT_FIELDS}
        if isinstance(limits.get("expires_at"), datetime):
            limits["expires_at"] = limits["expires_at"].isoformat()  # YAML reads timestamps
        try:
            parsed = keyring.parse_key_input(limits, creating=False)
        except InputError as exc:
            raise ConfigFileError(f"{where}.{exc.field}", str(exc)) from None
        key_values.append((key, parsed))
    for name, values in profile_values.items():
        existed = session.scalar(select(Profile.id).where(Profile.name == name))
        profile = keyring.get_or_create_profile(session, name, now)
        for column, value in values.items():
            setattr(profile, column, value)
        (report.updated if existed else report.created).append(f"profile {name}")
    for key, parsed in key_values:
        keyring.update_key(session, None, key, parsed, now)
        report.updated.append(f"key {key.id} {key.name}")
    session.flush()
    return report
