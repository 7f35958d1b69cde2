"""Members: the people who spend keys with their own credits, budget and limits.

A member comes in by signing up (KEYRELAY_SIGNUP `open`, or `invite` with a one-time
invite link an admin made), or by signing in with SSO from an allowed email domain. A
new member takes the KEYRELAY_MEMBER_* defaults; an admin changes any member's values
later. This module holds the rules (emails, defaults, invites, balance changes); the
commands that audit and commit them are in gateway/admin/members.py.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from gateway.admin import accounts, apischema
from gateway.admin.errors import InputError, Problems
from gateway.keys import provider_keys as keyring
from gateway.limits import budgets
from models import ClientKey, CreditTransaction, Invite, Member, Profile, RequestLog, User
from models.credits import ADMIN, CREDITED
from models.profiles import DEFAULT_PROFILE
from models.users import MEMBER

INVITE, OPEN, OFF = "invite", "open", "off"
SIGNUP_MODES = (INVITE, OPEN, OFF)
EMAIL = re.compile(apischema.EMAIL)
# Only ASCII letters are lower-cased: the email keeps its length (the column holds 254).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
MAX_EMAIL = 254
ADJUST_EVENT = "member.adjust"
# The largest change of a balance at once, and the largest balance: USD 1e9.
MAX_MICROS = 10**15


@dataclass(frozen=True)
class Defaults:
    """What a new member starts with (the KEYRELAY_MEMBER_* settings)."""

    credits_micros: int
    budget_micros: int | None
    budget_period: str | None
    rpm_limit: int | None
    tpm_limit: int | None
    max_keys: int
    profile: str

    @classmethod
    def from_config(cls, config: Mapping) -> Defaults:
        """The defaults; ValueError naming the setting when one is unreadable."""
        return cls(
            credits_micros=_setting_usd(config, "MEMBER_CREDITS") or 0,
            budget_micros=_setting_usd(config, "MEMBER_BUDGET") or None,  # 0: no budget
            budget_period=_setting(config, "MEMBER_BUDGET_PERIOD", budgets.parse_duration),
            rpm_limit=_setting(config, "MEMBER_RPM", lambda v: _count("rpm_limit", v) or None),
            tpm_limit=_setting(config, "MEMBER_TPM", lambda v: _count("tpm_limit", v) or None),
            max_keys=_setting(config, "MEMBER_MAX_KEYS", lambda v: _count("max_keys", v)),
            profile=(config.get("MEMBER_PROFILE") or "").strip() or DEFAULT_PROFILE,
        )


def _setting(config: Mapping, name: str, parse):
    try:
        return parse(config.get(name))
    except (ValueError, InputError) as exc:
        raise ValueError(f"KEYRELAY_{name}={config.get(name)!r}: {exc}") from None


def _setting_usd(config: Mapping, name: str) -> int | None:
    return _setting(config, name, lambda v: budgets.parse_usd(name.lower(), v))


def signup_mode(config: Mapping) -> str:
    """KEYRELAY_SIGNUP, checked: `invite`, `open` or `off`."""
    mode = (config.get("SIGNUP") or INVITE).strip().lower()
    if mode not in SIGNUP_MODES:
        raise ValueError(f"KEYRELAY_SIGNUP={mode!r} must be one of: {', '.join(SIGNUP_MODES)}")
    return mode


def check_settings(config: Mapping) -> None:
    """Refuse to start (SystemExit naming the setting) on unreadable member settings."""
    try:
        signup_mode(config)
        Defaults.from_config(config)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def normal_email(value: object) -> str:
    """The email lower-cased and trimmed; InputError("email") when it is not one."""
    email = value.strip().translate(_ASCII_LOWER) if isinstance(value, str) else ""
    if len(email) > MAX_EMAIL or not EMAIL.fullmatch(email):
        raise InputError("email", "Enter an email address such as name@example.com.")
    return email


def _count(field: str, value: object) -> int:
    """A whole number ≥ 0 (settings may be strings)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**9:
        raise InputError(field, f"'{field}' must be a whole number from 0 to 1000000000.")
    return value


def _limit(field: str, value: object) -> int | None:
    """A rate limit: None (unlimited) or a whole number ≥ 1."""
    if value is None:
        return None
    number = _count(field, value)
    if number < 1:
        raise InputError(field, f"'{field}' must be at least 1, or null for no limit.")
    return number


