"""Managing provider keys: validate admin input, store secrets encrypted, describe keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import selection
from gateway.providers import ADAPTERS
from gateway.secrets import SecretBox, fingerprint, mask
from models import Profile, ProviderKey, UsageDaily
from models.provider_keys import ACTIVE, DISABLED

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1"}


class KeyInputError(ValueError):
    """Admin input that cannot be saved; `field` says which one."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass
class KeyInput:
    """Validated fields of a provider key; None means "not given" on update."""

    profile: str | None = None
    provider: str | None = None
    name: str | None = None
    secret: str | None = None
    base_url: str | None = None
    models: list[str] | None = None
    daily_token_limit: int | None = None
    has_limit: bool = False


def _text(data: dict, field: str, limit: int) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise KeyInputError(field, f"'{field}' must be a non-empty string.")
    if len(value) > limit:
        raise KeyInputError(field, f"'{field}' is longer than {limit} characters.")
    return value.strip()


def parse_models(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise KeyInputError("models", "'models' must be a list of model ids, or \"*\" for any.")
    value = [m.strip() for m in value if m.strip()]
    if not value:
        raise KeyInputError("models", "'models' is empty: give model ids, or \"*\" for any.")
    return ["*"] if "*" in value else sorted(set(value))


def _limit(value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KeyInputError(
            "daily_token_limit", "'daily_token_limit' must be a positive integer or null."
        )
    return value


def parse_key_input(data: object, creating: bool) -> KeyInput:
    """Check admin JSON for a provider key; raise KeyInputError naming the bad field."""
    if not isinstance(data, dict):
        raise KeyInputError("body", "The request body must be a JSON object.")
    key = KeyInput(
        profile=_text(data, "profile", 64),
        provider=_text(data, "provider", 32),
        name=_text(data, "name", 128),
        secret=_text(data, "secret", 4096),
        base_url=_text(data, "base_url", 512),
        models=parse_models(data.get("models")),
        daily_token_limit=_limit(data.get("daily_token_limit")),
        has_limit="daily_token_limit" in data,
    )
    if key.profile is not None and not PROFILE_NAME.match(key.profile):
        raise KeyInputError("profile", "'profile' may hold letters, digits, '_', '.', '-'.")
    if key.provider is not None and key.provider not in ADAPTERS:
        known = ", ".join(sorted(ADAPTERS))
        raise KeyInputError("provider", f"Unknown provider '{key.provider}'; known: {known}.")
    if key.secret is not None and any(ch.isspace() for ch in key.secret):
        raise KeyInputError("secret", "'secret' must not contain spaces or line breaks.")
    if key.base_url is not None:
        parsed = urlparse(key.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise KeyInputError("base_url", "'base_url' must be an http(s) URL.")
    if creating:
        for field in ("provider", "name", "secret"):
            if getattr(key, field) is None:
                raise KeyInputError(field, f"Missing required field '{field}'.")
    return key


def get_or_create_profile(session: Session, name: str, now: datetime) -> Profile:
    """The named profile, created on first use."""
    profile = session.scalar(select(Profile).where(Profile.name == name))
    if profile is None:
        profile = Profile(name=name, created_at=now)
        session.add(profile)
        session.flush()
    return profile


def _refuse_duplicate(session: Session, profile: Profile, secret: str, key_id=None) -> None:
    query = select(ProviderKey.id).where(
        ProviderKey.profile_id == profile.id,
        ProviderKey.secret_fingerprint == fingerprint(secret),
    )
    if session.scalar(query) not in (None, key_id):
        raise KeyInputError(
            "secret", f"This secret is already a key in profile {profile.name}.", 409
        )


def create_key(session: Session, box: SecretBox, data: KeyInput, now: datetime) -> ProviderKey:
    """Store a new provider key with its secret encrypted."""
    profile = get_or_create_profile(session, data.profile or "default", now)
    _refuse_duplicate(session, profile, data.secret)
    base_url = data.base_url or DEFAULT_BASE_URLS.get(data.provider)
    if base_url is None:
        raise KeyInputError("base_url", "Missing required field 'base_url' for this provider.")
    key = ProviderKey(
        profile=profile,
        provider=data.provider,
        name=data.name,
        secret_encrypted=box.encrypt(data.secret),
        secret_masked=mask(data.secret),
        secret_fingerprint=fingerprint(data.secret),
        base_url=base_url.rstrip("/"),
        models=data.models or ["*"],
        daily_token_limit=data.daily_token_limit,
        status=ACTIVE,
        consecutive_failures=0,
        created_at=now,
        updated_at=now,
    )
    session.add(key)
    session.flush()
    return key


def update_key(
    session: Session, box: SecretBox, key: ProviderKey, data: KeyInput, now: datetime
) -> ProviderKey:
    """Change the given fields of a key; a new secret is re-encrypted."""
    if data.profile is not None:
        key.profile = get_or_create_profile(session, data.profile, now)
    for field in ("provider", "name", "models"):
        if getattr(data, field) is not None:
            setattr(key, field, getattr(data, field))
    if data.base_url is not None:
        key.base_url = data.base_url.rstrip("/")
    if data.has_limit:
        key.daily_token_limit = data.daily_token_limit
    if data.secret is not None:
        _refuse_duplicate(session, key.profile, data.secret, key.id)
        key.secret_encrypted = box.encrypt(data.secret)
        key.secret_masked = mask(data.secret)
        key.secret_fingerprint = fingerprint(data.secret)
    key.updated_at = now
    return key


def set_enabled(key: ProviderKey, enabled: bool, now: datetime) -> None:
    """Enable (a clean slate: no cooldown, no failure streak) or disable a key."""
    key.status = ACTIVE if enabled else DISABLED
    key.cooldown_until = None
    key.consecutive_failures = 0
    key.updated_at = now


def used_today(session: Session, today) -> dict[int, int]:
    """Tokens used today per provider key id."""
    rows = session.execute(
        select(UsageDaily.provider_key_id, func.sum(UsageDaily.total_tokens))
        .where(UsageDaily.day == today)
        .group_by(UsageDaily.provider_key_id)
    )
    return {key_id: int(total or 0) for key_id, total in rows}


def describe(key: ProviderKey, used: int, now: datetime) -> dict:
    """The key as the admin API shows it: never the secret, only its masked form."""
    key.used_today = used
    limit = key.daily_token_limit
    return {
        "id": key.id,
        "profile": key.profile.name,
        "provider": key.provider,
        "name": key.name,
        "secret": key.secret_masked,
        "base_url": key.base_url,
        "models": key.models,
        "discovered_models": key.discovered_models,
        "daily_token_limit": limit,
        "used_today": used,
        "remaining_today": None if limit is None else max(0, limit - used),
        "status": selection.effective_status(key, now),
        "cooldown_until": key.cooldown_until.isoformat() if key.cooldown_until else None,
        "consecutive_failures": key.consecutive_failures,
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "last_error": key.last_error,
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
    rejected with the reason. The shared fields are checked first (KeyInputError)."""
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
        except KeyInputError as exc:
            entry = {"line": number, "secret": shown, "reason": str(exc)}
            (report.duplicates if exc.status == 409 else report.rejected).append(entry)
            continue
        report.added.append({"line": number, "id": key.id, "name": key.name, "secret": shown})
    return report
