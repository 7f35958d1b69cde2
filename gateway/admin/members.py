"""Member commands: create (sign-up, invite, SSO, an admin), invite, suspend and resume,
change limits, adjust the balance, delete; each audits once and makes the proxy see the
change (a suspended member's keys are refused on their next request)."""

from __future__ import annotations

from sqlalchemy import select, update

from gateway import members
from gateway.admin.context import CALLERS, KEYS, Admin
from gateway.admin.errors import InputError
from gateway.keys import client_keys as clientkeys
from gateway.members import Defaults
from models import ClientKey, CreditTransaction, Member, User
from models.types import usd

# How a member came in, for the audit log.
VIA = ("admin", "signup", "invite", "sso")
MAX_REASON = 500


def create(
    admin: Admin,
    email: object,
    password: str | None,
    defaults: Defaults,
    via: str = "admin",
    invite_token: object = None,
) -> Member:
    """A new member with the defaults; with `invite_token` the invite is used up (once)."""
    invite = (
        members.find_invite(admin.session, invite_token, admin.now()) if via == "invite" else None
    )
    member = members.create(admin.session, email, password, defaults, admin.now())
    if invite is not None:
        members.use_invite(admin.session, invite, member, admin.now())
    admin.checked()
    admin.audit(
        "member.create",
        f"member:{member.user_id}",
        email=member.user.email,
        via=via,
        balance=usd(member.balance_micros),
    )
    admin.commit(KEYS)  # the member profile may have been made just now
    return member


def invite(admin: Admin, hours: float, email: object = None, signup: str = members.INVITE):
    """A one-time sign-up invite: (row, token). The link holds the token. With sign-up
    off (`signup`, KEYRELAY_SIGNUP) no link could be used: a 409."""
    if signup == members.OFF:
        raise InputError("signup", "Sign-up is off on this server (KEYRELAY_SIGNUP=off).", 409)
    row, token = members.new_invite(admin.session, admin.actor, admin.now(), hours, email)
    admin.checked()
    admin.audit(
        "member.invite", f"invite:{row.id}", email=row.email, expires_at=str(row.expires_at)
    )
    admin.commit()
    return row, token


def get(admin: Admin, member_id: int) -> Member:
    """The member of that id; InputError (404) when there is none."""
    member = admin.session.get(Member, member_id)
    if member is None:
        raise InputError("id", f"No member with id {member_id}.", 404)
    return member


def suspend(admin: Admin, member: Member) -> None:
    """Stop the member's keys at once and refuse new ones until resumed."""
    update_member(admin, member, {"suspended": True})


def resume(admin: Admin, member: Member) -> None:
    """Let a suspended member's keys work again."""
    update_member(admin, member, {"suspended": False})


def update_member(admin: Admin, member: Member, data: object) -> Member:
    """Change budget, budget period, rate limits, key allowance or profile (their keys
    move to the new profile), and suspend or resume (`suspended`)."""
    changes = members.parse_changes(data)
    members.apply_changes(admin.session, member, changes)
    admin.checked()
    target = f"member:{member.user_id}"
    suspended = changes.pop("suspended", None)
    if suspended is not None and suspended != (member.suspended_at is not None):
        member.suspended_at = admin.now() if suspended else None
        action = "member.suspend" if suspended else "member.resume"
        admin.audit(action, target, email=member.user.email)
    if changes:
        admin.audit("member.update", target, **_shown(changes))
    admin.commit(CALLERS)
    return member


def _shown(changes: dict) -> dict:
    """The changes as the audit log shows them (money as USD strings)."""
    shown = dict(changes)
    if "budget_micros" in shown:
        micros = shown.pop("budget_micros")
        shown["budget"] = None if micros is None else usd(micros)
    return shown


def adjust_balance(admin: Admin, member: Member, amount: object, reason: object) -> int:
    """Add (or with a negative amount take away) credits, with a reason; the micro-dollars."""
    micros = members.parse_amount(amount)
    if not isinstance(reason, str) or not reason.strip():
        raise InputError("reason", "Say why the balance changes (a reason is required).")
    if len(reason) > MAX_REASON:
        raise InputError("reason", f"Keep the reason under {MAX_REASON} characters.")
    admin.checked()
    try:
        reference = members.adjust_balance(admin.session, member, micros, admin.actor, admin.now())
    except InputError:
        admin.session.rollback()
        raise
    admin.audit(
        "member.balance",
        f"member:{member.user_id}",
        amount=usd(micros) if micros >= 0 else "-" + usd(-micros),
        reason=reason.strip(),
        balance=usd(member.balance_micros),
        reference=reference,
    )
    admin.commit(CALLERS)
    return micros


def delete(admin: Admin, member: Member) -> None:
    """Remove the member, their keys and tokens; their payments stay on record, unlinked."""
    session = admin.session
    user_id = member.user_id
    admin.audit("member.delete", f"member:{user_id}", email=member.user.email)
    keys = list(session.scalars(select(ClientKey).where(ClientKey.member_id == user_id)))
    for key in keys:
        clientkeys.remove(session, key)
    session.execute(
        update(CreditTransaction)
        .where(CreditTransaction.member_id == user_id)
        .values(member_id=None)
        .execution_options(synchronize_session=False)
    )
    user = session.get(User, user_id)
    session.delete(member)
    session.flush()
    session.delete(user)
    admin.commit(CALLERS)
    for key in keys:
        admin.gateway.forget_limits(f"ck:{key.id}")
