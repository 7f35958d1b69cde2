"""Single sign-on with OpenID Connect: the authorization code flow with PKCE, the ID token
checked against the issuer's keys, and who an email signs in as.

The protocol pieces are Authlib's (PKCE, the authorization URL, the token request, the ID
token's claims) and joserfc's (the signature against the JWKS); the two HTTP calls to the
provider use urllib3, as KeyRelay's other outbound calls off the proxy path do. Nothing here
knows Flask: the caller keeps `Pending` in its session between `start` and `finish`.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from urllib.parse import quote

import urllib3
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from gateway import members
from gateway.admin import accounts
from gateway.admin.errors import InputError
from models import User
from models.types import usd
from models.users import ADMIN

SCOPE = "openid email"
# Seconds of clock difference between KeyRelay and the provider an ID token's times may have.
LEEWAY = 120
_HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5.0, read=10.0))


class SsoError(Exception):
    """A sign-in that cannot go on; the message is shown on the login page as it is, with
    `status` (400: this sign-in is bad, 403: this person may not come in, 502: the provider
    cannot be used)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _unusable(message: str) -> SsoError:
    return SsoError(message, 502)


@dataclass(frozen=True)
class SsoSettings:
    """KEYRELAY_OIDC_*: the provider, KeyRelay's client there, and who may come in."""

    issuer: str
    client_id: str
    client_secret: str
    allowed_domains: frozenset[str] = frozenset()
    admin_emails: frozenset[str] = frozenset()
    # What a member made at their first sign-in starts with (KEYRELAY_MEMBER_*).
    member_defaults: members.Defaults | None = None

    @classmethod
    def from_config(cls, config: Mapping) -> SsoSettings | None:
        """The settings, or None when SSO is off (no issuer)."""
        issuer = (config.get("OIDC_ISSUER") or "").strip().rstrip("/")
        if not issuer:
            return None
        return cls(
            issuer=issuer,
            client_id=config.get("OIDC_CLIENT_ID") or "",
            client_secret=config.get("OIDC_CLIENT_SECRET") or "",
            allowed_domains=_words(config.get("OIDC_ALLOWED_DOMAINS")),
            admin_emails=_words(config.get("OIDC_ADMIN_EMAILS")),
            member_defaults=members.Defaults.from_config(config),
        )


@dataclass(frozen=True)
class Pending:
    """What one sign-in must find again when the provider sends the browser back."""

    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str

    def to_dict(self) -> dict:
        return asdict(self)


def _words(value: str | None) -> frozenset[str]:
    """A comma-separated setting as lower-case words."""
    return frozenset(part.strip().lower() for part in (value or "").split(",") if part.strip())


def _get_json(url: str) -> dict:
    try:
        response = _HTTP.request("GET", url)
    except urllib3.exceptions.HTTPError:
        raise _unusable("The sign-in provider cannot be reached. Try again later.") from None
    if response.status != 200:
        raise _unusable(f"The sign-in provider answered {response.status}. Try again later.")
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise _unusable("The sign-in provider sent an answer that is not a JSON object.")
    return document


def metadata(settings: SsoSettings) -> dict:
    """The provider's discovery document, which must name the configured issuer."""
    document = _get_json(f"{settings.issuer}/.well-known/openid-configuration")
    if (document.get("issuer") or "").rstrip("/") != settings.issuer:
        raise _unusable("The sign-in provider names another issuer than the one configured.")
    return document


def start(settings: SsoSettings, redirect_uri: str) -> tuple[str, Pending]:
    """The provider's URL to send the browser to, and what `finish` needs to check it."""
    if not settings.client_id or not settings.client_secret:
        raise _unusable("Single sign-on is not fully set up: the client id or secret is missing.")
    endpoint = metadata(settings).get("authorization_endpoint")
    if not endpoint:
        raise _unusable("The sign-in provider names no authorization endpoint.")
    pending = Pending(generate_token(32), generate_token(32), generate_token(48), redirect_uri)
    url = prepare_grant_uri(
        endpoint,
        settings.client_id,
        "code",
        redirect_uri=redirect_uri,
        scope=SCOPE,
        state=pending.state,
        nonce=pending.nonce,
        code_challenge=create_s256_code_challenge(pending.code_verifier),
        code_challenge_method="S256",
    )
    return url, pending


def finish(settings: SsoSettings, pending: Mapping | None, args: Mapping) -> str:
    """The verified email of the person the provider sent back with `args` (the callback's
    query), after checking state, the code exchange (PKCE) and the ID token."""
    if not pending:
        raise SsoError("This sign-in was already used or has expired. Sign in again.")
    # State first: only the provider this sign-in went to may put its words on our page.
    state = args.get("state") or ""
    if not hmac.compare_digest(state.encode(), str(pending["state"]).encode()):
        raise SsoError("This sign-in did not start here, or it expired. Sign in again.")
    if args.get("error"):
        raise SsoError(
            f"The sign-in provider refused: {args.get('error_description') or args['error']}."
        )
    if not args.get("code"):
        raise SsoError("The sign-in provider sent no authorization code.")
    document = metadata(settings)
    token = _exchange(settings, document, args["code"], pending)
    claims = _verified_claims(settings, document, token, pending["nonce"])
    return _email(claims)


