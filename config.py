"""Settings: every KEYRELAY_* environment variable in one place, with its default.

Read from the process environment and from `.env` beside this file, the process
environment winning; the app, gunicorn.conf.py, the CLI and start.sh all read them here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

MIB = 1024 * 1024
ENV_FILE = Path(__file__).resolve().parent / ".env"


@dataclass(frozen=True)
class Setting:
    """One KEYRELAY_* variable: its Flask config name, default, type and README text."""

    name: str
    default: object
    kind: type
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "MASTER_KEY",
        None,
        str,
        "Admin bearer key for `/v1` and `/api/admin`. Unset: one is generated into `instance/master_key` (0600) at first start.",
    ),
    Setting(
        "DATABASE_URL",
        None,
        str,
        "SQLAlchemy URL. Default: `sqlite:///<instance>/keyrelay.db` (WAL mode). PostgreSQL: `postgresql+psycopg://user:password@host:5432/keyrelay` (see Database).",
    ),
    Setting(
        "SECRET_KEY",
        None,
        str,
        "Encrypts provider secrets at rest (Fernet key, or any passphrase). Unset: a key file `instance/secret.key` (0600) is created.",
    ),
    Setting("BIND", "127.0.0.1:8080", str, "Address gunicorn listens on."),
    Setting("WORKERS", 2, int, "gunicorn worker processes."),
    Setting(
        "WORKER_CLASS",
        "gevent",
        str,
        "gunicorn worker class (`gevent` holds thousands of open streams per worker).",
    ),
    Setting(
        "WORKER_CONNECTIONS",
        10000,
        int,
        "Concurrent connections per gevent worker: 2 workers hold 10,000 open streams with room to spare, at about 40 KB each. gunicorn raises its open-file limit to the system's hard limit at start (a stream holds two).",
    ),
    Setting(
        "MAX_BODY_BYTES", 8 * MIB, int, "Largest request body accepted on `/v1`; larger gets 413."
    ),
    Setting("MAX_ATTEMPTS", 3, int, "Upstream attempts per client request (one per provider key)."),
    Setting(
        "REQUEST_DEADLINE",
        600.0,
        float,
        "Seconds a client request may spend on attempts before giving up (504).",
    ),
    Setting("CONNECT_TIMEOUT", 5.0, float, "Seconds to connect to an upstream."),
    Setting(
        "READ_TIMEOUT",
        120.0,
        float,
        "Seconds an upstream may stay silent (before its answer, or between stream chunks).",
    ),
    Setting("COOLDOWN_SECONDS", 60.0, float, "Cooldown after a 429 that has no `Retry-After`."),
    Setting(
        "FAILURE_THRESHOLD", 5, int, "Consecutive failures after which a provider key is disabled."
    ),
    Setting(
        "BREAKER_FAILURES",
        5,
        int,
        "Failed attempts (5xx, time-outs, connection errors) to one upstream host within `KEYRELAY_BREAKER_WINDOW` that open its circuit: its keys are passed over (0: no breaker).",
    ),
    Setting("BREAKER_WINDOW", 30.0, float, "Seconds in which those failures are counted."),
    Setting(
        "BREAKER_COOLDOWN",
        30.0,
        float,
        "Seconds an open circuit stays open; then one request probes the upstream and closes it (an answer) or opens it again.",
    ),
    Setting(
        "STRATEGY",
        "most-remaining",
        str,
        "Default key selection: `most-remaining`, `round-robin`, `weighted`, `priority` or `least-busy` (a profile may override).",
    ),
    Setting(
        "ADMIN_USERNAME", "admin", str, "Username of the first dashboard admin (created once)."
    ),
    Setting(
        "ADMIN_PASSWORD",
        None,
        str,
        "Password of the first dashboard admin. Unset: one is generated and printed once at first start (`./kr users create-admin` makes others).",
    ),
    Setting("SESSION_HOURS", 12.0, float, "Dashboard login lasts this long."),
    Setting(
        "DASHBOARD_REFRESH",
        5.0,
        float,
        "Seconds between live refreshes of the overview's cards and bars.",
    ),
    Setting(
        "LOGIN_SLOW_AFTER",
        3,
        int,
        "Failed logins (per address and per username, 15 min window) before answers slow down.",
    ),
    Setting(
        "LOGIN_DELAY", 0.5, float, "First slow-down in seconds; doubles per failure, at most 4 s."
    ),
    Setting(
        "LOGIN_LOCK_AFTER", 10, int, "Failed logins after which the address or username is refused."
    ),
    Setting("LOGIN_LOCK_MINUTES", 15.0, float, "How long such a lock lasts."),
    Setting(
        "TRUSTED_PROXIES",
        0,
        int,
        "Reverse proxies in front of KeyRelay whose X-Forwarded-For/-Proto to believe (client address for login throttling; HTTPS for Secure cookies).",
    ),
    Setting(
        "CLIENT_KEY_RPM",
        100,
        int,
        "Requests per minute of a new client key when none is given (0: unlimited).",
    ),
    Setting(
        "CLIENT_KEY_TPM",
        10000,
        int,
        "Tokens per minute of a new client key when none is given (0: unlimited).",
    ),
    Setting(
        "CLIENT_KEY_MAX_PARALLEL",
        0,
        int,
        "Concurrent requests of a new client key when none is given (0: unlimited).",
    ),
    Setting(
        "TIMEZONE",
        "UTC",
        str,
        "IANA time zone of days and months: daily/monthly limits and their resets at 00:00, usage days, charts (e.g. `Africa/Lagos`).",
    ),
    Setting(
        "SCHEDULER",
        True,
        bool,
        "Run the in-process scheduler (resets, expiry, re-validation, retention, alerts). One worker runs it, whatever the worker count.",
    ),
    Setting(
        "REVALIDATE_MINUTES",
        30.0,
        float,
        "Minutes between re-tests of auto-disabled and auth-failed provider keys (those that answer come back).",
    ),
    Setting(
        "CREDITS_SYNC_MINUTES",
        15.0,
        float,
        "Minutes between usage syncs of provider keys whose provider reports what is left (RovoDev credits check, OpenRouter key info); 0: only on demand.",
    ),
    Setting(
        "LOG_RETENTION_DAYS",
        30,
        int,
        "Request-log rows older than this are deleted daily (usage roll-ups stay). 0 keeps them for ever.",
    ),
    Setting(
        "USE_PAID_MODELS",
        True,
        bool,
        "Whether routes may use models marked paid (a profile may override). Off: paid models are skipped in fallback chains.",
    ),
    Setting(
        "FALLBACK_PROVIDER",
        "openai",
        str,
        "Provider of the environment fallback key.",
    ),
    Setting(
        "FALLBACK_KEY",
        None,
        str,
        "A provider key used only when a profile's pool has no usable key (off when unset).",
    ),
    Setting(
        "FALLBACK_BASE_URL",
        None,
        str,
        "Base URL of the environment fallback key (default: the provider's).",
    ),
    Setting(
        "PAYSTACK_SECRET",
        None,
        str,
        "Paystack secret key: verifies `x-paystack-signature` (HMAC-SHA512) on `/api/webhooks/paystack`. Unset: the webhook answers 503.",
    ),
    Setting(
        "PAYSTACK_MICROS_PER_UNIT",
        10000,
        int,
        "Micro-dollars of budget credited per unit of a payment's `amount` (10000: amounts in US cents).",
    ),
    Setting(
        "PAYSTACK_API_BASE",
        "https://api.paystack.co",
        str,
        "Paystack's API, where payments are started and verified.",
    ),
    Setting(
        "OIDC_ISSUER",
        None,
        str,
        'Single sign-on: the OpenID Connect provider\'s issuer URL (its discovery document is at `<issuer>/.well-known/openid-configuration`). Set: the login page offers "Sign in with SSO". Unset: no SSO.',
    ),
    Setting("OIDC_CLIENT_ID", None, str, "KeyRelay's client id at the SSO provider."),
    Setting(
        "OIDC_CLIENT_SECRET",
        None,
        str,
        "KeyRelay's client secret at the SSO provider. Register `<KeyRelay URL>/login/oidc/callback` there as the redirect URI.",
    ),
    Setting(
        "OIDC_ADMIN_EMAILS",
        None,
        str,
        "Comma-separated emails that sign in with SSO as admins (the account is made at the first sign-in).",
    ),
    Setting(
        "OIDC_ALLOWED_DOMAINS",
        None,
        str,
        "Comma-separated email domains (`example.com`) whose people may sign in with SSO as members: their member account is made at the first sign-in, with the `KEYRELAY_MEMBER_*` defaults.",
    ),
    Setting(
        "SIGNUP",
        "invite",
        str,
        "How members (people who spend their own keys and credits) come in: `invite` (an admin makes a one-time invite link on the Members page or with `POST /api/admin/invites`), `open` (anyone can sign up at `/signup` with an email and password), `off` (no sign-up; SSO and admins still make members).",
    ),
    Setting("INVITE_HOURS", 72.0, float, "Hours an invite link stays valid."),
    Setting(
        "MEMBER_CREDITS",
        "5.00",
        str,
        "A new member's starting balance (prepaid credits) in USD.",
    ),
    Setting(
        "MEMBER_BUDGET",
        "10.00",
        str,
        "A new member's budget in USD per budget period (0: no budget).",
    ),
    Setting(
        "MEMBER_BUDGET_PERIOD",
        "30d",
        str,
        "A new member's budget period: `1h`, `1d`, `7d`, `30d` (back to back from when the member joined) or `1mo` (calendar months).",
    ),
    Setting(
        "MEMBER_RPM",
        100,
        int,
        "Requests per minute of a new member, over all their keys (0: unlimited).",
    ),
    Setting(
        "MEMBER_TPM",
        10000,
        int,
        "Tokens per minute of a new member, over all their keys (0: unlimited).",
    ),
    Setting("MEMBER_MAX_KEYS", 5, int, "Keys a new member may hold at once."),
    Setting(
        "MEMBER_PROFILE",
        None,
        str,
        "The profile (provider keys and models) members' keys use. Unset: the `default` profile. A profile named here that does not exist yet is made at the first member's creation, empty: add provider keys to it.",
    ),
    Setting(
        "ALERT_WEBHOOK_URL",
        None,
        str,
        'Budget alerts are posted here as Slack-compatible JSON (`{"text": …}`). Unset: no alerts.',
    ),
    Setting(
        "ALERT_THRESHOLDS",
        "80,100",
        str,
        "Percentages of a budget at which an alert goes out, once per threshold per period.",
    ),
    Setting(
        "DB_BUSY_TIMEOUT",
        10.0,
        float,
        "Seconds a database write waits for another process's lock (SQLite's busy timeout, PostgreSQL's `lock_timeout`) before the change is refused with 503 and `Retry-After`, nothing saved.",
    ),
    Setting(
        "JOURNAL_RESERVE_BYTES",
        MIB,
        int,
        "Disk space each worker's booking journal keeps allocated ahead of its writes, so a full disk cannot lose an answer. When a quarter of it is left and the disk gives no more, new requests get 503 with `Retry-After` until the database has taken the journal's lines.",
    ),
    Setting(
        "BACKUP_KEEP",
        0,
        int,
        "Daily backups (the `backup` job, 02:30) to keep; older ones are deleted. 0: no scheduled backup (`./kr backup create` still works).",
    ),
    Setting(
        "BACKUP_DIR",
        None,
        str,
        "Folder of the scheduled backups and of `./kr backup create` without a path. Default: `<instance>/backups`.",
    ),
    Setting(
        "METRICS",
        True,
        bool,
        "Serve Prometheus metrics at `/metrics` (see Metrics); counting costs about 1.5 µs of CPU a request. Off: 404 there, and nothing is counted.",
    ),
    Setting(
        "METRICS_TOKEN",
        None,
        str,
        "A bearer token that may read `/metrics` (besides the master key). Unset: only the master key.",
    ),
    Setting(
        "REDIS_URL",
        None,
        str,
        "Redis shared by several KeyRelay hosts (`redis://host:6379/0`): RPM/TPM windows, requests in flight, budget reservations, cache invalidation (keys, client keys, routes, prices) and the scheduler's leader lease. Unset: this host's files (`instance/limits.bin`, `scheduler.lock`).",
    ),
    Setting(
        "REDIS_FAILURE",
        "mixed",
        str,
        "When Redis cannot be reached: `mixed` admits by RPM/TPM limits (a log line) and refuses budgeted requests with 503; `open` admits both; `closed` refuses both. Accounting (the request log) never depends on Redis.",
    ),
    Setting(
        "REDIS_LEASE_SECONDS",
        15.0,
        float,
        "The scheduler's leader lease in Redis: renewed every third of it; another host takes over this long after its holder died.",
    ),
    Setting("LOG_LEVEL", "INFO", str, "Python log level."),
    Setting(
        "INSTANCE_PATH",
        None,
        str,
        "Folder for the SQLite file and key files. Default: `instance/`.",
    ),
    # fmt: on
)


def _convert(setting: Setting, raw: str) -> object:
    """Parse an environment string into the setting's type, naming the variable on error."""
    if setting.kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SystemExit(f"KEYRELAY_{setting.name}={raw!r} is not a valid flag (true/false)")
    try:
        return setting.kind(raw)
    except ValueError:
        raise SystemExit(
            f"KEYRELAY_{setting.name}={raw!r} is not a valid {setting.kind.__name__}"
        ) from None


def load_env_file(path: Path = ENV_FILE) -> None:
    """Put the variables of `.env` into the process environment, never over one the
    process already has (the environment wins), so what it starts inherits them too."""
    load_dotenv(path, override=False)


def from_environment(environ: dict[str, str] | None = None) -> dict[str, object]:
    """Return {NAME: value} for every setting, read from KEYRELAY_* variables (the
    process environment's, with `.env` filling in what it leaves unset)."""
    if environ is None:
        load_env_file()
        environ = os.environ
    values = {}
    for setting in SETTINGS:
        raw = environ.get(f"KEYRELAY_{setting.name}")
        values[setting.name] = setting.default if raw in (None, "") else _convert(setting, raw)
    return values
