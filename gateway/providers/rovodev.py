"""The `rovodev` provider: Atlassian RovoDev's AI gateway, an account of email + API token.

The wire format is OpenAI chat at the key's base URL (default
`https://api.atlassian.com/rovodev/v2`), so everything but the authentication is the
`openai` adapter's. RovoDev's API is not public: the headers follow the integration
guide (`Authorization: Bearer <token>`, `X-User-Email`, `X-Cloud-ID`), and a key may
choose another scheme (`auth_scheme: "basic"`: HTTP Basic email:token, as Atlassian's
other APIs take). What is left of the account's daily tokens comes from
`GET /credits/check` (usage sync); the same call is the key test, since RovoDev has no
model list to ask for.
"""

from __future__ import annotations

import base64
import re

from gateway.admin import apischema
from gateway.providers.base import Credits, Target, Timeouts, UpstreamReply
from gateway.providers.openai import OpenAIAdapter, error_reply, json_object

AUTH_SCHEMES = ("bearer", "basic")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# An Atlassian cloud id is the site's UUID (https://<site>.atlassian.net/_edge/tenant_info
# answers it as "cloudId"); RovoDev refuses any other X-Cloud-ID, so a typo is caught at save.
CLOUD_ID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
CLOUD_ID_PATTERN = (
    rf"^{apischema.SPACE}(?:[0-9a-fA-F]{{8}}-(?:[0-9a-fA-F]{{4}}-){{3}}[0-9a-fA-F]{{12}})?"
    rf"{apischema.SPACE}$"
)
CLOUD_ID_MESSAGE = (
    "'cloud_id' must be your Atlassian cloud id, a UUID like "
    "a436116f-02ce-4520-8fbb-7301462a1674 (your site's /_edge/tenant_info shows it)."
)
INTERNAL_DOMAIN = "@atlassian.com"
# The Claude Sonnet models the integration guide names.
MODELS = (
    "claude-sonnet-4",
    "claude-3-7-sonnet",
    "claude-3-5-sonnet-v2",
    "claude-3-5-sonnet-20241022",
)
# Where a credits answer may keep its figures, and their names (the format is not public).
_SECTIONS = ("balance", "credits", "data", "usage")
_REMAINING = (
    "dailyRemaining",
    "remaining",
    "remainingTokens",
    "remaining_tokens",
    "tokensRemaining",
)
_TOTAL = ("dailyTotal", "dailyLimit", "limit", "total", "tokenLimit")
_USED = ("dailyUsed", "used", "usedTokens", "tokensUsed")


class RovodevAdapter(OpenAIAdapter):
    """OpenAI chat with RovoDev's account headers."""

    name = "rovodev"
    default_base_url = "https://api.atlassian.com/rovodev/v2"
    price_provider = "anthropic"  # Claude Sonnet, at Anthropic's prices
    owned_by = "atlassian-rovodev"
    default_models = MODELS
    default_daily_token_limit = 20_000_000
    reports_credits = True
    wording = {
        "auth_failed": "RovoDev authentication failed",
        "limit_reached": "Daily token limit exceeded for RovoDev",
        "no_keys": "No available RovoDev keys for this profile",
    }

    @classmethod
    def options_schema(cls) -> dict:
        return {
            "type": "object",
            "properties": {
                "email": {"type": "string", "maxLength": 254, "pattern": apischema.EMAIL},
                "cloud_id": {
                    "type": "string",
                    "maxLength": 128,
                    "pattern": CLOUD_ID_PATTERN,
                    "nullable": True,
                },
                "auth_scheme": apischema.nullable({"type": "string", "enum": list(AUTH_SCHEMES)}),
            },
            "required": ["email"],
            "additionalProperties": False,
        }

    @classmethod
    def check_options(cls, options: dict) -> dict:
        """email (required), cloud_id (optional), auth_scheme (bearer | basic)."""
        unknown = sorted(set(options) - {"email", "cloud_id", "auth_scheme"})
        if unknown:
            raise ValueError(f"options.{unknown[0]}", f"RovoDev takes no option '{unknown[0]}'.")
        email = options.get("email")
        if not isinstance(email, str) or not EMAIL.match(email.strip()) or len(email) > 254:
            raise ValueError("options.email", "'email' must be the account's email address.")
        checked = {"email": email.strip().lower()}
        cloud_id = options.get("cloud_id")
        if isinstance(cloud_id, str):
            cloud_id = cloud_id.strip()  # blank: none
        if cloud_id not in (None, ""):
            if not isinstance(cloud_id, str) or not CLOUD_ID.match(cloud_id):
                raise ValueError("options.cloud_id", CLOUD_ID_MESSAGE)
            checked["cloud_id"] = cloud_id
        scheme = options.get("auth_scheme") or "bearer"
        if scheme not in AUTH_SCHEMES:
            raise ValueError("options.auth_scheme", "'auth_scheme' must be 'bearer' or 'basic'.")
        checked["auth_scheme"] = scheme
        return checked

    def _headers(self, target: Target) -> dict[str, str]:
        options = target.options
        email = options.get("email", "")
        if options.get("auth_scheme") == "basic":
            pair = base64.b64encode(f"{email}:{target.secret}".encode()).decode()
            headers = {"Authorization": f"Basic {pair}"}
        else:
            headers = {"Authorization": f"Bearer {target.secret}", "X-User-Email": email}
        if options.get("cloud_id"):
            headers["X-Cloud-ID"] = options["cloud_id"]
        headers["Content-Type"] = "application/json"
        return headers

    def check_credits(self, target: Target, timeouts: Timeouts) -> Credits | UpstreamReply:
        reply = self.list_models(target, timeouts)
        if reply.status >= 300:
            return reply
        remaining = remaining_tokens(json_object(reply.body))
        if remaining is None:
            return error_reply(502, reply.headers, b"credits check answered no remaining tokens")
        return Credits(remaining_tokens=remaining)

    def list_models(self, target: Target, timeouts: Timeouts) -> UpstreamReply:
        """The credits check: RovoDev's cheapest authenticated call."""
        response = self.http.request(
            "GET", f"{target.base_url}/credits/check", self._headers(target), timeouts
        )
        body = response.read()
        if response.status >= 300:
            return error_reply(response.status, response.headers, body)
        return UpstreamReply(response.status, response.headers, body)

    def model_ids(self, reply: UpstreamReply) -> list[str] | None:
        return list(MODELS)


def is_internal(email: str) -> bool:
    """An Atlassian employee's account (the integration guide's `is_internal`)."""
    return email.lower().endswith(INTERNAL_DOMAIN)


def remaining_tokens(body: dict | None) -> int | None:
    """Tokens left in a credits answer: a remaining figure, or total minus used, at the top
    or in a section (`balance`, `credits`, ...); None when there is neither."""
    if body is None:
        return None
    for place in (body, *(body.get(s) for s in _SECTIONS)):
        if not isinstance(place, dict):
            continue
        left = _number(place, _REMAINING)
        if left is None:
            total, used = _number(place, _TOTAL), _number(place, _USED)
            left = None if total is None or used is None else total - used
        if left is not None:
            return max(0, left)
    return None


def _number(place: dict, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = place.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return None
