"""Provider keys: one credential at a provider, with its limits, counters and health."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from extensions import db
from models.profiles import Profile
from models.types import UTCDateTime

# Stored statuses. `limit_reached` is never stored: it is derived from today's usage,
# so a new day brings a key back without any reset job.
ACTIVE = "active"
COOLING_DOWN = "cooling_down"
AUTH_FAILED = "auth_failed"
DISABLED = "disabled"
LIMIT_REACHED = "limit_reached"
# Stored by the hourly expiry job; a key past `expires_at` counts as expired even before.
EXPIRED = "expired"
# Set when the secret cannot be decrypted with this instance's secret key (it was saved
# under another one); out of the pool until an admin re-enters the secret.
SECRET_UNREADABLE = "secret_unreadable"
# Set at start for a secret saved under an empty secret key (anyone holding the database
# can read it); out of the pool until an admin re-enters the secret.
SECRET_INSECURE = "secret_insecure"
SECRET_STATUSES = (SECRET_UNREADABLE, SECRET_INSECURE)
STORED_STATUSES = (ACTIVE, COOLING_DOWN, AUTH_FAILED, DISABLED, EXPIRED, *SECRET_STATUSES)
# What the admin reads next to such a key (stored as its last_error, shown in the API and
# on the dashboard's keys page and overview).
STATUS_SENTENCES = {
    SECRET_UNREADABLE: "Its secret cannot be decrypted with this instance's secret key: "
    "re-enter the secret.",
    SECRET_INSECURE: "Its secret was saved under an empty secret key, readable by anyone: "
    "re-enter the secret.",
}


class ProviderKey(db.Model):
    """One upstream credential; its secret is encrypted at rest and never shown again."""

    __tablename__ = "provider_keys"
    # Ids are never handed out twice (SQLite reuses max(id) + 1 otherwise): a new row must
    # not inherit what other tables still hold under a deleted one's id.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # The masked form (`sk-or-v1-1234…abcd`), kept so listing keys never decrypts them.
    secret_masked: Mapped[str] = mapped_column(String(64))
    # Keyed hash of the secret (SecretBox.fingerprint, `h1:…`), to refuse duplicates
    # without decrypting every key. Older rows' plain SHA-256 is recomputed at start.
    secret_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    base_url: Mapped[str] = mapped_column(String(512))
    # The models the admin declared: ["*"] serves any model, otherwise the exact ids;
    # [] when none were declared (the key serves what its test discovered, or its
    # provider's list: gateway/keys/catalog.py).
    models: Mapped[list] = mapped_column(JSON)
    # Models the last successful key test discovered (the upstream's model list).
    discovered_models: Mapped[list | None] = mapped_column(JSON)
    # Models the upstream answered "model not found" for: the key is not asked for them
    # again until a test lists them.
    unserved_models: Mapped[list | None] = mapped_column(JSON)
    daily_token_limit: Mapped[int | None] = mapped_column(BigInteger)
    # Limits (F30); None is unlimited. Windows are sliding 60 s; days and months are in
    # KEYRELAY_TIMEZONE; costs are micro-dollars.
    monthly_token_limit: Mapped[int | None] = mapped_column(BigInteger)
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    # The upstream has OpenAI's Responses API too: Responses clients are passed through.
    responses_api: Mapped[bool | None] = mapped_column(Boolean)
    # Pool settings: share under `weighted` (None: 1), tier under `priority` (lower first;
    # None: 0), and the profile's default key, tried first while it is usable.
    weight: Mapped[int | None] = mapped_column(Integer)
    priority: Mapped[int | None] = mapped_column(Integer)
    is_default: Mapped[bool | None] = mapped_column(Boolean)
    # Settings of the provider kind that are not secret (RovoDev: email, cloud id, auth
    # scheme; CLI backends: command, concurrency, timeout). Checked by the adapter's
    # `check_options`; None is {}.
    options: Mapped[dict | None] = mapped_column(JSON)
    # What the provider itself says is left on the account (usage sync: RovoDev credits
    # check, OpenRouter key info), in tokens or micro-dollars, and when it said so.
    remaining_tokens: Mapped[int | None] = mapped_column(BigInteger)
    remaining_credit_micros: Mapped[int | None] = mapped_column(BigInteger)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The key's tokens and cost booked on synced_at's local day, as of the sync: what was
    # booked since is the usage above them (selection.synced_left), not yet in the figure.
    synced_used_tokens: Mapped[int | None] = mapped_column(BigInteger)
    synced_used_cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    # {"gpt-4o": {"rpm": 10, "tpm": 30000}}: extra windows for one model on this key.
    model_limits: Mapped[dict | None] = mapped_column(JSON)
    daily_cost_limit_micros: Mapped[int | None] = mapped_column(BigInteger)
    monthly_cost_limit_micros: Mapped[int | None] = mapped_column(BigInteger)
    total_cost_limit_micros: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # 32 since `secret_unreadable`; databases made before keep their VARCHAR(16), which
    # SQLite does not enforce (PostgreSQL's is widened at start: keyring.check_stored_secrets).
    status: Mapped[str] = mapped_column(String(32), default=ACTIVE)
    cooldown_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    # Who took the key out of the pool (disabled, auth failed) and when: a dashboard user,
    # `master-key`, or `system` (auto-disabled after failures, refused by the upstream).
    # None while it serves; keys disabled before these columns existed have none.
    disabled_by: Mapped[str | None] = mapped_column(String(80))
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    profile: Mapped[Profile] = relationship(lazy="joined")

    # Not columns: usage filled in by whoever loaded the roll-ups (keyring.attach_usage).
    used_today: int = 0
    used_month: int = 0
    cost_today: int = 0
    cost_month: int = 0
    cost_total: int = 0
    usage_day = None  # the local day of used_today

    def serves(self, model: str) -> bool:
        """Whether this key serves the model (gateway/keys/catalog.py)."""
        from gateway.keys import catalog  # the domain decides; models/ stays below it

        return catalog.serves(self, model)