def parse_changes(data: object) -> dict:
    """An admin's changes to a member (budget, budget_period, rpm_limit, tpm_limit,
    max_keys, profile) as column values; InputError naming the first bad field (and
    carrying every bad one)."""
    if not isinstance(data, dict):
        raise InputError("body", "Send a JSON object of the fields to change.")
    problems = Problems()
    for field in data:
        if field not in _CHANGES:
            known = ", ".join(_CHANGES)
            problems.add(InputError(field, f"Unknown field '{field}'; one of: {known}."))
    changes: dict = {}
    for field, (column, parse) in _CHANGES.items():
        if field in data:
            with problems.field():
                changes[column] = parse(field, data[field])
    problems.check()
    return changes


def _budget(field: str, value) -> int | None:
    try:
        return budgets.parse_usd(field, value)
    except ValueError as exc:
        raise InputError(field, str(exc)) from None


def _period(field: str, value) -> str | None:
    try:
        return budgets.parse_duration(value)
    except ValueError:
        choices = ", ".join(budgets.DURATIONS)
        raise InputError(field, f"'{field}' must be one of: {choices}, or null.") from None


def _profile(field: str, value) -> str:
    if not isinstance(value, str) or not keyring.PROFILE_NAME.match(value):
        raise InputError(field, f"'{field}' must be the name of a profile.")
    return value


def _flag(field: str, value) -> bool:
    if not isinstance(value, bool):
        raise InputError(field, f"'{field}' must be true or false.")
    return value


def find_profile(session: Session, name: str) -> Profile:
    """The named profile; InputError (404) when there is none."""
    profile = session.scalar(select(Profile).where(Profile.name == name))
    if profile is None:
        raise InputError("profile", f"Profile '{name}' does not exist.", 404)
    return profile


def _username(session: Session, email: str) -> str:
    """The email as the username when it fits and is free, else `member-<random>`."""
    if accounts.USERNAME.match(email):
        taken = session.scalar(select(User.id).where(func.lower(User.username) == email))
        if taken is None:
            return email
    return f"member-{secrets.token_hex(6)}"


def create(
    session: Session, email: str, password: str | None, defaults: Defaults, now: datetime
) -> Member:
    """A new member with the defaults. Without a password (SSO) a random one nobody is
    told: they sign in with SSO only. The caller audits and commits."""
    email = normal_email(email)
    # An account whose username is the email (an SSO admin, say) is that person too.
    same = or_(User.email == email, func.lower(User.username) == email)
    if session.scalar(select(User.id).where(same)) is not None:
        raise InputError("email", f"There is already an account for {email}.", 409)
    if password is None:
        password = secrets.token_urlsafe(32)
    accounts.check_password(password)
    profile = session.scalar(select(Profile).where(Profile.name == defaults.profile))
    if profile is None:  # the configured member profile, made on first use
        profile = keyring.get_or_create_profile(session, defaults.profile, now)
    user = User(
        username=_username(session, email),
        email=email,
        password_hash=generate_password_hash(password),
        role=MEMBER,
        created_at=now,
        session_version=1,
    )
    session.add(user)
    session.flush()
    member = Member(
        user_id=user.id,
        user=user,
        balance_micros=defaults.credits_micros,
        budget_micros=defaults.budget_micros,
        budget_period=defaults.budget_period,
        rpm_limit=defaults.rpm_limit,
        tpm_limit=defaults.tpm_limit,
        max_keys=defaults.max_keys,
        profile=profile,
        created_at=now,
    )
    session.add(member)
    session.flush()
    return member


def apply_changes(session: Session, member: Member, changes: dict) -> None:
    """Set the changed values (the caller sets suspension, see `suspend`); a new profile
    moves the member's keys along with them."""
    for column, value in changes.items():
        if column == "suspended":
            continue
        if column == "profile":
            profile = find_profile(session, value)
            member.profile = profile
            session.execute(
                update(ClientKey)
                .where(ClientKey.member_id == member.user_id)
                .values(profile_id=profile.id)
            )
        else:
            setattr(member, column, value)


def parse_amount(value: object) -> int:
    """A signed USD amount (decimal string or number, six decimals at most, not zero)
    as integer micro-dollars; InputError("amount") otherwise."""
    message = '\'amount\' must be a non-zero amount in USD such as "5.00" or "-2.50".'
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InputError("amount", message)
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InputError("amount", message) from None
    if not amount.is_finite() or amount == 0:
        raise InputError("amount", message)
    micros = amount * 1_000_000
    if micros != micros.to_integral_value():
        raise InputError("amount", "'amount' has more than six decimals (micro-dollars).")
    if abs(micros) > MAX_MICROS:
        raise InputError("amount", "'amount' must be within ±1000000000 USD.")
    return int(micros)


