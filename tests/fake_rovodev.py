"""A loopback RovoDev AI gateway: OpenAI chat under `/rovodev/v2`, with RovoDev's account
authentication checked on every request, and the credits check.

Accounts are registered by API token with their email and cloud id. A request is let in
only with `Authorization: Bearer <token>` + `X-User-Email: <email>` (the integration
guide's headers) or `Authorization: Basic base64(email:token)`, and `X-Cloud-ID` equal to
the account's cloud id when it has one; anything else is 401. What is let in is served by
the OpenAI fake (fake_upstream.py: same behaviours per token, same token counts).

`GET /rovodev/v2/credits/check` answers (RovoDev's format is not public; this is the
integration guide's daily token budget, shaped as such checks usually are):
    {"status": "OK", "userType": "internal" | "external",
     "balance": {"dailyTotal": 20000000, "dailyUsed": 1200, "dailyRemaining": 19998800}}
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from tests.fake_upstream import FakeUpstream, _error, _Handler

PREFIX = "/rovodev/v2"
MODELS = ("claude-sonnet-4", "claude-3-7-sonnet", "claude-3-5-sonnet-v2")


@dataclass
class Account:
    """A RovoDev account the fake knows."""

    email: str
    cloud_id: str | None = None
    daily_total: int = 20_000_000
    daily_used: int = 0


class _RovoDevHandler(_Handler):
    """Checks RovoDev's headers, serves the credits check, hands the rest to the OpenAI fake."""

    def _serve(self) -> None:
        upstream: FakeRovoDev = self.server.upstream
        account, token = upstream.authenticate(dict(self.headers.items()))
        if not self.path.startswith(PREFIX + "/"):
            self._read_body()
            self._send_json(404, _error(f"Invalid URL ({self.path})", "invalid_request_error"))
            return
        if account is None:
            self._read_body()
            upstream.refused.append(dict(self.headers.items()))
            body = _error("RovoDev: authentication failed", "authentication_error", code=401)
            self._send_json(401, body)
            return
        if self.path.rstrip("/") == f"{PREFIX}/credits/check" and self.command == "GET":
            self._read_body()
            upstream.credit_checks.append(token)
            self._send_json(200, upstream.credits_answer(account))
            return
        self.path = "/v1" + self.path[len(PREFIX) :]
        super()._serve()


class FakeRovoDev(FakeUpstream):
    """RovoDev's AI gateway on 127.0.0.1; accounts by API token."""

    handler = _RovoDevHandler

    def __init__(self, accounts: dict[str, Account]) -> None:
        self.accounts = accounts
        self.refused: list[dict] = []  # headers of every request refused with 401
        self.credit_checks: list[str] = []  # the token of each credits check
        super().__init__(models=MODELS)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def authenticate(self, headers: dict[str, str]) -> tuple[Account | None, str | None]:
        """The account the headers prove, with its token; (None, None) if they do not."""
        headers = {k.lower(): v for k, v in headers.items()}
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            token, email = auth[7:], headers.get("x-user-email")
        elif auth.startswith("Basic "):
            try:
                email, _, token = base64.b64decode(auth[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None, None
        else:
            return None, None
        account = self.accounts.get(token)
        if account is None or account.email != email:
            return None, None
        if account.cloud_id is not None and headers.get("x-cloud-id") != account.cloud_id:
            return None, None
        return account, token

    def credits_answer(self, account: Account) -> dict:
        left = max(0, account.daily_total - account.daily_used)
        kind = "internal" if account.email.endswith("@atlassian.com") else "external"
        balance = {
            "dailyTotal": account.daily_total,
            "dailyUsed": account.daily_used,
            "dailyRemaining": left,
        }
        return {"status": "OK", "userType": kind, "balance": balance}
