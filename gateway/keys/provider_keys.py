"""Managing provider keys: validate admin input, store secrets encrypted, describe keys."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from urllib.parse import urlparse

from cryptography.fernet import InvalidToken
from sqlalchemy import Engine, case, func, inspect, select, update
from sqlalchemy.orm import Session

from gateway import periods
from gateway.admin import apischema
from gateway.admin.errors import InputError, Problems, limit_or_none
from gateway.keys import catalog, lifecycle, selection, states
from gateway.keys.secrets import (
    FINGERPRINT_PREFIX,
    SecretBox,
    SecretUnreadable,
    empty_passphrase_fernet,
    mask,
)
from gateway.limits import budgets
from gateway.providers import ADAPTERS, DEFAULT_BASE_URLS
from gateway.validation import FIRST_DAY, LAST_DAY, MAX_SQL_INT, whole_number
from models import Profile, ProviderKey, UsageDaily
from models.provider_keys import (
    SECRET_INSECURE,
    SECRET_UNREADABLE,
    STATUS_SENTENCES,
)
from models.types import usd

log = logging.getLogger(__name__)
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class KeyInput:
    """Validated fields of a provider key; None means "not given" on update."""

    profile: str | None = None
    provider: str | None = None
    name: str | None = None
    secret: str | None = None
    base_url: str | None = None
    models: list[str] | None = None
    # Only the limits given (column → value; None is "no limit"), so an update changes
    # just those.
    limits: dict = field(default_factory=dict)
    # The provider's own settings (ProviderKey.options), checked by its adapter when the
    # provider is known (create_key/update_key); None: not given.
    options: dict | None = None


def _text(data: dict, field: str, limit: int) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, f"'{field}' must be a non-empty string.")
    if len(value) > limit:
        raise InputError(field, f"'{field}' is longer than {limit} characters.")
    return value.strip()


def parse_key_models(value) -> list[str] | None:
    """A provider key's declared models: ids, ["*"] for any, or [] (an empty list or
    text) for none declared, so the key serves what its test discovers."""
    if value == [] or (isinstance(value, str) and not value.strip()):
        return []
    return parse_models(value)


def wants_test(data: object) -> bool:
    """Whether a key is tested once saved (a new one, or one whose provider, base_url or
    secret changed): yes unless `test` is false."""
    value = data.get("test") if isinstance(data, dict) else None
    return _flag("test", value) is not False


def parse_models(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise InputError("models", "'models' must be a list of model ids, or \"*\" for any.")
    value = [m.strip() for m in value if m.strip()]
    if not value:
        raise InputError("models", "'models' is empty: give model ids, or \"*\" for any.")
    return ["*"] if "*" in value else sorted(set(value))


def _flag(name: str, value) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value in ("true", "on", "1", "false", "off", "0", ""):
        return value in ("true", "on", "1")
    raise InputError(name, f"'{name}' must be true or false.")


def _bounded(name: str, value, low: int, high: int) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and whole_number(value) is not None:
        value = whole_number(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(name, f"'{name}' must be an integer from {low} to {high}.")
    return value


def _usd(name: str, value) -> int | None:
    try:
        micros = budgets.parse_usd(name, value)
    except ValueError as exc:
        raise InputError(name, str(exc)) from None
    if micros == 0:
        raise InputError(name, f"'{name}' must be more than 0 USD, or null for no limit.")
    return micros


def parse_moment(name: str, value) -> datetime | None:
    """An ISO 8601 time with a zone (stored in UTC), or None; InputError otherwise."""
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InputError(name, f"'{name}' must be an ISO 8601 time with a zone, or null.")
    if not FIRST_DAY <= moment.date() <= LAST_DAY:
        raise InputError(name, f"'{name}' must be between {FIRST_DAY} and {LAST_DAY}.")
    return moment.astimezone(UTC)


def _model_limits(name: str, value) -> dict | None:
    """{"gpt-4o": {"rpm": 10, "tpm": 30000}}: extra windows for single models."""
    if value in (None, "", {}):
        return None
    problem = f'\'{name}\' must map model ids to {{"rpm": n, "tpm": n}}, or be null.'
    if not isinstance(value, dict):
        raise InputError(name, problem)
    result = {}
    for model, limits in value.items():
        if not isinstance(model, str) or not model.strip() or not isinstance(limits, dict):
            raise InputError(name, problem)
        if not limits or set(limits) - {"rpm", "tpm"}:
            raise InputError(name, problem)
        try:
            entry = {k: limit_or_none(f"{name}.{model}.{k}", v) for k, v in limits.items()}
        except InputError as exc:
            raise InputError(name, str(exc)) from None
        entry = {k: v for k, v in entry.items() if v is not None}
        if entry:
            result[model.strip()] = entry
    return result or None


WEIGHTS = (1, 1000)
PRIORITIES = (0, 100)
MAX_WAIT_SECONDS = 600

# API field → (column, parser). Costs are USD in the API, micro-dollars in the database.
LIMIT_FIELDS = {
    "daily_token_limit": ("daily_token_limit", limit_or_none),
    "monthly_token_limit": ("monthly_token_limit", limit_or_none),
    "rpm_limit": ("rpm_limit", limit_or_none),
    "tpm_limit": ("tpm_limit", limit_or_none),
    "model_limits": ("model_limits", _model_limits),
    "daily_cost_limit": ("daily_cost_limit_micros", _usd),
    "monthly_cost_limit": ("monthly_cost_limit_micros", _usd),
    "total_cost_limit": ("total_cost_limit_micros", _usd),
    "expires_at": ("expires_at", parse_moment),
    # Not limits, but kept and exported beside them: the upstream's Responses API, the
    # key's share (weighted) and tier (priority) in its pool.
    "responses_api": ("responses_api", _flag),
    "weight": ("weight", lambda name, value: _bounded(name, value, *WEIGHTS)),
    "priority": ("priority", lambda name, value: _bounded(name, value, *PRIORITIES)),
}
_COUNT = apischema.nullable(apischema.integer(1, MAX_SQL_INT))
# Each LIMIT_FIELDS entry as the OpenAPI document (and the answer) writes it.
LIMIT_SCHEMAS = {
    "daily_token_limit": _COUNT,
    "monthly_token_limit": _COUNT,
    "rpm_limit": _COUNT,
    "tpm_limit": _COUNT,
    "model_limits": apischema.nullable(
        {
            **apischema.mapping(
                apischema.obj({"rpm": _COUNT, "tpm": _COUNT}, min_properties=1), max_properties=8
            ),
            "description": 'By model id (not blank): {"gpt-4o": {"rpm": 10, "tpm": 30000}}.',
        }
    ),
    "daily_cost_limit": apischema.nullable(apischema.POSITIVE_USD),
    "monthly_cost_limit": apischema.nullable(apischema.POSITIVE_USD),
    "total_cost_limit": apischema.nullable(apischema.POSITIVE_USD),
    "expires_at": apischema.nullable(apischema.MOMENT),
    "responses_api": apischema.BOOLEAN,
    "weight": apischema.nullable(apischema.integer(*WEIGHTS)),
    "priority": apischema.nullable(apischema.integer(*PRIORITIES)),
}
# The text fields of a key and their longest length.
TEXT_FIELDS = {"profile": 64, "provider": 32, "name": 128, "secret": 4096, "base_url": 512}


# A key's models: ids, ["*"] for any, or [] for none declared (what its test discovers).
KEY_MODELS = {
    "anyOf": [*apischema.MODELS["anyOf"], {"type": "array", "maxItems": 0}],
    "description": 'Model ids, or ["*"] for any; [] or none given: the models the key\'s '
    "test discovers (else its provider's list). A comma-separated string is read as a list.",
    "x-rule": 'must be a list of model ids (at most 16), "*" for any, or [] for the '
    "models its test discovers",
}


def key_input_schema(creating: bool) -> dict:
    """The body parse_key_input accepts, as an OpenAPI schema."""
    text = {name: apischema.text(length) for name, length in TEXT_FIELDS.items()}
    text["profile"] = apischema.text(64, pattern=PROFILE_NAME.pattern)
    text["provider"] = {"type": "string", "enum": sorted(ADAPTERS)}
    text["secret"] = apischema.text(4096, pattern=SECRET_PATTERN)
    text["base_url"] = base_url_schema(("http", "https", "cli"))
    properties = {
        **text,
        "models": KEY_MODELS,
        "options": apischema.nullable({"type": "object"}),
        **{name: LIMIT_SCHEMAS[name] for name in LIMIT_FIELDS},
    }
    properties["test"] = {
        **apischema.BOOLEAN,
        "description": "Test the key once saved (the default): its model list is "
        "discovered. false saves it untested."
        if creating
        else "Test the key again once saved if its provider, base_url or secret changed "
        "(the default): its model list is discovered again. false saves it untested.",
    }
    required = ("provider", "name", "secret") if creating else ()
    schema = apischema.obj(properties, required=required)
    schema["anyOf"] = _per_provider(creating)
    schema["x-rule"] = (
        "must give a base_url and options the provider takes: an http(s) URL (a cli:// "
        "name for a CLI provider), and only the provider's own options"
    )
    return schema


def base_url_schema(schemes: tuple[str, ...]) -> dict:
    """A base_url of these schemes, as an OpenAPI schema."""
    return {
        **apischema.text(512, pattern=apischema.url_pattern(schemes)),
        "x-expected": "be " + ("a cli:// name" if schemes == ("cli",) else "an http(s) URL"),
    }


def _per_provider(creating: bool) -> list[dict]:
    """What depends on the provider: its base_url's scheme and its options (a RovoDev key
    needs its account's email). On an update without `provider`, the saved key's counts
    (a mismatch is a 409)."""
    groups: dict[str, list] = {}
    for name, adapter in sorted(ADAPTERS.items()):
        shape = repr((adapter.url_schemes, adapter.options_schema()))
        groups.setdefault(shape, [name, adapter, []])[2].append(name)
    forms = []
    for _first, adapter, names in groups.values():
        takes = adapter.options_schema()
        needs_options = bool(takes.get("required"))
        form = apischema.obj(
            {
                "provider": {"type": "string", "enum": names},
                "base_url": base_url_schema(adapter.url_schemes),
                "options": takes if needs_options else apischema.nullable(takes),
            },
            required=("provider", "options") if needs_options else ("provider",),
            additional=True,
        )
        forms.append(form)
    if not creating:
        forms.append({"not": {"required": ["provider"]}})
    return forms


# A secret goes into an HTTP header (or a CLI's environment): visible ASCII only. Around
# it, whitespace (a pasted line's newline) is dropped.
SECRET_PATTERN = rf"^{apischema.SPACE}[!-~]+{apischema.SPACE}$"


def _check_secret(secret: str) -> None:
    """A secret that can go in a header: no spaces, line breaks or characters outside ASCII
    (a pasted `…` or curly quote would fail every request made with it)."""
    if any(ch.isspace() for ch in secret):
        raise InputError("secret", "'secret' must not contain spaces or line breaks.")
    odd = next((ch for ch in secret if not "!" <= ch <= "~"), None)
    if odd is not None:
        raise InputError(
            "secret",
            f"'secret' holds the character {odd!r} (U+{ord(odd):04X}); a key is plain ASCII "
            "letters, digits and punctuation. Copy it again from the provider's console.",
        )


def _check_base_url(base_url: str, provider: str | None) -> None:
    """An http(s) URL with a host (or cli:// for a CLI provider) that can be requested."""
    adapter = ADAPTERS.get(provider)
    schemes = adapter.url_schemes if adapter else ("http", "https", "cli")
    kind = "an http(s) URL"
    if "cli" in schemes:  # a CLI provider's keys name a local command, not a URL
        kind = "a cli:// name (e.g. cli://claude-code)" if adapter else kind + " or cli://"
    try:
        if not all("!" <= ch <= "~" for ch in base_url):
            raise ValueError("spaces or characters outside ASCII")
        parsed = urlparse(base_url)
        parsed.port  # noqa: B018 - a bad port ("http://host:99999") raises here
    except ValueError as exc:
        raise InputError("base_url", f"'base_url' is not a valid URL ({exc}).") from None
    if parsed.scheme not in schemes or not parsed.netloc:
        raise InputError("base_url", f"'base_url' must be {kind}.")


def parse_key_input(data: object, creating: bool) -> KeyInput:
    """Check admin JSON for a provider key; raise InputError naming the bad field (and
    carrying every bad field in its `errors`)."""
    if not isinstance(data, dict):
        raise InputError("body", "The request body must be a JSON object.")
    problems = Problems()
    key = KeyInput()
    for name, length in TEXT_FIELDS.items():
        with problems.field():
            setattr(key, name, _text(data, name, length))
    with problems.field():
        key.models = parse_key_models(data.get("models"))
    for name, (column, parse) in LIMIT_FIELDS.items():
        if name in data:
            with problems.field():
                key.limits[column] = parse(name, data[name])
    if "options" in data:
        options = data["options"]
        with problems.field():
            if options is not None and not isinstance(options, dict):
                raise InputError("options", "'options' must be a JSON object.")
            key.options = options or {}
    with problems.field():
        _check_profile_name(key.profile)
    with problems.field():
        _check_provider(key.provider)
    if key.secret is not None:
        with problems.field():
            _check_secret(key.secret)
    if key.base_url is not None:
        with problems.field():
            _check_base_url(key.base_url, key.provider)
    if creating:
        bad = {error.field for error in problems.found}
        for field_name in ("provider", "name", "secret"):
            if getattr(key, field_name) is None and field_name not in bad:
                problems.add(InputError(field_name, f"Missing required field '{field_name}'."))
    problems.check()
    return key


def _check_profile_name(profile: str | None) -> None:
    if profile is not None and not PROFILE_NAME.match(profile):
        raise InputError("profile", "'profile' may hold letters, digits, '_', '.', '-'.")


def _check_provider(provider: str | None) -> None:
    if provider is not None and provider not in ADAPTERS:
        known = ", ".join(sorted(ADAPTERS))
        raise InputError("provider", f"Unknown provider '{provider}'; known: {known}.")


def profile_settings_schema() -> dict:
    """The body parse_profile_settings accepts, as an OpenAPI schema."""
    strategies = [*selection.STRATEGIES, "default"]
    return apischema.obj(
        {
            "strategy": apischema.nullable({"type": "string", "enum": strategies}),
            "wait_for_key_seconds": apischema.nullable(apischema.integer(0, MAX_WAIT_SECONDS)),
            "use_paid_models": apischema.nullable(apischema.BOOLEAN),
        }
    )


def parse_profile_settings(data: object) -> dict:
    """The given profile settings (strategy, wait_for_key_seconds, use_paid_models) as
    column → value; InputError naming a bad one (and carrying every bad one)."""
    if not isinstance(data, dict):
        raise InputError("body", "The request body must be a JSON object.")
    problems = Problems()
    for field_name in sorted(set(data) - set(profile_settings_schema()["properties"])):
        problems.add(InputError(field_name, f"Unknown profile field '{field_name}'."))
    values = {}
    for name, parse in _PROFILE_SETTINGS.items():
        if name in data:
            with problems.field():
                values[name] = parse(data[name])
    problems.check()
    return values


def _strategy(strategy):
    if strategy in ("", "default"):
        return None
    if strategy is not None and strategy not in selection.STRATEGIES:
        choices = ", ".join(selection.STRATEGIES)
        raise InputError("strategy", f"'strategy' must be one of: {choices}, or null.")
    return strategy


def _wait(wait):
    if isinstance(wait, str) and whole_number(wait) is not None:
        wait = whole_number(wait)
    if wait in (None, "", 0):
        return None
    if isinstance(wait, bool) or not isinstance(wait, int) or not 0 < wait <= MAX_WAIT_SECONDS:
        raise InputError(
            "wait_for_key_seconds",
            f"'wait_for_key_seconds' must be whole seconds from 0 to {MAX_WAIT_SECONDS}, or null.",
        )
    return wait


def _paid(paid):
    if paid is not None and not isinstance(paid, bool):
        raise InputError(
            "use_paid_models", "'use_paid_models' must be true, false, or null (the default)."
        )
    return paid


_PROFILE_SETTINGS = {"strategy": _strategy, "wait_for_key_seconds": _wait, "use_paid_models": _paid}


def get_or_create_profile(session: Session, name: str, now: datetime) -> Profile:
    """The named profile, created on first use."""
    profile = session.scalar(select(Profile).where(Profile.name == name))
    if profile is None:
        profile = Profile(name=name, created_at=now)
        session.add(profile)
        session.flush()
    return profile


def _refuse_duplicate(
    session: Session, box: SecretBox, profile: Profile, secret: str, key_id=None
) -> None:
    query = select(ProviderKey.id).where(
        ProviderKey.profile_id == profile.id,
        ProviderKey.secret_fingerprint == box.fingerprint(secret),
    )
    if session.scalar(query) not in (None, key_id):
        raise InputError("secret", f"This secret is already a key in profile {profile.name}.", 409)


def create_key(session: Session, box: SecretBox, data: KeyInput, now: datetime) -> ProviderKey:
    """Store a new provider key with its secret encrypted."""
    profile = get_or_create_profile(session, data.profile or "default", now)
    _refuse_duplicate(session, box, profile, data.secret)
    base_url = data.base_url or DEFAULT_BASE_URLS.get(data.provider)
    if base_url is None:
        raise InputError("base_url", "Missing required field 'base_url' for this provider.")
    key = ProviderKey(
        profile=profile,
        provider=data.provider,
        name=data.name,
        secret_encrypted=box.encrypt(data.secret),
        secret_masked=mask(data.secret),
        secret_fingerprint=box.fingerprint(data.secret),
        base_url=base_url.rstrip("/"),
        models=data.models or [],  # none declared: gateway/keys/catalog.py says what it serves
        status=lifecycle.INITIAL,
        consecutive_failures=0,
        created_at=now,
        updated_at=now,
    )
    # A kind's own daily limit (RovoDev: 20M tokens) unless the admin gave one, or none.
    key.daily_token_limit = ADAPTERS[data.provider].default_daily_token_limit
    for column, value in data.limits.items():
        setattr(key, column, value)
    key.options = check_options(data.provider, data.options or {}) or None
    session.add(key)
    session.flush()
    return key


def check_options(provider: str, options: dict) -> dict:
    """The provider's settings as its adapter accepts them; InputError naming the bad one."""
    try:
        return ADAPTERS[provider].check_options(options)
    except ValueError as exc:
        field = exc.args[0] if len(exc.args) > 1 else "options"
        raise InputError(field, str(exc.args[-1])) from None


def update_key(
    session: Session, box: SecretBox, key: ProviderKey, data: KeyInput, now: datetime
) -> ProviderKey:
    """Change the given fields of a key; a new secret is re-encrypted. A key pointed at
    another upstream (provider, base_url or secret) forgets what the old one served: the
    front ends test it again (`upstream_of` tells)."""
    before = upstream_of(key)
    if data.profile is not None:
        key.profile = get_or_create_profile(session, data.profile, now)
    for name in ("provider", "name", "models"):
        if getattr(data, name) is not None:
            setattr(key, name, getattr(data, name))
    if data.models is not None:
        key.unserved_models = None  # the admin said what it serves: ask the upstream again
    if data.base_url is not None:
        key.base_url = data.base_url.rstrip("/")
    # The body's provider, base_url and options were checked together; one of them
    # against the saved others can still clash: a conflict with the saved key (409).
    clash = 400 if None not in (data.provider, data.base_url) else 409
    if data.provider is not None or data.base_url is not None:
        try:
            _check_base_url(key.base_url, key.provider)
        except InputError as exc:
            raise InputError("base_url", f"{exc} (provider '{key.provider}')", clash) from None
    for column, value in data.limits.items():
        setattr(key, column, value)
    if data.options is not None or data.provider is not None:
        given = data.options if data.options is not None else key.options or {}
        try:
            key.options = check_options(key.provider, given) or None
        except InputError as exc:
            both = None not in (data.options, data.provider)
            raise InputError(exc.field, str(exc), 400 if both else 409) from None
    if "expires_at" in data.limits:
        lifecycle.apply(lifecycle.NEW_EXPIRY, key)  # a new (or no) expiry brings it back
    if data.secret is not None:
        _refuse_duplicate(session, box, key.profile, data.secret, key.id)
        key.secret_encrypted = box.encrypt(data.secret)
        key.secret_masked = mask(data.secret)
        key.secret_fingerprint = box.fingerprint(data.secret)
        lifecycle.apply(lifecycle.SECRET_REENTERED, key)  # re-entered: readable again
    if upstream_of(key) != before:  # another upstream, or account: its own models
        key.discovered_models = key.unserved_models = None
    key.updated_at = now
    return key


def upstream_of(key: ProviderKey) -> tuple:
    """What a key's catalog depends on: its provider, base_url and secret."""
    return key.provider, key.base_url, key.secret_fingerprint


def check_stored_secrets(engine: Engine, box: SecretBox, now: datetime) -> dict[int, str]:
    """Once per process at start: find provider keys whose secret this instance cannot
    decrypt, and keep fingerprints keyed. Answers {key id: status} of the keys found.

    - A secret the empty passphrase decrypts was saved by a worker that read an empty key
      file (before key files were written atomically): anyone with the database can read
      it. The key becomes `secret_insecure` (even when disabled) until an admin re-enters
      the secret; it is logged (id and name, never the secret).
    - Any other secret that cannot be decrypted: `secret_unreadable` (unless disabled).
      One that decrypts again (the right secret key is back) returns to `active`.
    - Fingerprints are recomputed where the secret is readable (rows from before keyed
      fingerprints hold a plain SHA-256); an unreadable row's plain SHA-256 is dropped.
    Cheap: one Fernet decryption per key; the empty passphrase's key derivation runs only
    if some secret fails, once per process.
    """
    _widen_status_column(engine)
    k = ProviderKey.__table__.c
    query = select(k.id, k.name, k.status, k.secret_encrypted, k.secret_fingerprint)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    found, changes = {}, []
    for row in rows:
        values = {}
        try:
            secret, status = box.decrypt(row.secret_encrypted), None
        except SecretUnreadable:
            secret, status = _insecure_secret(row.secret_encrypted), SECRET_UNREADABLE
            if secret is not None:
                status = SECRET_INSECURE
        if status is None and lifecycle.allows(lifecycle.SECRET_READABLE, row.status):
            values.update(lifecycle.changes(lifecycle.SECRET_READABLE, updated_at=now))
        if status is not None:
            found[row.id] = status
            log.warning("provider key #%s (%s): %s", row.id, row.name, STATUS_SENTENCES[status])
            event = lifecycle.SECRET_EXPOSED if status == SECRET_INSECURE else lifecycle.SECRET_LOST
            if lifecycle.allows(event, row.status):
                sentence = STATUS_SENTENCES[status]
                values.update(lifecycle.changes(event, last_error=sentence, updated_at=now))
        if secret is not None:
            digest = box.fingerprint(secret)
        elif row.secret_fingerprint.startswith(FINGERPRINT_PREFIX):
            digest = row.secret_fingerprint  # keyed under the key it was saved with
        else:
            digest = ""  # a plain SHA-256 that cannot be recomputed: not kept
        if digest != row.secret_fingerprint:
            values["secret_fingerprint"] = digest
        if values:
            changes.append((row.id, row.secret_encrypted, values))
    if changes:
        with engine.begin() as conn:
            for key_id, ciphertext, values in changes:
                # Only while the row holds what was checked (an admin may re-enter it now).
                condition = (k.id == key_id, k.secret_encrypted == ciphertext)
                conn.execute(update(ProviderKey.__table__).where(*condition).values(**values))
    return found


def _insecure_secret(ciphertext: bytes) -> str | None:
    """The secret if the empty passphrase decrypts it, else None."""
    try:
        return empty_passphrase_fernet().decrypt(ciphertext).decode()
    except (InvalidToken, TypeError, UnicodeDecodeError):
        return None


def _widen_status_column(engine: Engine) -> None:
    """`secret_unreadable` needs more than the VARCHAR(16) of databases made before it:
    PostgreSQL enforces the length (SQLite does not), so widen it there, once."""
    if engine.dialect.name != "postgresql":
        return
    column = next(c for c in inspect(engine).get_columns("provider_keys") if c["name"] == "status")
    length = getattr(column["type"], "length", None)
    if length is not None and length < 32:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE provider_keys ALTER COLUMN status TYPE VARCHAR(32)")


def set_enabled(key: ProviderKey, enabled: bool, now: datetime, actor: str | None = None) -> bool:
    """Enable (a clean slate: no cooldown, no failure streak, no stale error) or disable a
    key, remembering who disabled it and when; False when the key's state refuses it (an
    expired key, or one whose secret must be entered again, is not enabled)."""
    return lifecycle.set_enabled(key, enabled, now, actor)


@dataclass(frozen=True)
class KeyUsage:
    """A key's tokens and cost (micro-dollars) this local day and month, and cost ever."""

    used_today: int = 0
    used_month: int = 0
    cost_today: int = 0
    cost_month: int = 0
    cost_total: int = 0
    day: date | None = None  # the local day of used_today


def key_usage(session: Session, today) -> dict[int, KeyUsage]:
    """Usage per provider key id, from the daily roll-ups (days in KEYRELAY_TIMEZONE)."""
    u = UsageDaily
    is_today = u.day == today
    month = select(
        u.provider_key_id,
        func.sum(case((is_today, u.total_tokens), else_=0)),
        func.sum(case((u.day >= periods.month_start(today), u.total_tokens), else_=0)),
        func.sum(case((is_today, u.cost_micros), else_=0)),
        func.sum(case((u.day >= periods.month_start(today), u.cost_micros), else_=0)),
        func.sum(u.cost_micros),
    ).group_by(u.provider_key_id)
    return {
        key_id: KeyUsage(*(int(v or 0) for v in values), day=today)
        for key_id, *values in session.execute(month)
    }


def set_default(session: Session, key: ProviderKey) -> None:
    """Make the key its profile's default (the profile's other keys lose it)."""
    session.execute(
        update(ProviderKey)
        .where(ProviderKey.profile_id == key.profile_id, ProviderKey.id != key.id)
        .values(is_default=None)
    )
    key.is_default = True


def attach_usage(key: ProviderKey, usage: KeyUsage | None) -> ProviderKey:
    """Give an ORM key the usage fields the selector reads (like a KeyRow has)."""
    usage = usage or KeyUsage()
    for name in ("used_today", "used_month", "cost_today", "cost_month", "cost_total"):
        setattr(key, name, getattr(usage, name))
    key.usage_day = usage.day
    return key


def _money(micros: int | None) -> str | None:
    return None if micros is None else usd(micros)


def limits_of(key) -> dict:
    """The key's limits as the API (and limits.yaml) write them: costs in USD strings."""
    return {
        "daily_token_limit": key.daily_token_limit,
        "monthly_token_limit": key.monthly_token_limit,
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "model_limits": key.model_limits,
        "daily_cost_limit": _money(key.daily_cost_limit_micros),
        "monthly_cost_limit": _money(key.monthly_cost_limit_micros),
        "total_cost_limit": _money(key.total_cost_limit_micros),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "responses_api": bool(key.responses_api),
        "weight": key.weight,
        "priority": key.priority,
    }


def describe(key: ProviderKey, usage: KeyUsage | None, now: datetime) -> dict:
    """The key as the admin API shows it: never the secret, only its masked form."""
    attach_usage(key, usage)
    limit, used = key.daily_token_limit, key.used_today
    status = selection.effective_status(key, now)
    hit = selection.limit_hit(key) if status == "limit_reached" else None
    back = selection.back_at(key, now)
    state = states.key_state(key, now)
    return {
        "id": key.id,
        "profile": key.profile.name,
        "provider": key.provider,
        "name": key.name,
        "secret": key.secret_masked,
        "is_default": bool(key.is_default),
        "base_url": key.base_url,
        "models": key.models,
        "discovered_models": key.discovered_models,
        # What it serves (gateway/keys/catalog.py): from `models_source`, less what its
        # upstream answered "model not found" for (`unserved_models`).
        "served_models": catalog.served(key),
        "models_source": catalog.source(key),
        "unserved_models": sorted(key.unserved_models or ()),  # stored oldest first
        "options": key.options or {},
        "remaining_tokens": key.remaining_tokens,
        "remaining_credit": usd(key.remaining_credit_micros)
        if key.remaining_credit_micros is not None
        else None,
        "synced_at": key.synced_at.isoformat() if key.synced_at else None,
        **limits_of(key),
        "used_today": used,
        "remaining_today": None if limit is None else max(0, limit - used),
        "used_month": key.used_month,
        "cost_today": usd(key.cost_today),
        "cost_month": usd(key.cost_month),
        "cost_total": usd(key.cost_total),
        "status": status,
        "limit_reached": hit[0] if hit else None,
        "available_at": back.isoformat() if back and status != "active" else None,
        "cooldown_until": key.cooldown_until.isoformat() if key.cooldown_until else None,
        "consecutive_failures": key.consecutive_failures,
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "last_error": key.last_error,
        # Readable: why the key is in its status and until when (times in the zone, named),
        # who took it out and when, and the upstream's message without its JSON.
        "status_reason": state.sentence,
        "disabled_by": key.disabled_by,
        "disabled_at": key.disabled_at.isoformat() if key.disabled_at else None,
        "last_error_message": state.message,
        "created_at": key.created_at.isoformat(),
        "updated_at": key.updated_at.isoformat(),
    }


@dataclass
class ImportReport:
    """What a bulk import did with each pasted line (secrets only masked)."""

    added: list[dict]
    duplicates: list[dict]
    rejected: list[dict]


def import_keys(
    session: Session, box: SecretBox, text: str, shared: dict, name_prefix: str, now: datetime
) -> ImportReport:
    """Add one key per line of `text`, all with the `shared` fields (provider, profile,
    base_url, models, limit). Blank lines and `#` comments are skipped; a secret already in
    the profile, or twice in the paste, is a duplicate; a line that is not a secret is
    rejected with the reason. The shared fields are checked first (InputError)."""
    parse_key_input({**shared, "name": name_prefix or "imported", "secret": "x"}, creating=True)
    report = ImportReport([], [], [])
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        shown = mask(line)
        if line in seen:
            report.duplicates.append({"line": number, "secret": shown, "reason": "twice in paste"})
            continue
        seen.add(line)
        name = f"{name_prefix or 'imported'}-{line[-4:]}"
        try:
            data = parse_key_input({**shared, "name": name, "secret": line}, creating=True)
            with session.begin_nested():
                key = create_key(session, box, data, now)
        except InputError as exc:
            entry = {"line": number, "secret": shown, "reason": str(exc)}
            (report.duplicates if exc.status == 409 else report.rejected).append(entry)
            continue
        report.added.append({"line": number, "id": key.id, "name": key.name, "secret": shown})
    return report