def adjust_balance(session: Session, member: Member, micros: int, actor: str, now) -> str:
    """Add `micros` (negative: take away) to the balance in one UPDATE, never below zero,
    and record it as a credit row; its reference. The caller audits and commits."""
    new_balance = Member.balance_micros + micros
    done = session.execute(
        update(Member)
        .where(Member.user_id == member.user_id, new_balance >= 0, new_balance <= MAX_MICROS)
        .values(balance_micros=new_balance)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        raise InputError(
            "amount", "The balance cannot go below 0.00 or above 1000000000.00 USD.", 409
        )
    reference = f"{ADMIN}-{uuid.uuid4().hex}"
    session.add(
        CreditTransaction(
            reference=reference,
            member_id=member.user_id,
            client_key_id=None,
            status=CREDITED,
            amount=0,
            currency="usd",
            amount_micros=micros,
            event=ADJUST_EVENT,
            created_at=now,
            source=ADMIN,
            actor=actor,
        )
    )
    session.flush()
    session.refresh(member)
    return reference


def live_keys(session: Session, member_id: int) -> int:
    """The member's keys not revoked (what max_keys counts)."""
    return session.scalar(
        select(func.count(ClientKey.id)).where(
            ClientKey.member_id == member_id, ClientKey.revoked_at.is_(None)
        )
    )


def spend(session: Session, member_ids: list[int]) -> dict[int, int]:
    """Micro-dollars each member's keys have spent in all (the request log)."""
    if not member_ids:
        return {}
    rows = session.execute(
        select(ClientKey.member_id, func.coalesce(func.sum(RequestLog.cost_micros), 0))
        .join(RequestLog, RequestLog.client_key_id == ClientKey.id)
        .where(ClientKey.member_id.in_(member_ids))
        .group_by(ClientKey.member_id)
    )
    return {member_id: int(total) for member_id, total in rows}


def listing(session: Session) -> list[Member]:
    """Every member, newest first."""
    return list(session.scalars(select(Member).order_by(Member.created_at.desc())))


# -- invites -----------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_invite(
    session: Session, actor: str, now: datetime, hours: float, email: str | None = None
) -> tuple[Invite, str]:
    """A one-time invite valid for `hours`; (row, the token, shown once in its link)."""
    if email is not None:
        email = normal_email(email)
    token = secrets.token_urlsafe(24)
    invite = Invite(
        token_hash=_digest(token),
        email=email,
        created_by=actor,
        created_at=now,
        expires_at=now + timedelta(hours=hours),
    )
    session.add(invite)
    session.flush()
    return invite, token


def find_invite(session: Session, token: object, now: datetime) -> Invite:
    """The unused, unexpired invite of `token`; InputError("invite") saying why not."""
    invite = None
    if isinstance(token, str) and 0 < len(token) <= 200:
        invite = session.scalar(select(Invite).where(Invite.token_hash == _digest(token)))
    if invite is None:
        raise InputError("invite", "This invite link is not valid. Ask an admin for a new one.")
    if invite.used_at is not None:
        raise InputError(
            "invite", "This invite link was already used. Ask an admin for a new one.", 410
        )
    if invite.expires_at <= now:
        raise InputError("invite", "This invite link has expired. Ask an admin for a new one.", 410)
    return invite


def use_invite(session: Session, invite: Invite, member: Member, now: datetime) -> None:
    """Mark the invite used by `member`, once: a second use in a race is refused."""
    if invite.email is not None and invite.email != member.user.email:
        raise InputError("email", f"This invite is for {invite.email}.")
    done = session.execute(
        update(Invite)
        .where(Invite.id == invite.id, Invite.used_at.is_(None))
        .values(used_at=now, used_by=member.user_id)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        raise InputError(
            "invite", "This invite link was already used. Ask an admin for a new one.", 410
        )


# A change an admin may make → (its column, its check).
_CHANGES = {
    "budget": ("budget_micros", _budget),
    "budget_period": ("budget_period", _period),
    "rpm_limit": ("rpm_limit", _limit),
    "tpm_limit": ("tpm_limit", _limit),
    "max_keys": ("max_keys", _count),
    "profile": ("profile", _profile),
    "suspended": ("suspended", _flag),
}