def _exchange(settings: SsoSettings, document: dict, code: str, pending: Mapping) -> dict:
    """Trade the code for tokens (client_secret_basic, with the PKCE verifier)."""
    body = prepare_token_request(
        "authorization_code",
        code=code,
        redirect_uri=pending["redirect_uri"],
        code_verifier=pending["code_verifier"],
    )
    # RFC 6749 2.3.1: id and secret are form-encoded before they go into Basic.
    pair = f"{quote(settings.client_id, safe='')}:{quote(settings.client_secret, safe='')}"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
    }
    try:
        response = _HTTP.request("POST", document["token_endpoint"], body=body, headers=headers)
    except (KeyError, urllib3.exceptions.HTTPError):
        raise _unusable("The sign-in provider cannot be reached. Try again later.") from None
    try:
        token = response.json()
    except ValueError:
        token = None
    if not isinstance(token, dict):
        token = {}
    if response.status != 200 or "id_token" not in token:
        reason = token.get("error_description") or token.get("error") or response.status
        raise SsoError(
            f"The sign-in provider did not accept this sign-in ({reason}). Sign in again."
        )
    return token


def _verified_claims(settings: SsoSettings, document: dict, token: dict, nonce: str) -> dict:
    """The ID token's claims, once its signature (the issuer's JWKS), issuer, audience,
    times, nonce and access-token hash check out."""
    if not document.get("jwks_uri"):
        raise _unusable("The sign-in provider names no key set (jwks_uri).")
    try:
        keys = KeySet.import_key_set(_get_json(document["jwks_uri"]))
    except (JoseError, ValueError, KeyError, TypeError):
        raise _unusable("The sign-in provider's key set cannot be read.") from None
    # An unsigned token (`none`) is never accepted, whatever the provider offers.
    offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [name for name in offered if name != "none"]
    options = {"iss": {"essential": True, "value": settings.issuer}}
    params = {"nonce": nonce, "client_id": settings.client_id}
    if "access_token" in token:
        params["access_token"] = token["access_token"]
    try:
        decoded = jwt.decode(token["id_token"], keys, registry=JWSRegistry(algorithms=algorithms))
        claims = CodeIDToken(decoded.claims, decoded.header, options, params)
        # The provider's clock, not KeyRelay's (which tests and replays may move), dates it.
        claims.validate(leeway=LEEWAY)
    except (JoseError, ValueError) as exc:
        raise SsoError(
            f"The sign-in provider's ID token is not valid ({exc}). Sign in again."
        ) from None
    return dict(claims)


def _email(claims: dict) -> str:
    email = (claims.get("email") or "").strip().lower()
    if not email or "@" not in email:
        raise SsoError("The sign-in provider did not share an email address.")
    if claims.get("email_verified") is not True:
        raise SsoError(f"The email {email} is not verified at the sign-in provider.", 403)
    return email


def user_for(session: Session, settings: SsoSettings, email: str, now) -> User:
    """Who a verified email signs in as: an admin email as an admin (created on first
    sign-in), an existing user of that name as themselves, an allowed domain as a member."""
    user = session.scalar(
        select(User).where(or_(func.lower(User.username) == email, User.email == email))
    )
    if user is not None:
        return user
    if email in settings.admin_emails:
        # No password sign-in for this account: a random one nobody is told.
        try:
            return accounts.create_user(session, email, secrets.token_urlsafe(32), ADMIN, now)
        except accounts.AccountError as exc:
            raise SsoError(f"No account can be made for {email}: {exc}") from None
    if email.rsplit("@", 1)[1] in settings.allowed_domains:
        return member_for(session, settings, email, now)
    raise SsoError(f"The email {email} may not sign in here. Ask an admin for access.", 403)


def member_for(session: Session, settings: SsoSettings, email: str, now) -> User:
    """The member account of an email whose domain is allowed: found, or made with the
    new-member defaults (audited; the sign-in commits it)."""
    user = session.scalar(select(User).where(User.email == email))
    if user is not None:
        return user
    if settings.member_defaults is None:
        raise SsoError(f"Member accounts are not set up, so {email} cannot sign in here.", 403)
    try:
        member = members.create(session, email, None, settings.member_defaults, now)
    except InputError as exc:
        raise SsoError(f"No account can be made for {email}: {exc}") from None
    accounts.audit(
        session,
        "sso",
        "member.create",
        now,
        target=f"member:{member.user_id}",
        detail={"email": email, "via": "sso", "balance": usd(member.balance_micros)},
    )
    return member.user
